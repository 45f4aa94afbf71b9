"""The analyze stage: a call's current transcript -> rule pack (+ classifiers) -> one
Analysis with its Findings and ClassifierScores.

History is kept: an analysis is unique per (transcript, rule-pack sha256, classifiers
sha256), so re-running with the same pack and models finds the existing row, while a new
pack version adds a new analysis and the older ones stop being current. Stored transcripts
are re-analysed without re-transcribing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..errors import ClassifierError, QAError
from ..storage.models import Analysis, Call, ClassifierScore, Finding, Transcript, utcnow
from . import EngineOptions, RuleEngine, load_pack
from .engine import CallResult
from ..storage.transcripts import current_transcript

log = logging.getLogger("qa.rules.analyze")


@dataclass(frozen=True)
class AnalyzeOptions:
    rules_pack: str
    contact_hours: str = "08:00-21:00"
    models_dir: str | None = None  # None: rules only

    def validate(self) -> None:
        if not self.rules_pack:
            raise ValueError("rules_pack must name a rule-pack folder")
        EngineOptions(contact_hours=self.contact_hours).validate()

    @classmethod
    def from_settings(cls, settings: Settings, *, rules_pack: str | None = None,
                      classifiers: bool = True) -> AnalyzeOptions:
        return cls(rules_pack=rules_pack or settings.rules_pack, contact_hours=settings.contact_hours,
                   models_dir=settings.models_dir if classifiers else None)


@dataclass
class Analyzer:
    """A loaded rule pack and, when available, the classifier set; open once per worker."""

    engine: RuleEngine
    classifiers: Any = None  # qa.classify.ClassifierSet

    @property
    def classifiers_sha256(self) -> str:
        return self.classifiers.fingerprint if self.classifiers is not None else ""


def load_classifiers(models_dir: str) -> Any:
    """The classifier set, or None when the module or the trained models are missing
    (analysis then runs the rules alone)."""
    try:
        from ..classifiers.predict import ClassifierSet
    except ImportError as e:
        log.info("classifiers unavailable (%s): analysing with rules only", e)
        return None
    try:
        return ClassifierSet.load(models_dir)
    except ClassifierError as e:
        log.info("no usable classifiers in %s (%s): analysing with rules only", models_dir, e)
        return None


def open_analyzer(settings: Settings | AnalyzeOptions) -> Analyzer:
    options = settings if isinstance(settings, AnalyzeOptions) else AnalyzeOptions.from_settings(settings)
    options.validate()
    engine = RuleEngine(load_pack(options.rules_pack), EngineOptions(contact_hours=options.contact_hours))
    classifiers = load_classifiers(options.models_dir) if options.models_dir else None
    return Analyzer(engine, classifiers)


@dataclass(frozen=True)
class AnalyzeResult:
    call_id: str
    status: str  # analyzed | unchanged | skipped | failed
    analysis_id: int | None = None
    findings: int = 0
    score: float | None = None
    error: str | None = None


def _make_current(session: Session, call: Call, analysis: Analysis) -> None:
    session.execute(update(Analysis).where(Analysis.call_id == call.id, Analysis.id != analysis.id,
                                           Analysis.is_current.is_(True)).values(is_current=False))
    analysis.is_current = True


def analyze_one(session: Session, analyzer: Analyzer, call: Call) -> AnalyzeResult:
    """Analyse one call in the caller's transaction (nothing is committed here)."""
    loaded = current_transcript(session, call)
    if loaded is None:
        return AnalyzeResult(call.call_id, "skipped", error="no current transcript")
    transcript, call_transcript, idx = loaded
    pack = analyzer.engine.pack
    existing = session.scalars(select(Analysis).where(
        Analysis.transcript_id == transcript.id, Analysis.rule_pack_sha256 == pack.sha256,
        Analysis.classifiers_sha256 == analyzer.classifiers_sha256)).first()
    if existing is not None:
        if not existing.is_current:
            _make_current(session, call, existing)
            call.status = "analyzed"
        n = len(session.scalars(select(Finding.id).where(Finding.analysis_id == existing.id)).all())
        return AnalyzeResult(call.call_id, "unchanged", existing.id, n, existing.score)

    result = analyzer.engine.evaluate(call_transcript)
    predictions = analyzer.classifiers.predict_call(call_transcript) if analyzer.classifiers is not None else []
    analysis = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name=pack.name,
                        rule_pack_version=pack.version, rule_pack_sha256=pack.sha256,
                        classifiers_sha256=analyzer.classifiers_sha256, is_current=True,
                        score=result.score.score, scorecard=_scorecard(pack, result), created_at=utcnow())
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
    call.status = "analyzed"
    call.error_code = call.error_message = None
    log.debug("call %s analysed: %d findings, score %.1f", call.call_id, len(result.findings), result.score.score)
    return AnalyzeResult(call.call_id, "analyzed", analysis.id, len(result.findings), result.score.score)


def _scorecard(pack, result: CallResult) -> dict:
    return {"pack": pack.name, "version": pack.version, **result.score.to_json()}


def analyze_call(session: Session, analyzer: Analyzer, call_pk: int) -> int:
    """The pipeline's per-call entry point: analyse in the caller's transaction and return
    the number of findings. Raises QAError when the call cannot be analysed."""
    call = session.get(Call, call_pk)
    if call is None:
        raise QAError(f"call {call_pk} does not exist", code="analyze.no_call")
    outcome = analyze_one(session, analyzer, call)
    if outcome.status == "skipped":
        raise QAError(f"call {call.call_id} has no current transcript", code="analyze.no_transcript")
    return outcome.findings


def analyze_calls(factory: sessionmaker[Session], analyzer: Analyzer,
                  call_ids: Sequence[str] | None = None) -> list[AnalyzeResult]:
    """Analyse the named calls (default: every call with a current transcript), one
    transaction per call. A call that fails is marked ``failed`` with its error and the
    batch goes on."""
    with factory() as session:
        stmt = select(Call.id, Call.call_id)
        if call_ids is None:
            stmt = stmt.where(Call.id.in_(select(Transcript.call_id).where(Transcript.is_current.is_(True))))
        else:
            stmt = stmt.where(Call.call_id.in_(list(call_ids)))
        targets = session.execute(stmt.order_by(Call.id)).all()
    found = {cid for _, cid in targets}
    results = [AnalyzeResult(cid, "skipped", error="no such call") for cid in (call_ids or ()) if cid not in found]
    for pk, cid in targets:
        try:
            with factory.begin() as session:
                results.append(analyze_one(session, analyzer, session.get(Call, pk)))
        except Exception as e:  # noqa: BLE001 - one broken call must not stop the batch
            code = e.code if isinstance(e, QAError) else "analyze"
            log.warning("call %s failed to analyse: %s", cid, e, exc_info=not isinstance(e, QAError),
                        extra={"qa_call_id": cid, "qa_error_code": code})
            with factory.begin() as session:
                call = session.get(Call, pk)
                call.status, call.error_code, call.error_message = "failed", code, str(e)[:2000]
            results.append(AnalyzeResult(cid, "failed", error=str(e)))
    return results
