"""Typed form of a rule pack once loaded and validated (see loader.py for the YAML side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from ..domain import PriorContact
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
    customer_ref: str | None = None
    history: tuple[PriorContact, ...] = ()  # the customer's earlier calls, for cross-call rules


@dataclass(frozen=True)
class Basis:
    """Where a rule comes from: a regulation, guideline or internal policy, and its article."""

    document: str
    article: str = ""
    effective: date | None = None
    url: str = ""
    note: str = ""

    def to_json(self) -> dict:
        return {"document": self.document, "article": self.article,
                "effective": self.effective.isoformat() if self.effective else None,
                **({"url": self.url} if self.url else {}), **({"note": self.note} if self.note else {})}

    def __str__(self) -> str:
        when = f"（{self.effective:%Y-%m-%d} 起施行）" if self.effective else ""
        return f"{self.document}{' ' + self.article if self.article else ''}{when}"


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
    basis: tuple[Basis, ...] = ()
    cross_call: bool = False  # reads the customer's other calls (or this call's own findings)
    history_days: float = 0.0  # how far back it reads them


@dataclass(frozen=True)
class RulePack:
    name: str
    version: str
    path: Path
    sha256: str
    rules: tuple[Rule, ...]
    scorecard: Scorecard = field(default_factory=Scorecard)
    description: str = ""

    @property
    def history_days(self) -> float:
        """How many days of a customer's earlier calls the pack's cross-call rules read (0: none)."""
        return max((r.history_days for r in self.rules if r.cross_call), default=0.0)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)
