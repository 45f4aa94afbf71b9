"""The stages the pipeline runs, behind one typed seam (:class:`Stages`), so that every
executor (serial, local processes, Ray) runs exactly the same code, and tests can put small
fakes in its place.

The split follows where the work runs:

* ``prepare`` (decode, VAD: CPU) runs in worker processes, outside any transaction, and
  returns a picklable :class:`~qa.asr.stage.PreparedCall` per call, or the exception that made
  the call unusable;
* ``load_asr`` / ``decode`` hold the Whisper model and run the batched decode loop (the GPU);
* ``store_transcript`` writes one call's transcript in the caller's transaction;
* ``open_analyzer`` loads the rule pack and classifiers once per worker; ``analyze`` runs them
  over one call's current transcript and stores the result (CPU, worker processes);
* ``score_route`` and ``export`` run in the driver.

Every method that writes is idempotent: a call whose output exists is skipped, so re-running
after a crash never writes twice. :class:`WhisperStages` is the real implementation; it
imports torch, Whisper and the rule engine only when a method needs them, and, being a plain
class, pickles by reference into spawned workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..errors import ExportError, QAError

if TYPE_CHECKING:  # the real types, without importing torch and Whisper at start
    from ..asr.stage import DecodedCall, PreparedCall, Transcriber
    from ..rules.stage import Analyzer
    from .analyses import AnalyzeResult

PIPELINE_ACTOR = "system"  # the actor of automatic audit events (the same as scoring's)


@dataclass(frozen=True)
class CallRef:
    """What a worker needs to know about a call without a database round trip."""

    pk: int
    call_id: str
    file_path: str
    channel_layout: str
    duration_s: float


@dataclass(frozen=True)
class ExportScope:
    """What the day's export and report cover: the export holds the calls ``call_pks`` (a
    run's own) or, without them, the calls that started in ``[since, until)`` (both ``None``:
    every call); the report covers ``[since, until)``."""

    day: date
    since: datetime | None = None
    until: datetime | None = None
    call_pks: frozenset[int] | None = None


@dataclass(frozen=True)
class Artifacts:
    """Where the export and report of a run were written (``None``: not written)."""

    export_dir: str | None = None
    report_path: str | None = None
    details: tuple[str, ...] = ()


class Stages(Protocol):
    def prepare(self, settings: Settings, refs: Sequence[CallRef]) -> list[PreparedCall | Exception]:
        """Decode and find the speech of each call; one outcome per ref, in order."""

    def load_asr(self, settings: Settings) -> Transcriber: ...

    def decode(self, asr: Transcriber, prepared: Sequence[PreparedCall]) -> list[DecodedCall]: ...

    def store_transcript(self, session: Session, asr: Transcriber, prepared: PreparedCall,
                         decoded: DecodedCall) -> int:
        """Store one call's transcript; returns the number of utterances."""

    def open_analyzer(self, settings: Settings) -> Analyzer: ...

    def analyze(self, session: Session, analyzer: Analyzer, call_pk: int, *,
                wait_for_earlier: bool = True) -> AnalyzeResult:
        """Analyse one call; ``wait_for_earlier``: defer it while an earlier call of its
        customer is not transcribed (:func:`qa.pipeline.analyses.analyze_call`)."""

    def score_route(self, session: Session, settings: Settings, call_pk: int) -> bool:
        """Assess and route one call; True when it went into a review queue."""

    def export(self, factory: sessionmaker[Session], settings: Settings, scope: ExportScope,
               out_dir: str) -> Artifacts: ...


@dataclass(frozen=True)
class WhisperStages:
    """The real stages. ``force``: transcribe again calls that have a transcript with the same
    model and options (their utterances are rewritten); ``classifiers``: run the classifiers
    beside the rules."""

    force: bool = False
    classifiers: bool = True

    def prepare(self, settings: Settings, refs: Sequence[CallRef]) -> list[Any]:
        from ..asr.stage import CallAudio, prepare_calls

        return prepare_calls(settings, [CallAudio(r.pk, r.call_id, r.file_path, r.channel_layout) for r in refs])

    def load_asr(self, settings: Settings) -> Transcriber:
        from ..asr.stage import load_asr

        return load_asr(settings)

    def decode(self, asr: Transcriber, prepared: Sequence[PreparedCall]) -> list[DecodedCall]:
        return asr.decode(prepared)

    def store_transcript(self, session: Session, asr: Transcriber, prepared: PreparedCall,
                         decoded: DecodedCall) -> int:
        from .transcripts import store_transcript

        return store_transcript(session, asr, prepared, decoded, force=self.force)

    def open_analyzer(self, settings: Settings) -> Analyzer:
        from ..rules.stage import AnalyzeOptions, open_analyzer

        return open_analyzer(AnalyzeOptions.from_settings(settings, classifiers=self.classifiers))

    def analyze(self, session: Session, analyzer: Analyzer, call_pk: int, *,
                wait_for_earlier: bool = True) -> AnalyzeResult:
        from .analyses import analyze_call

        return analyze_call(session, analyzer, call_pk, wait_for_earlier=wait_for_earlier)

    def score_route(self, session: Session, settings: Settings, call_pk: int) -> bool:
        return score_route(session, settings, call_pk)

    def export(self, factory: sessionmaker[Session], settings: Settings, scope: ExportScope,
               out_dir: str) -> Artifacts:
        return export_day(factory, settings, scope, out_dir)


def score_route(session: Session, settings: Settings, call_pk: int) -> bool:
    """Score and route one call in the caller's write transaction. A call the scorer could not
    assess raises, so the pipeline records it as failed in a transaction of its own."""
    from ..review.routing import TierPolicy, score_and_route
    from ..storage.models import Call

    report = score_and_route(session, TierPolicy.from_settings(settings), call_pks=[call_pk])
    call = session.get(Call, call_pk)
    if call is not None and call.status == "failed":
        raise QAError(call.error_message or "scoring failed", code=call.error_code or "scoring")
    return report.routed > 0


def export_day(factory: sessionmaker[Session], settings: Settings, scope: ExportScope, out_dir: str) -> Artifacts:
    """The day's redacted JSONL export (with its manifest and audit event) and the HTML report
    of the same calls. Written again on a re-run: an export is a snapshot of the day."""
    from ..reporting.export import ExportFilters, ExportOptions, export_signed
    from ..reporting.report import ReportOptions, build_report, write_report

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create export folder: {e}", path=str(out)) from e
    stem = f"qa-{scope.day.isoformat()}"
    filters = (ExportFilters(call_pks=scope.call_pks) if scope.call_pks is not None
               else ExportFilters(since=scope.since, until=scope.until))
    result = export_signed(factory, settings, out / f"{stem}.jsonl", filters, ExportOptions(format="jsonl"),
                           actor=PIPELINE_ACTOR)
    report_path = None
    # the report charts calls by start time; a scan without metadata gives it nothing to draw
    if scope.since is not None and scope.until is not None:
        with factory() as session:
            options = ReportOptions(since=scope.since, until=scope.until, timezone=settings.timezone)
            report = build_report(session, options, settings=settings)
        report_path = out / f"{stem}-report.html"
        write_report(report, report_path)
    return Artifacts(export_dir=str(out), report_path=str(report_path) if report_path else None,
                     details=(f"{result.calls} calls, {result.findings} findings exported; "
                              f"manifest {result.manifest}",))
