"""Audit records read from the database in keyset-paginated chunks.

Each chunk is a fixed number of call ids; everything a call's record needs is fetched for the
whole chunk with one query per table (column tuples, not ORM objects, so nothing accumulates in
the caller's session), turned into plain JSON-able dicts and dropped before the next chunk.
Memory therefore depends on the chunk size, never on the number of calls exported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from ..domain import CALL_STATUSES, TIERS
from ..storage.models import (Analysis, Assessment, Call, ClassifierScore, Finding, ReviewDecision, ReviewItem,
                              Transcript, UtteranceRow)
from ..timeutil import as_utc, local_iso


@dataclass(frozen=True)
class ExportFilters:
    """Which calls to export. Empty tuples mean "any"; ``since``/``until`` bound the call
    start time (``since`` inclusive, ``until`` exclusive)."""

    since: datetime | None = None
    until: datetime | None = None
    tiers: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    # exactly these calls (primary keys), e.g. a batch run's own; None: no such restriction
    call_pks: frozenset[int] | None = None

    def validate(self) -> None:
        if self.since and self.until and as_utc(self.since) >= as_utc(self.until):
            raise ValueError(f"--since ({self.since.isoformat()}) must be before --until ({self.until.isoformat()})")
        bad = [t for t in self.tiers if t not in TIERS]
        if bad:
            raise ValueError(f"unknown tier(s) {', '.join(bad)}; tiers are {', '.join(TIERS)}")
        bad = [s for s in self.statuses if s not in CALL_STATUSES]
        if bad:
            raise ValueError(f"unknown call status(es) {', '.join(bad)}; statuses are {', '.join(CALL_STATUSES)}")

    def as_dict(self, tz: tzinfo = timezone.utc) -> dict[str, Any]:
        return {"since": iso(self.since, tz), "until": iso(self.until, tz), "tiers": list(self.tiers),
                "categories": list(self.categories), "agents": list(self.agents), "teams": list(self.teams),
                "statuses": list(self.statuses)} | ({} if self.call_pks is None else {"calls": len(self.call_pks)})


def iso(ts: datetime | None, tz: tzinfo = timezone.utc) -> str | None:
    """ISO 8601 with the offset of ``tz`` (the call centre's clock in exports)."""
    return local_iso(ts, tz)


def _current_analysis_ids():
    return select(Analysis.id).where(Analysis.is_current.is_(True))


def _conditions(filters: ExportFilters) -> list:
    conds = []
    if filters.since:
        conds.append(Call.started_at >= filters.since)
    if filters.until:
        conds.append(Call.started_at < filters.until)
    if filters.agents:
        conds.append(Call.agent_id.in_(filters.agents))
    if filters.teams:
        conds.append(Call.team.in_(filters.teams))
    if filters.statuses:
        conds.append(Call.status.in_(filters.statuses))
    if filters.tiers:
        conds.append(exists().where(Assessment.call_id == Call.id, Assessment.is_current.is_(True),
                                    Assessment.tier.in_(filters.tiers)))
    if filters.categories:
        conds.append(exists().where(
            Finding.call_id == Call.id, Finding.category.in_(filters.categories),
            or_(Finding.analysis_id.is_(None), Finding.analysis_id.in_(_current_analysis_ids()))))
    return conds


def iter_call_id_chunks(session: Session, filters: ExportFilters, chunk_size: int) -> Iterator[list[int]]:
    """Primary keys of the matching calls in ascending order, ``chunk_size`` at a time.
    Keyset pagination (``id > last``) keeps every page an index range scan, however deep."""
    conds = _conditions(filters)
    if filters.call_pks is not None:
        # a given set of calls: walk it in id order, the other filters applied per slice
        wanted = sorted(filters.call_pks)
        for at in range(0, len(wanted), chunk_size):
            ids = list(session.scalars(select(Call.id).where(Call.id.in_(wanted[at:at + chunk_size]), *conds)
                                       .order_by(Call.id)))
            if ids:
                yield ids
        return
    last = 0
    while True:
        ids = list(session.scalars(select(Call.id).where(Call.id > last, *conds).order_by(Call.id).limit(chunk_size)))
        if not ids:
            return
        yield ids
        last = ids[-1]


def _latest_by_call(rows) -> dict[int, Any]:
    """One row per call: the one with the highest id (rows must carry ``id`` and ``call_id``)."""
    out: dict[int, Any] = {}
    for row in rows:
        if row.call_id not in out or row.id > out[row.call_id].id:
            out[row.call_id] = row
    return out


def load_chunk(session: Session, ids: list[int], *, include_transcript: bool, redact: Callable[[str | None], str | None],
               now: datetime, tz: tzinfo = timezone.utc) -> list[dict[str, Any]]:
    """The audit records of the calls ``ids``, in id order. ``redact`` is applied to every
    free-text field (transcript, evidence, matched text, comments, error messages)."""
    calls = session.execute(
        select(Call.id, Call.call_id, Call.recording_sha256, Call.agent_id, Call.team, Call.started_at,
               Call.duration_s, Call.direction, Call.business_line, Call.status, Call.error_code,
               Call.error_message, Call.purged_at).where(Call.id.in_(ids)).order_by(Call.id)).all()
    transcripts = _latest_by_call(session.execute(
        select(Transcript.id, Transcript.call_id, Transcript.asr_model, Transcript.asr_sha256)
        .where(Transcript.call_id.in_(ids), Transcript.is_current.is_(True))).all())
    analyses = _latest_by_call(session.execute(
        select(Analysis.id, Analysis.call_id, Analysis.rule_pack_name, Analysis.rule_pack_version,
               Analysis.rule_pack_sha256, Analysis.score)
        .where(Analysis.call_id.in_(ids), Analysis.is_current.is_(True))).all())
    analysis_ids = {a.id for a in analyses.values()}
    assessments = _latest_by_call(session.execute(
        select(Assessment.id, Assessment.call_id, Assessment.score, Assessment.fatal, Assessment.tier,
               Assessment.calibration_sample)
        .where(Assessment.call_id.in_(ids), Assessment.is_current.is_(True))).all())

    findings: dict[int, list] = defaultdict(list)
    for f in session.execute(
            select(Finding.id, Finding.call_id, Finding.analysis_id, Finding.source, Finding.rule_id, Finding.category,
                   Finding.severity, Finding.role, Finding.start_s, Finding.end_s, Finding.matched_text,
                   Finding.evidence, Finding.details).where(Finding.call_id.in_(ids)).order_by(Finding.id)):
        # Findings of superseded analyses belong to history, not to the call's current record.
        if f.analysis_id is None or f.analysis_id in analysis_ids:
            findings[f.call_id].append(f)

    classifiers: dict[int, dict] = defaultdict(dict)
    if analysis_ids:
        for s in session.execute(
                select(ClassifierScore.call_id, ClassifierScore.model_name, ClassifierScore.model_version,
                       ClassifierScore.label, ClassifierScore.probability)
                .where(ClassifierScore.analysis_id.in_(analysis_ids)).order_by(ClassifierScore.model_name)):
            classifiers[s.call_id][s.model_name] = {"label": s.label, "probability": s.probability,
                                                    "model_version": s.model_version}

    items = _review_items(session, ids, {a.id for a in assessments.values()})
    decisions: dict[int, list] = defaultdict(list)
    if items:
        by_item = {item.id: item.call_id for item in items.values()}
        for d in session.execute(
                select(ReviewDecision.review_item_id, ReviewDecision.finding_id, ReviewDecision.decision,
                       ReviewDecision.reviewer, ReviewDecision.comment, ReviewDecision.created_at)
                .where(ReviewDecision.review_item_id.in_(by_item)).order_by(ReviewDecision.id)):
            decisions[by_item[d.review_item_id]].append(d)

    utterances: dict[int, list] = defaultdict(list)
    if include_transcript and transcripts:
        for u in session.execute(
                select(UtteranceRow.call_id, UtteranceRow.role, UtteranceRow.start_s, UtteranceRow.end_s,
                       UtteranceRow.text)
                .where(UtteranceRow.transcript_id.in_([t.id for t in transcripts.values()]))
                .order_by(UtteranceRow.transcript_id, UtteranceRow.idx)):
            utterances[u.call_id].append({"role": u.role, "start_s": u.start_s, "end_s": u.end_s,
                                          "text": redact(u.text)})

    records = []
    for c in calls:
        tr, an, asm, item = transcripts.get(c.id), analyses.get(c.id), assessments.get(c.id), items.get(c.id)
        call_decisions = decisions.get(c.id, [])
        decision_of = {d.finding_id: d.decision for d in call_decisions if d.finding_id is not None}
        record = {
            "call_id": c.call_id, "recording_sha256": c.recording_sha256, "agent_id": c.agent_id, "team": c.team,
            "started_at": iso(c.started_at, tz), "duration_s": c.duration_s, "direction": c.direction,
            "business_line": c.business_line, "status": c.status, "error_code": c.error_code,
            "error_message": redact(c.error_message), "purged_at": iso(c.purged_at, tz),
            "asr": {"model": tr.asr_model, "sha256": tr.asr_sha256} if tr else None,
            "rule_pack": ({"name": an.rule_pack_name, "version": an.rule_pack_version, "sha256": an.rule_pack_sha256}
                          if an else None),
            "score": asm.score if asm else (an.score if an else None),
            "fatal": asm.fatal if asm else None,
            "tier": asm.tier if asm else None,
            "calibration_sample": asm.calibration_sample if asm else False,
            "findings": [{"finding_id": f.id, "rule_id": f.rule_id, "category": f.category, "severity": f.severity,
                          "role": f.role, "start_s": f.start_s, "end_s": f.end_s, "source": f.source,
                          "matched_text": redact(f.matched_text), "evidence": redact(f.evidence),
                          "basis": (f.details or {}).get("basis", []),
                          "related_calls": (f.details or {}).get("related_calls", []),
                          "review_decision": decision_of.get(f.id)} for f in findings.get(c.id, [])],
            "classifiers": classifiers.get(c.id, {}),
            "review": _review_doc(item, call_decisions, redact, now, tz) if item else None,
        }
        if include_transcript:
            record["transcript"] = utterances.get(c.id, [])
        records.append(record)
    return records


def _review_items(session: Session, ids: list[int], current_assessments: set[int]) -> dict[int, Any]:
    """The review item of each call: the one for its current assessment when there is one,
    else its latest."""
    chosen: dict[int, Any] = {}
    for item in session.execute(
            select(ReviewItem.id, ReviewItem.call_id, ReviewItem.assessment_id, ReviewItem.tier, ReviewItem.reason,
                   ReviewItem.status, ReviewItem.verdict, ReviewItem.closed_by, ReviewItem.closed_at,
                   ReviewItem.final_score, ReviewItem.due_at, ReviewItem.comment)
            .where(ReviewItem.call_id.in_(ids)).order_by(ReviewItem.id)):
        prev = chosen.get(item.call_id)
        if prev is None or (item.assessment_id in current_assessments) >= (prev.assessment_id in current_assessments):
            chosen[item.call_id] = item
    return chosen


def _review_doc(item, decisions: list, redact: Callable[[str | None], str | None], now: datetime,
                tz: tzinfo) -> dict[str, Any]:
    due, decided = item.due_at, item.closed_at
    return {
        "status": item.status, "tier": item.tier, "reason": item.reason, "verdict": item.verdict,
        "reviewer": item.closed_by, "decided_at": iso(decided, tz), "final_score": item.final_score,
        "due_at": iso(due, tz),
        # Late when closed after the due time, or still open past it.
        "overdue": bool(due and ((decided or now) > due)),
        "comment": redact(item.comment),
        "decisions": [{"finding_id": d.finding_id, "decision": d.decision, "reviewer": d.reviewer,
                       "comment": redact(d.comment), "created_at": iso(d.created_at, tz)} for d in decisions],
    }

