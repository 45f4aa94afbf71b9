"""The real stage functions behind :class:`~qa.stages.Stages`: thin adapters from the
pipeline's per-call calling convention to the stage modules (transcribe, analyze, scoring,
export, report). Imported only when a run starts, since it pulls in torch and Whisper."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..errors import ExportError, QAError
from ..storage.models import Call
from .stages import Artifacts, CallRef, ExportScope, Stages

PIPELINE_ACTOR = "system"  # the same actor scoring uses for automatic audit events


def prepare(session: Session, settings: Settings, ref: CallRef):
    """Decode and VAD (CPU). Writes nothing: the transcript stage stores channels with the
    transcript, so a crash between the two leaves nothing half-written."""
    from ..asr.stage import prepare_call

    return prepare_call(settings, call_pk=ref.pk, call_id=ref.call_id, path=ref.file_path,
                        channel_layout=ref.channel_layout)


def load_asr(settings: Settings):
    from ..asr.stage import load_asr as load

    return load(settings)


def decode(asr, prepared: Sequence) -> list:
    return asr.decode(prepared)


def store_transcript(session: Session, asr, prepared, decoded) -> int:
    from ..asr.stage import store_transcript as store

    return store(session, asr, prepared, decoded)


def open_analyzer(settings: Settings):
    from ..rules.stage import open_analyzer as open_

    return open_(settings)


def analyze(session: Session, analyzer, call_pk: int) -> int:
    from ..rules.stage import analyze_call

    return analyze_call(session, analyzer, call_pk)


def score_route(session: Session, settings: Settings, call_pks: Sequence[int]) -> int:
    """Score and route the given calls in the caller's transaction; returns how many review
    items exist for them. A call the scorer could not assess raises, so the pipeline records it
    as failed in its own transaction."""
    from ..review.routing import TierPolicy, score_and_route

    report = score_and_route(session, call_ids=list(call_pks), policy=TierPolicy.from_settings(settings))
    for pk in call_pks:
        call = session.get(Call, pk)
        if call is not None and call.status == "failed":
            raise QAError(call.error_message or "scoring failed", code=call.error_code or "scoring")
    return report.routed


def export(factory: sessionmaker[Session], settings: Settings, scope: ExportScope, out_dir: str) -> Artifacts:
    """The day's redacted JSONL export (with its manifest and audit event) and the HTML report
    of the same calls. Written again on a re-run: an export is a snapshot of the day."""
    from ..reporting.export import ExportFilters, ExportOptions, export_calls
    from ..reporting.report import ReportOptions, build_report, write_report

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create export folder: {e}", path=str(out)) from e
    stem = f"qa-{scope.day.isoformat()}"
    with factory() as session:
        result = export_calls(session, out / f"{stem}.jsonl", ExportFilters(since=scope.since, until=scope.until),
                              ExportOptions(format="jsonl"), actor=PIPELINE_ACTOR)
        session.commit()
        report_path = None
        # the report charts calls by start time; a scan without metadata gives it nothing to draw
        if scope.since is not None and scope.until is not None:
            report = build_report(session, ReportOptions(since=scope.since, until=scope.until), settings=settings)
            report_path = out / f"{stem}-report.html"
            write_report(report, report_path)
    return Artifacts(export_dir=str(out), report_path=str(report_path) if report_path else None,
                     details=(f"{result.calls} calls, {result.findings} findings exported; "
                              f"manifest {result.manifest}",))


def default_stages() -> Stages:
    return Stages(prepare=prepare, load_asr=load_asr, decode=decode, store_transcript=store_transcript,
                  open_analyzer=open_analyzer, analyze=analyze, score_route=score_route, export=export)
