"""Review queues and the inspector workflow: claims, decisions per finding, closing with a
verdict, appeals, assignment.

Every function takes the caller's ``Session`` and an :class:`Actor`; the caller commits. Each
action writes its audit event (:mod:`qa.audit`) in the same transaction, so an action without
its audit record cannot be committed.

Exclusive claims: on PostgreSQL the next item is picked with ``FOR UPDATE SKIP LOCKED`` (two
inspectors never wait on or take the same row); on SQLite the transaction first takes the
database write lock (:func:`qa.audit.lock_for_write`, the effect of ``BEGIN IMMEDIATE``) and
the claim is a conditional ``UPDATE ... WHERE status = 'open'`` whose row count is checked.
On SQLite, call the write functions before reading anything else in the transaction; see
:func:`qa.audit.lock_for_write`.

Item life cycle: ``open`` -> ``claimed`` (-> ``open`` on release or claim expiry) ->
``closed`` (verdict pass/fail) -> ``appealed`` (fail only, within the appeal window) ->
``appeal_decided`` (a senior upholds or overturns).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Sequence

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..config import Settings
from ..storage import is_sqlite
from ..domain import SEVERITIES
from ..errors import NotFound, PermissionDenied, ReviewError
from ..storage.models import Appeal, Assessment, AuditEvent, Call, Finding, ReviewDecision, ReviewItem, User
from ..rules.taxonomy import load_taxonomy
from .routing import SYSTEM_ACTOR, TIERS, TierPolicy, score_findings

log = logging.getLogger("qa.review")

__all__ = ['APPEAL_OUTCOMES', 'Actor', 'DECISIONS', 'FindingView', 'ItemDetail', 'QueueEntry', 'REVIEWER_ROLES', 'ROLES', 'ReviewPolicy', 'SUPERVISOR_ROLES', 'TierCount', 'VERDICTS', 'add_finding', 'assign', 'assign_round_robin', 'categories', 'claim', 'claim_next', 'close', 'decide', 'decide_appeal', 'expire_claims', 'find_appeal', 'get_item', 'item_findings', 'list_queue', 'next_open_query', 'open_appeal', 'queue_counts', 'release']

ROLES = ("inspector", "senior", "auditor", "admin", "agent")
REVIEWER_ROLES = ("inspector", "senior", "admin")
SUPERVISOR_ROLES = ("senior", "admin")
DECISIONS = ("confirmed", "rejected")
VERDICTS = ("pass", "fail")
APPEAL_OUTCOMES = ("upheld", "overturned")
_CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Actor:
    """Who acts. ``role`` is a user role, or ``agent`` for the call-center agent side (whose
    ``username`` is the agent id on the call)."""

    username: str
    role: str

    def validate(self) -> None:
        if not self.username or not self.username.strip():
            raise ValueError("actor needs a username")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")


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


@dataclass(frozen=True)
class QueueEntry:
    item_id: int
    call_id: str
    agent_id: str | None
    tier: str
    reason: str
    status: str
    due_at: datetime
    overdue: bool
    score: float | None
    assigned_to: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None


@dataclass(frozen=True)
class TierCount:
    tier: str
    open: int
    claimed: int
    overdue: int


@dataclass(frozen=True)
class FindingView:
    finding: Finding
    decisions: tuple[ReviewDecision, ...]  # of this item, by any reviewer
    added_by_inspector: bool


@dataclass(frozen=True)
class ItemDetail:
    item: ReviewItem
    call: Call
    assessment: Assessment
    findings: tuple[FindingView, ...]
    appeals: tuple[Appeal, ...]
    history: tuple[AuditEvent, ...] = field(default_factory=tuple)


# --- helpers ---------------------------------------------------------------------------------

def _now(now: datetime | None) -> datetime:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc) if now.tzinfo else now.replace(tzinfo=timezone.utc)


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for the UTC values we store.
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _require(actor: Actor, roles: Sequence[str], what: str) -> None:
    actor.validate()
    if actor.role not in roles:
        raise PermissionDenied(f"{actor.username} ({actor.role}) may not {what}; needs {' or '.join(roles)}")


def _state(item: ReviewItem) -> dict:
    return {"status": item.status, "assigned_to": item.assigned_to, "claimed_by": item.claimed_by,
            "claim_expires_at": item.claim_expires_at, "verdict": item.verdict,
            "final_score": item.final_score}


def _load_item(session: Session, item_id: int, *, lock: bool = False) -> ReviewItem:
    stmt = select(ReviewItem).where(ReviewItem.id == item_id)
    if lock:
        stmt = stmt.with_for_update()
    item = session.execute(stmt.execution_options(populate_existing=True)).scalars().first()
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    return item


def _claim_is_live(item: ReviewItem, now: datetime) -> bool:
    return item.status == "claimed" and (_aware(item.claim_expires_at) or now) > now


def _held_by(item: ReviewItem, actor: Actor, now: datetime) -> None:
    """The item must be claimed by ``actor`` (an expired claim nobody else took still counts:
    the work is not lost because a coffee break ran long)."""
    if item.status != "claimed":
        raise ReviewError(f"review item {item.id} is {item.status}, not claimed; claim it first",
                          code="review.not_claimed")
    if item.claimed_by != actor.username:
        raise PermissionDenied(f"review item {item.id} is claimed by {item.claimed_by}, not {actor.username}")


def categories() -> dict[str, dict]:
    """The project's finding categories: id -> {id, role, kind, severity, desc}."""
    return {cid: asdict(cat) for cid, cat in load_taxonomy().items()}


# --- queue -----------------------------------------------------------------------------------

def list_queue(session: Session, *, tier: str | None = None, statuses: Sequence[str] = ("open", "claimed"),
               overdue_only: bool = False, assigned_to: str | None = None, now: datetime | None = None,
               limit: int = 100, offset: int = 0) -> list[QueueEntry]:
    """Items in work order: tier, then due time (earliest first)."""
    now = _now(now)
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    stmt = (select(ReviewItem, Call.call_id, Call.agent_id, Assessment.score)
            .join(Call, Call.id == ReviewItem.call_id)
            .join(Assessment, Assessment.id == ReviewItem.assessment_id)
            .where(ReviewItem.status.in_(list(statuses)))
            .order_by(ReviewItem.tier, ReviewItem.due_at, ReviewItem.id).limit(limit).offset(offset))
    if tier is not None:
        stmt = stmt.where(ReviewItem.tier == tier)
    if overdue_only:
        stmt = stmt.where(ReviewItem.due_at < now)
    if assigned_to is not None:
        stmt = stmt.where(ReviewItem.assigned_to == assigned_to)
    entries = []
    for item, call_id, agent_id, score in session.execute(stmt):
        due = _aware(item.due_at)
        entries.append(QueueEntry(
            item_id=item.id, call_id=call_id, agent_id=agent_id, tier=item.tier, reason=item.reason,
            status=item.status, due_at=due, overdue=item.status in ("open", "claimed") and due < now,
            score=score, assigned_to=item.assigned_to, claimed_by=item.claimed_by,
            claim_expires_at=_aware(item.claim_expires_at)))
    return entries


def queue_counts(session: Session, now: datetime | None = None) -> list[TierCount]:
    """Open, claimed and overdue items per tier."""
    now = _now(now)
    counts = {t: {"open": 0, "claimed": 0, "overdue": 0} for t in TIERS}
    base = select(ReviewItem.tier, ReviewItem.status, func.count()).where(ReviewItem.status.in_(("open", "claimed")))
    for tier, status, n in session.execute(base.group_by(ReviewItem.tier, ReviewItem.status)):
        counts.setdefault(tier, {"open": 0, "claimed": 0, "overdue": 0})[status] = n
    overdue = base.where(ReviewItem.due_at < now).group_by(ReviewItem.tier, ReviewItem.status)
    for tier, _status, n in session.execute(overdue):
        counts[tier]["overdue"] += n
    return [TierCount(t, c["open"], c["claimed"], c["overdue"]) for t, c in sorted(counts.items())]


# --- claims ----------------------------------------------------------------------------------

def expire_claims(session: Session, now: datetime | None = None) -> int:
    """Reopen items whose claim expired; returns how many. Called by :func:`claim_next`, and
    usable from a scheduler. Rows another transaction is working on are skipped."""
    now = _now(now)
    audit.lock_for_write(session)
    stmt = (select(ReviewItem).where(ReviewItem.status == "claimed", ReviewItem.claim_expires_at < now)
            .order_by(ReviewItem.id))
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    expired = list(session.scalars(stmt))
    for item in expired:
        before = _state(item)
        item.status, item.claimed_by, item.claimed_at, item.claim_expires_at = "open", None, None, None
        audit.append(session, SYSTEM_ACTOR, "review.claim_expired", "review_item", item.id,
                     before, _state(item), now=now)
    if expired:
        session.flush()
        log.info("%d expired claim(s) reopened", len(expired))
    return len(expired)


def _take(session: Session, item_id: int, actor: Actor, policy: ReviewPolicy, now: datetime) -> ReviewItem | None:
    """Conditional claim: only succeeds while the row is still open (checked by row count)."""
    expires = now + timedelta(minutes=policy.claim_ttl_minutes)
    # The row count check is "did RETURNING give a row": none when another claimer got there first.
    item = session.scalars(
        update(ReviewItem).where(ReviewItem.id == item_id, ReviewItem.status == "open")
        .values(status="claimed", claimed_by=actor.username, claimed_at=now, claim_expires_at=expires)
        .returning(ReviewItem),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).first()
    if item is None:
        return None
    audit.append(session, actor.username, "review.claim", "review_item", item_id,
                 {"status": "open", "assigned_to": item.assigned_to}, _state(item), now=now)
    return item


def next_open_query(username: str, tier: str | None = None, *, skip_locked: bool = True) -> Select:
    """The statement :func:`claim_next` uses to pick an item: it walks the ``ix_review_queue``
    index (status, tier, due_at) and stops at the first match (also used by the benchmark's
    EXPLAIN)."""
    stmt = (select(ReviewItem.id)
            .where(ReviewItem.status == "open",
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
    _require(actor, REVIEWER_ROLES, "claim review items")
    policy.validate()
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    now = _now(now)
    audit.lock_for_write(session)
    expire_claims(session, now)
    stmt = next_open_query(actor.username, tier, skip_locked=not is_sqlite(session))
    for _ in range(_CLAIM_ATTEMPTS):
        item_id = session.scalar(stmt)
        if item_id is None:
            return None
        item = _take(session, item_id, actor, policy, now)
        if item is not None:
            log.debug("%s claimed item %d", actor.username, item_id)
            return item
    raise ReviewError("could not claim an item: the queue changed under every attempt; retry",
                      code="review.contended")


def claim(session: Session, actor: Actor, item_id: int, policy: ReviewPolicy,
          now: datetime | None = None) -> ReviewItem:
    """Claim one given item (or renew one's own claim). Items assigned to someone else can only
    be taken by a senior or admin."""
    _require(actor, REVIEWER_ROLES, "claim review items")
    policy.validate()
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    if item.status == "claimed" and item.claimed_by != actor.username and _claim_is_live(item, now):
        raise ReviewError(f"review item {item_id} is claimed by {item.claimed_by} until "
                          f"{_aware(item.claim_expires_at):%Y-%m-%d %H:%M} UTC", code="review.claimed")
    if item.status not in ("open", "claimed"):
        raise ReviewError(f"review item {item_id} is {item.status}; it cannot be claimed", code="review.state")
    if item.assigned_to not in (None, actor.username) and actor.role not in SUPERVISOR_ROLES:
        raise PermissionDenied(f"review item {item_id} is assigned to {item.assigned_to}")
    before = _state(item)
    item.status, item.claimed_by, item.claimed_at = "claimed", actor.username, now
    item.claim_expires_at = now + timedelta(minutes=policy.claim_ttl_minutes)
    session.flush()
    audit.append(session, actor.username, "review.claim", "review_item", item.id, before, _state(item), now=now)
    return item


def release(session: Session, actor: Actor, item_id: int, now: datetime | None = None) -> ReviewItem:
    """Give a claimed item back to the queue (one's own claim; a senior or admin may release any)."""
    _require(actor, REVIEWER_ROLES, "release review items")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    if item.status != "claimed":
        raise ReviewError(f"review item {item_id} is {item.status}, not claimed", code="review.not_claimed")
    if item.claimed_by != actor.username and actor.role not in SUPERVISOR_ROLES:
        raise PermissionDenied(f"review item {item_id} is claimed by {item.claimed_by}, not {actor.username}")
    before = _state(item)
    item.status, item.claimed_by, item.claimed_at, item.claim_expires_at = "open", None, None, None
    session.flush()
    audit.append(session, actor.username, "review.release", "review_item", item.id, before, _state(item), now=now)
    return item


# --- assignment ------------------------------------------------------------------------------

def assign(session: Session, actor: Actor, item_id: int, username: str | None,
           now: datetime | None = None) -> ReviewItem:
    """Assign an open item to an active inspector (``None`` clears the assignment)."""
    _require(actor, SUPERVISOR_ROLES, "assign review items")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    if item.status not in ("open", "claimed"):
        raise ReviewError(f"review item {item_id} is {item.status}; it cannot be assigned", code="review.state")
    if username is not None:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None or not user.active or user.role not in REVIEWER_ROLES:
            raise ReviewError(f"{username} is not an active inspector", code="review.assignee")
    before = _state(item)
    item.assigned_to = username
    session.flush()
    audit.append(session, actor.username, "review.assign", "review_item", item.id, before, _state(item), now=now)
    return item


def assign_round_robin(session: Session, actor: Actor, *, tier: str | None = None,
                       now: datetime | None = None) -> dict[int, str]:
    """Deal the open, unassigned items (in work order) to the active inspectors in turn,
    continuing after whoever was assigned last. Returns item id -> inspector."""
    _require(actor, SUPERVISOR_ROLES, "assign review items")
    now = _now(now)
    audit.lock_for_write(session)
    inspectors = list(session.scalars(
        select(User.username).where(User.active.is_(True), User.role.in_(("inspector", "senior")))
        .order_by(User.username)))
    if not inspectors:
        raise ReviewError("no active inspectors to assign to", code="review.no_inspectors")
    last = session.scalars(select(ReviewItem.assigned_to).where(ReviewItem.assigned_to.in_(inspectors))
                           .order_by(ReviewItem.id.desc()).limit(1)).first()
    start = (inspectors.index(last) + 1) % len(inspectors) if last in inspectors else 0
    stmt = (select(ReviewItem).where(ReviewItem.status == "open", ReviewItem.assigned_to.is_(None))
            .order_by(ReviewItem.tier, ReviewItem.due_at, ReviewItem.id))
    if tier is not None:
        stmt = stmt.where(ReviewItem.tier == tier)
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    assigned: dict[int, str] = {}
    for n, item in enumerate(session.scalars(stmt).all()):
        before = _state(item)
        item.assigned_to = inspectors[(start + n) % len(inspectors)]
        assigned[item.id] = item.assigned_to
        audit.append(session, actor.username, "review.assign", "review_item", item.id, before, _state(item),
                     now=now)
    session.flush()
    return assigned


# --- decisions -------------------------------------------------------------------------------

def _assessment(session: Session, item: ReviewItem) -> Assessment:
    return session.get(Assessment, item.assessment_id)


def item_findings(session: Session, item: ReviewItem) -> list[Finding]:
    """The findings under review: the assessed analysis's rule findings plus those inspectors
    added on this item."""
    assessment = _assessment(session, item)
    added_ids = select(ReviewDecision.finding_id).where(ReviewDecision.review_item_id == item.id,
                                                        ReviewDecision.decision == "added")
    stmt = (select(Finding).where(or_(and_(Finding.analysis_id == assessment.analysis_id, Finding.source == "rule"),
                                      Finding.id.in_(added_ids)))
            .order_by(Finding.start_s.is_(None), Finding.start_s, Finding.id))
    return list(session.scalars(stmt))


def decide(session: Session, actor: Actor, item_id: int, finding_id: int, decision: str,
           comment: str | None = None, now: datetime | None = None) -> ReviewDecision:
    """Confirm a finding or reject it as a false positive, on an item ``actor`` has claimed.
    Deciding again replaces one's earlier decision (both are in the audit log)."""
    _require(actor, REVIEWER_ROLES, "decide findings")
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    _held_by(item, actor, now)
    if finding_id not in {f.id for f in item_findings(session, item)}:
        raise NotFound(f"finding {finding_id} is not under review in item {item_id}")
    row = session.scalars(select(ReviewDecision).where(
        ReviewDecision.review_item_id == item.id, ReviewDecision.finding_id == finding_id,
        ReviewDecision.reviewer == actor.username)).first()
    if row is not None and row.decision == "added":
        raise ReviewError(f"finding {finding_id} was added by {actor.username}; it needs no decision",
                          code="review.added")
    before = None if row is None else {"decision": row.decision, "comment": row.comment}
    if row is None:
        row = ReviewDecision(review_item_id=item.id, finding_id=finding_id, reviewer=actor.username,
                             decision=decision, comment=comment, created_at=now)
        session.add(row)
    else:
        row.decision, row.comment, row.created_at = decision, comment, now
    session.flush()
    audit.append(session, actor.username, "review.decide", "finding", finding_id, before,
                 {"review_item_id": item.id, "decision": decision, "comment": comment}, now=now)
    return row


def add_finding(session: Session, actor: Actor, item_id: int, *, category: str, severity: str | None = None,
                start_s: float | None = None, end_s: float | None = None, role: str | None = None,
                comment: str | None = None, matched_text: str | None = None,
                now: datetime | None = None) -> Finding:
    """Record a problem the system missed: a ``Finding`` with ``source='inspector'`` (category
    from the taxonomy; severity defaults to the category's) and an ``added`` decision."""
    _require(actor, REVIEWER_ROLES, "add findings")
    cat = load_taxonomy().get(category)
    if cat is None:
        raise ReviewError(f"unknown category {category!r}; see qa/data/taxonomy.yaml", code="review.category")
    severity = severity or cat.severity
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if start_s is not None and (start_s < 0 or (end_s is not None and end_s < start_s)):
        raise ValueError(f"bad time span {start_s}..{end_s}")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    _held_by(item, actor, now)
    finding = Finding(
        analysis_id=None, call_id=item.call_id, source="inspector", rule_id=f"inspector:{category}",
        category=category, severity=severity, role=role or cat.role, start_s=start_s,
        end_s=end_s if end_s is not None else start_s, matched_text=matched_text, evidence=comment,
        details={"added_by": actor.username, "review_item_id": item.id}, created_at=now,
    )
    session.add(finding)
    session.flush()
    session.add(ReviewDecision(review_item_id=item.id, finding_id=finding.id, decision="added",
                               comment=comment, reviewer=actor.username, created_at=now))
    session.flush()
    audit.append(session, actor.username, "review.add_finding", "finding", finding.id, None,
                 {"review_item_id": item.id, "category": category, "severity": severity,
                  "start_s": start_s, "end_s": finding.end_s, "comment": comment}, now=now)
    return finding


def _kept_findings(session: Session, item: ReviewItem, reviewer: str) -> tuple[list[Finding], list[int]]:
    """(findings the reviewer kept: confirmed or added, ids of rule findings still undecided)."""
    findings = item_findings(session, item)
    decided = {d.finding_id: d.decision for d in session.scalars(select(ReviewDecision).where(
        ReviewDecision.review_item_id == item.id, ReviewDecision.reviewer == reviewer))}
    kept = [f for f in findings if decided.get(f.id) in ("confirmed", "added")]
    undecided = [f.id for f in findings if f.source == "rule" and f.id not in decided]
    return kept, undecided


def _policy_of(assessment: Assessment) -> TierPolicy:
    doc = dict(assessment.policy or {})
    known = set(TierPolicy.__dataclass_fields__)
    if "complaint_positive_labels" in doc:
        doc["complaint_positive_labels"] = tuple(doc["complaint_positive_labels"])
    return TierPolicy(**{k: v for k, v in doc.items() if k in known})


def close(session: Session, actor: Actor, item_id: int, verdict: str | None = None,
          final_score: float | None = None, comment: str | None = None,
          policy: ReviewPolicy | None = None, now: datetime | None = None) -> ReviewItem:
    """Close a claimed item with the call verdict and final score.

    Without ``verdict``: ``fail`` when a kept (confirmed or added) finding is fatal or major,
    else ``pass``. Without ``final_score``: the assessment policy's score of the kept findings."""
    _require(actor, REVIEWER_ROLES, "close review items")
    policy = policy or ReviewPolicy()
    policy.validate()
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be pass or fail, got {verdict!r}")
    if final_score is not None and not 0.0 <= final_score <= 100.0:
        raise ValueError(f"final score must be between 0 and 100, got {final_score}")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    _held_by(item, actor, now)
    kept, undecided = _kept_findings(session, item, actor.username)
    if undecided and policy.require_all_decided:
        raise ReviewError(f"review item {item_id}: decide finding(s) {', '.join(map(str, undecided))} "
                          "before closing", code="review.undecided")
    if verdict is None:
        verdict = "fail" if any(f.severity in ("fatal", "major") for f in kept) else "pass"
    if final_score is None:
        final_score = score_findings(kept, _policy_of(_assessment(session, item)))
    before = _state(item)
    item.status, item.verdict, item.final_score, item.comment = "closed", verdict, float(final_score), comment
    item.closed_by, item.closed_at, item.claim_expires_at = actor.username, now, None
    session.flush()
    after = _state(item) | {"comment": comment, "kept_findings": [f.id for f in kept]}
    audit.append(session, actor.username, "review.close", "review_item", item.id, before, after, now=now)
    log.info("item %d closed by %s: %s %.1f", item.id, actor.username, verdict, final_score)
    return item


# --- appeals ---------------------------------------------------------------------------------

def open_appeal(session: Session, actor: Actor, item_id: int, reason: str, policy: ReviewPolicy,
                now: datetime | None = None) -> Appeal:
    """The agent side appeals a failed call within the appeal window. ``actor`` is the agent
    (role ``agent``, username = the call's agent id) or a senior/admin filing on their behalf."""
    actor.validate()
    policy.validate()
    if not reason or not reason.strip():
        raise ValueError("an appeal needs a reason")
    now = _now(now)
    audit.lock_for_write(session)
    item = _load_item(session, item_id, lock=True)
    call = session.get(Call, item.call_id)
    if actor.role == "agent":
        if call.agent_id != actor.username:
            raise PermissionDenied(f"agent {actor.username} may only appeal their own calls "
                                   f"(call {call.call_id} is agent {call.agent_id}'s)")
    elif actor.role not in SUPERVISOR_ROLES:
        raise PermissionDenied(f"{actor.username} ({actor.role}) may not open appeals")
    if item.status != "closed" or item.verdict != "fail":
        raise ReviewError(f"review item {item_id} is {item.status} ({item.verdict or 'no verdict'}); only "
                          "closed items with a fail verdict can be appealed", code="review.not_appealable")
    deadline = _aware(item.closed_at) + timedelta(days=policy.appeal_window_days)
    if now > deadline:
        raise ReviewError(f"the appeal window of review item {item_id} closed at "
                          f"{deadline:%Y-%m-%d %H:%M} UTC", code="review.appeal_window")
    appeal = Appeal(review_item_id=item.id, opened_by=actor.username, reason=reason.strip(), opened_at=now,
                    status="open")
    session.add(appeal)
    before = _state(item)
    item.status = "appealed"
    session.flush()
    audit.append(session, actor.username, "appeal.open", "appeal", appeal.id, None,
                 {"review_item_id": item.id, "reason": appeal.reason, "item": _state(item), "item_before": before},
                 now=now)
    return appeal


def decide_appeal(session: Session, actor: Actor, appeal_id: int, outcome: str, reason: str,
                  final_score: float | None = None, now: datetime | None = None) -> Appeal:
    """A senior inspector upholds the verdict or overturns it (verdict becomes ``pass``;
    ``final_score`` replaces the score when given). The senior must not be the reviewer who
    closed the item: an appeal is a second pair of eyes."""
    _require(actor, ("senior",), "decide appeals")
    if outcome not in APPEAL_OUTCOMES:
        raise ValueError(f"outcome must be upheld or overturned, got {outcome!r}")
    if not reason or not reason.strip():
        raise ValueError("an appeal decision needs a reason")
    if final_score is not None and not 0.0 <= final_score <= 100.0:
        raise ValueError(f"final score must be between 0 and 100, got {final_score}")
    now = _now(now)
    audit.lock_for_write(session)
    appeal = session.execute(select(Appeal).where(Appeal.id == appeal_id).with_for_update()
                             .execution_options(populate_existing=True)).scalars().first()
    if appeal is None:
        raise NotFound(f"appeal {appeal_id} does not exist")
    if appeal.status != "open":
        raise ReviewError(f"appeal {appeal_id} was already decided ({appeal.status})", code="review.appeal_decided")
    item = _load_item(session, appeal.review_item_id, lock=True)
    if item.closed_by == actor.username:
        raise PermissionDenied(f"{actor.username} closed review item {item.id}; another senior must decide "
                               "the appeal")
    before_item = _state(item)
    appeal.status, appeal.decided_by, appeal.decision_reason, appeal.decided_at = (
        outcome, actor.username, reason.strip(), now)
    item.status = "appeal_decided"
    if outcome == "overturned":
        item.verdict = "pass"
        if final_score is not None:
            item.final_score = float(final_score)
    session.flush()
    audit.append(session, actor.username, "appeal.decide", "appeal", appeal.id, {"status": "open"},
                 {"status": outcome, "reason": appeal.decision_reason, "review_item_id": item.id,
                  "item_before": before_item, "item": _state(item)}, now=now)
    return appeal


# --- reading ---------------------------------------------------------------------------------

def get_item(session: Session, item_id: int, *, with_history: bool = True) -> ItemDetail:
    """An item with its call, assessment, findings (and every decision on them), appeals and,
    optionally, its audit history."""
    item = _load_item(session, item_id)
    decisions = list(session.scalars(select(ReviewDecision).where(ReviewDecision.review_item_id == item.id)
                                     .order_by(ReviewDecision.id)))
    views = tuple(
        FindingView(f, tuple(d for d in decisions if d.finding_id == f.id), f.source == "inspector")
        for f in item_findings(session, item))
    appeals = tuple(session.scalars(select(Appeal).where(Appeal.review_item_id == item.id).order_by(Appeal.id)))
    history: tuple[AuditEvent, ...] = ()
    if with_history:
        appeal_ids = [str(a.id) for a in appeals]
        finding_ids = [str(v.finding.id) for v in views]
        history = tuple(session.scalars(select(AuditEvent).where(or_(
            and_(AuditEvent.object_type == "review_item", AuditEvent.object_id == str(item.id)),
            and_(AuditEvent.object_type == "appeal", AuditEvent.object_id.in_(appeal_ids)),
            and_(AuditEvent.object_type == "finding", AuditEvent.object_id.in_(finding_ids)),
        )).order_by(AuditEvent.seq)))
    return ItemDetail(item=item, call=session.get(Call, item.call_id), assessment=_assessment(session, item),
                      findings=views, appeals=appeals, history=history)


def find_appeal(session: Session, item_id: int) -> Appeal:
    """The open appeal of an item (what a senior decides)."""
    appeal = session.scalars(select(Appeal).where(Appeal.review_item_id == item_id, Appeal.status == "open")
                             .order_by(Appeal.id.desc())).first()
    if appeal is None:
        raise NotFound(f"review item {item_id} has no open appeal")
    return appeal
