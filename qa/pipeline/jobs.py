"""The per-call job machinery every executor shares: **the** place where a call fails.

A call that fails for its own reasons (bad audio, a rule that cannot evaluate it) is marked
``failed`` with its error code and message (:func:`fail_call`), and the job reports that
instead of raising; only errors that make every call fail (an invalid rule pack, a model that
cannot load) propagate and fail the run. Every database step of a call is one write
transaction (:func:`run_call`), retried on transient errors. Error codes are stable: a
:class:`~qa.errors.QAError` keeps its own, anything else is ``<stage>.internal``; the stored
message is ``<stage>: <error>``, cut at :data:`MAX_MESSAGE` characters.

Also here: what a run's executor gets (:class:`ExecContext`) and gives back
(:class:`WorkResult`), the per-stage clock, the crash test hook, and the state a worker
process (or Ray actor) keeps between jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from .. import storage
from ..config import Settings
from ..domain import CallStatus
from ..errors import QAError
from ..storage.models import Call
from ..storage.retry import RetryPolicy, retrying
from ..timeutil import utcnow
from .progress import Progress, StageProgress
from .runs import StageTiming
from .stages import CallRef, Stages

log = logging.getLogger(__name__)

MAX_MESSAGE = 4000  # characters of an error message kept on the call row
CRASH_ENV = "QA_TEST_CRASH_AFTER"


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one call in one stage."""

    ref: CallRef
    stage: str
    ok: bool
    count: int = 0  # utterances stored / findings written
    seconds: float = 0.0
    started_at: float = 0.0  # epoch seconds, so executors can measure a stage's span across processes
    busy_s: float = 0.0  # this call's share of the decode loop's time (transcribe only)
    code: str | None = None
    message: str | None = None
    value: Any = field(default=None, compare=False)  # the prepared call (prepare) or the stage's result


def error_code(stage: str, error: BaseException) -> str:
    return error.code if isinstance(error, QAError) else f"{stage}.internal"


def mark_failed(factory: sessionmaker[Session], ref: CallRef, code: str, message: str,
                policy: RetryPolicy = RetryPolicy()) -> None:
    def tx() -> None:
        with storage.write_session(factory) as session:
            session.execute(update(Call).where(Call.id == ref.pk)
                            .values(status=CallStatus.FAILED, error_code=code, error_message=message[:MAX_MESSAGE],
                                    updated_at=utcnow()))
            session.commit()

    retrying(tx, policy, what=f"mark call {ref.call_id} failed")


def fail_call(factory: sessionmaker[Session], ref: CallRef, stage: str, error: BaseException,
              policy: RetryPolicy, *, started: float | None = None) -> JobOutcome:
    """Record that ``ref`` failed in ``stage`` and say so."""
    code, message = error_code(stage, error), f"{stage}: {error}"
    log.warning("call %s failed in %s: [%s] %s", ref.call_id, stage, code, error,
                exc_info=(type(error), error, error.__traceback__) if not isinstance(error, QAError) else None,
                extra={"qa_call": ref.call_id, "qa_stage": stage, "qa_error_code": code})
    mark_failed(factory, ref, code, message, policy)
    seconds = 0.0 if started is None else time.perf_counter() - started
    return JobOutcome(ref, stage, False, seconds=seconds, started_at=time.time() - seconds, code=code,
                      message=message[:MAX_MESSAGE])


def in_transaction(factory: sessionmaker[Session], fn: Callable[[Session], Any], policy: RetryPolicy,
                   what: str) -> Any:
    """``fn(session)`` in a fresh write session, committed on success, retried on transient errors."""
    def tx() -> Any:
        with storage.write_session(factory) as session:
            try:
                result = fn(session)
                session.commit()
                return result
            except BaseException:
                session.rollback()
                raise

    return retrying(tx, policy, what=what)


def run_call(factory: sessionmaker[Session], ref: CallRef, stage: str, fn: Callable[[Session], Any],
             policy: RetryPolicy) -> JobOutcome:
    """One call through one database step of ``stage``, failure-isolated."""
    wall, started = time.time(), time.perf_counter()
    try:
        value = in_transaction(factory, fn, policy, f"{stage} {ref.call_id}")
    except Exception as e:  # noqa: BLE001 - one bad call must not stop the batch
        return fail_call(factory, ref, stage, e, policy, started=started)
    count = getattr(value, "findings", value)  # analyze returns a result, the others a count
    return JobOutcome(ref, stage, True, count=int(count or 0), seconds=time.perf_counter() - started,
                      started_at=wall, value=value)


def prepare_calls(stages: Stages, settings: Settings, refs: Sequence[CallRef], factory: sessionmaker[Session],
                  policy: RetryPolicy) -> list[JobOutcome]:
    """Prepare ``refs`` together (their speech is detected in one batch); a call whose audio
    is unusable fails alone. If preparing the batch breaks as a whole, each call is prepared
    alone so that only the culprit fails."""
    wall, started = time.time(), time.perf_counter()
    try:
        outcomes = stages.prepare(settings, refs)
        if len(outcomes) != len(refs):
            raise QAError(f"prepare gave {len(outcomes)} results for {len(refs)} calls", code="prepare.internal")
    except Exception as e:  # noqa: BLE001 - isolate the call that broke the batch
        if len(refs) == 1:
            return [fail_call(factory, refs[0], "prepare", e, policy, started=started)]
        log.warning("preparing %d calls together failed (%s); preparing them one by one", len(refs), e)
        return [o for ref in refs for o in prepare_calls(stages, settings, [ref], factory, policy)]
    seconds = (time.perf_counter() - started) / len(refs)
    return [fail_call(factory, ref, "prepare", out, policy) if isinstance(out, Exception)
            else JobOutcome(ref, "prepare", True, seconds=seconds, started_at=wall, value=out)
            for ref, out in zip(refs, outcomes)]


@dataclass
class DecodedBatch:
    decoded: list[tuple[CallRef, Any, Any]]  # (call, prepared, decoder output)
    failed: list[JobOutcome]
    busy_s: float


def decode_batch(stages: Stages, asr: Any, batch: list[tuple[CallRef, Any]], factory: sessionmaker[Session],
                 policy: RetryPolicy) -> DecodedBatch:
    """Decode the prepared calls of ``batch`` together; if that fails, decode them one by one
    so that the call that broke the batch fails alone (marked failed) and the others go on."""
    started = time.perf_counter()
    try:
        decoded = stages.decode(asr, [p for _, p in batch])
        return DecodedBatch([(ref, p, d) for (ref, p), d in zip(batch, decoded, strict=True)], [],
                            time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001 - isolate the call that broke the batch
        if len(batch) == 1:
            return DecodedBatch([], [fail_call(factory, batch[0][0], "transcribe", e, policy, started=started)],
                                time.perf_counter() - started)
        log.warning("decoding a batch of %d calls failed (%s); decoding them one by one", len(batch), e)
    result = DecodedBatch([], [], time.perf_counter() - started)
    for one in batch:
        part = decode_batch(stages, asr, [one], factory, policy)
        result.decoded += part.decoded
        result.failed += part.failed
        result.busy_s += part.busy_s
    return result


# --- what a run's executor gets and gives back -----------------------------------------------

class CrashHook:
    """Test hook, documented in docs/nightly.md: ``QA_TEST_CRASH_AFTER=transcribe:2`` makes the
    driver SIGKILL itself right after the 2nd call of that stage was committed, so the
    crash-and-resume tests can kill a run at a known point without sleeps. Unset in production."""

    def __init__(self, spec: str | None):
        self.stage, self.after, self.seen = None, 0, 0
        if spec:
            stage, _, count = spec.partition(":")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"{CRASH_ENV} must look like stage:N (N >= 1), got {spec!r}")
            self.stage, self.after = stage, int(count)

    @classmethod
    def from_env(cls) -> CrashHook:
        return cls(os.environ.get(CRASH_ENV))

    def tick(self, stage: str) -> None:
        if stage != self.stage:
            return
        self.seen += 1
        if self.seen >= self.after:
            log.error("%s=%s:%d reached: killing this process", CRASH_ENV, self.stage, self.after)
            for handler in logging.getLogger("qa").handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class ExecContext:
    settings: Settings
    stages: Stages
    factory: sessionmaker[Session]
    progress: Progress
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    crash: CrashHook = field(default_factory=CrashHook.from_env)
    analyze_transcribed: bool = True  # analyze each call once its transcript is stored
    # defer a call while an earlier call of its customer is untranscribed (off in the final pass)
    wait_for_earlier: bool = True


class StageClock:
    """Wall time from a stage's first piece of work to its last, plus a progress display."""

    def __init__(self, name: str, progress: Progress, total_calls: int, total_audio_s: float):
        self.timing = StageTiming(name)
        self._bar: StageProgress = progress.stage(name, total_calls, total_audio_s)
        self._first: float | None = None
        self._last: float | None = None

    def start(self) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def tick(self, ok: bool, audio_s: float) -> None:
        """One call done (``ok`` or failed), with ``audio_s`` seconds of audio."""
        self.start()
        self._last = time.perf_counter()
        t = self.timing
        t.calls += 1
        t.audio_s += audio_s
        t.failed += 0 if ok else 1
        t.seconds = self._last - self._first
        self._bar.advance(1, audio_s, 0 if ok else 1)

    def record(self, outcome: JobOutcome) -> None:
        self.tick(outcome.ok, outcome.ref.duration_s or 0.0)

    def close(self) -> StageTiming:
        self._bar.close()
        return self.timing


@dataclass
class WorkResult:
    """Per-call outcomes and per-stage timings of the prepare/transcribe/analyze stages."""

    outcomes: list[JobOutcome] = field(default_factory=list)
    timings: list[StageTiming] = field(default_factory=list)
    asr_load_s: float = 0.0


class Executor(Protocol):
    def run(self, ctx: ExecContext, transcribe: Sequence[CallRef], analyze: Sequence[CallRef]) -> WorkResult:
        """Transcribe ``transcribe`` (then, with ``ctx.analyze_transcribed``, analyze them) and
        analyze ``analyze``."""


# --- worker processes ------------------------------------------------------------------------

class WorkerState:
    """What one worker process (or Ray actor) keeps between jobs."""

    def __init__(self, settings: Settings, stages: Stages, policy: RetryPolicy):
        self.settings, self.stages, self.policy = settings, stages, policy
        self._factory: sessionmaker[Session] | None = None
        self._analyzer: Any = None

    @property
    def factory(self) -> sessionmaker[Session]:
        if self._factory is None:
            self._factory = storage.session_factory(storage.make_engine(self.settings.effective_database_url))
        return self._factory

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            self._analyzer = self.stages.open_analyzer(self.settings)
        return self._analyzer

    def run(self, ref: CallRef, stage: str, fn: Callable[[Session], Any]) -> JobOutcome:
        return run_call(self.factory, ref, stage, fn, self.policy)

    def prepare(self, ref: CallRef) -> JobOutcome:
        (outcome,) = prepare_calls(self.stages, self.settings, [ref], self.factory, self.policy)
        return outcome

    def analyze(self, ref: CallRef) -> JobOutcome:
        analyzer = self.analyzer  # loading errors concern every call: they propagate
        return run_call(self.factory, ref, "analyze", lambda s: self.stages.analyze(s, analyzer, ref.pk), self.policy)


_STATE: WorkerState | None = None


def _exit_with_parent(parent_pid: int) -> None:
    # a worker whose driver was killed (kill -9, OOM) must not linger and hold the database
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def log_setup() -> tuple[int, logging.Formatter | None]:
    """The driver's log level and format, for :func:`init_worker` to copy."""
    root = logging.getLogger("qa")
    return root.getEffectiveLevel(), root.handlers[0].formatter if root.handlers else None


def configure_logging(logs: tuple[int, logging.Formatter | None]) -> None:
    """A spawned worker starts with no logging set up; send its records to stderr in the
    driver's level and format (JSON lines under cron)."""
    level, formatter = logs
    root = logging.getLogger("qa")
    handler = logging.StreamHandler(sys.stderr)
    if formatter is not None:
        handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def init_worker(settings: Settings, stages: Stages, policy: RetryPolicy, parent_pid: int,
                logs: tuple[int, logging.Formatter | None]) -> None:
    """ProcessPoolExecutor initializer."""
    global _STATE
    configure_logging(logs)
    # the driver's decode loop owns the cores' math libraries; one thread per worker is enough
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    else:
        os.environ["OMP_NUM_THREADS"] = "1"
    _STATE = WorkerState(settings, stages, policy)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()


def prepare_job(ref: CallRef) -> JobOutcome:
    assert _STATE is not None, "init_worker runs first"
    return _STATE.prepare(ref)


def warm_job() -> None:
    """Load the analyzer ahead of the first call (its loading errors fail the run)."""
    assert _STATE is not None, "init_worker runs first"
    _STATE.analyzer  # noqa: B018 - the property loads it


def analyze_job(ref: CallRef) -> JobOutcome:
    assert _STATE is not None, "init_worker runs first"
    return _STATE.analyze(ref)
