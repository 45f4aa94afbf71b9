"""Login sessions, CSRF protection and role checks for the web UI.

A session lives in one cookie, signed (not encrypted) with the secret key through
itsdangerous: ``{"u": username or null, "c": csrf token, "p": password fingerprint}``. The
cookie is HttpOnly and SameSite=Lax, Secure when the app is told it is served over HTTPS,
and expires after :data:`SESSION_MAX_AGE_S`. Nothing secret is in it; what it proves is
that the server issued it. Every request re-reads the user: a disabled account or a changed
password (the fingerprint no longer matches) ends its sessions at once.

Every visitor gets a session, logged in or not, so the login form carries a CSRF token too.
Logging in issues a new session (new token) so a token planted before login is worthless.
Every unsafe request (POST and friends) must carry the session's token in the form field
``csrf_token`` or the ``X-CSRF-Token`` header; :func:`csrf_protect` is a dependency of the
whole app, so no route can forget it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Callable, Iterator

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import PermissionDenied
from ..permissions import Actor, roles_for
from ..review.users import password_fingerprint
from ..storage import write_session
from ..storage.models import User

log = logging.getLogger(__name__)

COOKIE_NAME = "qa_session"
SESSION_MAX_AGE_S = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class LoginRequired(Exception):
    """Raised by :func:`current_user` when the request has no valid login; the app answers
    with a redirect to the login page."""


class CSRFError(Exception):
    pass


@dataclass(frozen=True)
class WebSession:
    username: str | None
    csrf: str
    fingerprint: str | None = None

    @classmethod
    def anonymous(cls) -> WebSession:
        return cls(None, secrets.token_urlsafe(32))

    @classmethod
    def for_user(cls, user: User) -> WebSession:
        return cls(user.username, secrets.token_urlsafe(32), password_fingerprint(user))


class SessionCodec:
    def __init__(self, secret_key: str, *, secure: bool = False):
        if len(secret_key) < 16:
            raise ValueError("the web secret key must have at least 16 characters")
        self._serializer = URLSafeTimedSerializer(secret_key, salt="qa.web.session")
        self.secure = secure

    def dumps(self, web: WebSession) -> str:
        return self._serializer.dumps({"u": web.username, "c": web.csrf, "p": web.fingerprint})

    def loads(self, cookie: str | None) -> WebSession | None:
        if not cookie:
            return None
        try:
            doc = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:  # also covers SignatureExpired
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("c"), str):
            return None
        return WebSession(doc.get("u"), doc["c"], doc.get("p"))

    def set_cookie(self, response, web: WebSession) -> None:
        response.set_cookie(COOKIE_NAME, self.dumps(web), max_age=SESSION_MAX_AGE_S, httponly=True,
                            samesite="lax", secure=self.secure, path="/")


async def session_middleware(request: Request, call_next):
    """Load the session from its cookie (or start an anonymous one) into
    ``request.state.web``; write the cookie back when a route replaced the session."""
    codec: SessionCodec = request.app.state.codec
    loaded = codec.loads(request.cookies.get(COOKIE_NAME))
    request.state.web = loaded or WebSession.anonymous()
    response = await call_next(request)
    if loaded is None or request.state.web != loaded:
        codec.set_cookie(response, request.state.web)
    return response


def start_session(request: Request, user: User) -> None:
    request.state.web = WebSession.for_user(user)


def end_session(request: Request) -> None:
    request.state.web = WebSession.anonymous()


def csrf_token(request: Request) -> str:
    return request.state.web.csrf


async def csrf_protect(request: Request) -> None:
    if request.method not in UNSAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            # Starlette keeps the parsed form on the request; the route reads the same one.
            sent = (await request.form()).get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), request.state.web.csrf.encode()):
        log.warning("CSRF check failed: %s %s", request.method, request.url.path)
        raise CSRFError("the form's security token is missing or out of date; reload the page and try again")


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def get_db(request: Request) -> Iterator[Session]:
    """The request's database session: a write session (:func:`qa.storage.write_session`) for
    requests that change something, a plain one for pages; routes commit what they change."""
    factory = request.app.state.session_factory
    session = factory() if request.method in SAFE_METHODS else write_session(factory)
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@dataclass(frozen=True)
class WebUser:
    """The logged-in user as read at the start of the request: a plain value, so error pages
    can still show it after the request's transaction was rolled back."""

    username: str
    role: str
    display_name: str | None


def current_user(request: Request, db: Session = Depends(get_db)) -> WebUser:
    web: WebSession = request.state.web
    if not web.username:
        raise LoginRequired()
    user = db.scalars(select(User).where(User.username == web.username)).first()
    if user is None or not user.active or password_fingerprint(user) != web.fingerprint:
        end_session(request)
        raise LoginRequired()
    request.state.user = WebUser(user.username, user.role, user.display_name)
    return request.state.user


def require(capability: str) -> Callable[..., WebUser]:
    """A dependency giving the logged-in user when their role has ``capability``
    (:mod:`qa.permissions`)."""
    roles = roles_for(capability)

    def check(user: WebUser = Depends(current_user)) -> WebUser:
        if user.role not in roles:
            raise PermissionDenied(f"this page is for {', '.join(roles)}; you are logged in as "
                                   f"{user.username} ({user.role})")
        return user

    return check


def actor_of(user: WebUser) -> Actor:
    return Actor(user.username, user.role)

