"""What the executors (local processes, Ray) share: the context of a run, the per-stage
bookkeeping they hand back, and the crash test hook."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from .progress import Progress, StageProgress
from ..storage.retry import RetryPolicy
from .runs import StageTiming
from .stages import CallRef, Stages
from .jobs import JobOutcome

log = logging.getLogger("qa.pipeline")

CRASH_ENV = "QA_TEST_CRASH_AFTER"


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

    def record(self, outcome: JobOutcome) -> None:
        self.start()
        self._last = time.perf_counter()
        t = self.timing
        t.calls += 1
        t.audio_s += outcome.ref.duration_s or 0.0
        t.failed += 0 if outcome.ok else 1
        t.seconds = self._last - self._first
        self._bar.advance(1, outcome.ref.duration_s or 0.0, 0 if outcome.ok else 1)

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
        """Transcribe ``transcribe`` (then analyze them) and analyze ``analyze``."""
