"""Typed form of a rule pack once loaded and validated (see loader.py for the YAML side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..domain import SEVERITIES
from .conditions import Condition

PRESENT = "present"  # the rule fires when its condition matches (must_not_say, triggers ...)
ABSENT = "absent"  # the rule fires when its condition does not match (must_say)
EXPECTS = ("fire", "pass", "na")


@dataclass(frozen=True)
class TestTurn:
    role: str | None  # None for a pause
    text: str = ""
    cpm: float = 270.0  # speaking speed used to give the turn a duration
    overlap_s: float = 0.0  # starts this long before the previous turn ends
    pause_s: float = 0.0


@dataclass(frozen=True)
class RuleTest:
    expect: str
    turns: tuple[TestTurn, ...]
    line: int
    name: str = ""
    started_at: datetime | None = None
    direction: str | None = None
    business_line: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    category: str
    kind: str
    severity: str
    role: str
    fire_when: str
    condition: Condition
    when: Condition | None = None
    description: str = ""
    points: float | None = None  # deduction overriding the scorecard's per-severity points
    source: str = ""
    tests: tuple[RuleTest, ...] = ()


@dataclass(frozen=True)
class Scorecard:
    """Points deducted from ``base`` for each fired rule: the rule's own ``points``, else
    ``rule_points[id]``, else ``severity_points[severity]``. Customer-side triggers deduct
    nothing (they are not the agent's doing). A fatal finding makes the score 0 when
    ``fatal_fails``. Rules that are not applicable are N/A, neither passed nor failed."""

    base: float = 100.0
    severity_points: dict[str, float] = field(default_factory=lambda: {"fatal": 100.0, "major": 10.0, "minor": 5.0})
    rule_points: dict[str, float] = field(default_factory=dict)
    fatal_fails: bool = True

    def validate(self) -> None:
        if self.base <= 0:
            raise ValueError(f"scorecard base must be positive, got {self.base}")
        unknown = set(self.severity_points) - set(SEVERITIES)
        if unknown:
            raise ValueError(f"scorecard severity_points has unknown severities {sorted(unknown)}")
        for name, pts in {**self.severity_points, **self.rule_points}.items():
            if pts < 0:
                raise ValueError(f"scorecard points for {name} must not be negative, got {pts}")


@dataclass(frozen=True)
class RulePack:
    name: str
    version: str
    path: Path
    sha256: str
    rules: tuple[Rule, ...]
    scorecard: Scorecard = field(default_factory=Scorecard)
    description: str = ""

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)
