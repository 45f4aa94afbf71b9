"""Scores one call from its rule outcomes under the pack's scorecard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # engine imports this module; only the types flow back
    from .engine import RuleOutcome
    from .schema import RulePack

NOT_SCORED_KINDS = ("trigger",)  # customer-side events route a call but are not the agent's fault


@dataclass(frozen=True)
class ScoreResult:
    score: float
    fatal: bool
    fired: int
    passed: int
    na: int
    items: dict  # rule_id -> {"status", "severity", "category", "deduction"}

    def to_json(self) -> dict:
        return {"score": self.score, "fatal": self.fatal,
                "counts": {"fired": self.fired, "passed": self.passed, "na": self.na}, "items": self.items}


def score(pack: RulePack, outcomes: tuple[RuleOutcome, ...]) -> ScoreResult:
    card = pack.scorecard
    rules = {r.id: r for r in pack.rules}
    total = card.base
    fatal = False
    items: dict[str, dict] = {}
    for o in outcomes:
        rule = rules[o.rule_id]
        deduction = 0.0
        if o.status == "fired" and rule.kind not in NOT_SCORED_KINDS:
            if rule.points is not None:
                deduction = rule.points
            else:
                deduction = card.rule_points.get(rule.id, card.severity_points.get(rule.severity, 0.0))
            fatal = fatal or rule.severity == "fatal"
        total -= deduction
        items[o.rule_id] = {"status": o.status, "severity": o.severity, "category": o.category,
                            "deduction": deduction}
    final = 0.0 if fatal and card.fatal_fails else max(0.0, total)
    counts = [sum(o.status == s for o in outcomes) for s in ("fired", "passed", "na")]
    return ScoreResult(round(final, 2), fatal, *counts, items=items)
