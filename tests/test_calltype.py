"""The business line of a call without one in its manifest, inferred from the topic classifier
for the rules scoped to a line (qa.rules.calltype)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from qa import storage as qadb
from qa.cli import cli
from qa.config import REPO_ROOT, Settings
from qa.domain import CallMeta
from qa.pipeline.analyses import analyze_call
from qa.rules.calltype import InferredLine, infer_business_line
from qa.rules.stage import AnalyzeOptions, open_analyzer
from qa.storage.models import Analysis, Call, Transcript, UtteranceRow
from rules_helpers import call, one_rule

PACK = str(REPO_ROOT / "rules" / "finance-zh")
MODELS = str(REPO_ROOT / "models")
COLLECTION = (("A", "您好，我是嘉禾消费金融贷后部的，工号三零二一，本次通话将被录音。请问是王先生吗？"),
              ("C", "是我，什么事？"),
              ("A", "您的借款已经逾期十五天了，欠款八千六百元，今天能还上吗？"),
              ("C", "这个月手头紧，下周五发工资就还。"),
              ("A", "好的，请您下周五前还清，以免影响征信。"))


@dataclass(frozen=True)
class Verdict:
    label: str
    probability: float
    model_name: str = "topic"
    model_version: str = "v1"


def test_only_a_confident_topic_names_a_missing_line():
    unknown = CallMeta("c1")
    assert infer_business_line(unknown, [Verdict("还款与催收", 0.9)], 0.7) == InferredLine("collection", 0.9, "v1")
    assert infer_business_line(unknown, [Verdict("还款与催收", 0.6)], 0.7) is None
    assert infer_business_line(unknown, [Verdict("其他", 0.99)], 0.7) is None  # 其他 names no line
    assert infer_business_line(unknown, [Verdict("贷款", 0.99, model_name="agent_conduct")], 0.7) is None
    assert infer_business_line(unknown, [Verdict("贷款", 0.99)], None) is None  # inference off
    # the manifest's line always wins
    assert infer_business_line(CallMeta("c1", business_line="wealth"), [Verdict("贷款", 0.99)], 0.0) is None


def test_a_rule_scoped_to_a_line_reads_the_inferred_one_and_says_so(tmp_path):
    engine = one_rule(tmp_path, "meta: {business_line: [collection]}")
    unknown = call(("A", "您好。"))
    assert engine.evaluate(unknown).outcomes[0].status == "passed"
    outcome = engine.evaluate(unknown, inferred_line=InferredLine("collection", 0.93, "v7")).outcomes[0]
    assert outcome.status == "fired"
    assert "inferred by the topic classifier v7, p=0.93" in outcome.why
    wrong = engine.evaluate(unknown, inferred_line=InferredLine("wealth", 0.93, "v7")).outcomes[0]
    assert wrong.status == "passed" and "'wealth' (inferred" in wrong.why
    # a line in the manifest is never overridden
    given = engine.evaluate(call(("A", "您好。"), business_line="wealth"),
                            inferred_line=InferredLine("collection", 0.93, "v7")).outcomes[0]
    assert given.status == "passed" and "inferred" not in given.why


def test_the_analyzer_infers_a_collection_call_with_the_shipped_topic_model():
    analyzer = open_analyzer(AnalyzeOptions(rules_pack=PACK, models_dir=MODELS))
    result, predictions = analyzer.analyze(call(*COLLECTION))
    topic = next(p for p in predictions if p.model_name == "topic")
    assert topic.label == "还款与催收"
    assert result.inferred_line == InferredLine("collection", topic.probability, topic.model_version)
    rate = result.outcome("loan-rate-disclosure-missing")
    assert rate.status == "na" and "'collection' (inferred by the topic classifier" in rate.why
    # inference off: the loan-rate rule is no longer kept off this call by its line
    off = open_analyzer(AnalyzeOptions(rules_pack=PACK, models_dir=MODELS, business_line_min_prob=None))
    result, _ = off.analyze(call(*COLLECTION))
    assert result.inferred_line is None
    assert "inferred" not in result.outcome("loan-rate-disclosure-missing").why


def test_options_reject_a_probability_out_of_range():
    with pytest.raises(ValueError, match="business_line_min_prob must be between 0 and 1"):
        AnalyzeOptions(rules_pack=PACK, business_line_min_prob=1.5).validate()
    with pytest.raises(ValueError, match="business_line_min_prob"):
        Settings(business_line_min_prob=-0.1).validate()
    assert AnalyzeOptions.from_settings(Settings(infer_business_line=False)).business_line_min_prob is None


def test_the_analysis_records_the_inferred_line_and_explain_shows_it(engine, settings, cli_env, monkeypatch):
    factory = qadb.session_factory(engine)
    with factory.begin() as s:
        c = Call(call_id="no-line", recording_sha256="n" * 64, file_path="no-line.wav", file_size=1,
                 status="transcribed", direction="outbound",
                 started_at=datetime(2026, 11, 3, 6, 0, tzinfo=timezone.utc), duration_s=20.0)
        s.add(c)
        s.flush()
        tr = Transcript(call_id=c.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64, features={})
        s.add(tr)
        s.flush()
        for i, (speaker, text) in enumerate(COLLECTION):
            s.add(UtteranceRow(transcript_id=tr.id, call_id=c.id, idx=i, role="agent" if speaker == "A" else "customer",
                               start_s=4.0 * i, end_s=4.0 * i + 3.0, text=text))
    analyzer = open_analyzer(AnalyzeOptions(rules_pack=PACK, models_dir=MODELS))
    with factory.begin() as s:
        analyze_call(s, analyzer, s.scalars(select(Call)).one().id)
    with factory() as s:
        recorded = s.scalars(select(Analysis)).one().scorecard["business_line_inferred"]
    assert recorded["business_line"] == "collection" and recorded["probability"] >= 0.8
    monkeypatch.setenv("QA_MODELS_DIR", MODELS)
    out = CliRunner().invoke(cli, ["rules", "explain", "no-line"], env=cli_env)
    assert out.exit_code == 0, out.output
    assert "business line 'collection': inferred by the topic classifier" in out.output
    assert "not (meta: business line 'collection' (inferred" in out.output
