"""The review queue: items by tier with their SLA, claim next / claim this."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from .. import review
from ..domain import TIERS
from ..permissions import can
from .auth import actor_of, get_db, require
from .render import render

router = APIRouter()

QUEUE_MESSAGES = {"empty": "队列中没有可领取的质检项。", "released": "已退回队列。",
                  "closed": "质检项已完成。"}


def _tier(value: str | None) -> str | None:
    return value if value in TIERS else None


@router.get("/queue")
def queue_page(request: Request, tier: str | None = None, msg: str | None = None,
               user=Depends(require("queue.view")), db: Session = Depends(get_db)):
    now = datetime.now(timezone.utc)
    tier = _tier(tier)
    entries = review.list_queue(db, tier=tier, now=now, limit=200)
    mine = [e for e in review.list_queue(db, statuses=("claimed",), now=now, limit=200)
            if e.claimed_by == user.username]
    return render(request, "queue.html", entries=entries, mine=mine, counts=review.queue_counts(db, now),
                  tier=tier, tiers=TIERS, now=now, can_claim=can(user.role, "review.work"),
                  message=QUEUE_MESSAGES.get(msg or ""))


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
