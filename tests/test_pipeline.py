"""Orchestration of the pipeline with small fake ASR/rule stages (real ingest, real scoring and
routing, real worker processes): incremental, idempotent, failure-isolated, recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_fakes import FAKE_STAGES, make_corpus
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from qa import storage as qadb
from qa.cli import cli
from qa.commands.common import EXIT_PARTIAL
from qa.pipeline.local import ExecutorOptions
from qa.pipeline.run import PipelineOptions, run_pipeline
from qa.pipeline.runs import list_runs
from qa.storage.models import Assessment, BatchRun, Call, Finding, ReviewItem, RunLock, UtteranceRow
from qa.storage.retry import RetryPolicy, is_transient, retrying

OPTS = dict(workers=ExecutorOptions(workers=2, calls_per_decode=2))


@pytest.fixture
def factory(engine):
    return qadb.session_factory(engine)


def _options(tmp_path: Path, **kw) -> PipelineOptions:
    return PipelineOptions(**{**OPTS, "export_root": str(tmp_path / "exports"), **kw})


def _statuses(factory) -> dict[str, str]:
    with factory() as s:
        return dict(s.execute(select(Call.call_id, Call.status)).all())


def test_pipeline_runs_every_stage_and_records_the_run(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a-fatal", "b", "c", "d-fatal", "e"])
    result = run_pipeline(factory, settings, _options(tmp_path, kind="nightly", source=str(src)),
                          stages=FAKE_STAGES)
    assert result.status == "ok"
    assert _statuses(factory) == {"a-fatal": "routed", "b": "scored", "c": "scored", "d-fatal": "routed",
                                  "e": "scored"}
    fig = result.figures
    assert (fig.calls, fig.utterances, fig.findings, fig.review_items) == (5, 10, 2, 2)
    assert fig.tiers == {"T1": 2, "none": 3}
    assert fig.findings_by_category == {"guarantee_promise": 2}
    stages = {t.stage: t for t in result.timings}
    assert set(stages) == {"ingest", "prepare", "transcribe", "analyze", "score", "export"}
    assert all(stages[s].calls == 5 for s in ("ingest", "prepare", "transcribe", "analyze", "score"))
    assert stages["transcribe"].busy_s is not None and stages["transcribe"].calls_per_s > 0
    assert stages["transcribe"].audio_s == pytest.approx(sum(1.0 + 0.1 * i for i in range(5)), abs=0.01)
    exported = json.loads(Path(result.artifacts.report_path).read_text(encoding="utf-8"))
    assert exported["calls"]["a-fatal"] == "routed"
    with factory() as s:
        run = s.get(BatchRun, result.run_id)
        assert run.status == "ok" and run.kind == "nightly" and run.finished_at is not None
        assert run.counts["calls"] == 5 and run.counts["review_items"] == 2
        assert {d["stage"] for d in run.timings["stages"]} == set(stages)
        assert run.versions["asr"]["model"] == "fake-asr"
        assert run.versions["rule_pack"]["name"] == "fake-pack"
        assert s.scalar(select(func.count()).select_from(RunLock)) == 0  # released


def test_cpu_work_runs_in_worker_processes(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a", "b", "c"])
    run_pipeline(factory, settings, _options(tmp_path, source=str(src), export=False), stages=FAKE_STAGES)
    # the fake prepare records the process that prepared the call, the fake decoder the one
    # holding the "model": a worker and the driver
    with factory() as s:
        texts = list(s.scalars(select(UtteranceRow.text).where(UtteranceRow.idx == 0)))
    assert len(texts) == 3 and all(t.startswith("您好") for t in texts)
    pids = [tuple(int(p) for p in t.split()[2:]) for t in texts]
    assert all(driver == os.getpid() and worker != driver for worker, driver in pids)


def test_second_run_does_nothing_new(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a-fatal", "b", "c"])
    first = run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    second = run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    assert first.status == second.status == "ok"
    assert second.ingest == {"registered": 0, "duplicates": 3, "failed": 0, "conflicts": 0, "missing": 0}
    assert [t.stage for t in second.timings] == ["ingest", "export"]  # no stage had work
    assert (second.figures.utterances, second.figures.findings, second.figures.review_items) == (6, 1, 1)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(UtteranceRow)) == 6
        assert s.scalar(select(func.count()).select_from(Finding)) == 1
        assert s.scalar(select(func.count()).select_from(Assessment)) == 3
        assert s.scalar(select(func.count()).select_from(ReviewItem)) == 1


def test_new_recordings_are_picked_up_incrementally(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a", "b"])
    run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    make_corpus(src, ["a", "b", "c-fatal"])  # same a/b bytes plus one new call
    result = run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    assert result.ingest["registered"] == 1
    assert {t.stage: t.calls for t in result.timings}["transcribe"] == 1
    assert _statuses(factory)["c-fatal"] == "routed"


def test_bad_calls_fail_alone_and_the_run_is_partial(tmp_path, factory, settings):
    import dataclasses

    from builders import BAD_CORPUS_MAX_DURATION_S, make_bad_corpus

    settings = dataclasses.replace(settings, max_duration_s=BAD_CORPUS_MAX_DURATION_S)
    src = make_corpus(tmp_path / "calls", ["ok-1", "prep-fails", "asr-fails", "rule-fails", "ok-2-fatal"])
    make_bad_corpus(src / "bad")
    result = run_pipeline(factory, settings, _options(tmp_path, kind="nightly", source=str(src)),
                          stages=FAKE_STAGES)
    assert result.status == "partial"
    statuses = _statuses(factory)
    assert statuses["ok-1"] == "scored" and statuses["ok-2-fatal"] == "routed"
    with factory() as s:
        codes = dict(s.execute(select(Call.call_id, Call.error_code).where(Call.status == "failed")).all())
    assert codes["prep-fails"] == "audio.corrupt"
    assert codes["asr-fails"] == "asr.decode"
    assert codes["rule-fails"] == "rules.eval"
    assert codes["bad/zero"] == "audio.empty" and codes["bad/too_long"] == "audio.too_long"
    assert {f.call_id: f.stage for f in result.failures} == {"prep-fails": "prepare", "asr-fails": "transcribe",
                                                            "rule-fails": "analyze"}
    # the batch-mate of the call that broke the decoder's batch was decoded on its own
    assert result.figures.failed == len(codes) and result.figures.by_status["scored"] == 1


def test_a_dying_worker_fails_only_its_call(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a", "b-fatal", "worker-dies", "c", "d"])
    result = run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    assert result.status == "partial"
    assert [(f.call_id, f.stage, f.code) for f in result.failures] == [("worker-dies", "prepare", "worker.crashed")]
    statuses = _statuses(factory)
    assert statuses.pop("worker-dies") == "failed"
    assert statuses == {"a": "scored", "b-fatal": "routed", "c": "scored", "d": "scored"}


def test_failed_calls_stay_failed_and_keep_the_run_partial(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a", "rule-fails"])
    run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    again = run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    assert again.status == "partial" and not again.failures  # nothing new failed, an old failure remains
    assert [f.call_id for f in again.figures.failed_calls] == ["rule-fails"]


def test_run_without_source_works_on_what_is_registered(tmp_path, factory, settings, session):
    from qa.ingest.register import IngestOptions, ingest, scan_directory

    src = make_corpus(tmp_path / "calls", ["x", "y"])
    ingest(session, scan_directory(src), IngestOptions())
    result = run_pipeline(factory, settings, _options(tmp_path), stages=FAKE_STAGES)
    assert result.status == "ok" and result.figures.calls == 2 and not result.ingest
    assert set(_statuses(factory).values()) == {"scored"}


def test_a_run_that_fails_is_recorded_and_releases_the_lock(tmp_path, factory, settings):
    from pipeline_fakes import BrokenAsr

    stages = BrokenAsr()
    src = make_corpus(tmp_path / "calls", ["a"])
    with pytest.raises(RuntimeError, match="no model here"):
        run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=stages)
    with factory() as s:
        run = s.scalars(select(BatchRun)).one()
        assert run.status == "failed" and "no model here" in run.error
        assert s.scalar(select(func.count()).select_from(RunLock)) == 0


def test_a_run_whose_lock_was_taken_over_stops(tmp_path, factory, settings):
    from datetime import timedelta

    from pipeline_fakes import StealingAsr

    from qa.errors import LockError
    from qa.storage.locks import LockOptions

    stages = StealingAsr()
    lock = LockOptions(stale_after=timedelta(seconds=1), heartbeat_every=timedelta(milliseconds=200))
    src = make_corpus(tmp_path / "calls", ["a"])
    with pytest.raises(LockError, match="taken over"):
        run_pipeline(factory, settings, _options(tmp_path, source=str(src), lock=lock), stages=stages)
    with factory() as s:
        assert s.scalars(select(BatchRun.status)).one() == "failed"
        assert s.get(RunLock, "batch").holder == "nightly@elsewhere:1:thief"  # not released: not ours


def test_transient_errors_are_retried_with_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE calls", {}, Exception("database is locked"))
        return "done"

    assert retrying(flaky, RetryPolicy(attempts=5, base_delay_s=0.1), sleep=sleeps.append) == "done"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9


def test_non_transient_errors_are_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise OperationalError("SELECT", {}, Exception("no such table: calls"))

    with pytest.raises(OperationalError):
        retrying(broken, RetryPolicy(attempts=5), sleep=lambda s: None)
    assert len(calls) == 1
    assert is_transient(OperationalError("x", {}, Exception("database is locked")))


def test_stage_figures():
    from qa.pipeline.runs import StageTiming

    t = StageTiming("transcribe", seconds=20.0, calls=4, audio_s=7200.0, busy_s=15.0)
    assert (t.calls_per_s, t.audio_hours_per_hour, t.utilisation) == (0.2, 360.0, 0.75)
    assert StageTiming.from_dict(t.as_dict()) == t
    assert StageTiming("x").calls_per_s == 0.0 and StageTiming("x").utilisation is None


def test_progress_logs_json_friendly_records(caplog):
    from qa.pipeline.progress import LogProgress

    caplog.set_level("INFO", logger="qa.pipeline")
    stage = LogProgress(every_s=0.0).stage("analyze", 2, 7200.0)
    stage.advance(1, 3600.0)
    stage.advance(1, 3600.0, failed=1)
    stage.close()
    records = [r for r in caplog.records if getattr(r, "qa_stage", None) == "analyze"]
    assert [r.qa_done for r in records] == [0, 1, 2, 2]
    assert records[-1].qa_failed == 1 and records[-1].qa_audio_h == 2.0 and records[-1].qa_total == 2


def test_crash_hook_spec_is_validated():
    from qa.pipeline.jobs import CrashHook

    assert (CrashHook("transcribe:2").stage, CrashHook("transcribe:2").after) == ("transcribe", 2)
    CrashHook(None).tick("transcribe")  # unset: never fires
    with pytest.raises(ValueError, match="stage:N"):
        CrashHook("transcribe")


def test_options_are_validated():
    with pytest.raises(ValueError, match="not both"):
        PipelineOptions(source="a", manifest="b").validate()
    with pytest.raises(ValueError, match="executor"):
        PipelineOptions(executor="spark").validate()
    with pytest.raises(ValueError, match="calls_per_decode"):
        PipelineOptions(workers=ExecutorOptions(calls_per_decode=0)).validate()


def test_cli_nightly_summary_exit_code_and_runs(tmp_path, cli_env, monkeypatch):
    import qa.pipeline.run as pipeline

    monkeypatch.setattr(pipeline, "default_stages", lambda: FAKE_STAGES)
    src = make_corpus(tmp_path / "calls", ["a-fatal", "b", "rule-fails"])
    runner = CliRunner()
    result = runner.invoke(cli, ["nightly", "--source", str(src), "--date", "2026-11-22", "--workers", "1",
                                 "--log-format", "json"])
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "calls/s" in result.output and "audio-h/h" in result.output
    assert "rule-fails  [rules.eval]" in result.output
    assert Path(cli_env["QA_DATA_DIR"], "exports", "2026-11-22", "calls.json").exists()
    listing = runner.invoke(cli, ["runs"])
    assert listing.exit_code == 0 and "nightly" in listing.output and "partial" in listing.output
    detail = runner.invoke(cli, ["runs", "--id", "1"])
    assert "transcribe" in detail.output and "fake-asr" in detail.output
    usage = runner.invoke(cli, ["nightly"])
    assert usage.exit_code == 2 and "--source" in usage.output


@pytest.mark.parametrize("command", [["run"], ["transcribe"], ["analyze"], ["score"]])
def test_cli_run_fails_with_exit_1_when_locked(tmp_path, cli_env, monkeypatch, settings, command):
    """A stage command is a batch run too: it never works beside a nightly."""
    import qa.pipeline.run as pipeline
    from qa.storage.locks import acquire

    monkeypatch.setattr(pipeline, "default_stages", lambda: FAKE_STAGES)
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    with acquire(qadb.session_factory(engine), purpose="other-run"):
        result = CliRunner().invoke(cli, command)
    engine.dispose()
    assert result.exit_code == 1
    assert "other-run@" in result.output and f"pid {os.getpid()}" in result.output


def test_runs_are_listed_newest_first(tmp_path, factory, settings):
    src = make_corpus(tmp_path / "calls", ["a"])
    run_pipeline(factory, settings, _options(tmp_path, source=str(src)), stages=FAKE_STAGES)
    run_pipeline(factory, settings, _options(tmp_path, kind="nightly", source=str(src)), stages=FAKE_STAGES)
    with factory() as s:
        runs = list_runs(s)
    assert [(r.kind, r.status) for r in runs] == [("nightly", "ok"), ("run", "ok")]
    assert runs[1].timings[0].stage == "ingest" and runs[1].seconds > 0


def test_real_rules_scoring_and_export_over_sample_transcripts(tmp_path, factory, settings, samples_dir):
    """Transcripts from the samples' sidecars (perfect ASR), everything after that real."""
    from pipeline_fakes import SidecarStages

    options = _options(tmp_path, kind="demo", manifest=str(samples_dir / "manifest.csv"))
    result = run_pipeline(factory, settings, options, stages=SidecarStages())
    assert result.status == "ok", result.figures.failed_calls
    n = len(list((samples_dir / "calls").glob("*.json")))
    assert result.figures.by_status.get("failed", 0) == 0 and result.figures.calls == n
    expected = set()
    for sidecar in (samples_dir / "calls").glob("*.json"):
        expected |= set(json.loads(sidecar.read_text(encoding="utf-8")).get("expected_categories", []))
    found = set(result.figures.findings_by_category)
    assert len(found & expected) >= len(expected) * 0.8, (found, expected)
    assert result.figures.review_items >= 1 and set(result.figures.tiers) & {"T1", "T2", "T3"}
    export_dir = Path(result.artifacts.export_dir)
    jsonl = list(export_dir.glob("*.jsonl"))
    assert len(jsonl) == 1 and len(jsonl[0].read_text(encoding="utf-8").splitlines()) == n
    assert Path(result.artifacts.report_path).read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert result.versions["rule_pack"]["sha256"] and "classifiers_sha256" in result.versions


def test_a_nightly_over_a_folder_exports_the_calls_it_processed(tmp_path, factory, settings, samples_dir):
    """A folder scan carries no metadata; whatever --date says, the night's export holds the
    night's calls (their start times come from the files)."""
    import datetime as dt

    from pipeline_fakes import SidecarStages

    src = tmp_path / "calls"
    src.mkdir()
    for name in ("S01", "S02", "S10"):
        for suffix in (".wav", ".json"):
            (src / f"{name}{suffix}").write_bytes((samples_dir / "calls" / f"{name}{suffix}").read_bytes())
    (src / "S10.wav").rename(src / "S10_20261105_223000.wav")  # a stamp in the name: 22:30 Shanghai time
    (src / "S10.json").rename(src / "S10_20261105_223000.json")
    options = _options(tmp_path, kind="nightly", source=str(src), day=dt.date(2026, 11, 30))
    result = run_pipeline(factory, settings, options, stages=SidecarStages())
    assert result.status == "ok", result.figures.failed_calls
    jsonl = Path(result.artifacts.export_dir) / "qa-2026-11-30.jsonl"
    exported = {json.loads(line)["call_id"]: json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()}
    assert set(exported) == {"S01", "S02", "S10_20261105_223000"}
    # written on the call centre's clock, with its offset: the same instant as 14:30 UTC
    assert exported["S10_20261105_223000"]["started_at"] == "2026-11-05T22:30:00+08:00"
    assert Path(result.artifacts.report_path).is_file()


def test_a_call_nobody_speaks_in_is_no_speech_not_a_review_item(tmp_path, factory, settings, samples_dir):
    from pipeline_fakes import SidecarAsr

    src = tmp_path / "calls"
    src.mkdir()
    for name, target in (("S01", "S01"), ("S02", "hold-music-no-speech")):
        for suffix in (".wav", ".json"):
            (src / f"{target}{suffix}").write_bytes((samples_dir / "calls" / f"{name}{suffix}").read_bytes())
    result = run_pipeline(factory, settings, _options(tmp_path, source=str(src), executor="serial"),
                          stages=SidecarAsr())
    assert result.status == "ok"
    statuses = _statuses(factory)
    assert statuses["hold-music-no-speech"] == "no_speech" and statuses["S01"] in ("routed", "scored")
    with factory() as s:
        no_speech = s.scalars(select(Call).where(Call.call_id == "hold-music-no-speech")).one()
        assert s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.call_id == no_speech.id)) == 0
        assert s.scalar(select(func.count()).select_from(Finding).where(Finding.call_id == no_speech.id)) == 0


def test_the_demo_guide_says_how_to_log_in(tmp_path):
    from types import SimpleNamespace

    import click

    from qa.commands.pipeline import _print_demo_guide

    @click.command()
    def guide():
        _print_demo_guide(SimpleNamespace(figures=SimpleNamespace(findings_by_category={"conduct.threat": 1})),
                          tmp_path)

    out = CliRunner().invoke(guide).output
    assert "qa users add zhangmin --role inspector" in out and "qa serve" in out
    assert out.index("qa users add") < out.index("qa serve")  # a login before the server
    assert f"QA_DATABASE_URL=sqlite:///{tmp_path / 'qa.db'}" in out
