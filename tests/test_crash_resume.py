"""Crash and resume with the real stages on real audio: ``qa nightly`` is SIGKILLed (the
documented QA_TEST_CRASH_AFTER hook, i.e. ``kill -9`` at a known point) during transcription
and, separately, during analysis; running it again must end with exactly the rows of an
uninterrupted run: nothing lost, nothing written twice."""

from __future__ import annotations

import signal

import pytest
from e2e_helpers import clean_rows, frozen_inputs, make_corpus, nightly, rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return clean_rows(tmp_path_factory)


@pytest.mark.parametrize("crash_after", ["transcribe:1", "analyze:1"])
def test_killed_run_resumes_to_the_clean_result(crash_after, clean, tmp_path, tmp_path_factory):
    source, data, inputs = make_corpus(tmp_path / "calls"), tmp_path / "var", frozen_inputs(tmp_path_factory)
    killed = nightly(data, source, inputs, crash_after=crash_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "reached: killing this process" in killed.stderr
    half = rows(data / "qa.db")["counts"]
    # killed inside the stage: some of its work committed, scoring never reached
    if crash_after.startswith("transcribe"):
        assert half["transcripts"] == 1 and half["analyses"] == 0
    else:
        assert half["transcripts"] >= 1 and half["analyses"] >= 1
    assert half["assessments"] == 0 and half["review_items"] == 0

    resumed = nightly(data, source, inputs)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr[-3000:]  # the broken file, as in the clean run
    assert "took over stale lock" in resumed.stderr  # the dead run's lock did not block the night
    after = rows(data / "qa.db")
    for key in clean:  # key by key, so a failure names the table
        assert after[key] == clean[key], key
    assert all(status in ("scored", "routed") for call, status, _ in after["calls"] if call != "broken")
    if crash_after.startswith("transcribe"):
        # and a night run once more over the same folder changes nothing, the audit log included
        assert nightly(data, source, inputs).returncode == 2
        assert rows(data / "qa.db") == after
