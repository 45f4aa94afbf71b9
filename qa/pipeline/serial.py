"""The serial executor: every stage in the driver process, one batch of calls after another.

    driver:  prepare c1..c4 -> decode c1..c4 -> store -> analyze c1..c4 -> prepare c5..c8 ...

No worker processes: what a stage command over a handful of calls wants (``qa transcribe
S01``, ``qa analyze``), and what works where processes cannot be spawned. It goes through the
same per-call jobs as the other executors (:mod:`qa.pipeline.jobs`), so a call fails with the
same code, message and retries whichever executor ran it. The calls of a batch are prepared
together, so their voice activity detection runs as one batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from .jobs import ExecContext, JobOutcome, StageClock, WorkResult, decode_batch, prepare_calls, run_call
from .local import ExecutorOptions
from .stages import CallRef

log = logging.getLogger(__name__)


class SerialExecutor:
    def __init__(self, options: ExecutorOptions = ExecutorOptions()):
        options.validate()
        self.options = options

    def run(self, ctx: ExecContext, transcribe: Sequence[CallRef], analyze: Sequence[CallRef]) -> WorkResult:
        result = WorkResult()
        if not transcribe and not analyze:
            return result
        audio = sum(r.duration_s or 0.0 for r in transcribe)
        chained = transcribe if ctx.analyze_transcribed else ()
        clocks = {"prepare": StageClock("prepare", ctx.progress, len(transcribe), audio),
                  "transcribe": StageClock("transcribe", ctx.progress, len(transcribe), audio),
                  "analyze": StageClock("analyze", ctx.progress, len(chained) + len(analyze),
                                        sum(r.duration_s or 0.0 for r in (*chained, *analyze)))}
        analyzer: Any = None
        busy_s = 0.0

        def record(outcome: JobOutcome) -> None:
            clocks[outcome.stage].record(outcome)
            if outcome.stage != "prepare" or not outcome.ok:  # a prepared call counts when it is stored
                result.outcomes.append(outcome)
            if outcome.ok and outcome.stage in ("transcribe", "analyze"):
                ctx.crash.tick(outcome.stage)

        def analyze_all(refs: Sequence[CallRef]) -> None:
            nonlocal analyzer
            if refs and analyzer is None:
                analyzer = ctx.stages.open_analyzer(ctx.settings)  # errors here fail the run
            for ref in refs:
                clocks["analyze"].start()
                record(run_call(ctx.factory, ref, "analyze",
                                lambda s, pk=ref.pk: ctx.stages.analyze(s, analyzer, pk,
                                                                        wait_for_earlier=ctx.wait_for_earlier),
                                ctx.retry))

        analyze_all(analyze)
        if transcribe:
            started = time.perf_counter()
            asr = ctx.stages.load_asr(ctx.settings)
            result.asr_load_s = time.perf_counter() - started
            log.info("ASR model loaded in %.1f s", result.asr_load_s)
            per = self.options.calls_per_decode
            for at in range(0, len(transcribe), per):
                batch = transcribe[at:at + per]
                clocks["prepare"].start()
                prepared = prepare_calls(ctx.stages, ctx.settings, batch, ctx.factory, ctx.retry)
                for outcome in prepared:
                    record(outcome)
                clocks["transcribe"].start()
                out = decode_batch(ctx.stages, asr, [(o.ref, o.value) for o in prepared if o.ok], ctx.factory,
                                   ctx.retry)
                busy_s += out.busy_s
                for failed in out.failed:
                    record(failed)
                stored = []
                for ref, prep, decoded in out.decoded:
                    outcome = run_call(ctx.factory, ref, "transcribe",
                                       lambda s, p=prep, d=decoded: ctx.stages.store_transcript(s, asr, p, d),
                                       ctx.retry)
                    record(outcome)
                    if outcome.ok:
                        stored.append(ref)
                if ctx.analyze_transcribed:
                    analyze_all(stored)
        transcribe_timing = clocks["transcribe"].timing
        if transcribe_timing.calls:
            transcribe_timing.busy_s = busy_s
        result.timings = [t for t in (clock.close() for clock in clocks.values()) if t.calls]
        return result
