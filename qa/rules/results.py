"""What evaluating a rule pack over one call produces: per rule fired / passed / not
applicable (:class:`RuleOutcome`), the evidence of each fired rule (:class:`RuleFinding`) and
the call's score under the pack's scorecard (:class:`ScoreResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .calltype import InferredLine

FIRED = "fired"
PASSED = "passed"
NA = "na"
RULE_STATUSES = (FIRED, PASSED, NA)


@dataclass(frozen=True)
class RuleFinding:
    """Evidence of one fired rule, ready to be stored as a Finding row."""

    rule_id: str
    category: str
    severity: str
    role: str
    utterance_idx: tuple[int, ...]
    matched_text: str | None
    evidence: str
    start_s: float | None
    end_s: float | None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RuleOutcome:
    rule_id: str
    category: str
    severity: str
    status: str  # fired | passed | na
    why: str
    finding: RuleFinding | None = None


@dataclass(frozen=True)
class ScoreResult:
    score: float
    fatal: bool
    fired: int
    passed: int
    na: int
    items: dict  # rule_id -> {"status", "severity", "category", "deduction"}
    card: dict = field(default_factory=dict)  # the scorecard that scored it (scorecard.card_to_json)

    def to_json(self) -> dict:
        return {"score": self.score, "fatal": self.fatal,
                "counts": {"fired": self.fired, "passed": self.passed, "na": self.na}, "items": self.items,
                "card": self.card}


@dataclass(frozen=True)
class CallResult:
    outcomes: tuple[RuleOutcome, ...]
    score: ScoreResult
    inferred_line: InferredLine | None = None  # the business line assumed for a call whose manifest has none

    @property
    def findings(self) -> tuple[RuleFinding, ...]:
        return tuple(o.finding for o in self.outcomes if o.finding is not None)

    def outcome(self, rule_id: str) -> RuleOutcome:
        return next(o for o in self.outcomes if o.rule_id == rule_id)
