"""customer references for cross-call rules; purge tombstones; queue order index with id

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_ref", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_calls_customer", ["customer_ref", "started_at"], unique=False)
    op.create_table(
        "call_tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_pk", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("recording_sha256", sa.String(length=64), nullable=False),
        sa.Column("business_line", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("audio_deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_pk"),
    )
    op.create_index("ix_call_tombstones_recording_sha256", "call_tombstones", ["recording_sha256"], unique=False)
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_queue")
        batch_op.create_index("ix_review_queue", ["status", "tier", "due_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_queue")
        batch_op.create_index("ix_review_queue", ["status", "tier", "due_at"], unique=False)
    op.drop_index("ix_call_tombstones_recording_sha256", table_name="call_tombstones")
    op.drop_table("call_tombstones")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_customer")
        batch_op.drop_column("purged_at")
        batch_op.drop_column("customer_ref")
