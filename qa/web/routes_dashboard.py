"""Dashboard: today's review items by tier, the open queue and what is overdue, the most
frequent finding categories, and a 14-day trend drawn as an inline SVG. Days are the call
centre's days (the ``timezone`` setting)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import review
from ..domain import TIERS
from ..storage.days import local_date
from ..storage.models import Finding, ReviewItem
from ..timeutil import day_span, day_start, local_today, utcnow
from .auth import get_db, require
from .render import render

router = APIRouter()

TREND_DAYS = 14
TIER_COLORS = {"T1": "#c62828", "T2": "#ef6c00", "T3": "#1565c0"}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Trend:
    width: int
    height: int
    bars: tuple[Bar, ...]
    labels: tuple[tuple[float, str], ...]  # (x, "11-23")
    max_count: int


def trend(counts: dict[tuple[str, str], int], days: list[date], width: int = 560, height: int = 160) -> Trend:
    """Stacked bars of routed items per day and tier; ``counts`` is keyed by (YYYY-MM-DD, tier)."""
    top = max([sum(counts.get((d.isoformat(), t), 0) for t in TIERS) for d in days] + [1])
    slot = width / len(days)
    bars, labels = [], []
    for n, day in enumerate(days):
        key = day.isoformat()
        y = float(height)
        for tier in TIERS:
            k = counts.get((key, tier), 0)
            if k:
                h = k / top * (height - 10)
                y -= h
                bars.append(Bar(n * slot + 3, round(y, 1), round(h, 1), TIER_COLORS[tier], f"{key} {tier}: {k}"))
        labels.append((n * slot + slot / 2, day.strftime("%m-%d")))
    return Trend(width, height, tuple(bars), tuple(labels), top)


@router.get("/dashboard")
def dashboard(request: Request, user=Depends(require("dashboard.view")), db: Session = Depends(get_db)):
    now = utcnow()
    tz = request.app.state.settings.tz
    day = local_today(tz, now)
    today = day_start(day, tz)
    created_today = dict(db.execute(select(ReviewItem.tier, func.count()).where(ReviewItem.created_at >= today)
                                    .group_by(ReviewItem.tier)).all())
    closed_today = db.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.closed_at >= today)) or 0
    week_ago = day_start(day - timedelta(days=6), tz)
    top_categories = db.execute(select(Finding.category, func.count()).where(Finding.created_at >= week_ago)
                                .group_by(Finding.category).order_by(func.count().desc(), Finding.category)
                                .limit(8)).all()
    days = [day - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]
    first, end = day_span(days[0], day, tz=tz)
    created_day = local_date(db, ReviewItem.created_at, tz, first, end)
    per_day = {(d, tier): n for d, tier, n in db.execute(
        select(created_day, ReviewItem.tier, func.count()).where(ReviewItem.created_at >= first)
        .group_by(created_day, ReviewItem.tier))}
    overdue = review.list_queue(db, review.QueueFilters(overdue_only=True), now=now, limit=10)
    return render(request, "dashboard.html", counts=review.queue_counts(db, now), created_today=created_today,
                  closed_today=closed_today, top_categories=top_categories, categories=review.categories(),
                  trend=trend(per_day, days), tiers=TIERS, tier_colors=TIER_COLORS, overdue=overdue, now=now,
                  today=day)
