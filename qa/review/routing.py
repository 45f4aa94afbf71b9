"""Assessment of analyzed calls and routing into tiered review queues.

An assessment is the score, fatal flag and tier of one analysis under one tier policy; the
policy is stored with it (and its sha256), so a changed policy makes a new assessment instead
of silently reinterpreting an old one. Tiers (configurable through :class:`TierPolicy`):

- T1: any fatal finding, or complaint risk at or above the threshold (SLA a few hours);
- T2: major findings (about a day);
- T3: minor findings only (a few days);
- none: no finding; a reproducible random share of these calls is sampled for review
  (``calibration_sample``) so that review can measure what automation misses.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import audit
from ..config import Settings
from ..domain import SEVERITIES
from ..errors import NotFound, QAError
from ..rules.scorecard import card_from_json, score_findings
from ..storage.models import Analysis, Assessment, Call, CallStatus, ClassifierScore, ReviewItem, ReviewStatus
from ..timeutil import utc_or_now
from .items import scored
from .users import assignment_order

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class TierPolicy:
    """How findings and classifier scores become a score, a tier and a due time."""

    tier1_sla_hours: float = 4.0
    tier2_sla_hours: float = 24.0
    tier3_sla_hours: float = 72.0
    complaint_risk_threshold: float = 0.8
    complaint_model: str = "complaint_risk"
    # Labels of the complaint model that mean "risk"; for any other label the risk is 1 - p.
    complaint_positive_labels: tuple[str, ...] = ("complaint", "high", "risk", "yes", "true", "1", "positive")
    calibration_rate: float = 0.02
    calibration_seed: int = 20261123
    # Round-robin assignment of new review items among active inspectors.
    auto_assign: bool = False

    def validate(self) -> None:
        for name in ("tier1_sla_hours", "tier2_sla_hours", "tier3_sla_hours"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.complaint_risk_threshold <= 1.0:
            raise ValueError(f"complaint_risk_threshold must be between 0 and 1, got {self.complaint_risk_threshold}")
        if not 0.0 <= self.calibration_rate <= 1.0:
            raise ValueError(f"calibration_rate must be between 0 and 1, got {self.calibration_rate}")
        if not self.complaint_model:
            raise ValueError("complaint_model must be named")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> TierPolicy:
        policy = cls(
            tier1_sla_hours=settings.tier1_sla_hours,
            tier2_sla_hours=settings.tier2_sla_hours,
            tier3_sla_hours=settings.tier3_sla_hours,
            complaint_risk_threshold=settings.complaint_risk_threshold,
            calibration_rate=settings.calibration_rate,
            calibration_seed=settings.calibration_seed,
            auto_assign=settings.auto_assign,
            **overrides,
        )
        policy.validate()
        return policy

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc["complaint_positive_labels"] = list(self.complaint_positive_labels)
        # Assignment is about who works an item, not how it is assessed.
        doc.pop("auto_assign")
        return doc

    @property
    def sha256(self) -> str:
        return hashlib.sha256(audit.canonical_json(self.as_dict()).encode("utf-8")).hexdigest()

    def sla_hours(self, tier: str) -> float:
        return {"T1": self.tier1_sla_hours, "T2": self.tier2_sla_hours, "T3": self.tier3_sla_hours}[tier]


def in_calibration_sample(seed: int, recording_sha256: str, rate: float) -> bool:
    """Reproducible draw: the same seed and recording always give the same answer, and about
    ``rate`` of all recordings are drawn. Independent of batch order and of the database."""
    digest = hashlib.sha256(f"{seed}:{recording_sha256}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def complaint_risk(scores: Iterable[ClassifierScore], policy: TierPolicy) -> float | None:
    """Probability that the call leads to a complaint, from the complaint model's output."""
    positive = {label.lower() for label in policy.complaint_positive_labels}
    for s in scores:
        if s.model_name != policy.complaint_model:
            continue
        for label, p in (s.probabilities or {}).items():
            if str(label).lower() in positive:
                return float(p)
        return float(s.probability) if s.label.lower() in positive else 1.0 - float(s.probability)
    return None


def current_analysis(session: Session, call: Call) -> Analysis:
    analysis = session.scalars(
        select(Analysis).where(Analysis.call_id == call.id, Analysis.is_current.is_(True))
        .order_by(Analysis.id.desc()).limit(1)
    ).first()
    if analysis is None:
        raise NotFound(f"call {call.call_id} has no current analysis (run qa analyze first)",
                       code="scoring.no_analysis")
    return analysis


def assess_call(session: Session, call: Call, policy: TierPolicy, now: datetime | None = None) -> Assessment:
    """The assessment of ``call``'s current analysis under ``policy``; idempotent (an existing
    assessment for the same analysis and policy is returned unchanged)."""
    policy.validate()
    analysis = current_analysis(session, call)
    sha = policy.sha256
    existing = session.scalars(
        select(Assessment).where(Assessment.analysis_id == analysis.id, Assessment.policy_sha256 == sha)
    ).first()
    if existing is not None:
        return existing

    findings = [f for f in analysis.findings if f.source == "rule"]
    bad = [f for f in findings if f.severity not in SEVERITIES]
    if bad:
        raise QAError(f"finding {bad[0].id} has unknown severity {bad[0].severity!r}", code="scoring.severity")
    risk = complaint_risk(analysis.scores, policy)
    reasons: list[str] = []
    by_sev = {sev: [f for f in findings if f.severity == sev] for sev in SEVERITIES}
    for f in by_sev["fatal"]:
        reasons.append(f"fatal:{f.rule_id}")
    if risk is not None and risk >= policy.complaint_risk_threshold:
        reasons.append(f"complaint_risk:{risk:.3f}")
    for sev in ("major", "minor"):
        reasons.extend(f"{sev}:{f.rule_id}" for f in by_sev[sev])

    if by_sev["fatal"] or (risk is not None and risk >= policy.complaint_risk_threshold):
        tier = "T1"
    elif by_sev["major"]:
        tier = "T2"
    elif by_sev["minor"]:
        tier = "T3"
    else:
        tier = None
    sample = not findings and in_calibration_sample(policy.calibration_seed, call.recording_sha256,
                                                     policy.calibration_rate)
    if sample:
        reasons.append("calibration_sample")
    if analysis.score is not None:
        score = analysis.score
    else:  # an analysis stored without its score: the pack's formula over its findings
        score, _ = score_findings(card_from_json((analysis.scorecard or {}).get("card")),
                                  [scored(f, analysis) for f in findings])

    session.execute(update(Assessment).where(Assessment.call_id == call.id, Assessment.is_current.is_(True))
                    .values(is_current=False))
    assessment = Assessment(
        call_id=call.id, analysis_id=analysis.id, score=float(score), fatal=bool(by_sev["fatal"]), tier=tier,
        reasons=reasons, policy=policy.as_dict(), policy_sha256=sha, calibration_sample=sample,
        is_current=True, created_at=utc_or_now(now),
    )
    session.add(assessment)
    session.flush()
    log.debug("call %s assessed: tier %s score %.1f", call.call_id, tier, assessment.score)
    return assessment


def route(session: Session, assessment: Assessment, policy: TierPolicy, now: datetime | None = None) -> ReviewItem | None:
    """The review item of a flagged or sampled assessment (created once, with its due time),
    or ``None`` when the call needs no review. An open item of an earlier assessment of the
    same call is moved to this one rather than duplicated. Writes an audit event when it
    creates or moves an item."""
    if assessment.tier is None and not assessment.calibration_sample:
        return None
    existing = session.scalars(select(ReviewItem).where(ReviewItem.assessment_id == assessment.id)).first()
    if existing is not None:
        return existing
    now = utc_or_now(now)
    # Sampled calls are worked like the lowest tier; ``reason`` keeps them apart in reports.
    tier = assessment.tier or "T3"
    reason = "flagged" if assessment.tier else "calibration"
    due = now + timedelta(hours=policy.sla_hours(tier))
    stale = session.scalars(select(ReviewItem).where(ReviewItem.call_id == assessment.call_id,
                                                     ReviewItem.status == ReviewStatus.OPEN)
                            .order_by(ReviewItem.id).limit(1).with_for_update()).first()
    if stale is not None:
        # A re-analysis of a call nobody has started on: the waiting item follows the new
        # assessment instead of queueing the call twice, and keeps its earlier due time.
        before = {"assessment_id": stale.assessment_id, "tier": stale.tier, "reason": stale.reason,
                  "due_at": stale.due_at}
        stale.assessment_id, stale.tier, stale.reason = assessment.id, tier, reason
        stale.priority, stale.due_at = _priority(assessment), min(stale.due_at, due)
        session.flush()
        audit.append(session, SYSTEM_ACTOR, "review.requeue", "review_item", stale.id, before,
                     {"assessment_id": assessment.id, "tier": tier, "reason": reason, "due_at": stale.due_at,
                      "reasons": assessment.reasons}, now=now)
        return stale
    item = ReviewItem(
        call_id=assessment.call_id, assessment_id=assessment.id, tier=tier, reason=reason, status=ReviewStatus.OPEN,
        priority=_priority(assessment), due_at=due, assigned_to=_next_assignee(session) if policy.auto_assign else None,
        created_at=now,
    )
    session.add(item)
    session.flush()
    audit.append(session, SYSTEM_ACTOR, "review.route", "review_item", item.id, None,
                 {"call_id": assessment.call_id, "assessment_id": assessment.id, "tier": tier,
                  "reason": item.reason, "due_at": item.due_at, "assigned_to": item.assigned_to,
                  "reasons": assessment.reasons}, now=now)
    return item


def _next_assignee(session: Session) -> str | None:
    """Round robin: the active inspector whose turn it is (or nobody when there is none)."""
    order = assignment_order(session)
    return order[0] if order else None


def _priority(assessment: Assessment) -> float:
    # Informational ordering hint inside a tier (the queue itself orders by tier and due time):
    # more fatal/major reasons first.
    weights = {"fatal": 100.0, "complaint_risk": 50.0, "major": 10.0, "minor": 1.0}
    return sum(weights.get(r.split(":", 1)[0], 0.0) for r in assessment.reasons)


@dataclass(frozen=True)
class CallRouting:
    call_id: str
    tier: str | None
    score: float | None
    review_item_id: int | None
    calibration_sample: bool = False
    error: str | None = None


@dataclass(frozen=True)
class RouteReport:
    calls: tuple[CallRouting, ...] = field(default_factory=tuple)

    @property
    def routed(self) -> int:
        return sum(1 for c in self.calls if c.review_item_id is not None)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.calls if c.error is not None)

    def by_tier(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.calls:
            if c.error is None:
                key = c.tier or ("sample" if c.calibration_sample else "none")
                counts[key] = counts.get(key, 0) + 1
        return counts


def score_and_route(session: Session, policy: TierPolicy, call_pks: Sequence[int] | None = None,
                    now: datetime | None = None) -> RouteReport:
    """The score/route stage, in the caller's write session: assess every analyzed call (or the
    calls with the given primary keys, whatever their status after analysis), create review
    items, and set the call's status to ``scored`` (no review needed) or ``routed``. A call
    that fails is marked ``failed`` with the error code and the batch goes on. The caller
    commits."""
    policy.validate()
    now = utc_or_now(now)
    stmt = select(Call).order_by(Call.id)
    if call_pks is None:
        stmt = stmt.where(Call.status == CallStatus.ANALYZED)
    else:
        stmt = stmt.where(Call.id.in_(list(call_pks)),
                          Call.status.in_((CallStatus.ANALYZED, CallStatus.SCORED, CallStatus.ROUTED)))
    results: list[CallRouting] = []
    for call in session.scalars(stmt).all():
        try:
            with session.begin_nested():
                assessment = assess_call(session, call, policy, now)
                item = route(session, assessment, policy, now)
                call.status = CallStatus.ROUTED if item is not None else CallStatus.SCORED
        except QAError as e:
            log.warning("call %s not scored: %s", call.call_id, e)
            call.status, call.error_code, call.error_message = CallStatus.FAILED, e.code, str(e)
            results.append(CallRouting(call.call_id, None, None, None, error=str(e)))
            continue
        results.append(CallRouting(call.call_id, assessment.tier, assessment.score,
                                   item.id if item else None, assessment.calibration_sample))
    report = RouteReport(tuple(results))
    log.info("scored %d calls: %d routed, %d failed", len(results), report.routed, report.failed)
    return report
