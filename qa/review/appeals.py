"""Appeals (申诉): the agent side contests a failed call within the appeal window; a senior
who did not close the item upholds or overturns the verdict."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..domain import APPEAL_OUTCOMES
from ..errors import NotFound, PermissionDenied, ReviewError
from ..permissions import AGENT, Actor
from ..storage.models import Appeal, Call, ReviewStatus
from ..timeutil import utc_or_now
from .items import load_item, state, transition
from .queue import ReviewPolicy


def open_appeal(session: Session, actor: Actor, item_pk: int, reason: str, policy: ReviewPolicy,
                now: datetime | None = None) -> Appeal:
    """The agent side appeals a failed call within the appeal window. ``actor`` is the agent
    (role ``agent``, username = the call's agent id) or a senior/admin filing on their behalf."""
    policy.validate()
    if not reason or not reason.strip():
        raise ValueError("an appeal needs a reason")
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "appeal.open", "appeal.open", "open appeals", now) as t:
        item = t.item
        call = session.get(Call, item.call_id)
        if actor.role == AGENT and call.agent_id != actor.username:
            raise PermissionDenied(f"agent {actor.username} may only appeal their own calls "
                                   f"(call {call.call_id} is agent {call.agent_id}'s)")
        if item.status != ReviewStatus.CLOSED or item.verdict != "fail":
            raise ReviewError(f"review item {item_pk} is {item.status} ({item.verdict or 'no verdict'}); only "
                              "closed items with a fail verdict can be appealed", code="review.not_appealable")
        deadline = item.closed_at + timedelta(days=policy.appeal_window_days)
        if now > deadline:
            raise ReviewError(f"the appeal window of review item {item_pk} closed at "
                              f"{deadline:%Y-%m-%d %H:%M} UTC", code="review.appeal_window")
        appeal = Appeal(review_item_id=item.id, opened_by=actor.username, reason=reason.strip(), opened_at=now,
                        status="open")
        session.add(appeal)
        item_before = t.before
        item.status = ReviewStatus.APPEALED
        session.flush()
        t.object_type, t.object_id, t.before = "appeal", appeal.id, None
        t.after = {"review_item_id": item.id, "reason": appeal.reason, "item": state(item), "item_before": item_before}
    return appeal


def decide_appeal(session: Session, actor: Actor, appeal_pk: int, outcome: str, reason: str,
                  final_score: float | None = None, now: datetime | None = None) -> Appeal:
    """A senior inspector upholds the verdict or overturns it (verdict becomes ``pass``;
    ``final_score`` replaces the score when given). The senior must not be the reviewer who
    closed the item: an appeal is a second pair of eyes."""
    actor.require("appeal.decide", "decide appeals")
    if outcome not in APPEAL_OUTCOMES:
        raise ValueError(f"outcome must be upheld or overturned, got {outcome!r}")
    if not reason or not reason.strip():
        raise ValueError("an appeal decision needs a reason")
    if final_score is not None and not 0.0 <= final_score <= 100.0:
        raise ValueError(f"final score must be between 0 and 100, got {final_score}")
    now = utc_or_now(now)
    appeal = session.execute(select(Appeal).where(Appeal.id == appeal_pk).with_for_update()
                             .execution_options(populate_existing=True)).scalars().first()
    if appeal is None:
        raise NotFound(f"appeal {appeal_pk} does not exist")
    if appeal.status != "open":
        raise ReviewError(f"appeal {appeal_pk} was already decided ({appeal.status})", code="review.appeal_decided")
    item = load_item(session, appeal.review_item_id, lock=True)
    if item.closed_by == actor.username:
        raise PermissionDenied(f"{actor.username} closed review item {item.id}; another senior must decide "
                               "the appeal")
    if appeal.opened_by == actor.username:
        raise PermissionDenied(f"{actor.username} filed appeal {appeal_pk}; another senior must decide it")
    before_item = state(item)
    appeal.status, appeal.decided_by, appeal.decision_reason, appeal.decided_at = (
        outcome, actor.username, reason.strip(), now)
    item.status = ReviewStatus.APPEAL_DECIDED
    if outcome == "overturned":
        item.verdict = "pass"
        if final_score is not None:
            item.final_score = float(final_score)
    session.flush()
    audit.append(session, actor.username, "appeal.decide", "appeal", appeal.id, {"status": "open"},
                 {"status": outcome, "reason": appeal.decision_reason, "review_item_id": item.id,
                  "item_before": before_item, "item": state(item)}, now=now)
    return appeal


def find_appeal(session: Session, item_pk: int) -> Appeal:
    """The open appeal of an item (what a senior decides)."""
    appeal = session.scalars(select(Appeal).where(Appeal.review_item_id == item_pk, Appeal.status == "open")
                             .order_by(Appeal.id.desc())).first()
    if appeal is None:
        raise NotFound(f"review item {item_pk} has no open appeal")
    return appeal
