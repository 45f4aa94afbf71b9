"""The review queue: items by tier with their SLA, claim next / claim this."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from .. import review
from ..domain import TIERS
from ..permissions import can
from ..timeutil import parse_day, utcnow
from .auth import actor_of, get_db, require
from .render import render

router = APIRouter()

QUEUE_MESSAGES = {"empty": "队列中没有可领取的质检项。", "released": "已退回队列。",
                  "closed": "质检项已完成。"}


def _tier(value: str | None) -> str | None:
    return value if value in TIERS else None


PAGE_SIZE = 50
CHOICES_TTL_S = 300.0  # the agent and team lists of the filters change with the nightly run


def _choices(request: Request, db: Session) -> dict[str, list[str]]:
    """The filters' agent and team lists, read at most every few minutes: with 100,000 items
    listing them costs more than the page itself."""
    cached = getattr(request.app.state, "queue_choices", None)
    if cached is None or time.monotonic() - cached[0] > CHOICES_TTL_S:
        cached = (time.monotonic(), review.filter_choices(db))
        request.app.state.queue_choices = cached
    return cached[1]


def _text(value: str | None, limit: int = 128) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None


@router.get("/queue")
def queue_page(request: Request, tier: str | None = None, category: str | None = None, agent: str | None = None,
               team: str | None = None, day: str | None = None, call: str | None = None,
               after: str | None = None, msg: str | None = None,
               user=Depends(require("queue.view")), db: Session = Depends(get_db)):
    """The queue in work order, a page at a time; the filters are plain GET parameters, so a
    filtered view is a link an inspector can keep or send."""
    now = utcnow()
    tz = request.app.state.settings.tz
    categories = review.categories()
    # a bad day or page position is a ValueError: the app answers 400 with its message
    filters = review.QueueFilters(tier=_tier(tier), category=category if category in categories else None,
                                  agent=_text(agent, 64), team=_text(team), call_search=_text(call),
                                  day=parse_day(day, tz) if _text(day) else None)
    cursor = review.QueueCursor.decode(after) if after else None
    page = review.queue_page(db, filters, after=cursor, limit=PAGE_SIZE, now=now, tz=tz)
    mine = review.list_queue(db, review.QueueFilters(statuses=("claimed",), claimed_by=user.username), now=now,
                             limit=50)
    params = {k: v for k, v in (("tier", filters.tier), ("category", filters.category), ("agent", filters.agent),
                                ("team", filters.team), ("day", filters.day.isoformat() if filters.day else None),
                                ("call", filters.call_search)) if v}
    next_link = (f"/queue?{urlencode({**params, 'after': page.next_cursor.encode()})}"
                 if page.next_cursor is not None else None)
    return render(request, "queue.html", entries=page.entries, mine=mine,
                  counts=review.queue_counts(db, now), filters=filters, params=params, tier=filters.tier,
                  tiers=TIERS, now=now, can_claim=can(user.role, "review.work"), categories=categories,
                  choices=_choices(request, db), next_link=next_link, first_link=f"/queue?{urlencode(params)}",
                  paged=cursor is not None, message=QUEUE_MESSAGES.get(msg or ""))


@router.post("/queue/claim-next")
def claim_next(request: Request, tier: str = Form(""), user=Depends(require("review.work")),
               db: Session = Depends(get_db)):
    item = review.claim_next(db, actor_of(user), request.app.state.review_policy, tier=_tier(tier))
    db.commit()
    if item is None:
        back = f"/queue?tier={tier}&msg=empty" if _tier(tier) else "/queue?msg=empty"
        return RedirectResponse(back, status_code=303)
    return RedirectResponse(f"/items/{item.id}", status_code=303)


@router.post("/items/{item_id}/claim")
def claim(request: Request, item_id: int, user=Depends(require("review.work")),
          db: Session = Depends(get_db)):
    review.claim(db, actor_of(user), item_id, request.app.state.review_policy)
    db.commit()
    return RedirectResponse(f"/items/{item_id}", status_code=303)


@router.post("/items/{item_id}/release")
def release(item_id: int, user=Depends(require("review.work")), db: Session = Depends(get_db)):
    review.release(db, actor_of(user), item_id)
    db.commit()
    return RedirectResponse("/queue?msg=released", status_code=303)
