"""Appeals (senior inspectors) and calibration (sessions, votes, agreement, miss rate)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import review
from ..errors import NotFound
from ..permissions import can
from ..review import calibration
from ..storage.models import CalibrationSession, Call, Finding
from .auth import actor_of, get_db, require
from .forms import optional_float, split_list
from .render import render

router = APIRouter()



@router.get("/appeals")
def appeals_page(request: Request, user=Depends(require("appeal.view")),
                 db: Session = Depends(get_db)):
    pending = [(e, review.find_appeal(db, e.item_id))
               for e in review.list_queue(db, review.QueueFilters(statuses=("appealed",)), limit=200)]
    decided = review.list_queue(db, review.QueueFilters(statuses=("appeal_decided",)), limit=50)
    return render(request, "appeals.html", pending=pending, decided=decided)


@router.post("/items/{item_id}/appeal")
def open_appeal(request: Request, item_id: int, reason: str = Form(...),
                user=Depends(require("appeal.open")), db: Session = Depends(get_db)):
    review.open_appeal(db, actor_of(user), item_id, reason, request.app.state.review_policy)
    db.commit()
    return RedirectResponse(f"/items/{item_id}#appeals", status_code=303)


@router.post("/appeals/{appeal_id}/decide")
def decide_appeal(appeal_id: int, outcome: str = Form(...), reason: str = Form(...), final_score: str = Form(""),
                  user=Depends(require("appeal.decide")), db: Session = Depends(get_db)):
    appeal = review.decide_appeal(db, actor_of(user), appeal_id, outcome, reason,
                                  final_score=optional_float(final_score, "final score"))
    db.commit()
    return RedirectResponse(f"/items/{appeal.review_item_id}#appeals", status_code=303)


@router.get("/calibration")
def calibration_page(request: Request, user=Depends(require("calibration.view")),
                     db: Session = Depends(get_db)):
    reports = [(cs, calibration.report(db, cs.id, viewer=actor_of(user))) for cs in calibration.sessions(db)]
    return render(request, "calibration.html", reports=reports, miss=calibration.miss_rate(db),
                  can_start=can(user.role, "calibration.manage"))


@router.post("/calibration")
def start_calibration(name: str = Form(...), calls: str = Form(...), inspectors: str = Form(...),
                      user=Depends(require("calibration.manage")), db: Session = Depends(get_db)):
    wanted = split_list(calls)
    found = dict(db.execute(select(Call.call_id, Call.id).where(Call.call_id.in_(wanted))).all())
    if missing := [c for c in wanted if c not in found]:
        raise NotFound(f"unknown call id(s): {', '.join(missing)}")
    db.commit()
    cs = calibration.start_session(db, actor_of(user), name, [found[c] for c in wanted], split_list(inspectors))
    db.commit()
    return RedirectResponse(f"/calibration/{cs.id}", status_code=303)


@router.get("/calibration/{session_id}")
def calibration_session_page(request: Request, session_id: int, user=Depends(require("calibration.view")),
                             db: Session = Depends(get_db)):
    report = calibration.report(db, session_id, viewer=actor_of(user))
    cs = db.get(CalibrationSession, session_id)
    calls = {c.id: c for c in db.scalars(select(Call).where(Call.id.in_(cs.call_ids)))}
    # What each inspector judges per call: the verdict, then every finding of the call.
    rows: dict[int, list[tuple[str, str, tuple[str, ...]]]] = {
        c: [("verdict", "整通结论", calibration.allowed_values("verdict"))] for c in cs.call_ids}
    for f in db.scalars(select(Finding).where(Finding.call_id.in_(cs.call_ids)).order_by(Finding.start_s, Finding.id)):
        key = f"finding:{f.id}"
        rows[f.call_id].append((key, f"{f.category}（{f.severity}）", calibration.allowed_values(key)))
    votes = {(i.call_id, i.item_key): i for i in report.items}
    return render(request, "calibration_session.html", cs=cs, report=report, calls=calls, rows=rows,
                  votes=votes, can_vote=cs.status == "open" and user.username in cs.inspectors,
                  can_close=cs.status == "open" and can(user.role, "calibration.manage"))


@router.post("/calibration/{session_id}/vote")
def calibration_vote(session_id: int, call_id: int = Form(...), item_key: str = Form(...), value: str = Form(...),
                     user=Depends(require("calibration.vote")), db: Session = Depends(get_db)):
    calibration.vote(db, actor_of(user), session_id, call_id, item_key, value)
    db.commit()
    return RedirectResponse(f"/calibration/{session_id}#call-{call_id}", status_code=303)


@router.post("/calibration/{session_id}/close")
def calibration_close(session_id: int, user=Depends(require("calibration.manage")),
                      db: Session = Depends(get_db)):
    calibration.close_session(db, actor_of(user), session_id)
    db.commit()
    return RedirectResponse(f"/calibration/{session_id}", status_code=303)
