"""Review queues: exclusive claims and assignment (reading them: :mod:`.listing`).

Every function takes the caller's write session (:func:`qa.storage.write_session`) and an
:class:`~qa.permissions.Actor`; the caller commits. Each action writes its audit event in the
same transaction, so an action without its audit record cannot be committed.

Exclusive claims: on PostgreSQL the next item is picked with ``FOR UPDATE SKIP LOCKED`` (two
inspectors never wait on or take the same row); on SQLite the write session holds the
database write lock from its first statement, and the claim is a conditional
``UPDATE ... WHERE status = 'open'`` whose returned row is checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..config import Settings
from ..domain import TIERS
from ..errors import PermissionDenied, ReviewError
from ..permissions import Actor
from ..storage import is_sqlite
from ..storage.models import ReviewItem, ReviewStatus
from ..timeutil import utc_or_now
from .items import WAITING, state, transition
from .routing import SYSTEM_ACTOR
from .users import assignment_order

log = logging.getLogger(__name__)

_CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class ReviewPolicy:
    claim_ttl_minutes: float = 30.0
    appeal_window_days: float = 7.0
    # Each finding of the call must have a decision by the closing reviewer before closing.
    require_all_decided: bool = True

    def validate(self) -> None:
        if self.claim_ttl_minutes <= 0:
            raise ValueError(f"claim_ttl_minutes must be positive, got {self.claim_ttl_minutes}")
        if self.appeal_window_days < 0:
            raise ValueError(f"appeal_window_days must not be negative, got {self.appeal_window_days}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> ReviewPolicy:
        policy = cls(claim_ttl_minutes=settings.claim_ttl_minutes,
                     appeal_window_days=settings.appeal_window_days, **overrides)
        policy.validate()
        return policy


def _check_tier(tier: str | None) -> None:
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")


# --- claims ----------------------------------------------------------------------------------

def expire_claims(session: Session, now: datetime | None = None) -> int:
    """Reopen items whose claim expired; returns how many. Called by :func:`claim_next`, and
    usable from a scheduler. Rows another transaction is working on are skipped."""
    now = utc_or_now(now)
    stmt = (select(ReviewItem).where(ReviewItem.status == ReviewStatus.CLAIMED, ReviewItem.claim_expires_at < now)
            .order_by(ReviewItem.id))
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    expired = list(session.scalars(stmt))
    for item in expired:
        before = state(item)
        item.status, item.claimed_by, item.claimed_at, item.claim_expires_at = ReviewStatus.OPEN, None, None, None
        audit.append(session, SYSTEM_ACTOR, "review.claim_expired", "review_item", item.id,
                     before, state(item), now=now)
    if expired:
        session.flush()
        log.info("%d expired claim(s) reopened", len(expired))
    return len(expired)


def _take(session: Session, item_pk: int, actor: Actor, policy: ReviewPolicy, now: datetime) -> ReviewItem | None:
    """Conditional claim: only succeeds while the row is still open (checked by the returned row)."""
    expires = now + timedelta(minutes=policy.claim_ttl_minutes)
    # No row back means another claimer got there first.
    item = session.scalars(
        update(ReviewItem).where(ReviewItem.id == item_pk, ReviewItem.status == ReviewStatus.OPEN)
        .values(status=ReviewStatus.CLAIMED, claimed_by=actor.username, claimed_at=now, claim_expires_at=expires)
        .returning(ReviewItem),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).first()
    if item is None:
        return None
    audit.append(session, actor.username, "review.claim", "review_item", item_pk,
                 {"status": ReviewStatus.OPEN, "assigned_to": item.assigned_to}, state(item), now=now)
    return item


def next_open_query(username: str, tier: str | None = None, *, skip_locked: bool = True) -> Select:
    """The statement :func:`claim_next` uses to pick an item: it walks the ``ix_review_queue``
    index (status, tier, due_at) and stops at the first match (also used by the benchmark's
    EXPLAIN)."""
    stmt = (select(ReviewItem.id)
            .where(ReviewItem.status == ReviewStatus.OPEN,
                   or_(ReviewItem.assigned_to.is_(None), ReviewItem.assigned_to == username))
            .order_by(ReviewItem.tier, ReviewItem.due_at, ReviewItem.id).limit(1))
    if tier is not None:
        stmt = stmt.where(ReviewItem.tier == tier)
    if skip_locked:
        # PostgreSQL: rows locked by another claimer are skipped, not waited for.
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


def claim_next(session: Session, actor: Actor, policy: ReviewPolicy, *, tier: str | None = None,
               now: datetime | None = None) -> ReviewItem | None:
    """Claim the next open item for ``actor`` (earliest tier, then earliest due; items assigned
    to someone else are left to them). ``None`` when the queue is empty."""
    actor.require("review.work", "claim review items")
    policy.validate()
    _check_tier(tier)
    now = utc_or_now(now)
    expire_claims(session, now)
    stmt = next_open_query(actor.username, tier, skip_locked=not is_sqlite(session))
    for _ in range(_CLAIM_ATTEMPTS):
        item_pk = session.scalar(stmt)
        if item_pk is None:
            return None
        item = _take(session, item_pk, actor, policy, now)
        if item is not None:
            log.debug("%s claimed item %d", actor.username, item_pk)
            return item
    raise ReviewError("could not claim an item: the queue changed under every attempt; retry",
                      code="review.contended")


def claim(session: Session, actor: Actor, item_pk: int, policy: ReviewPolicy,
          now: datetime | None = None) -> ReviewItem:
    """Claim one given item (or renew one's own claim). Items assigned to someone else can only
    be taken by a senior or admin."""
    policy.validate()
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.claim", "review.work", "claim review items", now) as t:
        item = t.item
        live = item.status == ReviewStatus.CLAIMED and (item.claim_expires_at or now) > now
        if live and item.claimed_by != actor.username:
            raise ReviewError(f"review item {item_pk} is claimed by {item.claimed_by} until "
                              f"{item.claim_expires_at:%Y-%m-%d %H:%M} UTC", code="review.claimed")
        if item.status not in WAITING:
            raise ReviewError(f"review item {item_pk} is {item.status}; it cannot be claimed", code="review.state")
        if item.assigned_to not in (None, actor.username) and not actor.can("review.supervise"):
            raise PermissionDenied(f"review item {item_pk} is assigned to {item.assigned_to}")
        item.status, item.claimed_by, item.claimed_at = ReviewStatus.CLAIMED, actor.username, now
        item.claim_expires_at = now + timedelta(minutes=policy.claim_ttl_minutes)
    return item


def release(session: Session, actor: Actor, item_pk: int, now: datetime | None = None) -> ReviewItem:
    """Give a claimed item back to the queue (one's own claim; a senior or admin may release any)."""
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.release", "review.work", "release review items", now) as t:
        item = t.item
        if item.status != ReviewStatus.CLAIMED:
            raise ReviewError(f"review item {item_pk} is {item.status}, not claimed", code="review.not_claimed")
        if item.claimed_by != actor.username and not actor.can("review.supervise"):
            raise PermissionDenied(f"review item {item_pk} is claimed by {item.claimed_by}, not {actor.username}")
        item.status, item.claimed_by, item.claimed_at, item.claim_expires_at = ReviewStatus.OPEN, None, None, None
    return item


# --- assignment ------------------------------------------------------------------------------

def assign(session: Session, actor: Actor, item_pk: int, username: str | None,
           now: datetime | None = None) -> ReviewItem:
    """Assign an open item to an active inspector (``None`` clears the assignment)."""
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.assign", "review.supervise", "assign review items", now) as t:
        if t.item.status not in WAITING:
            raise ReviewError(f"review item {item_pk} is {t.item.status}; it cannot be assigned", code="review.state")
        if username is not None and username not in assignment_order(session, capability="review.work"):
            raise ReviewError(f"{username} is not an active inspector", code="review.assignee")
        t.item.assigned_to = username
    return t.item


def assign_round_robin(session: Session, actor: Actor, *, tier: str | None = None,
                       now: datetime | None = None) -> dict[int, str]:
    """Deal the open, unassigned items (in work order) to the active inspectors in turn,
    continuing after whoever was assigned last. Returns item id -> inspector."""
    actor.require("review.supervise", "assign review items")
    _check_tier(tier)
    now = utc_or_now(now)
    inspectors = assignment_order(session)
    if not inspectors:
        raise ReviewError("no active inspectors to assign to", code="review.no_inspectors")
    stmt = (select(ReviewItem).where(ReviewItem.status == ReviewStatus.OPEN, ReviewItem.assigned_to.is_(None))
            .order_by(ReviewItem.tier, ReviewItem.due_at, ReviewItem.id))
    if tier is not None:
        stmt = stmt.where(ReviewItem.tier == tier)
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    assigned: dict[int, str] = {}
    for n, item in enumerate(session.scalars(stmt).all()):
        before = state(item)
        item.assigned_to = inspectors[n % len(inspectors)]
        assigned[item.id] = item.assigned_to
        audit.append(session, actor.username, "review.assign", "review_item", item.id, before, state(item), now=now)
    session.flush()
    return assigned


