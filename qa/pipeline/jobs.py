"""Per-call jobs run by the executors' CPU workers (local worker processes or Ray tasks).

Each job owns its session and commits one call per transaction, retrying transient database
errors. A call that fails for its own reasons (bad audio, a rule that cannot evaluate it) is
marked ``failed`` with its error code and message, and the job reports that instead of
raising; only errors that make every call fail (e.g. an invalid rule pack) propagate.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from .. import storage as db
from ..config import Settings
from ..errors import QAError
from ..storage.models import Call, utcnow
from ..storage.retry import RetryPolicy, retrying
from .stages import CallRef, Stages

log = logging.getLogger("qa.pipeline")


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
    value: Any = field(default=None, compare=False)  # the prepared audio, for the decode loop


def error_code(stage: str, error: BaseException) -> str:
    if isinstance(error, QAError):
        return error.code
    return f"{stage}.internal"


def mark_failed(factory: sessionmaker[Session], ref: CallRef, code: str, message: str,
                policy: RetryPolicy = RetryPolicy()) -> None:
    def tx() -> None:
        with factory() as session:
            session.execute(update(Call).where(Call.id == ref.pk)
                            .values(status="failed", error_code=code, error_message=message[:4000],
                                    updated_at=utcnow()))
            session.commit()

    retrying(tx, policy, what=f"mark call {ref.call_id} failed")


def in_transaction(factory: sessionmaker[Session], fn: Callable[[Session], Any], policy: RetryPolicy,
                   what: str) -> Any:
    """``fn(session)`` in a fresh session, committed on success, retried on transient errors."""
    def tx() -> Any:
        with factory() as session:
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
    """One call through one stage, failure-isolated."""
    wall, started = time.time(), time.perf_counter()
    try:
        value = in_transaction(factory, fn, policy, f"{stage} {ref.call_id}")
    except Exception as e:  # noqa: BLE001 - one bad call must not stop the batch
        code, message = error_code(stage, e), f"{stage}: {e}"
        log.warning("call %s failed in %s: [%s] %s", ref.call_id, stage, code, e,
                    exc_info=not isinstance(e, QAError), extra={"qa_call": ref.call_id, "qa_stage": stage})
        mark_failed(factory, ref, code, message, policy)
        return JobOutcome(ref, stage, False, seconds=time.perf_counter() - started, started_at=wall, code=code,
                          message=message)
    seconds = time.perf_counter() - started
    if stage == "prepare":
        return JobOutcome(ref, stage, True, seconds=seconds, started_at=wall, value=value)
    return JobOutcome(ref, stage, True, count=int(value or 0), seconds=seconds, started_at=wall)


def fail_call(factory: sessionmaker[Session], ref: CallRef, stage: str, error: BaseException,
              policy: RetryPolicy) -> JobOutcome:
    code, message = error_code(stage, error), f"{stage}: {error}"
    log.warning("call %s failed in %s: [%s] %s", ref.call_id, stage, code, error,
                extra={"qa_call": ref.call_id, "qa_stage": stage})
    mark_failed(factory, ref, code, message, policy)
    return JobOutcome(ref, stage, False, started_at=time.time(), code=code, message=message)


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
            return DecodedBatch([], [fail_call(factory, batch[0][0], "transcribe", e, policy)],
                                time.perf_counter() - started)
        log.warning("decoding a batch of %d calls failed (%s); decoding them one by one", len(batch), e)
    result = DecodedBatch([], [], time.perf_counter() - started)
    for one in batch:
        part = decode_batch(stages, asr, [one], factory, policy)
        result.decoded += part.decoded
        result.failed += part.failed
        result.busy_s += part.busy_s
    return result


class WorkerState:
    """What one worker process (or Ray actor) keeps between jobs."""

    def __init__(self, settings: Settings, stages: Stages, policy: RetryPolicy):
        self.settings, self.stages, self.policy = settings, stages, policy
        self._factory: sessionmaker[Session] | None = None
        self._analyzer: Any = None

    @property
    def factory(self) -> sessionmaker[Session]:
        if self._factory is None:
            self._factory = db.session_factory(db.make_engine(self.settings.effective_database_url))
        return self._factory

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            self._analyzer = self.stages.open_analyzer(self.settings)
        return self._analyzer

    def run(self, ref: CallRef, stage: str, fn: Callable[[Session], Any]) -> JobOutcome:
        return run_call(self.factory, ref, stage, fn, self.policy)

    def prepare(self, ref: CallRef) -> JobOutcome:
        return run_call(self.factory, ref, "prepare", lambda s: self.stages.prepare(s, self.settings, ref), self.policy)

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
