"""Accounts of the people who use the web UI: create, disable, change passwords, log in.

Passwords are hashed with argon2id (argon2-cffi's defaults, which follow RFC 9106's
recommendations); a stored hash made with older parameters is upgraded on the next login.
Every account change is written to the audit log in the caller's transaction (the caller
commits).

Login rate limiting (:class:`LoginLimiter`) counts failures per (username, client address)
in the memory of the serving process: after ``max_failures`` failures within ``window_s``
further attempts are refused until the oldest failure ages out. Counters start empty when
the server restarts, and each server process keeps its own (``qa serve`` runs one), which is
enough to stop password guessing through the login form without a table that every failed
login would write to.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
from collections import deque
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..errors import NotFound, PermissionDenied, QAError
from ..permissions import USER_ROLES, can, roles_for
from ..storage.models import Call, ReviewItem, User

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")

# argon2-cffi's default cost (64 MiB, 3 passes). A deployment may replace it with a
# PasswordHasher of other parameters; stored hashes made with other parameters still verify
# and are re-hashed with these at the next login.
PASSWORD_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """Verified against when the username is unknown, so that a login for a missing account
    takes as long as one with a wrong password (no account enumeration by timing). Made on
    first use: hashing costs a noticeable fraction of a second."""
    return hasher.hash("not-a-real-password")


class LoginError(QAError):
    """Wrong username or password, a disabled account, or too many attempts. The message
    never says which of the first three it was."""

    code = "login"


class LoginThrottled(LoginError):
    code = "login.throttled"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def hash_password(password: str) -> str:
    check_password_strength(password)
    return PASSWORD_HASHER.hash(password)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password:
        raise ValueError("password must not start or end with whitespace")


def password_fingerprint(user: User) -> str:
    """Short digest of the stored hash and the session generation: a login session remembers
    it, so changing the password, or logging out (:func:`end_sessions`), ends every session
    opened before."""
    return hashlib.sha256(f"{user.password_hash}:{user.session_epoch or 0}".encode("utf-8")).hexdigest()[:16]


def end_sessions(session: Session, username: str, actor: str | None = None) -> None:
    """End every web session of ``username`` (logout: a saved cookie stops working at once,
    on every device). Audited in the caller's write transaction."""
    user = get_user(session, username)
    user.session_epoch = (user.session_epoch or 0) + 1
    session.flush()
    audit.append(session, actor or username, "user.logout", "user", username, None,
                 {"session_epoch": user.session_epoch})


def _validate_username(username: str) -> str:
    username = username.strip()
    if not _USERNAME_RE.fullmatch(username):
        raise ValueError("username must be 2-64 characters: letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit; got {username!r}")
    return username


def _validate_role(role: str) -> None:
    if role not in USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(USER_ROLES)}, got {role!r}")


def get_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"user {username} does not exist")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def assignment_order(session: Session, capability: str = "review.assignee") -> list[str]:
    """The active users with ``capability`` in round-robin order: whoever comes after the one
    given an item last goes first (alphabetical when nobody was given one yet)."""
    names = list(session.scalars(select(User.username).where(User.active.is_(True),
                                                             User.role.in_(roles_for(capability)))
                                 .order_by(User.username)))
    last = session.scalars(select(ReviewItem.assigned_to).where(ReviewItem.assigned_to.in_(names))
                           .order_by(ReviewItem.id.desc()).limit(1)).first() if names else None
    start = names.index(last) + 1 if last in names else 0
    return names[start:] + names[:start]


def _state(user: User) -> dict:
    return {"username": user.username, "display_name": user.display_name, "role": user.role,
            "active": user.active}


def create_user(session: Session, actor: str, username: str, role: str, password: str,
                display_name: str | None = None) -> User:
    """A new active account. ``actor`` is who creates it (a username, or ``cli`` from the
    command line)."""
    username = _validate_username(username)
    _validate_role(role)
    password_hash = hash_password(password)
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise QAError(f"user {username} exists already", code="users.exists")
    user = User(username=username, role=role, password_hash=password_hash, active=True,
                display_name=(display_name or "").strip() or None)
    session.add(user)
    session.flush()
    audit.append(session, actor, "user.create", "user", username, None, _state(user))
    log.info("user %s (%s) created by %s", username, role, actor)
    return user


def set_active(session: Session, actor: str, username: str, active: bool) -> User:
    """Disable (or re-enable) an account. A disabled user's open sessions stop working at
    their next request."""
    user = get_user(session, username)
    if actor == username and not active:
        raise PermissionDenied("you cannot disable your own account")
    before = _state(user)
    user.active = active
    session.flush()
    audit.append(session, actor, "user.enable" if active else "user.disable", "user", username, before,
                 _state(user))
    return user


def set_password(session: Session, actor: str, username: str, password: str) -> User:
    password_hash = hash_password(password)
    user = get_user(session, username)
    user.password_hash = password_hash
    session.flush()
    # The hash itself stays out of the log: the event records that it changed and by whom.
    audit.append(session, actor, "user.password", "user", username, None, {"password_changed": True})
    return user


def set_role(session: Session, actor: str, username: str, role: str) -> User:
    _validate_role(role)
    user = get_user(session, username)
    before = _state(user)
    user.role = role
    session.flush()
    audit.append(session, actor, "user.role", "user", username, before, _state(user))
    return user


class LoginLimiter:
    """Failed logins in a sliding window, per (username, client) and per client; thread-safe.

    The first stops guessing one user's password; the second stops spraying one password over
    many usernames from one address (``max_client_failures`` failures of any names). Behind a
    reverse proxy every client has the proxy's address unless ``qa serve --forwarded-allow-ips``
    names the proxy, so that the address it forwards is used."""

    MAX_KEYS = 10_000

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, *, max_client_failures: int = 20,
                 clock: Callable[[], float] = time.monotonic):
        if max_failures < 1 or max_client_failures < 1 or window_s <= 0:
            raise ValueError("max_failures and max_client_failures must be at least 1 and window_s positive")
        self.max_failures = max_failures
        self.max_client_failures = max_client_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many (username, client) pairs and clients have recent failures on record."""
        with self._lock:
            now = self._clock()
            return sum(1 for k in self._failures if self._recent(k, now))

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int:
        times = self._recent(key, now)
        if not times:
            self._failures.pop(key, None)
        if len(times) < limit:
            return 0
        return max(1, int(times[-limit] + self.window_s - now + 0.999))

    def retry_after(self, username: str, client: str) -> int:
        """Seconds until the next attempt is allowed; 0 when it is allowed now."""
        with self._lock:
            now = self._clock()
            return max(self._wait((username.lower(), client), self.max_failures, now),
                       self._wait(("", client), self.max_client_failures, now))

    def failed(self, username: str, client: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) >= self.MAX_KEYS:
                # Someone is cycling through names: forget what aged out so the table stays bounded.
                for stale in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[stale]
            for key in ((username.lower(), client), ("", client)):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username.lower(), client), None)


def authenticate(session: Session, username: str, password: str, *, client: str = "local",
                 limiter: LoginLimiter | None = None) -> User:
    """The active user with this username and password, or :class:`LoginError`. With a
    ``limiter``, too many recent failures for (username, client) give :class:`LoginThrottled`
    before the password is even checked. Successful logins are audited (the caller commits);
    failures are logged.

    Give it a write session at the start of a transaction: the account is read, that
    transaction ended (it wrote nothing), and the password checked outside it, so that hashing,
    which is slow on purpose, never runs while SQLite's write lock is held; the account is then
    read again in the transaction that writes the audit event."""
    username = username.strip()
    if limiter is not None:
        wait = limiter.retry_after(username, client)
        if wait:
            log.warning("login for %r from %s throttled (%d s)", username, client, wait)
            raise LoginThrottled(f"too many failed logins; try again in {wait} s", wait)
    user = session.scalars(select(User).where(User.username == username)).first() if username else None
    stored = user.password_hash if user is not None else _dummy_hash(PASSWORD_HASHER)
    session.rollback()
    try:
        PASSWORD_HASHER.verify(stored, password)
        ok = user is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if ok:
        user = session.scalars(select(User).where(User.username == username)).first()
        # Still there, still active, and the password not changed meanwhile.
        ok = user is not None and user.active and user.password_hash == stored
    if not ok:
        if limiter is not None:
            limiter.failed(username, client)
        log.warning("failed login for %r from %s", username, client)
        raise LoginError("wrong username or password, or the account is disabled")
    if limiter is not None:
        limiter.succeeded(username, client)
    if PASSWORD_HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = PASSWORD_HASHER.hash(password)
    audit.append(session, username, "user.login", "user", username, None, {"client": client})
    return user


def can_view_raw_text(role: str) -> bool:
    return can(role, "transcript.raw")


def record_raw_text_view(session: Session, username: str, role: str, call: Call) -> None:
    """Audit that ``username`` looked at the unmasked transcript of ``call`` (before it is
    shown: no audit event, no raw text)."""
    if not can_view_raw_text(role):
        raise PermissionDenied(f"{username} ({role}) may not see unmasked transcripts")
    audit.append(session, username, "pii.view_raw", "call", call.call_id, None, {"role": role})
