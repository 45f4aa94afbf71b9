"""Runs the test snippets written beside each rule (``tests:`` in the rule file)."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain import CallMeta, CallTranscript, Utterance
from .engine import RuleEngine
from .results import FIRED, NA, PASSED
from .schema import Rule, RuleTest
from .text import normalize

_STATUS = {"fire": FIRED, "pass": PASSED, "na": NA}
TURN_GAP_S = 0.5  # between consecutive turns of a snippet


@dataclass(frozen=True)
class TestResult:
    rule_id: str
    source: str
    line: int
    name: str
    expect: str
    got: str
    why: str

    @property
    def ok(self) -> bool:
        return _STATUS[self.expect] == self.got

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def snippet_transcript(test: RuleTest, call_id: str = "test") -> CallTranscript:
    """A call built from a snippet: each turn lasts as long as its text takes at its speed."""
    utts: list[Utterance] = []
    t = 0.0  # where the next turn starts unless it overlaps the previous one
    for turn in test.turns:
        if turn.role is None:
            t += turn.pause_s
            continue
        start = max(0.0, utts[-1].end_s - turn.overlap_s) if utts and turn.overlap_s else t
        end = start + max(0.6, len(normalize(turn.text)) / turn.cpm * 60)
        utts.append(Utterance(turn.role, round(start, 3), round(end, 3), turn.text))
        t = max(t, end + TURN_GAP_S)
    meta = CallMeta(call_id=call_id, started_at=test.started_at, direction=test.direction,
                    business_line=test.business_line, customer_ref=test.customer_ref)
    return CallTranscript(meta, tuple(utts), None, round(t, 3), history=test.history)


def run_rule_tests(engine: RuleEngine, rules: tuple[Rule, ...] | None = None) -> list[TestResult]:
    results: list[TestResult] = []
    own_rules = tuple(r for r in engine.pack.rules if not r.cross_call)
    for rule in engine.pack.rules if rules is None else rules:
        # a cross-call rule may read the call's own findings: the pack's other rules run too
        chosen = (*own_rules, rule) if rule.cross_call else (rule,)
        for n, test in enumerate(rule.tests, 1):
            outcome = engine.evaluate(snippet_transcript(test, f"{rule.id}#{n}"), chosen).outcomes[-1]
            results.append(TestResult(rule.id, rule.source, test.line, test.name or f"test {n}", test.expect,
                                      outcome.status, outcome.why))
    return results
