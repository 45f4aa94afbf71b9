"""Time: every stored and compared time is an aware UTC ``datetime``. Naive values are only
ever user input, and which zone they mean is decided here, once. Days are the call centre's
days: a "day" is a local calendar day in the ``timezone`` setting, from local midnight to
local midnight, whatever that is in UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_WORDS = {"today": 0, "yesterday": 1}


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``Asia/Shanghai``); ``ValueError`` when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"timezone must be an IANA zone name such as Asia/Shanghai, got {name!r}") from e


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


def local_today(tz: tzinfo, now: datetime | None = None) -> date:
    """Today on the call centre's clock (at 01:30 in Beijing it is already the next day
    there while UTC is still on the previous one)."""
    return utc_or_now(now).astimezone(tz).date()


def local_day(ts: datetime, tz: tzinfo) -> date:
    return as_utc(ts).astimezone(tz).date()


def day_start(day: date, tz: tzinfo) -> datetime:
    """Local midnight of ``day`` as a UTC instant."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(timezone.utc)


def day_span(first: date, last: date | None = None, *, tz: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC covering the local days ``first`` to ``last`` (inclusive)."""
    return day_start(first, tz), day_start((last or first) + timedelta(days=1), tz)


def parse_day(value: str, tz: tzinfo, now: datetime | None = None) -> date:
    """``today``, ``yesterday`` (on the call centre's clock) or ``YYYY-MM-DD``."""
    text = value.strip().lower()
    if text in DAY_WORDS:
        return local_today(tz, now) - timedelta(days=DAY_WORDS[text])
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a day (YYYY-MM-DD, today or yesterday)") from e


def parse_when(value: str, tz: tzinfo, *, end: bool = False) -> datetime:
    """A day (``2026-11-02``: local midnight; as an ``end`` the whole day is included) or an
    ISO timestamp (without an offset it is local time) as a UTC instant."""
    text = value.strip()
    if len(text) == 10 or text.lower() in DAY_WORDS:
        day = parse_day(text, tz)
        return day_start(day + timedelta(days=1) if end else day, tz)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or ISO timestamp") from e
    return as_utc(ts, tz)


def local_iso(ts: datetime | None, tz: tzinfo) -> str | None:
    """ISO 8601 with the local offset (``2026-11-02T22:30:00+08:00``): the same instant as the
    stored UTC value, readable as the call centre's time."""
    return as_utc(ts).astimezone(tz).isoformat(timespec="seconds") if ts is not None else None


def local_text(ts: datetime | None, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return as_utc(ts).astimezone(tz).strftime(fmt) if ts is not None else ""


def zone_label(tz: tzinfo, at: datetime | None = None) -> str:
    """``Asia/Shanghai, UTC+08:00``: how pages and reports name the clock they print."""
    moment = utc_or_now(at).astimezone(tz)
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    hours, rest = divmod(abs(int(offset.total_seconds())), 3600)
    name = getattr(tz, "key", None) or moment.tzname() or "UTC"
    return f"{name}, UTC{sign}{hours:02d}:{rest // 60:02d}"


@dataclass(frozen=True)
class OffsetSpan:
    """A stretch of UTC time in which ``tz`` keeps one offset from UTC."""
    start: datetime
    end: datetime
    offset_seconds: int


def offset_spans(tz: tzinfo, since: datetime, until: datetime) -> list[OffsetSpan]:
    """The offsets ``tz`` has between two UTC instants, as contiguous spans, so that SQL can
    turn UTC into local days without a time-zone database (SQLite has none). Transitions are
    found to the minute; zones such as Asia/Shanghai have a single span."""
    since, until = as_utc(since), as_utc(until)

    def offset(at: datetime) -> int:
        return int((at.astimezone(tz).utcoffset() or timedelta(0)).total_seconds())

    spans: list[OffsetSpan] = []
    start, current = since, offset(since)
    probe = since
    while probe < until:
        step = min(probe + timedelta(hours=6), until)
        if offset(step) != current:
            lo, hi = probe, step  # the change lies in (lo, hi]: narrow it down to the minute
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if offset(mid) == current else (lo, mid)
            spans.append(OffsetSpan(start, hi, current))
            start, current = hi, offset(hi)
        probe = step
    spans.append(OffsetSpan(start, until, current))
    return spans
