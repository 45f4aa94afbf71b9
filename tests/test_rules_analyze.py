"""The analyze stage on SQLite: findings with evidence, idempotency, history across pack
versions, classifier scores, per-call failure isolation; and the rule commands."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from qa import storage as qadb
from qa.cli import cli
from qa.config import Settings
from qa.domain import CallFeatures, SilenceGap
from qa.errors import NotFound
from qa.pipeline.analyses import analyze_call
from qa.pipeline.run import PipelineOptions, run_pipeline
from qa.pipeline.stages import WhisperStages
from qa.rules.stage import AnalyzeOptions, Analyzer, load_classifiers, open_analyzer
from qa.storage.models import (Analysis, Assessment, Call, ClassifierScore, Finding, ReviewDecision, ReviewItem,
                               Transcript, UtteranceRow)

PACK = Settings().rules_pack
RISKY = [("agent", "您好，嘉禾银行财富管理中心，工号二零零一，本次通话将被录音。"),
         ("customer", "这个理财有风险吗？"),
         ("agent", "没有，这款理财保本保息，跟存款一样。"),
         ("agent", "感谢您的接听，再见。")]
CLEAN = [("agent", "您好，嘉禾银行信用卡中心，工号一零零一，本次通话将被录音。"),
         ("customer", "我想查一下积分。"),
         ("agent", "您的积分是五千分，感谢您的来电，再见。")]


@pytest.fixture
def factory(engine):
    return qadb.session_factory(engine)


@dataclass(frozen=True)
class GivenAnalyzer(WhisperStages):
    """The real analyze stage with an analyzer the test built."""

    analyzer: Analyzer | None = None

    def open_analyzer(self, settings):
        return self.analyzer


@dataclass(frozen=True)
class Failed:
    call_id: str
    status: str
    error: str


def analyze_calls(factory, analyzer: Analyzer, call_ids=()) -> list:
    """What ``qa analyze`` runs: the analyze stage of the pipeline over every call with a
    current transcript (or ``call_ids``), one result per call."""
    options = PipelineOptions(kind="analyze", steps=("analyze",), call_ids=tuple(call_ids), reanalyze=True,
                              executor="serial")
    result = run_pipeline(factory, Settings(), options, stages=GivenAnalyzer(analyzer=analyzer))
    return [o.value if o.ok else Failed(o.ref.call_id, "failed", o.message) for o in result.outcomes]


def add_call(factory, call_id: str, turns, features: CallFeatures | None = None) -> int:
    with factory.begin() as s:
        call = Call(call_id=call_id, recording_sha256=call_id.ljust(64, "0"), file_path=f"{call_id}.wav",
                    file_size=1, status="transcribed", direction="outbound", business_line="wealth",
                    started_at=datetime(2026, 11, 3, 14, 0, tzinfo=timezone.utc), duration_s=4.0 * len(turns))
        s.add(call)
        s.flush()
        tr = Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64,
                        features=features.to_json() if features else {})
        s.add(tr)
        s.flush()
        for i, (role, text) in enumerate(turns):
            s.add(UtteranceRow(transcript_id=tr.id, call_id=call.id, idx=i, role=role, start_s=4.0 * i,
                               end_s=4.0 * i + 3.0, text=text))
        return call.id


def rules_only(pack: str = PACK) -> Analyzer:
    return open_analyzer(AnalyzeOptions(rules_pack=pack))


def count(factory, model) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_findings_are_stored_with_evidence(factory):
    add_call(factory, "risky", RISKY)
    [result] = analyze_calls(factory, rules_only())
    assert (result.call_id, result.status, result.score) == ("risky", "analyzed", 0.0)
    with factory() as s:
        analysis = s.scalars(select(Analysis)).one()
        call = s.get(Call, analysis.call_id)
        findings = {f.rule_id: f for f in s.scalars(select(Finding))}
    assert call.status == "analyzed"
    assert (analysis.rule_pack_name, analysis.rule_pack_version, analysis.classifiers_sha256) == ("finance-zh", "1.6.0", "")
    assert len(analysis.rule_pack_sha256) == 64 and analysis.is_current
    assert analysis.scorecard["fatal"] is True
    assert analysis.scorecard["items"]["promise-guaranteed-return"]["status"] == "fired"
    assert set(findings) == {"promise-guaranteed-return", "misrep-deposit-equivalence", "risk-disclosure-missing"}
    f = findings["promise-guaranteed-return"]
    assert (f.category, f.severity, f.role, f.source) == ("promise.guaranteed_return", "fatal", "agent", "rule")
    assert (f.utterance_idx, f.matched_text, f.start_s, f.end_s) == ([2], "保本保息", 8.0, 11.0)
    assert f.evidence == "[2] agent: 没有，这款理财保本保息，跟存款一样。"
    assert f.details["title"] and "matched '保本保息'" in f.details["why"]
    assert result.findings == 3


def test_rerun_is_idempotent_and_new_pack_versions_keep_history(factory, tmp_path):
    add_call(factory, "risky", RISKY)
    analyze_calls(factory, rules_only())
    assert [r.status for r in analyze_calls(factory, rules_only())] == ["unchanged"]
    assert (count(factory, Analysis), count(factory, Finding)) == (1, 3)

    candidate = tmp_path / "pack-v2"
    shutil.copytree(PACK, candidate)
    (candidate / "pack.yaml").write_text((candidate / "pack.yaml").read_text(encoding="utf-8")
                                         .replace('version: "1.6.0"', 'version: "1.7.0"'), encoding="utf-8")
    [second] = analyze_calls(factory, rules_only(str(candidate)))
    assert second.status == "analyzed"
    with factory() as s:
        rows = s.scalars(select(Analysis).order_by(Analysis.id)).all()
    assert [(a.rule_pack_version, a.is_current) for a in rows] == [("1.6.0", False), ("1.7.0", True)]
    assert count(factory, Finding) == 6  # the first analysis keeps its findings

    # Going back to the first pack reuses its analysis and makes it current again.
    assert [r.status for r in analyze_calls(factory, rules_only())] == ["unchanged"]
    with factory() as s:
        assert [a.is_current for a in s.scalars(select(Analysis).order_by(Analysis.id))] == [True, False]


@dataclass(frozen=True)
class FakePrediction:
    model_name: str
    model_version: str
    model_sha256: str
    label: str
    probability: float
    probabilities: dict


class FakeClassifiers:
    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint

    def predict_call(self, transcript):
        return [FakePrediction("complaint_risk", "1", "m" * 64, "high", 0.9, {"high": 0.9, "low": 0.1})]


def test_classifier_scores_share_the_analysis(factory):
    add_call(factory, "risky", RISKY)
    analyzer = Analyzer(rules_only().engine, FakeClassifiers("f" * 64))
    analyze_calls(factory, analyzer)
    with factory() as s:
        analysis = s.scalars(select(Analysis)).one()
        score = s.scalars(select(ClassifierScore)).one()
    assert analysis.classifiers_sha256 == "f" * 64
    assert (score.analysis_id, score.model_name, score.label, score.probability) == (analysis.id, "complaint_risk",
                                                                                     "high", 0.9)
    # New models, same pack: a new analysis.
    analyze_calls(factory, Analyzer(analyzer.engine, FakeClassifiers("e" * 64)))
    assert count(factory, Analysis) == 2 and count(factory, ClassifierScore) == 2


def test_missing_models_mean_rules_only(tmp_path):
    assert load_classifiers(str(tmp_path / "no-models")) is None
    analyzer = open_analyzer(AnalyzeOptions(rules_pack=PACK, models_dir=str(tmp_path / "no-models")))
    assert analyzer.classifiers is None and analyzer.classifiers_sha256 == ""


@pytest.fixture
def damaged_models(tmp_path):
    """A copy of the shipped models with one artifact overwritten (its card unchanged)."""
    models = tmp_path / "models"
    shutil.copytree(Settings().models_dir, models)
    (models / "agent_conduct.skops").write_bytes(b"\x00" * 2000)
    return models


def test_a_damaged_classifier_stops_the_analysis_loudly(factory, cli_env, damaged_models, monkeypatch):
    add_call(factory, "risky", RISKY)
    runner = CliRunner()
    assert runner.invoke(cli, ["analyze", "--no-classifiers"]).exit_code == 0
    monkeypatch.setenv("QA_MODELS_DIR", str(damaged_models))
    out = runner.invoke(cli, ["analyze"])
    assert out.exit_code == 1 and "agent_conduct.skops" in out.output and "sha256" in out.output
    with factory() as s:  # the earlier analysis stays current: nothing was replaced
        assert [a.is_current for a in s.scalars(select(Analysis))] == [True]
        assert s.scalars(select(Call.status)).one() == "analyzed"


def test_a_damaged_classifier_can_fail_the_calls_instead(factory, cli_env, damaged_models, monkeypatch):
    add_call(factory, "risky", RISKY)
    monkeypatch.setenv("QA_MODELS_DIR", str(damaged_models))
    monkeypatch.setenv("QA_CLASSIFIER_ERRORS", "fail_calls")
    out = CliRunner().invoke(cli, ["analyze"])
    assert out.exit_code == 2, out.output
    with factory() as s:
        call = s.scalars(select(Call)).one()
        assert (call.status, call.error_code) == ("failed", "classifiers.unavailable")
        assert "agent_conduct.skops" in call.error_message and count(factory, Analysis) == 0


def test_missing_models_are_said_in_the_summary(factory, cli_env, tmp_path, monkeypatch):
    add_call(factory, "risky", RISKY)
    monkeypatch.setenv("QA_MODELS_DIR", str(tmp_path / "no-models"))
    out = CliRunner().invoke(cli, ["analyze"])
    assert out.exit_code == 0 and "classifiers: none" in out.output


def test_a_failing_call_does_not_stop_the_batch(factory, monkeypatch):
    add_call(factory, "good", CLEAN)
    add_call(factory, "bad", RISKY)
    analyzer = rules_only()
    real = analyzer.engine.evaluate

    def flaky(transcript, rules=None, inferred_line=None):
        if transcript.meta.call_id == "bad":
            raise RuntimeError("boom")
        return real(transcript, rules, inferred_line)

    monkeypatch.setattr(analyzer.engine, "evaluate", flaky)
    results = {r.call_id: r for r in analyze_calls(factory, analyzer)}
    assert results["good"].status == "analyzed" and results["good"].score == 100.0
    # the pipeline's one failure path: <stage>.internal for an unexpected error, "<stage>: <error>"
    assert (results["bad"].status, results["bad"].error) == ("failed", "analyze: boom")
    with factory() as s:
        bad = s.scalars(select(Call).where(Call.call_id == "bad")).one()
        assert (bad.status, bad.error_code, bad.error_message) == ("failed", "analyze.internal", "analyze: boom")
        assert s.scalar(select(func.count()).select_from(Analysis)) == 1


def test_pipeline_entry_point_and_unknown_calls(factory):
    pk = add_call(factory, "risky", RISKY)
    with factory.begin() as s:
        assert analyze_call(s, rules_only(), pk).findings == 3
    with pytest.raises(NotFound, match="nope"):
        analyze_calls(factory, rules_only(), ["nope"])


def test_stored_features_are_used(factory):
    features = CallFeatures(duration_s=60.0, silences=(SilenceGap(4.0, 20.0),))
    add_call(factory, "quiet", CLEAN, features)
    analyze_calls(factory, rules_only())
    with factory() as s:
        f = s.scalars(select(Finding).where(Finding.rule_id == "service-long-silence")).one()
    assert (f.start_s, f.end_s, f.matched_text) == (4.0, 24.0, "silence 20.0s at 4.0s")


def test_rule_commands(factory, cli_env, tmp_path):
    add_call(factory, "risky", RISKY)
    add_call(factory, "clean", CLEAN)
    runner = CliRunner()
    out = runner.invoke(cli, ["analyze", "--no-classifiers"])
    assert out.exit_code == 0, out.output
    assert "risky" in out.output and "2 analyzed" in out.output

    out = runner.invoke(cli, ["rules", "explain", "risky"])
    assert out.exit_code == 0, out.output
    assert "FIRED  promise-guaranteed-return [promise.guaranteed_return, fatal]" in out.output
    assert "evidence (8.0-11.0s, utterances [2]): [2] agent: 没有，这款理财保本保息，跟存款一样。" in out.output
    assert "PASSED greeting-missing" in out.output
    assert "NA     loan-rate-disclosure-missing" in out.output
    assert runner.invoke(cli, ["rules", "explain", "nope"]).exit_code == 1

    # An inspector rejects the deposit finding and confirms the guarantee.
    with factory.begin() as s:
        analysis = s.scalars(select(Analysis).join(Call).where(Call.call_id == "risky")).one()
        assessment = Assessment(call_id=analysis.call_id, analysis_id=analysis.id, score=0, fatal=True,
                                policy_sha256="p")
        s.add(assessment)
        s.flush()
        item = ReviewItem(call_id=analysis.call_id, assessment_id=assessment.id, tier="T1", reason="flagged",
                          due_at=datetime.now(timezone.utc))
        s.add(item)
        s.flush()
        for f in s.scalars(select(Finding).where(Finding.analysis_id == analysis.id)):
            decision = {"promise-guaranteed-return": "confirmed", "misrep-deposit-equivalence": "rejected"}.get(f.rule_id)
            if decision:
                s.add(ReviewDecision(review_item_id=item.id, finding_id=f.id, decision=decision, reviewer="qa1"))
    candidate = tmp_path / "cand"
    shutil.copytree(PACK, candidate)
    (candidate / "misrep.deposit_equivalence.yaml").unlink()
    out = runner.invoke(cli, ["rules", "backtest", str(candidate), "--calls"])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line.split() for line in out.output.splitlines() if line.strip()}
    assert lines["misrep-deposit-equivalence"][1:10] == ["1", "0", "+0", "-1", "0", "1", "0%", "-", "0"]
    assert lines["promise-guaranteed-return"][1:10] == ["1", "1", "+0", "-0", "1", "0", "100%", "100%", "0"]
    assert "0 hits gained, 1 lost" in out.output and "- risky misrep-deposit-equivalence" in out.output


def test_lint_and_test_commands(cli_env, tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["rules", "lint"])
    assert out.exit_code == 0 and "32 rules, 28 categories" in out.output
    out = runner.invoke(cli, ["rules", "test", "--rule", "promise-guaranteed-return", "-v"])
    assert out.exit_code == 0 and "passed, 0 failed (1 rules)" in out.output
    broken = tmp_path / "broken"
    shutil.copytree(PACK, broken)
    (broken / "x.yaml").write_text("id: x\ntitle: t\ncategory: nope\ncondition:\n  keyword: [a]\n", encoding="utf-8")
    out = runner.invoke(cli, ["rules", "lint", str(broken)])
    assert out.exit_code == 1 and f"{broken / 'x.yaml'}:3: unknown category 'nope'" in out.output
    out = runner.invoke(cli, ["eval", "rules", "--source", "reference"])
    assert out.exit_code == 0, out.output
    assert "all categories: recall 100%" in out.output


def test_a_call_set_back_to_transcribed_moves_on_again(factory):
    """Transcribed again with the same result (a forced or concurrent run): the unchanged
    analysis still counts, and the call goes on to scoring instead of staying behind."""
    pk = add_call(factory, "risky", RISKY)
    analyze_calls(factory, rules_only())
    with factory.begin() as s:
        s.get(Call, pk).status = "transcribed"
    assert [r.status for r in analyze_calls(factory, rules_only())] == ["unchanged"]
    with factory() as s:
        assert s.get(Call, pk).status == "analyzed"
