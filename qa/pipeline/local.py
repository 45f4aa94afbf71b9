"""The local executor: CPU work in worker processes, overlapped with the decode loop.

The driver process holds the Whisper model (on the GPU when there is one) and runs the decode
loop; one pool of worker processes decodes audio and cuts speech segments (``prepare``) ahead
of it, a second pool runs the rules and classifiers (``analyze``) behind it:

    prepare pool:  prepare c5  prepare c6  prepare c7  prepare c8 ...
    driver:        [load model] decode c1..c4 -> store -> decode c5..c8 -> store ...
    analyze pool:  [load rule pack + classifiers]  analyze c1  analyze c2 ...

Two pools, so that preparation never queues behind analysis (loading the classifiers alone
takes seconds) and the decoder is not kept waiting. Back-pressure: at most ``prefetch``
prepared calls exist at any time (in flight or waiting for the decoder) and each pool has at
most its size in jobs queued, so memory stays bounded however many calls the night has. The
model and the analyzers load while the first calls are being prepared. ``busy_s`` of the
transcribe stage is the time spent inside ``decode``: its share of the stage's wall time is
the GPU loop's utilisation.

A worker process that dies (a segfault in a codec, the OOM killer) breaks its pool: the pool is
started again and the calls that were in flight are retried one at a time, so the call that
kills a worker again is marked failed (``worker.crashed``) and the others go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .jobs import (
    ExecContext,
    JobOutcome,
    StageClock,
    WorkResult,
    analyze_job,
    decode_batch,
    init_worker,
    log_setup,
    mark_failed,
    prepare_job,
    run_call,
    warm_job,
)
from .stages import CallRef

log = logging.getLogger(__name__)


def default_workers() -> int:
    # one core stays with the driver's decode loop
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class ExecutorOptions:
    """How many worker processes (local) or actors (Ray) do the CPU work, and how far ahead of
    the decoder they prepare calls."""

    workers: int = 0  # CPU worker processes in all; 0: one per core but one
    prefetch: int = 0  # prepared calls kept ahead of the decoder; 0: 2 * calls_per_decode + workers
    calls_per_decode: int = 4  # calls whose speech windows go to the decoder together

    def validate(self) -> None:
        if self.workers < 0 or self.prefetch < 0:
            raise ValueError("workers and prefetch must not be negative")
        if self.calls_per_decode < 1:
            raise ValueError("calls_per_decode must be at least 1")

    @property
    def n_workers(self) -> int:
        return self.workers or default_workers()

    @property
    def pool_sizes(self) -> tuple[int, int]:
        """Prepare and analyze pool sizes: the workers split in two, at least one each (on a
        two-core machine the two single workers share a core; both mostly wait on the other)."""
        n = self.n_workers
        return max(1, n // 2), max(1, n - n // 2)

    @property
    def n_prefetch(self) -> int:
        return max(self.prefetch or 2 * self.calls_per_decode + self.n_workers, self.calls_per_decode)


class LocalExecutor:
    def __init__(self, options: ExecutorOptions = ExecutorOptions()):
        options.validate()
        self.options = options

    def run(self, ctx: ExecContext, transcribe: Sequence[CallRef], analyze: Sequence[CallRef]) -> WorkResult:
        if not transcribe and not analyze:
            return WorkResult()
        n_prepare, n_analyze = self.options.pool_sizes
        prepare = _Pool("prepare", prepare_job, n_prepare, ctx)
        analyze_pool = _Pool("analyze", analyze_job, n_analyze, ctx)
        try:
            return _Loop(ctx, prepare, analyze_pool, self.options, transcribe, analyze).run()
        finally:
            prepare.close()
            analyze_pool.close()


def _executor(ctx: ExecContext, size: int) -> ProcessPoolExecutor:
    # spawn, not fork: the driver may hold CUDA/OpenMP state that a forked child must not inherit
    return ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
                               initargs=(ctx.settings, ctx.stages, ctx.retry, os.getpid(), log_setup()))


class _Pool:
    """A process pool for one stage's per-call jobs, restarted when a worker dies."""

    def __init__(self, stage: str, job: Callable[[CallRef], JobOutcome], size: int, ctx: ExecContext):
        self.stage, self.job, self.size, self.ctx = stage, job, size, ctx
        self.executor = _executor(ctx, size)
        self.running: dict[Future, tuple[CallRef, bool]] = {}  # future -> (call, submitted alone)
        self.suspects: deque[CallRef] = deque()  # in flight when a worker died: retried one by one
        self.warming: set[Future] = set()

    def warm(self) -> None:
        self.warming = {self.executor.submit(warm_job) for _ in range(self.size)}

    def has_room(self, limit: int) -> bool:
        return not self.suspects and len(self.running) < limit

    def submit(self, ref: CallRef) -> None:
        self.running[self.executor.submit(self.job, ref)] = (ref, False)

    def pump_suspects(self) -> None:
        if self.suspects and not self.running:
            ref = self.suspects.popleft()
            self.running[self.executor.submit(self.job, ref)] = (ref, True)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.suspects)

    def futures(self) -> set[Future]:
        return set(self.running) | self.warming

    def finish(self, fut: Future) -> JobOutcome | None:
        """The outcome of a finished job; ``None`` when its worker died and it will be retried."""
        if fut in self.warming:
            self.warming.discard(fut)
            try:
                fut.result()  # an analyzer that cannot load fails the run
            except BrokenProcessPool:
                pass  # the pool restarts when a call's job sees it; the analyzer then loads lazily
            return None
        if fut not in self.running:
            return None  # a job of a pool that died: it is among the suspects now
        ref, alone = self.running.pop(fut)
        try:
            return fut.result()
        except BrokenProcessPool:
            return self._broken(ref, alone)

    def _broken(self, ref: CallRef, alone: bool) -> JobOutcome | None:
        # jobs that finished before the worker died keep their results; the rest are suspects
        lost = {f: r for f, (r, _) in self.running.items() if not (f.done() and f.exception() is None)}
        log.error("a %s worker process died with call %s%s in flight; restarting the pool", self.stage,
                  ref.call_id, f" and {len(lost)} more" if lost else "")
        for f in lost:
            del self.running[f]
        self.warming.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _executor(self.ctx, self.size)
        if not alone:
            self.suspects.extend([ref, *lost.values()])
            return None
        self.suspects.extend(lost.values())
        message = f"{self.stage}: the worker process died while handling this call (crash or out of memory)"
        mark_failed(self.ctx.factory, ref, "worker.crashed", message, self.ctx.retry)
        return JobOutcome(ref, self.stage, False, started_at=time.time(), code="worker.crashed", message=message)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Loop:
    def __init__(self, ctx: ExecContext, prepare: _Pool, analyze: _Pool, options: ExecutorOptions,
                 transcribe: Sequence[CallRef], to_analyze: Sequence[CallRef]):
        self.ctx, self.prepare, self.analyze, self.options = ctx, prepare, analyze, options
        self.prep_todo: deque[CallRef] = deque(transcribe)
        self.ready: deque[tuple[CallRef, Any]] = deque()
        self.ana_todo: deque[CallRef] = deque(to_analyze)
        self.result = WorkResult()
        audio = sum(r.duration_s or 0.0 for r in transcribe)
        progress = ctx.progress
        chained = transcribe if ctx.analyze_transcribed else ()
        self.clocks = {"prepare": StageClock("prepare", progress, len(transcribe), audio),
                       "transcribe": StageClock("transcribe", progress, len(transcribe), audio),
                       "analyze": StageClock("analyze", progress, len(chained) + len(to_analyze),
                                             sum(r.duration_s or 0.0 for r in (*chained, *to_analyze)))}
        self.busy_s = 0.0

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, outcome: JobOutcome) -> None:
        self.clocks[outcome.stage].record(outcome)
        if outcome.stage != "prepare" or not outcome.ok:
            # a prepared call is reported when its transcript is stored
            self.result.outcomes.append(outcome)
        if outcome.ok and outcome.stage in ("transcribe", "analyze"):
            self.ctx.crash.tick(outcome.stage)

    def _top_up(self) -> None:
        prepare, analyze = self.prepare, self.analyze
        prepare.pump_suspects()
        while self.prep_todo and prepare.has_room(self.options.n_prefetch - len(self.ready)):
            self.clocks["prepare"].start()
            prepare.submit(self.prep_todo.popleft())
        analyze.pump_suspects()
        while self.ana_todo and analyze.has_room(analyze.size):
            self.clocks["analyze"].start()
            analyze.submit(self.ana_todo.popleft())

    def _collect(self, done: set[Future]) -> None:
        for fut in done:
            pool = self.prepare if fut in self.prepare.futures() else self.analyze
            # an exception here is not about one call (e.g. the rule pack cannot load): the run fails
            outcome = pool.finish(fut)
            if outcome is None:
                continue
            if outcome.stage == "prepare" and outcome.ok:
                self.ready.append((outcome.ref, outcome.value))
            self._record(outcome)

    def _running(self) -> set[Future]:
        return self.prepare.futures() | self.analyze.futures()

    def _poll(self) -> None:
        self._collect({f for f in self._running() if f.done()})

    def _pending(self) -> bool:
        return bool(self.prep_todo or self.prepare.busy or self.ready or self.ana_todo or self.analyze.busy)

    # ------------------------------------------------------------------ the decode loop

    def _store(self, asr: Any, ref: CallRef, prepared: Any, decoded: Any) -> None:
        stages = self.ctx.stages
        outcome = run_call(self.ctx.factory, ref, "transcribe",
                           lambda s: stages.store_transcript(s, asr, prepared, decoded), self.ctx.retry)
        self._record(outcome)
        if outcome.ok and self.ctx.analyze_transcribed:
            self.ana_todo.append(ref)

    def run(self) -> WorkResult:
        ctx, per = self.ctx, self.options.calls_per_decode
        self._top_up()
        if self.ana_todo or ctx.analyze_transcribed:
            self.analyze.warm()  # rule pack and classifiers load while the first calls are decoded
        asr = None
        if self.prep_todo or self.prepare.busy:
            started = time.perf_counter()
            asr = ctx.stages.load_asr(ctx.settings)  # while the workers prepare the first calls
            self.result.asr_load_s = time.perf_counter() - started
            log.info("ASR model loaded in %.1f s", self.result.asr_load_s)
            self.clocks["transcribe"].start()
        while self._pending():
            self._poll()
            no_more = not (self.prep_todo or self.prepare.busy)
            if self.ready and (len(self.ready) >= per or no_more):
                batch = [self.ready.popleft() for _ in range(min(per, len(self.ready)))]
                self._top_up()  # keep the workers busy while the decoder is
                out = decode_batch(ctx.stages, asr, batch, ctx.factory, ctx.retry)
                self.busy_s += out.busy_s
                for failed in out.failed:
                    self._record(failed)
                for ref, prepared, decoded in out.decoded:
                    self._store(asr, ref, prepared, decoded)
                self._top_up()
                continue
            self._top_up()
            running = self._running()
            if running:
                self._collect(wait(running, return_when=FIRST_COMPLETED).done)
        transcribe = self.clocks["transcribe"].timing
        if transcribe.calls:
            transcribe.busy_s = self.busy_s
        timings = [clock.close() for clock in self.clocks.values()]
        self.result.timings = [t for t in timings if t.calls]
        return self.result
