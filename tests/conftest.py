"""Shared fixtures: settings in a temporary data dir, a migrated SQLite database, and a
fresh PostgreSQL schema when a server is reachable (tests marked ``postgres`` skip otherwise)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from qa import storage as qadb
from qa.config import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "audio_samples"
OPERATOR_TOKEN = "a-token-for-the-tests-only"
PG_URL = os.environ.get("QA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session", autouse=True)
def _private_config_home(tmp_path_factory):
    """The audit signing key lives under the user's config folder by default: the tests (and
    the commands they start) keep theirs in a folder of their own."""
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture
def samples_dir() -> Path:
    if not (SAMPLES / "manifest.csv").exists():
        pytest.fail("audio_samples/manifest.csv is missing: the sample calls are part of the repository")
    return SAMPLES


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "var"
    d.mkdir()
    return d


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=str(data_dir), database_url=f"sqlite:///{data_dir / 'qa.db'}")


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CliRunner invocations pointing at the temporary database."""
    env = {"QA_DATA_DIR": settings.data_dir, "QA_DATABASE_URL": settings.database_url,
           # the scripted CLI sessions of the tests act as their users through an operator token
           "QA_OPERATOR_TOKEN": OPERATOR_TOKEN,
           "QA_OPERATOR_TOKEN_SHA256": hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("QA_CONFIG", raising=False)
    return env


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def _pg_schema_url() -> str:
    """Create a throwaway database on the PostgreSQL server and return its URL."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        name = f"qa_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as e:  # noqa: BLE001 - any connection problem means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {e.__class__.__name__}")
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg(url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url():
    url = _pg_schema_url()
    qadb.upgrade(url)
    yield url
    _drop_pg(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path):
    """A migrated, empty database on each backend (storage tests run on both)."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        qadb.upgrade(url)
        yield url
    else:
        url = _pg_schema_url()
        qadb.upgrade(url)
        yield url
        _drop_pg(url)


@pytest.fixture
def engine(settings: Settings):
    qadb.upgrade(settings.effective_database_url)
    eng = qadb.make_engine(settings.effective_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    """A write session (what the library's writing functions are given by their callers)."""
    with qadb.write_session(qadb.session_factory(engine)) as s:
        yield s
