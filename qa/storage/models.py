"""ORM tables. Unique constraints make each stage idempotent: re-running a stage for a call
finds its earlier row instead of writing a second one. Every stored result names what
produced it (model sha256, rule-pack version and sha256, classifier version, options)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..domain import CALL_STATUSES, REVIEW_STATUSES, CallStatus, ReviewStatus
from ..timeutil import as_utc, utcnow

# re-exported: the vocabulary of the status columns, and the default of every timestamp column
__all__ = ["CALL_STATUSES", "REVIEW_STATUSES", "CallStatus", "ReviewStatus", "utcnow"]


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend. SQLite has no time zones: an aware value would be
    stored without its offset and a naive one read back; so values are converted to UTC on the
    way in (a naive value is refused: which zone it means is the caller's decision, see
    :func:`qa.timeutil.as_utc`) and marked UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to a UTC column; make it aware first")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON, list: JSON}


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(128), unique=True)
    recording_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    file_path: Mapped[str] = mapped_column(Text)
    file_size: Mapped[int] = mapped_column(Integer)
    audio_format: Mapped[str | None] = mapped_column(String(32))
    agent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    team: Mapped[str | None] = mapped_column(String(128), index=True)
    started_at: Mapped[datetime | None] = mapped_column(index=True)
    direction: Mapped[str | None] = mapped_column(String(16))
    business_line: Mapped[str | None] = mapped_column(String(64))
    channel_layout: Mapped[str] = mapped_column(String(32), default="stereo-agent-left")
    duration_s: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    roles_inferred: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="registered", index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict] = mapped_column(default=dict)
    # the customer or debtor (an opaque id, or a phone number's keyed hash): cross-call rules
    customer_ref: Mapped[str | None] = mapped_column(String(64))
    # when the call's personal data was erased (qa purge); the row keeps what statistics need
    purged_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_calls_customer", "customer_ref", "started_at"),)

    channels_rows: Mapped[list[CallChannel]] = relationship(back_populates="call", cascade="all, delete-orphan")


class CallChannel(Base):
    """One audio channel of a call after decoding and VAD."""

    __tablename__ = "call_channels"
    __table_args__ = (UniqueConstraint("call_id", "channel_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    channel_index: Mapped[int] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(16))  # None for a mono mix
    duration_s: Mapped[float] = mapped_column(Float)
    speech_s: Mapped[float | None] = mapped_column(Float)
    rms_db: Mapped[float | None] = mapped_column(Float)
    speech_segments: Mapped[list] = mapped_column(default=list)  # [[start_s, end_s], ...]
    vad: Mapped[dict] = mapped_column(default=dict)  # VAD model/options that cut the segments

    call: Mapped[Call] = relationship(back_populates="channels_rows")


class Transcript(Base):
    """One ASR pass over a call. A new model or options makes a new transcript; the latest
    successful one is ``is_current``."""

    __tablename__ = "transcripts"
    __table_args__ = (UniqueConstraint("call_id", "asr_sha256", "options_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    asr_model: Mapped[str] = mapped_column(String(128))
    asr_sha256: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict] = mapped_column(default=dict)
    options_sha256: Mapped[str] = mapped_column(String(64))
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    features: Mapped[dict] = mapped_column(default=dict)  # qa.domain.CallFeatures as JSON
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    utterances: Mapped[list[UtteranceRow]] = relationship(
        back_populates="transcript", cascade="all, delete-orphan", order_by="UtteranceRow.idx"
    )


class UtteranceRow(Base):
    __tablename__ = "utterances"
    __table_args__ = (UniqueConstraint("transcript_id", "idx"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    role_inferred: Mapped[bool] = mapped_column(Boolean, default=False)
    channel_index: Mapped[int | None] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    avg_logprob: Mapped[float | None] = mapped_column(Float)
    no_speech_prob: Mapped[float | None] = mapped_column(Float)
    compression_ratio: Mapped[float | None] = mapped_column(Float)
    speech_rate_cpm: Mapped[float | None] = mapped_column(Float)
    loudness_db: Mapped[float | None] = mapped_column(Float)

    transcript: Mapped[Transcript] = relationship(back_populates="utterances")


class Analysis(Base):
    """One rule-pack (and classifier) pass over one transcript. History is kept: a new pack
    version makes a new analysis and the previous one stops being current."""

    __tablename__ = "analyses"
    __table_args__ = (UniqueConstraint("transcript_id", "rule_pack_sha256", "classifiers_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    rule_pack_name: Mapped[str] = mapped_column(String(128))
    rule_pack_version: Mapped[str] = mapped_column(String(64))
    rule_pack_sha256: Mapped[str] = mapped_column(String(64))
    classifiers_sha256: Mapped[str] = mapped_column(String(64), default="")
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    score: Mapped[float | None] = mapped_column(Float)  # scorecard result of the pack
    scorecard: Mapped[dict] = mapped_column(default=dict)  # per-rule pass/fail/na + deductions
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    findings: Mapped[list[Finding]] = relationship(back_populates="analysis", cascade="all, delete-orphan")
    scores: Mapped[list[ClassifierScore]] = relationship(back_populates="analysis", cascade="all, delete-orphan")


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (Index("ix_findings_category", "category"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int | None] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="rule")  # rule | inspector
    rule_id: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(8))
    role: Mapped[str | None] = mapped_column(String(16))
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    matched_text: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[str | None] = mapped_column(Text)  # the utterance text(s) around the match
    utterance_idx: Mapped[list] = mapped_column(default=list)
    details: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    analysis: Mapped[Analysis | None] = relationship(back_populates="findings")


class ClassifierScore(Base):
    __tablename__ = "classifier_scores"
    __table_args__ = (UniqueConstraint("analysis_id", "model_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict] = mapped_column(default=dict)

    analysis: Mapped[Analysis] = relationship(back_populates="scores")


class Assessment(Base):
    """Score, fatal flag and tier of one analysis under one tier policy."""

    __tablename__ = "assessments"
    __table_args__ = (UniqueConstraint("analysis_id", "policy_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    fatal: Mapped[bool] = mapped_column(Boolean)
    tier: Mapped[str | None] = mapped_column(String(8), index=True)  # T1/T2/T3 or None
    reasons: Mapped[list] = mapped_column(default=list)
    policy: Mapped[dict] = mapped_column(default=dict)
    policy_sha256: Mapped[str] = mapped_column(String(64))
    calibration_sample: Mapped[bool] = mapped_column(Boolean, default=False)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItem(Base):
    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("assessment_id"),
        Index("ix_review_queue", "status", "tier", "due_at", "id"),  # work order within a status
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    tier: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(16))  # flagged | calibration
    status: Mapped[str] = mapped_column(String(16), default="open")
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    due_at: Mapped[datetime] = mapped_column()
    assigned_to: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column()
    claim_expires_at: Mapped[datetime | None] = mapped_column()
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column()
    verdict: Mapped[str | None] = mapped_column(String(8))  # pass | fail
    final_score: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewDecision(Base):
    """An inspector's decision on one finding (confirmed / rejected), or a finding the
    system missed (``decision='added'``, with ``finding_id`` pointing at the new finding)."""

    __tablename__ = "review_decisions"
    __table_args__ = (UniqueConstraint("review_item_id", "finding_id", "reviewer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    review_item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(16))  # confirmed | rejected | added
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Appeal(Base):
    __tablename__ = "appeals"

    id: Mapped[int] = mapped_column(primary_key=True)
    review_item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    opened_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | upheld | overturned
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column()


class CalibrationSession(Base):
    __tablename__ = "calibration_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    inspectors: Mapped[list] = mapped_column(default=list)
    call_ids: Mapped[list] = mapped_column(default=list)  # calls.id values
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CalibrationVote(Base):
    __tablename__ = "calibration_votes"
    __table_args__ = (UniqueConstraint("session_id", "call_id", "inspector", "item_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("calibration_sessions.id", ondelete="CASCADE"))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    inspector: Mapped[str] = mapped_column(String(64))
    item_key: Mapped[str] = mapped_column(String(128))  # "verdict" or "finding:<id>"
    value: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallTombstone(Base):
    """What stays of a call whose personal data was erased: which recording it was, when and
    under which policy it was purged, by whom, and whether the audio file went too."""

    __tablename__ = "call_tombstones"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_pk: Mapped[int] = mapped_column(Integer, unique=True)  # calls.id, without a foreign key: it outlives it
    call_id: Mapped[str] = mapped_column(String(128))
    recording_sha256: Mapped[str] = mapped_column(String(64), index=True)
    business_line: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column()
    purged_at: Mapped[datetime] = mapped_column(default=utcnow)
    policy: Mapped[dict] = mapped_column(default=dict)  # why: retention days, --before, an erasure request
    actor: Mapped[str] = mapped_column(String(64))
    audio_deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEvent(Base):
    """Append-only and hash-chained: ``hash = sha256(prev_hash + canonical JSON of the row)``.
    No code path updates or deletes these rows."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    """A signed statement that the audit chain's head was ``(seq, head_hash)`` at ``ts``
    (:func:`qa.audit.checkpoint`); each names the one before it (``prev``: sha256 of its
    signature), so checkpoints cannot be dropped from the middle unnoticed."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    prev: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128), unique=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # inspector | senior | auditor | admin
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # raised by logout: every session cookie issued before carries an older number and ends
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchRun(Base):
    __tablename__ = "batch_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # demo | run | nightly | ingest | transcribe ...
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | partial | failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    host: Mapped[str | None] = mapped_column(String(128))
    pid: Mapped[int | None] = mapped_column(Integer)
    options: Mapped[dict] = mapped_column(default=dict)
    counts: Mapped[dict] = mapped_column(default=dict)
    timings: Mapped[dict] = mapped_column(default=dict)
    versions: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class RunLock(Base):
    """At most one row per lock name; a stale holder (dead pid on this host, or an expired
    heartbeat) can be taken over."""

    __tablename__ = "run_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
