"""The batch pipeline: ingest -> prepare -> transcribe -> analyze -> score/route -> export+report.

``run_pipeline`` is what ``qa run``, ``qa nightly`` and ``qa demo`` call, and the stage
commands too (``qa transcribe``, ``qa analyze``, ``qa score``: ``steps`` names the stages to
run, ``call_ids`` the calls). It

* takes the database's run lock (a second concurrent run fails with a LockError naming the
  holder; the lock of a dead run is taken over), so a stage command never works beside a
  nightly run;
* records a batch run (``running`` at once, so a crashed run stays visible; counts, timings
  per stage and versions at the end);
* works incrementally: each stage picks only the calls whose ``status`` says its output is
  missing, so a re-run after a crash (or after new recordings arrived) continues where work
  stopped, and nothing is written twice (each call's result is one transaction, and the
  tables' unique constraints back that up);
* isolates failures: a call that fails is marked ``failed`` with its error code and the run
  goes on (:mod:`qa.pipeline.jobs`); transient database errors are retried with backoff.

The prepare/transcribe/analyze stages run on an executor: :class:`~qa.pipeline.local.LocalExecutor`
(worker processes, the default), :class:`~qa.pipeline.serial.SerialExecutor` (everything in
this process) or :class:`~qa.pipeline.ray.RayExecutor` (a Ray cluster).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Sequence

from sqlalchemy import select, true
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..audit import checkpoint_now
from ..config import Settings
from ..domain import CallStatus
from ..errors import LockError, NotFound, StorageError
from ..ingest.register import IngestOptions, IngestReport, find_recordings, ingest
from ..storage import chunked, write_session
from ..storage.locks import LockOptions, RunLockHandle, acquire
from ..storage.models import Call, Transcript
from ..storage.retry import RetryPolicy
from ..timeutil import day_span, local_today, utcnow
from .jobs import ExecContext, Executor, JobOutcome, StageClock, run_call
from .local import ExecutorOptions, LocalExecutor
from .serial import SerialExecutor
from .progress import NullProgress, Progress
from .runs import StageTiming, current_versions, finish_run, start_run
from .stages import Artifacts, CallRef, ExportScope, Stages, WhisperStages
from .summary import CallFigures, call_figures

log = logging.getLogger(__name__)

EXECUTORS = ("local", "serial", "ray")
RUN_KINDS = ("run", "nightly", "demo", "transcribe", "analyze", "score")
STEPS = ("transcribe", "analyze", "score", "export")  # ingest runs when a source is given


@dataclass(frozen=True)
class PipelineOptions:
    kind: str = "run"
    source: str | None = None  # a folder of recordings to ingest first
    manifest: str | None = None  # or a manifest CSV/JSONL
    day: date | None = None  # labels the export and report (default: today)
    executor: str = "local"
    address: str | None = None  # Ray cluster address (None: start a local Ray instance)
    workers: ExecutorOptions = ExecutorOptions()
    steps: tuple[str, ...] = STEPS  # the stages to run
    call_ids: tuple[str, ...] = ()  # only these calls (external ids); empty: every call whose work is due
    force: bool = False  # transcribe again calls that are past transcription
    reanalyze: bool = False  # analyze every call with a current transcript, not only new ones
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
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or not self.steps:
            raise ValueError(f"steps must be some of {', '.join(STEPS)}, got {', '.join(self.steps) or 'none'}")
        self.workers.validate()
        self.lock.validate()
        self.retry.validate()

    def the_day(self, tz: tzinfo) -> date:
        """``day``, else today on the call centre's clock (``tz``, the ``timezone`` setting)."""
        return self.day or local_today(tz)

    def as_record(self, tz: tzinfo) -> dict:
        """What the batch-run row keeps of the options."""
        return {"source": self.source, "manifest": self.manifest, "day": self.the_day(tz).isoformat(),
                "executor": self.executor, "address": self.address, "workers": self.workers.n_workers,
                "prefetch": self.workers.n_prefetch, "calls_per_decode": self.workers.calls_per_decode,
                "steps": list(self.steps), "call_ids": list(self.call_ids), "force": self.force,
                "reanalyze": self.reanalyze, "export": self.export}


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
    outcomes: list[JobOutcome] = field(default_factory=list)  # per call and stage, in the order they finished
    versions: dict = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    asr_load_s: float = 0.0
    seconds: float = 0.0


def default_stages() -> Stages:
    return WhisperStages()


def make_executor(options: PipelineOptions) -> Executor:
    if options.executor == "ray":
        from .ray import RayExecutor  # Ray is optional: imported only when asked for

        return RayExecutor(address=options.address, options=options.workers)
    if options.executor == "serial":
        return SerialExecutor(options.workers)
    return LocalExecutor(options.workers)


def _refs(session: Session, where, call_pks: set[int] | None) -> list[CallRef]:
    # an erased call (qa purge) has nothing left to work on, whatever --force says
    stmt = (select(Call.id, Call.call_id, Call.file_path, Call.channel_layout, Call.duration_s)
            .where(where, Call.purged_at.is_(None)).order_by(Call.id))
    rows = session.execute(stmt).all()
    return [CallRef(pk, cid, path, layout, duration or 0.0) for pk, cid, path, layout, duration in rows
            if call_pks is None or pk in call_pks]


def _named_calls(session: Session, call_ids: Sequence[str]) -> set[int]:
    found = dict(row for chunk in chunked(list(call_ids)) for row in session.execute(
        select(Call.call_id, Call.id).where(Call.call_id.in_(chunk))))
    missing = [c for c in call_ids if c not in found]
    if missing:
        raise NotFound(f"no such call(s): {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    return set(found.values())


@dataclass(frozen=True)
class Work:
    transcribe: list[CallRef]
    analyze: list[CallRef]


def select_work(session: Session, options: PipelineOptions) -> Work:
    """The calls each stage of this run starts with (scoring picks its calls after analysis)."""
    pks = _named_calls(session, options.call_ids) if options.call_ids else None
    transcribe: list[CallRef] = []
    if "transcribe" in options.steps:
        due = true() if options.force else Call.status == CallStatus.REGISTERED
        transcribe = _refs(session, due, pks)
    analyze: list[CallRef] = []
    if "analyze" in options.steps:
        due = Call.status == CallStatus.TRANSCRIBED
        if options.reanalyze:
            due = Call.id.in_(select(Transcript.call_id).where(Transcript.is_current.is_(True)))
        queued = {r.pk for r in transcribe}
        analyze = [r for r in _refs(session, due, pks) if r.pk not in queued]
    return Work(transcribe, analyze)


def _ingest(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions,
            progress: Progress) -> tuple[IngestReport, StageTiming, set[int]]:
    layout = settings.channel_layout
    recordings = find_recordings(folder=options.source, manifest=options.manifest, channel_layout=layout,
                                 zone=settings.tz, customer_key=settings.customer_key)
    clock = StageClock("ingest", progress, len(recordings), 0.0)
    clock.start()
    ingest_options = IngestOptions(default_channel_layout=layout, max_duration_s=settings.max_duration_s)
    with write_session(factory) as session:
        report = ingest(session, recordings, ingest_options,
                        progress=lambda outcome: clock.tick(outcome.outcome != "failed", 0.0))
        ids = [o.call_id for o in report.outcomes]
        rows = [row for chunk in chunked(ids) for row in session.execute(
            select(Call.id, Call.duration_s).where(Call.call_id.in_(chunk)))]
    timing = clock.close()
    timing.audio_s = sum(d or 0.0 for _, d in rows)
    return report, timing, {pk for pk, _ in rows}


def _score_route(ctx: ExecContext, refs: list[CallRef]) -> tuple[list[JobOutcome], StageTiming]:
    clock = StageClock("score", ctx.progress, len(refs), sum(r.duration_s for r in refs))
    outcomes = []
    for ref in refs:
        clock.start()
        outcome = run_call(ctx.factory, ref, "score",
                           lambda s, pk=ref.pk: ctx.stages.score_route(s, ctx.settings, pk), ctx.retry)
        clock.record(outcome)
        outcomes.append(outcome)
    return outcomes, clock.close()


def export_scope(session: Session, options: PipelineOptions, settings: Settings,
                 call_pks: Sequence[int]) -> ExportScope | None:
    """The export holds exactly this run's calls (those it ingested, found already known, or
    worked on); the report covers the local day of ``--date`` and the span of those calls'
    start times. ``None`` when the run has no calls to export."""
    if not call_pks:
        return None
    day = options.the_day(settings.tz)
    starts = [row[0] for chunk in chunked(list(call_pks)) for row in session.execute(
        select(Call.started_at).where(Call.id.in_(chunk))) if row[0] is not None]
    since = until = None
    if options.day is not None:
        since, until = day_span(day, tz=settings.tz)
    if starts:
        since = min([*starts, since] if since else starts)
        until = max([*starts, until - timedelta(seconds=1)] if until else starts) + timedelta(seconds=1)
    return ExportScope(day, since, until, call_pks=frozenset(call_pks))


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


def _analyze_deferred(ctx: ExecContext, outcomes: list[JobOutcome]) -> list[JobOutcome]:
    """Analyse, in arrival order, the calls deferred because an earlier call of their customer
    was still untranscribed: the batch's transcriptions are done now, and whatever is still
    untranscribed (not part of this run) is judged as unknown."""
    deferred = [o.ref for o in outcomes if o.stage == "analyze" and o.ok
                and getattr(o.value, "status", None) == "deferred"]
    if not deferred:
        return outcomes
    log.info("analysing %d calls that waited for earlier calls of their customers", len(deferred))
    final = SerialExecutor().run(replace(ctx, wait_for_earlier=False), [], sorted(deferred, key=lambda r: r.pk))
    waited = {r.pk for r in deferred}
    return [o for o in outcomes if not (o.stage == "analyze" and o.ref.pk in waited)] + final.outcomes


def _still_ours(lock: RunLockHandle) -> None:
    # another run took the lock over (this one froze past the stale limit): it owns the night now
    if lock.lost:
        raise LockError(f"lock {lock.options.name!r} was taken over by another run; this run stops")


def _work(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions, stages: Stages,
          progress: Progress, run_id: int, started: datetime, lock: RunLockHandle) -> PipelineResult:
    ctx = ExecContext(settings=settings, stages=stages, factory=factory, progress=progress, retry=options.retry,
                      analyze_transcribed="analyze" in options.steps)
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
        work = select_work(session, options)
    log.info("work: %d calls to transcribe, %d to analyze", len(work.transcribe), len(work.analyze),
             extra={"qa_to_transcribe": len(work.transcribe), "qa_to_analyze": len(work.analyze)})
    _still_ours(lock)
    done = make_executor(options).run(ctx, work.transcribe, work.analyze)
    timings.extend(done.timings)
    outcomes = list(done.outcomes)
    outcomes = _analyze_deferred(ctx, outcomes)

    _still_ours(lock)
    if "score" in options.steps:
        with factory() as session:
            pks = _named_calls(session, options.call_ids) if options.call_ids else None
            to_score = _refs(session, Call.status == CallStatus.ANALYZED, pks)
        if to_score:
            score_outcomes, timing = _score_route(ctx, to_score)
            outcomes.extend(score_outcomes)
            timings.append(timing)

    scope |= {o.ref.pk for o in outcomes}
    with factory() as session:
        figures = call_figures(session, sorted(scope))
        exporting = options.export and "export" in options.steps
        window = export_scope(session, options, settings, sorted(scope)) if exporting else None
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
                          ingest=ingest_counts, failures=failures, outcomes=outcomes, versions=versions,
                          artifacts=artifacts, asr_load_s=done.asr_load_s, seconds=time.perf_counter() - t0)


def run_pipeline(factory: sessionmaker[Session], settings: Settings, options: PipelineOptions = PipelineOptions(),
                 *, stages: Stages | None = None, progress: Progress | None = None) -> PipelineResult:
    """Run the chosen stages over what is new or unfinished. Raises a :class:`QAError` when the
    run itself fails (lock held, database unreachable, model or rule pack cannot load); the
    batch run is recorded as ``failed`` with the error first."""
    options.validate()
    stages = stages or default_stages()
    progress = progress or NullProgress()
    with acquire(factory, options.lock, purpose=options.kind) as lock:
        try:
            with write_session(factory) as session:
                run_id = start_run(session, options.kind, options.as_record(settings.tz))
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
        with write_session(factory) as session:
            finish_run(session, run_id, status=result.status, counts=result.figures.as_counts(result.ingest),
                       timings=result.timings, versions=result.versions,
                       extra_timings={"asr_load_s": round(result.asr_load_s, 3), "total_s": round(result.seconds, 3)})
        # what the run put in the audit log is signed before the lock is let go
        checkpoint_now(factory, settings.audit_key_file, settings.effective_database_url, f"{options.kind} run {run_id}")
    log.info("run %d finished: %s", run_id, result.status,
             extra={"qa_run": run_id, "qa_status": result.status, "qa_calls": result.figures.calls,
                    "qa_failed": result.figures.failed})
    return result


def _record_failure(factory: sessionmaker[Session], run_id: int, error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}"
    log.error("run %d failed: %s", run_id, message)
    try:
        with write_session(factory) as session:
            finish_run(session, run_id, status="failed", counts={}, timings=[], versions={}, error=message)
    except SQLAlchemyError as e:
        # the error that stopped the run matters more than its record; the row stays 'running'
        log.error("could not record the failure of run %d: %s", run_id, e)
