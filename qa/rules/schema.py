"""Typed form of a rule pack once loaded and validated (see loader.py for the YAML side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .conditions import Condition
from .scorecard import Scorecard

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
