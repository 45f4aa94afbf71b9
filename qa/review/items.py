"""Review items as the workflow sees them: loading one under a row lock, the findings under
review, the item's detail page, and :func:`transition`, the one shape of every change to an
item (permission check, locked load, the change, its audit event with the state before and
after, all in the caller's transaction)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from .. import audit
from ..errors import NotFound, PermissionDenied, ReviewError
from ..permissions import Actor
from ..rules.scorecard import Scored
from ..rules.taxonomy import load_taxonomy
from ..storage.models import (
    Analysis,
    Appeal,
    Assessment,
    AuditEvent,
    Call,
    Finding,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
)

WAITING = (ReviewStatus.OPEN, ReviewStatus.CLAIMED)  # still in a queue
REVIEWED = (ReviewStatus.CLOSED, ReviewStatus.APPEALED, ReviewStatus.APPEAL_DECIDED)  # has a verdict


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


def state(item: ReviewItem) -> dict:
    """What the audit log records of an item before and after a change."""
    return {"status": item.status, "assigned_to": item.assigned_to, "claimed_by": item.claimed_by,
            "claim_expires_at": item.claim_expires_at, "verdict": item.verdict,
            "final_score": item.final_score}


def load_item(session: Session, item_pk: int, *, lock: bool = False) -> ReviewItem:
    stmt = select(ReviewItem).where(ReviewItem.id == item_pk)
    if lock:
        stmt = stmt.with_for_update()
    item = session.execute(stmt.execution_options(populate_existing=True)).scalars().first()
    if item is None:
        raise NotFound(f"review item {item_pk} does not exist")
    return item


@dataclass
class Transition:
    """One change being made to ``item``. The body of :func:`transition` may point the audit
    event at another object (a finding, an appeal) and say what it records; by default the
    event is about the item, with its state before and after."""

    item: ReviewItem
    before: dict | None
    object_type: str = "review_item"
    object_id: Any = None
    after: dict | None = None


@contextmanager
def transition(session: Session, actor: Actor, item_pk: int, action: str, capability: str, what: str,
               now: datetime) -> Iterator[Transition]:
    """Check ``actor`` may ``capability``, load and lock the item, let the body change it, then
    write the audit event ``action`` in the same transaction (the caller commits)."""
    actor.require(capability, what)
    item = load_item(session, item_pk, lock=True)
    change = Transition(item, state(item))
    yield change
    session.flush()
    audit.append(session, actor.username, action, change.object_type,
                 change.object_id if change.object_id is not None else item.id, change.before,
                 change.after if change.after is not None else state(item), now=now)


def held_by(item: ReviewItem, actor: Actor) -> None:
    """The item must be claimed by ``actor`` (an expired claim nobody else took still counts:
    the work is not lost because a coffee break ran long)."""
    if item.status != ReviewStatus.CLAIMED:
        raise ReviewError(f"review item {item.id} is {item.status}, not claimed; claim it first",
                          code="review.not_claimed")
    if item.claimed_by != actor.username:
        raise PermissionDenied(f"review item {item.id} is claimed by {item.claimed_by}, not {actor.username}")


def categories() -> dict[str, dict]:
    """The project's finding categories: id -> {id, role, kind, severity, desc, ...}."""
    return {cid: asdict(cat) for cid, cat in load_taxonomy().items()}


def assessment_of(session: Session, item: ReviewItem) -> Assessment:
    return session.get(Assessment, item.assessment_id)


def item_findings(session: Session, item: ReviewItem) -> list[Finding]:
    """The findings under review: the assessed analysis's rule findings plus those inspectors
    added on this item."""
    assessment = assessment_of(session, item)
    added_ids = select(ReviewDecision.finding_id).where(ReviewDecision.review_item_id == item.id,
                                                        ReviewDecision.decision == "added")
    stmt = (select(Finding).where(or_(and_(Finding.analysis_id == assessment.analysis_id, Finding.source == "rule"),
                                      Finding.id.in_(added_ids)))
            .order_by(Finding.start_s.is_(None), Finding.start_s, Finding.id))
    return list(session.scalars(stmt))


def get_item(session: Session, item_pk: int, *, with_history: bool = True) -> ItemDetail:
    """An item with its call, assessment, findings (and every decision on them), appeals and,
    optionally, its audit history."""
    item = load_item(session, item_pk)
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
    return ItemDetail(item=item, call=session.get(Call, item.call_id), assessment=assessment_of(session, item),
                      findings=views, appeals=appeals, history=history)


def scored(finding: Finding, analysis: Analysis | None) -> Scored:
    """A stored finding as the scorecard sees it: a rule finding costs what its analysis
    recorded for the rule; an inspector's finding what the scorecard charges for its severity.
    Its kind decides whether the agent answers for it (customer-side triggers do not)."""
    details = finding.details or {}
    kind = details.get("kind")
    if kind is None:
        cat = load_taxonomy().get(finding.category)
        kind = cat.kind if cat is not None else "violation"
    points = None
    if finding.source == "rule" and analysis is not None:
        recorded = ((analysis.scorecard or {}).get("items") or {}).get(finding.rule_id) or {}
        points = recorded.get("deduction")
    return Scored(finding.rule_id, finding.severity, kind, points)
