"""The FastAPI application: ``create_app(settings)`` wires the session cookie, CSRF check,
database sessions, routes, templates and the translation of domain errors to HTTP."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import storage as db
from ..config import Settings
from ..errors import AuditError, NotFound, PermissionDenied, QAError
from ..review.queue import ReviewPolicy
from ..review.users import LoginLimiter
from . import routes_admin, routes_auth, routes_dashboard, routes_exports, routes_item, routes_queue, routes_senior
from .auth import CSRFError, LoginRequired, SessionCodec, csrf_protect, session_middleware
from .render import STATIC_DIR, render

log = logging.getLogger(__name__)

SECRET_FILE = "web-secret.key"

# Pages only load their own scripts, styles, images and audio; nothing inline, no framing.
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; media-src 'self'; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def resolve_secret_key(settings: Settings) -> str:
    """``settings.secret_key`` (``QA_SECRET_KEY``) or, without one, a random key kept in
    ``<data_dir>/web-secret.key`` (created once, readable by the owner only) so that logins
    survive a restart."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(48))
        log.info("created web secret key %s", path)
    return path.read_text(encoding="ascii").strip()


def create_app(settings: Settings, *, session_factory: sessionmaker[Session] | None = None,
               secure_cookies: bool = False, limiter: LoginLimiter | None = None) -> FastAPI:
    """The web UI over the configured database (migrated to the latest schema first unless a
    ``session_factory`` is given). ``secure_cookies``: set when served over HTTPS."""
    if session_factory is None:
        engine = db.make_engine(settings.effective_database_url)
        db.ensure_schema(engine)
        session_factory = db.session_factory(engine)
    app = FastAPI(title="qa-speech", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(csrf_protect)])
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.codec = SessionCodec(resolve_secret_key(settings), secure=secure_cookies)
    app.state.limiter = limiter or LoginLimiter()
    app.state.review_policy = ReviewPolicy.from_settings(settings)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        return _with_headers(request, await call_next(request))

    app.middleware("http")(session_middleware)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (routes_auth, routes_queue, routes_item, routes_senior, routes_dashboard, routes_exports,
                   routes_admin):
        app.include_router(module.router)
    _add_error_handlers(app)
    return app


def _with_headers(request: Request, response):
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # pages hold transcripts and PII: no browser or proxy keeps a copy (the audio says its own)
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if request.app.state.codec.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def _error_page(request: Request, status: int, title: str, message: str):
    return render(request, "error.html", status_code=status, title=title, message=message)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(CSRFError)
    async def csrf_failed(request: Request, exc: CSRFError):
        return _error_page(request, 403, "请求被拒绝 (CSRF)", str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return _error_page(request, 404, "未找到", str(exc))

    @app.exception_handler(PermissionDenied)
    async def forbidden(request: Request, exc: PermissionDenied):
        return _error_page(request, 403, "无权访问", str(exc))

    @app.exception_handler(AuditError)
    async def busy(request: Request, exc: AuditError):
        log.warning("audit error on %s: %s", request.url.path, exc)
        return _error_page(request, 503, "请稍后重试", str(exc))

    @app.exception_handler(QAError)
    async def domain_error(request: Request, exc: QAError):
        return _error_page(request, 400, "操作未完成", str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return _error_page(request, 400, "输入有误", str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]) for e in exc.errors())
        return _error_page(request, 400, "输入有误", f"missing or invalid: {fields}")

    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: OverflowError):
        # an id past what the database can hold names nothing there
        return _error_page(request, 404, "未找到", "no such record (the id is out of range)")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # answered outside the middleware stack: the headers are added here
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _with_headers(request, _error_page(request, 500, "服务器内部错误", "the error was logged"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        titles = {404: "未找到", 405: "不支持的请求", 403: "无权访问"}
        return _error_page(request, exc.status_code, titles.get(exc.status_code, "错误"), str(exc.detail))
