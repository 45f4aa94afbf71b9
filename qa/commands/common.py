"""What every command shares: the loaded settings, the database, error translation, exit
statuses. Imports nothing heavy: ``qa --help`` must stay quick."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import click

from ..config import LoadedSettings, Settings, load_settings
from ..errors import QAError
from ..timeutil import local_text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

# Exit statuses, a contract with schedulers (README "Exit status"):
EXIT_OK = 0
EXIT_FAILED = 1  # the command itself failed (click's status for an Error: line)
EXIT_PARTIAL = 2  # finished, but some calls or files failed
EXIT_TAMPERED = 3  # a verify command found tampering


@dataclass
class App:
    """Lazily opened resources for one CLI invocation."""

    config_path: str | None = None
    _loaded: LoadedSettings | None = None
    _factory: sessionmaker[Session] | None = field(default=None, repr=False)

    @property
    def loaded(self) -> LoadedSettings:
        if self._loaded is None:
            self._loaded = load_settings(self.config_path)
        return self._loaded

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """Sessions on the configured database, migrated to the latest schema first."""
        if self._factory is None:
            from .. import storage

            engine = storage.make_engine(self.settings.effective_database_url,
                                         create_folder=self.settings.database_in_data_dir)
            storage.ensure_schema(engine)
            self._factory = storage.session_factory(engine)
        return self._factory

    def clock(self, ts: datetime | None) -> str:
        """``ts`` on the call centre's clock (the ``timezone`` setting), as tables print it."""
        return local_text(ts, self.settings.tz)

    def close(self) -> None:
        if self._factory is not None:
            self._factory.kw["bind"].dispose()


pass_app = click.make_pass_decorator(App, ensure=True)


OPERATOR_TOKEN_ENV = "QA_OPERATOR_TOKEN"


def _operator_token_ok(app: App) -> bool | None:
    """``True``/``False`` when an operator token is given (and whether it matches the
    ``operator_token_sha256`` setting); ``None`` when there is none."""
    token = os.environ.get(OPERATOR_TOKEN_ENV)
    if not token:
        return None
    expected = app.settings.operator_token_sha256
    return bool(expected) and hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected.lower())


def credential(app: App, username: str, from_stdin: bool, *, needed: bool = True) -> str | None:
    """The password of ``username`` for a privileged action: the first line of stdin with
    ``--password-stdin``, else asked for on a terminal. ``None`` when an operator token stands
    in for it, or when ``needed`` is false (the agent side has no account)."""
    if not needed or _operator_token_ok(app) is not None:
        return None
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty():
        return click.prompt(f"password of {username}", hide_input=True, err=True)
    raise click.UsageError(f"acting as {username} needs their password: --password-stdin, a terminal, or an "
                           f"operator token in {OPERATOR_TOKEN_ENV}")


def authenticate(app: App, session: Session, username: str, password: str | None):
    """The active user ``username``, proven by ``password`` (:func:`qa.review.users.authenticate`,
    audited as a login from ``cli``) or by an operator token matching the
    ``operator_token_sha256`` setting (for scheduled scripts)."""
    from ..errors import PermissionDenied
    from ..review import users

    token = _operator_token_ok(app)
    if token is not None:
        if not token:
            raise PermissionDenied(f"{OPERATOR_TOKEN_ENV} does not match the operator_token_sha256 setting")
        from sqlalchemy import select

        from ..storage.models import User

        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise PermissionDenied(f"{username} is not in the users table")
        if not user.active:
            raise PermissionDenied(f"user {username} is disabled")
        return user
    if password is None:
        raise PermissionDenied(f"acting as {username} needs their password")
    return users.authenticate(session, username, password, client="cli")


def domain_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a clean ``Error: ...`` and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QAError as e:
            raise click.ClickException(str(e)) from e
        except ValueError as e:  # option validation
            raise click.ClickException(str(e)) from e

    return wrapper


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        for key, value in record.__dict__.items():
            if key.startswith("qa_"):
                doc[key[3:]] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str) -> None:
    """``fmt`` is text, json, or auto (JSON lines when stderr is not a terminal)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("qa")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def echo_table(rows: list[tuple[Any, ...]], headers: tuple[str, ...]) -> None:
    """Plain aligned columns (wide CJK characters counted as two)."""
    import unicodedata

    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    cells = [tuple(str(h) for h in headers)] + [tuple("" if c is None else str(c) for c in r) for r in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
