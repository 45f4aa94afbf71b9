"""Time: every stored and compared time is an aware UTC ``datetime``. Naive values are only
ever user input, and which zone they mean is decided here, once."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(ts: datetime, assume: tzinfo = timezone.utc) -> datetime:
    """``ts`` in UTC; a naive ``ts`` is read as a time in ``assume``."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=assume)
    return ts.astimezone(timezone.utc)


def utc_or_now(now: datetime | None) -> datetime:
    """``now`` in UTC (tests and replays pass it), else the current time."""
    return utcnow() if now is None else as_utc(now)
