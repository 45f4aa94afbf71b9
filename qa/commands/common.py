"""What every command shares: the loaded settings, the database, error translation, exit
statuses. Imports nothing heavy: ``qa --help`` must stay quick."""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import click

from ..config import LoadedSettings, Settings, load_settings
from ..errors import QAError

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

            engine = storage.make_engine(self.settings.effective_database_url)
            storage.ensure_schema(engine)
            self._factory = storage.session_factory(engine)
        return self._factory

    def close(self) -> None:
        if self._factory is not None:
            self._factory.kw["bind"].dispose()


pass_app = click.make_pass_decorator(App, ensure=True)


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
