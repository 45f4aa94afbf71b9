"""About 70 damaged and odd recordings through the real nightly job (real Whisper base on the
CPU): the batch never crashes, every damaged file is failed with the code of its damage, and
every valid one is processed to the end."""

from __future__ import annotations

import pytest
from builders import make_hostile_corpus
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from qa.asr.weights import registry_checkpoint
from qa.cli import cli
from qa.storage.models import Call

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("asr-cache")
    registry_checkpoint(cache)
    return cache


def test_the_nightly_survives_a_hostile_corpus(tmp_path, cli_env, settings, samples_dir, model_cache, monkeypatch):
    bad, good = make_hostile_corpus(tmp_path / "night", samples_dir / "calls" / "S04.wav")
    assert len(bad) + len(good) >= 60
    monkeypatch.setenv("QA_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("QA_ASR_DEVICE", "cpu")
    monkeypatch.setenv("QA_MAX_DURATION_S", "60")
    result = CliRunner().invoke(cli, ["nightly", "--source", str(tmp_path / "night"), "--date", "2026-11-30",
                                      "--workers", "1", "--log-format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output  # finished; some files failed
    rows = {}
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        for call_id, status, code in conn.execute(select(Call.call_id, Call.status, Call.error_code)):
            rows[call_id] = (status, code)
    engine.dispose()
    stem = {name: name.rsplit(".", 1)[0] for name in (*bad, *good)}
    not_files = {n for n, code in bad.items() if code == "audio.not_a_file"}
    for name, code in bad.items():
        if name in not_files:
            assert stem[name] not in rows  # reported by the ingest, no call row to hang on
            continue
        assert rows.get(stem[name]) == ("failed", code), (name, rows.get(stem[name]))
    for name in good:
        status, code = rows[stem[name]]
        assert status in ("routed", "scored", "no_speech"), (name, status, code)
    assert f"{len(bad)} rejected" in result.output
    # nobody speaks in noise, tones or music: not a call for an inspector
    assert rows["white_noise_10s"][0] == rows["pure_tone_1khz"][0] == "no_speech"
