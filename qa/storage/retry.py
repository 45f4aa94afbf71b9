"""Retry of transient database errors with exponential backoff.

Transient means the same statement can succeed a moment later: SQLite's "database is locked"
/ "busy" while another process writes, PostgreSQL serialization failures (40001), deadlocks
(40P01) and lost connections. Everything else is a real error and is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "08006", "08003", "08001"}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay_s: float = 0.1
    max_delay_s: float = 5.0

    def validate(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")

    def delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1``: doubling, capped, with jitter so that workers
        that collided do not collide again in lockstep."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** attempt) * (0.5 + random.random() / 2)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OperationalError) and any(s in str(error.orig).lower() for s in _SQLITE_BUSY):
        return True
    if isinstance(error, DBAPIError):
        code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return code in _PG_TRANSIENT
    return False


def retrying(fn: Callable[[], T], policy: RetryPolicy = RetryPolicy(), *, what: str = "database work",
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``fn`` (which must roll back its own transaction on error) until it succeeds, a
    non-transient error occurs, or the attempts are used up (the last error is raised)."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except DBAPIError as e:
            if not is_transient(e) or attempt == policy.attempts - 1:
                raise
            delay = policy.delay(attempt)
            log.warning("%s: transient database error (attempt %d of %d, retrying in %.2f s): %s",
                        what, attempt + 1, policy.attempts, delay, e.orig)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
