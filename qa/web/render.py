"""Jinja2 templates and the filters they use. Times are stored in UTC; pages print them on the
call centre's clock (the ``timezone`` setting, named in the page footer), with the UTC instant
in ``<time datetime=...>`` for scripts. Not the browser's zone: an inspector working from
another zone still reads the times the agents and the rules saw."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from ..labels import SEVERITY_LABELS, label
from ..permissions import ROLE_LABELS
from ..redact import redact
from ..timeutil import local_text, zone_label

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))




def _iso(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="seconds") if ts else ""


@pass_context
def _ts(context, ts: datetime | None) -> str:
    return local_text(ts, context.get("tz") or timezone.utc)


def _span(seconds: float) -> str:
    minutes = int(abs(seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}天{hours}小时"
    if hours:
        return f"{hours}小时{mins}分"
    return f"{mins}分"


def countdown(due: datetime | None, now: datetime | None = None) -> str:
    """``剩 3小时12分`` before the due time, ``超时 20分`` after it."""
    if due is None:
        return ""
    left = (due - (now or datetime.now(timezone.utc))).total_seconds()
    return f"剩 {_span(left)}" if left >= 0 else f"超时 {_span(left)}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _pct(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _masked(text: str | None) -> str:
    """Free text typed by people (an appeal's reason) with its PII masked, as everywhere but
    the audited raw view."""
    return "" if text is None else redact(text).text


templates.env.filters.update(iso=_iso, ts=_ts, countdown=countdown, clock=_clock, pct=_pct, num=_num, masked=_masked,
                             label=label)
templates.env.globals.update(role_labels=ROLE_LABELS, sev_names=SEVERITY_LABELS)


def render(request: Request, name: str, status_code: int = 200, **context):
    web = getattr(request.state, "web", None)
    context.setdefault("user", getattr(request.state, "user", None))
    context["csrf_token"] = web.csrf if web is not None else ""
    tz = request.app.state.settings.tz
    context.update(tz=tz, zone=zone_label(tz))
    return templates.TemplateResponse(request, name, context, status_code=status_code)
