"""The analyze stage's database side: one call's current transcript in, one Analysis with its
Findings and ClassifierScores out, in the caller's transaction.

History is kept: an analysis is unique per (transcript, rule-pack sha256, classifiers sha256),
so re-running with the same pack and models finds the existing row, while a new pack version
adds a new analysis and the older ones stop being current. Stored transcripts are re-analysed
without re-transcribing.

A call with a customer_ref, under a pack with cross-call rules, is given its customer's
earlier-known calls (:func:`qa.storage.history.customer_history`). While one of those is not
transcribed yet (it is in the same batch), the call is deferred: it stays ``transcribed`` and
the pipeline analyses it again once the batch's transcriptions are done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..domain import CallStatus
from ..errors import QAError
from ..rules.stage import Analyzer
from ..storage.history import with_customer_history
from ..storage.models import Analysis, Call, ClassifierScore, Finding
from ..storage.transcripts import current_transcript
from ..timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzeResult:
    call_id: str
    status: str  # analyzed | unchanged | no_speech | deferred
    analysis_pk: int | None
    findings: int
    score: float | None


def _make_current(session: Session, call: Call, analysis: Analysis) -> None:
    session.execute(update(Analysis).where(Analysis.call_id == call.id, Analysis.id != analysis.id,
                                           Analysis.is_current.is_(True)).values(is_current=False))
    analysis.is_current = True


def analyze_call(session: Session, analyzer: Analyzer, call_pk: int, *, wait_for_earlier: bool = True
                 ) -> AnalyzeResult:
    """Analyse one call in the caller's transaction (nothing is committed here). With
    ``wait_for_earlier``, a call whose customer has an earlier-known call still untranscribed
    is left for later (status ``deferred``); without, it is judged on what is known. Raises
    :class:`QAError` when the call cannot be analysed."""
    call = session.get(Call, call_pk)
    if call is None:
        raise QAError(f"call {call_pk} does not exist", code="analyze.no_call")
    if call.status == CallStatus.NO_SPEECH:
        return AnalyzeResult(call.call_id, "no_speech", None, 0, None)
    loaded = current_transcript(session, call)
    if loaded is None:
        raise QAError(f"call {call.call_id} has no current transcript", code="analyze.no_transcript")
    transcript, call_transcript, idx = loaded
    pack = analyzer.engine.pack
    existing = session.scalars(select(Analysis).where(
        Analysis.transcript_id == transcript.id, Analysis.rule_pack_sha256 == pack.sha256,
        Analysis.classifiers_sha256 == analyzer.classifiers_sha256)).first()
    if existing is not None:
        if not existing.is_current:
            _make_current(session, call, existing)
            call.status = CallStatus.ANALYZED
        elif call.status == CallStatus.TRANSCRIBED:
            # transcribed again with the same result (a concurrent or forced run): it is analysed
            call.status = CallStatus.ANALYZED
        n = session.scalar(select(func.count()).select_from(Finding).where(Finding.analysis_id == existing.id))
        return AnalyzeResult(call.call_id, "unchanged", existing.id, n, existing.score)

    call_transcript, history = with_customer_history(session, call, call_transcript, analyzer.engine)
    if history.pending and wait_for_earlier:
        log.debug("call %s deferred: the customer's calls %s are not transcribed yet", call.call_id,
                  ", ".join(history.pending))
        return AnalyzeResult(call.call_id, "deferred", None, 0, None)
    result, predictions = analyzer.analyze(call_transcript)
    analysis = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name=pack.name,
                        rule_pack_version=pack.version, rule_pack_sha256=pack.sha256,
                        classifiers_sha256=analyzer.classifiers_sha256, is_current=True, score=result.score.score,
                        scorecard={"pack": pack.name, "version": pack.version, **result.score.to_json(),
                                   **({"business_line_inferred": result.inferred_line.to_json()}
                                      if result.inferred_line else {})},
                        created_at=utcnow())
    session.add(analysis)
    session.flush()
    _make_current(session, call, analysis)
    for f in result.findings:
        session.add(Finding(analysis_id=analysis.id, call_id=call.id, source="rule", rule_id=f.rule_id,
                            category=f.category, severity=f.severity, role=f.role, start_s=f.start_s, end_s=f.end_s,
                            matched_text=f.matched_text, evidence=f.evidence,
                            utterance_idx=[idx[i] for i in f.utterance_idx], details=f.details))
    for p in predictions:
        session.add(ClassifierScore(analysis_id=analysis.id, call_id=call.id, model_name=p.model_name,
                                    model_version=p.model_version, model_sha256=p.model_sha256, label=p.label,
                                    probability=p.probability, probabilities=p.probabilities))
    call.status = CallStatus.ANALYZED
    call.error_code = call.error_message = None
    log.debug("call %s analysed: %d findings, score %.1f", call.call_id, len(result.findings), result.score.score)
    return AnalyzeResult(call.call_id, "analyzed", analysis.id, len(result.findings), result.score.score)
