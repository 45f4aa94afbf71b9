"""Training examples from the database: inspectors' decisions on findings, and the
utterances of stereo calls for the role model.

A confirmed (or inspector-added) finding of a category a model covers makes its evidence
utterances positive examples of that model; a rejected one makes them negatives, when the
model says a rejection means "not this" (a rejected escalation threat may still come from
an unhappy customer, so it is no negative for dissatisfaction). When several decisions
exist for one finding (appeals, second reviews) the latest counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..classifiers.corpus import Example
from ..classifiers.roles import ROLE_MODEL
from ..classifiers.specs import spec_for
from ..storage.models import Analysis, Call, Finding, ReviewDecision, Transcript, UtteranceRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewTarget:
    categories: frozenset[str]
    role: str  # whose utterances are the evidence
    negatives_from_rejected: bool


REVIEW_TARGETS: dict[str, ReviewTarget] = {
    "complaint_risk": ReviewTarget(frozenset({"complaint.escalation_threat"}), "customer", True),
    "dissatisfaction": ReviewTarget(frozenset({"complaint.escalation_threat"}), "customer", False),
    "agent_conduct": ReviewTarget(
        frozenset({"conduct.threat", "conduct.insult", "service.impatience", "complaint.discouraged"}),
        "agent", True),
}


# Stereo recordings carry one party per channel, so their utterances are role-labelled
# examples for free; the most recent ones are used, up to this many.
MAX_STEREO_UTTERANCES = 20000


@dataclass(frozen=True)
class ReviewHarvest:
    examples: dict[str, tuple[Example, ...]]  # model name -> examples
    summary: dict[str, dict[str, Any]]  # model name -> what went in (recorded in the card)


def _evidence_texts(session: Session, finding: Finding, role: str, cache: dict[int, list[UtteranceRow]]) -> list[str]:
    transcript_id = None
    if finding.analysis_id is not None:
        transcript_id = session.get(Analysis, finding.analysis_id).transcript_id
    else:  # inspector-added findings point into the call's current transcript
        transcript_id = session.scalar(select(Transcript.id).where(
            Transcript.call_id == finding.call_id, Transcript.is_current.is_(True)).order_by(Transcript.id.desc()))
    texts: list[str] = []
    if transcript_id is not None and finding.utterance_idx:
        if transcript_id not in cache:
            cache[transcript_id] = list(session.scalars(
                select(UtteranceRow).where(UtteranceRow.transcript_id == transcript_id)))
        wanted = {int(i) for i in finding.utterance_idx}
        texts = [u.text for u in cache[transcript_id] if u.idx in wanted and u.role == role and u.text.strip()]
    if not texts:
        fallback = (finding.evidence or finding.matched_text or "").strip()
        texts = [fallback] if fallback else []
    return texts


def harvest_reviews(session: Session, models: tuple[str, ...] | None = None) -> ReviewHarvest:
    """Collect examples for ``models`` (default: every model reviews can teach)."""
    names = tuple(m for m in (models or tuple(REVIEW_TARGETS)) if m in REVIEW_TARGETS)
    categories = set().union(*(REVIEW_TARGETS[m].categories for m in names)) if names else set()
    rows = session.execute(
        select(ReviewDecision, Finding).join(Finding, ReviewDecision.finding_id == Finding.id)
        .where(Finding.category.in_(sorted(categories)))
        .order_by(ReviewDecision.created_at, ReviewDecision.id)
    ).all()
    latest: dict[int, tuple[ReviewDecision, Finding]] = {}
    for decision, finding in rows:
        latest[finding.id] = (decision, finding)

    cache: dict[int, list[UtteranceRow]] = {}
    examples: dict[str, list[Example]] = {m: [] for m in names}
    counts: dict[str, dict[str, int]] = {m: {"confirmed": 0, "rejected": 0, "added": 0} for m in names}
    for decision, finding in latest.values():
        for name in names:
            target = REVIEW_TARGETS[name]
            if finding.category not in target.categories or decision.decision not in counts[name]:
                continue
            spec = spec_for(name)
            if decision.decision == "rejected":
                if not target.negatives_from_rejected:
                    continue
                label = next(lab for lab in spec.labels if lab != spec.positive_label)
            else:
                label = spec.positive_label
            texts = _evidence_texts(session, finding, target.role, cache)
            if not texts:
                log.warning("finding %s has no evidence text; decision %s skipped", finding.id, decision.id)
                continue
            counts[name][decision.decision] += 1
            examples[name].extend(Example(t, label, source="review") for t in texts)

    out: dict[str, tuple[Example, ...]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        unique = tuple(dict.fromkeys(examples[name]))
        out[name] = unique
        per_label: dict[str, int] = {}
        for e in unique:
            per_label[e.label] = per_label.get(e.label, 0) + 1
        summary[name] = {"decisions": counts[name], "examples": per_label,
                         "categories": sorted(REVIEW_TARGETS[name].categories)}
    return ReviewHarvest(examples=out, summary=summary)


def harvest_stereo_roles(session: Session, limit: int = MAX_STEREO_UTTERANCES) -> tuple[tuple[Example, ...], dict[str, Any]]:
    """Role examples from current transcripts of stereo calls (roles from the channel, never
    inferred), newest first, with a summary for the model card."""
    rows = session.execute(
        select(UtteranceRow.text, UtteranceRow.role)
        .join(Transcript, UtteranceRow.transcript_id == Transcript.id)
        .join(Call, UtteranceRow.call_id == Call.id)
        .where(Transcript.is_current.is_(True), UtteranceRow.role_inferred.is_(False),
               Call.channel_layout != "mono", Call.roles_inferred.is_(False),
               UtteranceRow.role.in_(("agent", "customer")))
        .order_by(UtteranceRow.id.desc())
        .limit(limit * 2)  # room for duplicates and blank lines
    ).all()
    unique: dict[tuple[str, str], Example] = {}
    for text, role in rows:
        text = " ".join((text or "").split())
        if text and (text, role) not in unique:
            unique[(text, role)] = Example(text, role, source="stereo")
        if len(unique) >= limit:
            break
    examples = tuple(unique.values())
    per_label: dict[str, int] = {}
    for e in examples:
        per_label[e.label] = per_label.get(e.label, 0) + 1
    return examples, {"stereo_utterances": len(examples), "examples": per_label, "limit": limit}


def review_examples(session: Session, models: Sequence[str]) -> dict[str, tuple[tuple[Example, ...], dict[str, Any]]]:
    """What the database teaches each of ``models``, for :func:`qa.classifiers.training.train`:
    model -> (examples, summary for its card). Inspectors' decisions teach the complaint,
    dissatisfaction and conduct models, stereo calls' utterances the role model."""
    harvest = harvest_reviews(session, tuple(models))
    out: dict[str, tuple[tuple[Example, ...], dict[str, Any]]] = {}
    for name in models:
        if name == ROLE_MODEL:
            out[name] = harvest_stereo_roles(session)
        else:
            out[name] = (harvest.examples.get(name, ()),
                         harvest.summary.get(name) or {"decisions": {}, "examples": {}, "categories": [],
                                                       "note": "no finding category teaches this model"})
    return out
