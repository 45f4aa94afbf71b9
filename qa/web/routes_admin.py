"""User administration (admins only), through :mod:`qa.review.users` like ``qa users``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from ..permissions import USER_ROLES
from ..review import users
from .auth import get_db, require
from .render import render

router = APIRouter()

ADMIN_MESSAGES = {"created": "用户已创建。", "disabled": "用户已停用。", "enabled": "用户已启用。",
                  "password": "密码已更新。"}


@router.get("/admin/users")
def users_page(request: Request, msg: str | None = None, user=Depends(require("users.manage")),
               db: Session = Depends(get_db)):
    return render(request, "admin_users.html", users=users.list_users(db), roles=USER_ROLES,
                  message=ADMIN_MESSAGES.get(msg or ""), min_length=users.MIN_PASSWORD_LENGTH)


@router.post("/admin/users")
def add_user(username: str = Form(...), role: str = Form(...), password: str = Form(...),
             display_name: str = Form(""), user=Depends(require("users.manage")), db: Session = Depends(get_db)):
    users.create_user(db, user.username, username, role, password, display_name or None)
    db.commit()
    return RedirectResponse("/admin/users?msg=created", status_code=303)


@router.post("/admin/users/{username}/active")
def set_active(username: str, active: str = Form(...), user=Depends(require("users.manage")),
               db: Session = Depends(get_db)):
    users.set_active(db, user.username, username, active == "1")
    db.commit()
    return RedirectResponse(f"/admin/users?msg={'enabled' if active == '1' else 'disabled'}", status_code=303)


@router.post("/admin/users/{username}/password")
def set_password(username: str, password: str = Form(...), user=Depends(require("users.manage")),
                 db: Session = Depends(get_db)):
    users.set_password(db, user.username, username, password)
    db.commit()
    return RedirectResponse("/admin/users?msg=password", status_code=303)
