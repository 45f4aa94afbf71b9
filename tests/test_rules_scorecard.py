"""Scorecards: deductions per severity or per rule, fatal items fail the call, triggers
deduct nothing, N/A rules are neither passed nor failed."""

from __future__ import annotations

from rules_helpers import call, write_pack

from qa.rules.engine import RuleEngine
from qa.rules.loader import load_pack

RULES = {
    "a.yaml": "id: minor-rule\ntitle: t\ncategory: closing.missing\ncondition:\n  keyword: [再见]\n",
    "b.yaml": "id: major-rule\ntitle: t\ncategory: service.impatience\ncondition:\n  keyword: [烦不烦]\n",
    "c.yaml": "id: fatal-rule\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [白痴]\n",
    "d.yaml": "id: trigger-rule\ntitle: t\ncategory: complaint.escalation_threat\ncondition:\n  keyword: [投诉]\n",
    "e.yaml": ("id: na-rule\ntitle: t\ncategory: disclosure.risk_missing\nwhen:\n  keyword: [理财]\n"
               "condition:\n  keyword: [投资须谨慎]\n"),
    "f.yaml": "id: own-points\ntitle: t\ncategory: misrep.superlative\npoints: 7\ncondition:\n  keyword: [最好的]\n",
}


def engine(tmp_path, scorecard: str = "") -> RuleEngine:
    return RuleEngine(load_pack(write_pack(tmp_path / "p", RULES, "name: p\nversion: '1'\n" + scorecard)))


def test_deductions_by_severity_and_rule(tmp_path):
    e = engine(tmp_path)
    result = e.evaluate(call(("A", "好的"), ("A", "你烦不烦"), ("C", "我要投诉"), ("A", "这是最好的")))
    s = result.score
    assert s.items["minor-rule"] == {"status": "fired", "severity": "minor", "category": "closing.missing",
                                     "deduction": 5.0}
    assert s.items["major-rule"]["deduction"] == 10.0
    assert s.items["trigger-rule"] == {"status": "fired", "severity": "major",
                                       "category": "complaint.escalation_threat", "deduction": 0.0}
    assert s.items["na-rule"]["status"] == "na" and s.items["na-rule"]["deduction"] == 0.0
    assert s.items["own-points"]["deduction"] == 7.0
    assert (s.score, s.fatal, s.fired, s.passed, s.na) == (78.0, False, 4, 1, 1)


def test_fatal_fails_the_call(tmp_path):
    s = engine(tmp_path).evaluate(call(("A", "你这个白痴"), ("A", "再见"))).score
    assert (s.score, s.fatal) == (0.0, True)
    lenient = engine(tmp_path / "l", "scorecard:\n  fatal_fails: false\n  severity_points: {fatal: 40}\n")
    s = lenient.evaluate(call(("A", "你这个白痴"), ("A", "再见"))).score
    assert (s.score, s.fatal) == (60.0, True)


def test_rule_points_override_severity(tmp_path):
    e = engine(tmp_path, "scorecard:\n  base: 50\n  rule_points: {major-rule: 1}\n")
    assert e.evaluate(call(("A", "你烦不烦"), ("A", "再见"))).score.score == 49.0
    assert e.evaluate(call(("A", "再见"))).score.to_json()["counts"] == {"fired": 0, "passed": 5, "na": 1}
