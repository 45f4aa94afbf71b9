"""Working a claimed item: confirm or reject each finding, add what the system missed, close
with a verdict and a final score. The final score comes from the one scoring formula
(:mod:`qa.rules.scorecard`) with the scorecard stored with the analysis, applied to the
findings the reviewer kept."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain import DECISIONS, SEVERITIES, VERDICTS
from ..errors import NotFound, ReviewError
from ..permissions import Actor
from ..rules.scorecard import card_from_json, fails_call, score_findings
from ..rules.taxonomy import load_taxonomy
from ..storage.models import Analysis, Finding, ReviewDecision, ReviewItem, ReviewStatus
from ..timeutil import utc_or_now
from .items import assessment_of, held_by, item_findings, scored, state, transition
from .queue import ReviewPolicy

log = logging.getLogger(__name__)

def decide(session: Session, actor: Actor, item_pk: int, finding_pk: int, decision: str,
           comment: str | None = None, now: datetime | None = None) -> ReviewDecision:
    """Confirm a finding or reject it as a false positive, on an item ``actor`` has claimed.
    Deciding again replaces one's earlier decision (both are in the audit log)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.decide", "review.work", "decide findings", now) as t:
        item = t.item
        held_by(item, actor)
        if finding_pk not in {f.id for f in item_findings(session, item)}:
            raise NotFound(f"finding {finding_pk} is not under review in item {item_pk}")
        row = session.scalars(select(ReviewDecision).where(
            ReviewDecision.review_item_id == item.id, ReviewDecision.finding_id == finding_pk,
            ReviewDecision.reviewer == actor.username)).first()
        if row is not None and row.decision == "added":
            raise ReviewError(f"finding {finding_pk} was added by {actor.username}; it needs no decision",
                              code="review.added")
        t.object_type, t.object_id = "finding", finding_pk
        t.before = None if row is None else {"decision": row.decision, "comment": row.comment}
        t.after = {"review_item_id": item.id, "decision": decision, "comment": comment}
        if row is None:
            row = ReviewDecision(review_item_id=item.id, finding_id=finding_pk, reviewer=actor.username,
                                 decision=decision, comment=comment, created_at=now)
            session.add(row)
        else:
            row.decision, row.comment, row.created_at = decision, comment, now
    return row


def add_finding(session: Session, actor: Actor, item_pk: int, *, category: str, severity: str | None = None,
                start_s: float | None = None, end_s: float | None = None, role: str | None = None,
                comment: str | None = None, matched_text: str | None = None,
                now: datetime | None = None) -> Finding:
    """Record a problem the system missed: a ``Finding`` with ``source='inspector'`` (category
    from the taxonomy; severity defaults to the category's) and an ``added`` decision."""
    actor.require("review.work", "add findings")
    cat = load_taxonomy().get(category)
    if cat is None:
        raise ReviewError(f"unknown category {category!r}; see qa/data/taxonomy.yaml", code="review.category")
    severity = severity or cat.severity
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if start_s is not None and (start_s < 0 or (end_s is not None and end_s < start_s)):
        raise ValueError(f"bad time span {start_s}..{end_s}")
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.add_finding", "review.work", "add findings", now) as t:
        item = t.item
        held_by(item, actor)
        finding = Finding(
            analysis_id=None, call_id=item.call_id, source="inspector", rule_id=f"inspector:{category}",
            category=category, severity=severity, role=role or cat.role, start_s=start_s,
            end_s=end_s if end_s is not None else start_s, matched_text=matched_text, evidence=comment,
            details={"added_by": actor.username, "review_item_id": item.id, "kind": cat.kind}, created_at=now,
        )
        session.add(finding)
        session.flush()
        session.add(ReviewDecision(review_item_id=item.id, finding_id=finding.id, decision="added",
                                   comment=comment, reviewer=actor.username, created_at=now))
        t.object_type, t.object_id, t.before = "finding", finding.id, None
        t.after = {"review_item_id": item.id, "category": category, "severity": severity,
                   "start_s": start_s, "end_s": finding.end_s, "comment": comment}
    return finding


def _kept_findings(session: Session, item: ReviewItem, reviewer: str) -> tuple[list[Finding], list[int]]:
    """(findings the reviewer kept: confirmed or added, ids of rule findings still undecided)."""
    findings = item_findings(session, item)
    decided = {d.finding_id: d.decision for d in session.scalars(select(ReviewDecision).where(
        ReviewDecision.review_item_id == item.id, ReviewDecision.reviewer == reviewer))}
    kept = [f for f in findings if decided.get(f.id) in ("confirmed", "added")]
    undecided = [f.id for f in findings if f.source == "rule" and f.id not in decided]
    return kept, undecided


def close(session: Session, actor: Actor, item_pk: int, verdict: str | None = None,
          final_score: float | None = None, comment: str | None = None,
          policy: ReviewPolicy | None = None, now: datetime | None = None) -> ReviewItem:
    """Close a claimed item with the call verdict and final score.

    Without ``verdict``: ``fail`` when a kept (confirmed or added) finding the agent answers
    for is fatal or major, else ``pass``. Without ``final_score``: the analysis's scorecard
    applied to the kept findings (so confirming every finding keeps the automatic score)."""
    policy = policy or ReviewPolicy()
    policy.validate()
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be pass or fail, got {verdict!r}")
    if final_score is not None and not 0.0 <= final_score <= 100.0:
        raise ValueError(f"final score must be between 0 and 100, got {final_score}")
    now = utc_or_now(now)
    with transition(session, actor, item_pk, "review.close", "review.work", "close review items", now) as t:
        item = t.item
        held_by(item, actor)
        kept, undecided = _kept_findings(session, item, actor.username)
        if undecided and policy.require_all_decided:
            raise ReviewError(f"review item {item_pk}: decide finding(s) {', '.join(map(str, undecided))} "
                              "before closing", code="review.undecided")
        analysis = session.get(Analysis, assessment_of(session, item).analysis_id)
        items = [scored(f, analysis) for f in kept]
        if verdict is None:
            verdict = "fail" if fails_call(items) else "pass"
        if final_score is None:
            final_score, _ = score_findings(card_from_json((analysis.scorecard or {}).get("card")), items)
        item.status, item.verdict, item.final_score, item.comment = (ReviewStatus.CLOSED, verdict,
                                                                     float(final_score), comment)
        item.closed_by, item.closed_at, item.claim_expires_at = actor.username, now, None
        t.after = state(item) | {"comment": comment, "kept_findings": [f.id for f in kept]}
    log.info("item %d closed by %s: %s %.1f", item.id, actor.username, verdict, final_score)
    return item
