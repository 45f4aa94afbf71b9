"""Shared fixtures: settings in a temporary data dir, a migrated SQLite database, and a
fresh PostgreSQL schema when a server is reachable (tests marked ``postgres`` skip otherwise)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from qa import storage as qadb
from qa.config import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "audio_samples"
PG_URL = os.environ.get("QA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


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
    env = {"QA_DATA_DIR": settings.data_dir, "QA_DATABASE_URL": settings.database_url}
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
    factory = qadb.session_factory(engine)
    with factory() as s:
        yield s


def write_wav(path: Path, samples, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    import numpy as np
    import soundfile as sf

    sf.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype=subtype)
    return path


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, channels: int = 1, amp: float = 0.3):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    mono = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (1 + 0.1 * c) for c in range(channels)], axis=1)


# The bad recordings ingest must reject, with the error code each must get.
BAD_FILE_CODES = {
    "zero.wav": "audio.empty",
    "truncated.wav": "audio.truncated",
    "random.wav": "audio.corrupt",
    "nan.wav": "audio.nan",
    "eight_channels.wav": "audio.channels",
    "too_long.wav": "audio.too_long",
    "silent.wav": "audio.silent",
    "flac_named.wav": "audio.wrong_extension",
    "notes.txt.mp3": "audio.corrupt",
}
BAD_CORPUS_MAX_DURATION_S = 60.0


def make_bad_corpus(folder: Path) -> dict[str, str]:
    """Write one recording per kind of damage into ``folder``; returns file name -> code."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.wav").write_bytes(b"")
    good = write_wav(folder / "_tmp_good.wav", tone(2.0))
    (folder / "truncated.wav").write_bytes(good.read_bytes()[:3000])
    good.unlink()
    (folder / "random.wav").write_bytes(np.random.default_rng(7).bytes(20000))
    nan = tone(1.0)
    nan[100:110] = np.nan
    write_wav(folder / "nan.wav", nan, subtype="FLOAT")
    write_wav(folder / "eight_channels.wav", tone(1.0, channels=8))
    write_wav(folder / "too_long.wav", tone(BAD_CORPUS_MAX_DURATION_S + 5, rate=8000, amp=0.1))
    write_wav(folder / "silent.wav", np.zeros(16000, dtype=np.float32))
    sf.write(str(folder / "flac_named.wav"), tone(1.0), 8000, format="FLAC")
    (folder / "notes.txt.mp3").write_text("这不是音频文件。" * 200, encoding="utf-8")
    return dict(BAD_FILE_CODES)
