"""Storage: the engine, sessions, ORM tables (:mod:`.models`), migrations, the batch-run lock
(:mod:`.locks`), transient-error retries (:mod:`.retry`) and stored transcripts as the rules
read them (:mod:`.transcripts`).

SQLite (the default) runs in WAL mode with foreign keys on and a busy timeout; PostgreSQL is
used through ``QA_DATABASE_URL``. Schema changes go through Alembic (``qa db upgrade``).

**The one write rule.** A transaction that writes opens with :func:`write_session`. On SQLite
its transactions begin with ``BEGIN IMMEDIATE``, so the database write lock is taken before
the first read: a write can never meet a stale snapshot (which SQLite refuses at once with
"database is locked"), and writers queue on the busy timeout instead. On PostgreSQL a write
session is an ordinary session (row locks and the audit log's advisory lock do the work).
Read-only work uses plain sessions from the factory and never blocks writers.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SCHEMA_REVISION = "0003"  # the Alembic head this code expects (a test keeps the two equal)
IN_LIST_CHUNK = 500  # values per ``IN (...)``: SQLite caps the parameters of one statement

T = TypeVar("T")


def chunked(values: Sequence[T], size: int = IN_LIST_CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in slices small enough for one ``IN (...)`` list."""
    for at in range(0, len(values), size):
        yield values[at:at + size]


def normalize_url(url: str) -> str:
    # ``postgresql://`` would pick psycopg2, which we do not install; use psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


SUPPORTED = ("sqlite", "postgresql")


def make_engine(url: str, *, create_folder: bool = True) -> Engine:
    """An engine for ``url`` (SQLite or PostgreSQL). The folder of a SQLite file is created
    only with ``create_folder`` (the default data directory); a URL someone typed must name a
    folder that exists, so a typo is an error instead of a new empty database."""
    url = normalize_url(url)
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SUPPORTED:
        raise StorageError(f"unsupported database URL {redact_url(url)!r}: use sqlite:///PATH or "
                           "postgresql://user@host/db")
    if url.startswith("sqlite:///"):
        db_path = url[len("sqlite:///"):]
        if db_path and db_path != ":memory:":
            folder = Path(db_path).parent
            if create_folder:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                raise StorageError(f"the folder of the SQLite database {db_path} does not exist (a typo in "
                                   "database_url?)")
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control of it (SQLAlchemy's
        # pysqlite notes), so that write sessions can begin IMMEDIATE.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


_WRITE = "qa_write"  # execution option of the connections of a write session


def is_sqlite(engine_or_session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def write_session(factory: sessionmaker[Session]) -> Session:
    """A session whose every transaction holds the database's write lock from its start (see
    the module docstring). Use it as ``with write_session(factory) as session:``; the caller
    commits."""
    bind = factory.kw["bind"]
    return factory(bind=bind.execution_options(**{_WRITE: True}))


def reading_bind(session: Session) -> Engine:
    """The engine of ``session`` for a separate read-only session beside it: never a write
    session's, so a long read (an export, a report) does not hold the write lock."""
    return session.get_bind().execution_options(**{_WRITE: False})


def is_write_session(session: Session) -> bool:
    return bool(session.get_bind().get_execution_options().get(_WRITE))


def require_write_session(session: Session, what: str) -> None:
    """Raise when ``session`` is not a write session on SQLite: a programming error that would
    only show under concurrency ("database is locked"), so it is refused everywhere."""
    if is_sqlite(session) and not is_write_session(session):
        raise StorageError(f"{what} needs a write session (qa.storage.write_session)", code="storage.read_session")


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A write session that commits on success and rolls back on error (for callers that own it)."""
    session = write_session(factory)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def ensure_schema(engine: Engine) -> None:
    """Migrate the database unless it is at :data:`SCHEMA_REVISION` already. One query
    decides; Alembic is imported only when there is something to do, which keeps every
    command that opens the database quick."""
    try:
        with engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except SQLAlchemyError:  # no schema yet
        revision = None
    if revision != SCHEMA_REVISION:
        upgrade(engine.url.render_as_string(hide_password=False))


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except SQLAlchemyError as e:
        raise StorageError(f"migration failed on {redact_url(url)}: {e}") from e


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("calls")


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages and ``qa config show``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
