"""Per-stage progress: a tqdm bar with calls and audio-hours per second when stderr is a
terminal, JSON-friendly log records (logger ``qa.pipeline``) otherwise, so a cron job's log
shows how far the night got without carriage-return noise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger(__name__)


class StageProgress(Protocol):
    def advance(self, calls: int = 1, audio_s: float = 0.0, failed: int = 0) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def stage(self, name: str, total_calls: int, total_audio_s: float = 0.0) -> StageProgress: ...


class _Counter:
    def __init__(self, name: str, total: int, total_audio_s: float):
        self.name, self.total, self.total_audio_s = name, total, total_audio_s
        self.done = self.failed = 0
        self.audio_s = 0.0
        self.started = time.monotonic()

    def _add(self, calls: int, audio_s: float, failed: int) -> None:
        self.done += calls
        self.audio_s += audio_s
        self.failed += failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fields(self) -> dict:
        elapsed = max(self.elapsed, 1e-9)
        return {"qa_stage": self.name, "qa_done": self.done, "qa_total": self.total, "qa_failed": self.failed,
                "qa_audio_h": round(self.audio_s / 3600, 4), "qa_elapsed_s": round(self.elapsed, 2),
                "qa_calls_per_s": round(self.done / elapsed, 3),
                "qa_audio_h_per_s": round(self.audio_s / 3600 / elapsed, 5)}


class LogStageProgress(_Counter):
    """Log records at start, every ``every_s`` seconds and at the end."""

    def __init__(self, name: str, total: int, total_audio_s: float, every_s: float):
        super().__init__(name, total, total_audio_s)
        self.every_s = every_s
        self._last = self.started
        log.info("stage %s started: %d calls, %.2f h audio", name, total, total_audio_s / 3600, extra=self.fields())

    def advance(self, calls: int = 1, audio_s: float = 0.0, failed: int = 0) -> None:
        self._add(calls, audio_s, failed)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("stage %s: %d/%d calls", self.name, self.done, self.total, extra=self.fields())

    def close(self) -> None:
        log.info("stage %s done: %d/%d calls (%d failed) in %.1f s", self.name, self.done, self.total, self.failed,
                 self.elapsed, extra=self.fields())


class BarStageProgress(_Counter):
    def __init__(self, name: str, total: int, total_audio_s: float):
        from tqdm import tqdm

        super().__init__(name, total, total_audio_s)
        self.bar = tqdm(total=total, desc=f"{name:<10}", unit="call", file=sys.stderr, dynamic_ncols=True, leave=True)

    def advance(self, calls: int = 1, audio_s: float = 0.0, failed: int = 0) -> None:
        self._add(calls, audio_s, failed)
        elapsed = max(self.elapsed, 1e-9)
        self.bar.set_postfix_str(f"{self.audio_s / 3600 / elapsed * 3600:.2f} audio-h/h, {self.failed} failed",
                                 refresh=False)
        self.bar.update(calls)

    def close(self) -> None:
        self.bar.close()


class LogProgress:
    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s

    def stage(self, name: str, total_calls: int, total_audio_s: float = 0.0) -> StageProgress:
        return LogStageProgress(name, total_calls, total_audio_s, self.every_s)


class BarProgress:
    def stage(self, name: str, total_calls: int, total_audio_s: float = 0.0) -> StageProgress:
        return BarStageProgress(name, total_calls, total_audio_s)


class NullStageProgress:
    def advance(self, calls: int = 1, audio_s: float = 0.0, failed: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def stage(self, name: str, total_calls: int, total_audio_s: float = 0.0) -> StageProgress:
        return NullStageProgress()


def auto_progress(log_format: str = "auto") -> Progress:
    """Bars on a terminal (unless JSON logs were asked for), log records otherwise."""
    if log_format != "json" and sys.stderr.isatty():
        return BarProgress()
    return LogProgress()
