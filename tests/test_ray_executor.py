"""The Ray executor on a local Ray instance (CPU): the same rows as the local executor.

Needs the ``ray`` extra; skipped without it. About 2-3 minutes on a 2-core machine, most of
it Whisper decoding the two sample calls on the CPU."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor test needs: pip install 'qa-speech[ray]'")

from e2e_helpers import clean_rows, frozen_inputs, make_corpus, rows  # noqa: E402
from pipeline_fakes import FAKE_STAGES  # noqa: E402
from pipeline_fakes import make_corpus as make_fake_corpus  # noqa: E402

from qa import storage as qadb  # noqa: E402
from qa.pipeline.local import ExecutorOptions  # noqa: E402
from qa.pipeline.run import PipelineOptions, run_pipeline  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def local_ray():
    # two logical CPUs as on a small CI runner; the workers import the fake stages from here
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield
    ray.shutdown()


def test_fake_stages_on_ray_isolate_failures(local_ray, tmp_path, settings, engine):
    factory = qadb.session_factory(engine)
    src = make_fake_corpus(tmp_path / "calls", ["a-fatal", "b", "asr-fails", "rule-fails", "prep-fails"])
    result = run_pipeline(factory, settings, PipelineOptions(source=str(src), executor="ray", export=False,
                                                             workers=ExecutorOptions(workers=1, calls_per_decode=2)),
                          stages=FAKE_STAGES)
    assert result.status == "partial"
    assert {f.call_id: (f.stage, f.code) for f in result.failures} == {
        "prep-fails": ("prepare", "audio.corrupt"), "asr-fails": ("transcribe", "asr.decode"),
        "rule-fails": ("analyze", "rules.eval")}
    assert result.figures.by_status == {"routed": 1, "scored": 1, "failed": 3}
    timings = {t.stage: t for t in result.timings}
    assert timings["transcribe"].calls == 4 and timings["transcribe"].busy_s is not None
    assert timings["analyze"].calls == 3


def test_real_stages_on_ray_give_the_local_executors_rows(local_ray, tmp_path, tmp_path_factory):
    """Whisper in a Ray actor, prepare and analysis in Ray Data actor pools, over real audio."""
    from qa.config import Settings

    data = tmp_path / "var"
    settings = Settings(data_dir=str(data), database_url=f"sqlite:///{data / 'qa.db'}",
                        **frozen_inputs(tmp_path_factory))
    qadb.upgrade(settings.database_url)
    engine = qadb.make_engine(settings.database_url)
    options = PipelineOptions(kind="nightly", source=str(make_corpus(tmp_path / "calls")), executor="ray",
                              day=date(2026, 11, 2), workers=ExecutorOptions(workers=2, calls_per_decode=1))
    result = run_pipeline(qadb.session_factory(engine), settings, options)
    engine.dispose()
    assert result.status == "partial"  # the broken file, as with the local executor
    assert Path(result.artifacts.export_dir, "qa-2026-11-02.jsonl").exists()
    assert rows(data / "qa.db") == clean_rows(tmp_path_factory)
