"""The batch pipeline: ingest -> prepare -> transcribe -> analyze -> score/route -> export+report.

``run_pipeline`` is what ``qa run``, ``qa nightly`` and ``qa demo`` call. It

* takes the database's run lock (a second concurrent run fails with a LockError naming the
  holder; the lock of a dead run is taken over);
* records a batch run (``running`` at once, so a crashed run stays visible; counts, timings
  per stage and versions at the end);
* works incrementally: each stage picks only the calls whose ``status`` says its output is
  missing, so a re-run after a crash (or after new recordings arrived) continues where work
  stopped, and nothing is written twice (each call's result is one transaction, and the
  tables' unique constraints back that up);
* isolates failures: a call that fails is marked ``failed`` with its error code and the run
  goes on; transient database errors are retried with backoff.

The prepare/transcribe/analyze stages run on an executor: :class:`~qa.local_executor.LocalExecutor`
(worker processes, the default) or :class:`~qa.ray_executor.RayExecutor` (``executor="ray"``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..errors import LockError, StorageError
from .execution import ExecContext, Executor, StageClock
from ..ingest.register import IngestOptions, IngestReport, ingest, read_manifest, scan_directory
from .local import LocalExecutor, LocalOptions
from ..storage.locks import LockOptions, RunLockHandle, acquire
from ..storage.models import Call, utcnow
from .progress import NullProgress, Progress
from ..storage.retry import RetryPolicy
from .runs import StageTiming, current_versions, finish_run, start_run
from .stages import Artifacts, CallRef, ExportScope, Stages
from .summary import CallFigures, call_figures
from .jobs import JobOutcome, run_call

log = logging.getLogger("qa.pipeline")

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 2
EXECUTORS = ("local", "ray")
RUN_KINDS = ("run", "nightly", "demo")
TO_TRANSCRIBE = ("registered", "prepared")


@dataclass(frozen=True)
class PipelineOptions:
    kind: str = "run"
    source: str | None = None  # a folder of recordings to ingest first
    manifest: str | None = None  # or a manifest CSV/JSONL
    day: date | None = None  # labels the export and report (default: today)
    executor: str = "local"
    address: str | None = None  # Ray cluster address (None: start a local Ray instance)
    local: LocalOptions = LocalOptions()
    export: bool = True
    export_root: str | None = None  # default: <data_dir>/exports; the run writes <root>/<day>/
    lock: LockOptions = LockOptions()
    retry: RetryPolicy = RetryPolicy()

    def validate(self) -> None:
        if self.kind not in RUN_KINDS:
            raise ValueError(f"kind must be one of {', '.join(RUN_KINDS)}, got {self.kind!r}")
        if self.source and self.manifest:
            raise ValueError("give a source folder or a manifest, not both")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.address and self.executor != "ray":
            raise ValueError("address is only meaningful with executor='ray'")
        self.local.validate()
        self.lock.validate()
        self.retry.validate()

    @property
    def the_day(self) -> date:
        return self.day or date.today()

    def as_record(self) -> dict:
        """What the batch-run row keeps of the options."""
        return {"source": self.source, "manifest": self.manifest, "day": self.the_day.isoformat(),
                "executor": self.executor, "address": self.address, "workers": self.local.n_workers,
                "prefetch": self.local.n_prefetch, "calls_per_decode": self.local.calls_per_decode,
                "export": self.export}


@dataclass(frozen=True)
class CallFailure:
    call_id: str
    stage: str
    code: str
    message: str


@dataclass
class PipelineResult:
    run_id: int
    status: str  # ok | partial | failed
    timings: list[StageTiming]
    figures: CallFigures
    ingest: dict[str, int] = field(default_factory=dict)
    failures: list[CallFailure] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    asr_load_s: float = 0.0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return {"ok": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)


def make_executor(options: PipelineOptions) -> Executor:
    if options.executor == "ray":
        from .ray import RayExecutor  # Ray is optional: imported only when asked for

        return RayExecutor(address=options.address, local=options.local)
    return LocalExecutor(options.local)


def _refs(session: Session, statuses: Sequence[str]) -> list[CallRef]:
    rows = session.execute(select(Call.id, Call.call_id, Call.file_path, Call.channel_layout, Call.duration_s)
                           .where(Call.status.in_(statuses)).order_by(Call.id)).all()
    return [CallRef(pk, cid, path, layout, duration or 0.0) for pk, cid, path, layout, duration in rows]


def _ingest(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions,
            progress: Progress) -> tuple[IngestReport, StageTiming, set[int]]:
    layout = settings.channel_layout
    recordings = (read_manifest(options.manifest, channel_layout=layout) if options.manifest
                  else scan_directory(options.source, channel_layout=layout))
    clock = StageClock("ingest", progress, len(recordings), 0.0)
    clock.start()
    ingest_options = IngestOptions(default_channel_layout=layout, max_duration_s=settings.max_duration_s)
    with factory() as session:
        def tick(outcome) -> None:
            ref = CallRef(0, outcome.call_id, outcome.path, layout, 0.0)
            clock.record(JobOutcome(ref, "ingest", outcome.outcome != "failed"))

        report = ingest(session, recordings, ingest_options, progress=tick)
        ids = [o.call_id for o in report.outcomes]
        # chunks: SQLite caps the parameters of one statement
        rows = [row for i in range(0, len(ids), 500) for row in session.execute(
            select(Call.id, Call.duration_s).where(Call.call_id.in_(ids[i:i + 500])))]
    timing = clock.close()
    timing.audio_s = sum(d or 0.0 for _, d in rows)
    return report, timing, {pk for pk, _ in rows}


def _score_route(ctx: ExecContext, refs: list[CallRef]) -> tuple[list[JobOutcome], StageTiming]:
    clock = StageClock("score", ctx.progress, len(refs), sum(r.duration_s for r in refs))
    outcomes = []
    for ref in refs:
        clock.start()
        outcome = run_call(ctx.factory, ref, "score",
                           lambda s, pk=ref.pk: ctx.stages.score_route(s, ctx.settings, [pk]), ctx.retry)
        clock.record(outcome)
        outcomes.append(outcome)
    return outcomes, clock.close()


def export_scope(session: Session, options: PipelineOptions, call_pks: Sequence[int]) -> ExportScope | None:
    """With ``--date``: the calls that started that day (wall-clock time as recorded). Without:
    the time span of this run's calls; every call when some of them have no start time (a
    folder scan has no metadata). ``None`` when the run has no calls to export."""
    day = options.the_day
    if options.day is not None:
        start = datetime.combine(day, dtime.min)
        return ExportScope(day, start, start + timedelta(days=1))
    if not call_pks:
        return None
    starts = [row[0] for i in range(0, len(call_pks), 500) for row in session.execute(
        select(Call.started_at).where(Call.id.in_(list(call_pks[i:i + 500]))))]
    if any(s is None for s in starts):
        return ExportScope(day)
    return ExportScope(day, min(starts), max(starts) + timedelta(seconds=1))


def _export(ctx: ExecContext, options: PipelineOptions, scope: ExportScope, figures: CallFigures
            ) -> tuple[Artifacts, StageTiming]:
    root = Path(options.export_root or Path(ctx.settings.data_dir) / "exports")
    out_dir = root / scope.day.isoformat()
    started = time.perf_counter()
    artifacts = ctx.stages.export(ctx.factory, ctx.settings, scope, str(out_dir))
    timing = StageTiming("export", seconds=time.perf_counter() - started, calls=figures.calls, audio_s=figures.audio_s)
    log.info("export and report written to %s", artifacts.export_dir or out_dir,
             extra={"qa_stage": "export", "qa_elapsed_s": round(timing.seconds, 2)})
    return artifacts, timing


def _still_ours(lock: RunLockHandle) -> None:
    # another run took the lock over (this one froze past the stale limit): it owns the night now
    if lock.lost:
        raise LockError(f"lock {lock.options.name!r} was taken over by another run; this run stops")


def _work(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions, stages: Stages,
          progress: Progress, run_id: int, started: datetime, lock: RunLockHandle) -> PipelineResult:
    ctx = ExecContext(settings=settings, stages=stages, factory=factory, progress=progress, retry=options.retry)
    t0 = time.perf_counter()
    timings: list[StageTiming] = []
    scope: set[int] = set()
    ingest_counts: dict[str, int] = {}
    if options.source or options.manifest:
        report, timing, scope = _ingest(factory, settings, options, progress)
        timings.append(timing)
        ingest_counts = {"registered": len(report.registered), "duplicates": len(report.duplicates),
                         "failed": len(report.failed), "conflicts": len(report.conflicts)}
        missing = [o for o in report.failed if o.error_code == "audio.missing"]
        ingest_counts["missing"] = len(missing)

    with factory() as session:
        to_transcribe, to_analyze = _refs(session, TO_TRANSCRIBE), _refs(session, ("transcribed",))
    log.info("work: %d calls to transcribe, %d to analyze", len(to_transcribe), len(to_analyze),
             extra={"qa_to_transcribe": len(to_transcribe), "qa_to_analyze": len(to_analyze)})
    _still_ours(lock)
    work = make_executor(options).run(ctx, to_transcribe, to_analyze)
    timings.extend(work.timings)
    outcomes = list(work.outcomes)

    _still_ours(lock)
    with factory() as session:
        to_score = _refs(session, ("analyzed",))
    if to_score:
        score_outcomes, timing = _score_route(ctx, to_score)
        outcomes.extend(score_outcomes)
        timings.append(timing)

    scope |= {o.ref.pk for o in outcomes}
    with factory() as session:
        figures = call_figures(session, sorted(scope))
        window = export_scope(session, options, sorted(scope)) if options.export else None
    artifacts = Artifacts()
    _still_ours(lock)
    if window is not None:
        artifacts, timing = _export(ctx, options, window, figures)
        timings.append(timing)

    failures = [CallFailure(o.ref.call_id, o.stage, o.code or "", o.message or "") for o in outcomes if not o.ok]
    partial = figures.failed or ingest_counts.get("conflicts") or ingest_counts.get("missing") or failures
    with factory() as session:
        versions = current_versions(session, since=started)
    return PipelineResult(run_id=run_id, status="partial" if partial else "ok", timings=timings, figures=figures,
                          ingest=ingest_counts, failures=failures, versions=versions, artifacts=artifacts,
                          asr_load_s=work.asr_load_s, seconds=time.perf_counter() - t0)


def _default_stages() -> Stages:
    from .stage_impl import default_stages  # the real stages pull in torch, whisper, jieba ...

    return default_stages()


def run_pipeline(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions = PipelineOptions(),
                 *, stages: Stages | None = None, progress: Progress | None = None) -> PipelineResult:
    """Run every stage over what is new or unfinished. Raises a :class:`QAError` when the run
    itself fails (lock held, database unreachable, model or rule pack cannot load); the batch
    run is recorded as ``failed`` with the error first."""
    options.validate()
    stages = stages or _default_stages()
    progress = progress or NullProgress()
    with acquire(factory, options.lock, purpose=options.kind) as lock:
        try:
            with factory() as session:
                run_id = start_run(session, options.kind, options.as_record())
                started = utcnow()
        except SQLAlchemyError as e:
            raise StorageError(f"cannot record the batch run: {e}") from e
        try:
            result = _work(factory, settings, options, stages, progress, run_id, started, lock)
        except BaseException as e:
            _record_failure(factory, run_id, e)
            if isinstance(e, SQLAlchemyError):
                raise StorageError(f"the run failed on a database error: {e}") from e
            raise
        with factory() as session:
            finish_run(session, run_id, status=result.status, counts=result.figures.as_counts(result.ingest),
                       timings=result.timings, versions=result.versions,
                       extra_timings={"asr_load_s": round(result.asr_load_s, 3), "total_s": round(result.seconds, 3)})
    log.info("run %d finished: %s", run_id, result.status,
             extra={"qa_run": run_id, "qa_status": result.status, "qa_calls": result.figures.calls,
                    "qa_failed": result.figures.failed})
    return result


def _record_failure(factory: sessionmaker[Session], run_id: int, error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}"
    log.error("run %d failed: %s", run_id, message)
    try:
        with factory() as session:
            finish_run(session, run_id, status="failed", counts={}, timings=[], versions={}, error=message)
    except SQLAlchemyError as e:
        # the error that stopped the run matters more than its record; the row stays 'running'
        log.error("could not record the failure of run %d: %s", run_id, e)
