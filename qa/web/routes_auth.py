"""Login and logout."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..review.users import LoginError, LoginThrottled, authenticate, end_sessions
from .auth import current_user, end_session, get_db, start_session
from .render import render

log = logging.getLogger(__name__)
router = APIRouter()

HOME_BY_ROLE = {"inspector": "/queue", "senior": "/queue", "auditor": "/dashboard", "admin": "/dashboard"}


def safe_next(target: str | None) -> str | None:
    """Only paths on this site: ``//host`` and ``/\\host`` would leave it (open redirect)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return None


@router.get("/")
def home(user=Depends(current_user)):
    return RedirectResponse(HOME_BY_ROLE.get(user.role, "/dashboard"), status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None):
    return render(request, "login.html", next=safe_next(next) or "", error=None)


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form(""),
          db: Session = Depends(get_db)):
    client = request.client.host if request.client else "unknown"
    try:
        user = authenticate(db, username, password, client=client, limiter=request.app.state.limiter)
    except LoginThrottled as e:
        db.rollback()
        response = render(request, "login.html", status_code=429, next=safe_next(next) or "", error=str(e),
                          username=username)
        response.headers["Retry-After"] = str(e.retry_after_s)
        return response
    except LoginError as e:
        db.rollback()
        return render(request, "login.html", status_code=401, next=safe_next(next) or "", error=str(e),
                      username=username)
    db.commit()
    start_session(request, user)
    log.info("%s logged in from %s", user.username, client)
    return RedirectResponse(safe_next(next) or HOME_BY_ROLE.get(user.role, "/dashboard"), status_code=303)


@router.post("/logout")
def logout(request: Request, db: Session = Depends(get_db)):
    # server-side: the user's session generation moves on, so a copy of the cookie is dead too
    username = request.state.web.username
    if username:
        try:
            end_sessions(db, username)
            db.commit()
        except NotFound:
            db.rollback()
    end_session(request)
    return RedirectResponse("/login", status_code=303)
