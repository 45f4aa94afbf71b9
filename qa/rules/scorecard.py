"""**The** score of a set of findings under a pack's scorecard. The analysis scores what the
rules fired; a review scores what the inspector kept (confirmed, or added) with the same
function and the scorecard stored with the analysis, so confirming a finding never changes
what it costs.

Each finding deducts the rule's own ``points``, else the scorecard's ``rule_points[id]``, else
its ``severity_points[severity]``; a customer-side trigger (``kind: trigger``, e.g. a complaint
threat) deducts nothing and fails nothing, since it is not the agent's doing. A fatal finding
makes the score 0 when the scorecard says ``fatal_fails``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ..domain import SEVERITIES
from .results import FIRED, NA, PASSED, RuleOutcome, ScoreResult

if TYPE_CHECKING:  # the schema holds a scorecard; the review workflow scores without loading rules
    from .schema import RulePack


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


NOT_SCORED_KINDS = ("trigger",)  # customer-side events route a call but are not the agent's fault
FAILING_SEVERITIES = ("fatal", "major")  # a kept finding of these fails the call by default


@dataclass(frozen=True)
class Scored:
    """One finding as the scorecard sees it. ``points``: the deduction fixed for it (the rule's
    own points, or what the analysis recorded); ``None``: the scorecard's for its rule or
    severity."""

    rule_id: str
    severity: str
    kind: str
    points: float | None = None

    @property
    def counts(self) -> bool:
        return self.kind not in NOT_SCORED_KINDS


def deduction(card: Scorecard, item: Scored) -> float:
    if not item.counts:
        return 0.0
    if item.points is not None:
        return float(item.points)
    return float(card.rule_points.get(item.rule_id, card.severity_points.get(item.severity, 0.0)))


def score_findings(card: Scorecard, items: Iterable[Scored]) -> tuple[float, bool]:
    """(score, fatal) of ``items``: the one formula."""
    items = list(items)
    fatal = any(i.counts and i.severity == "fatal" for i in items)
    total = card.base - sum(deduction(card, i) for i in items)
    final = 0.0 if fatal and card.fatal_fails else max(0.0, total)
    return round(final, 2), fatal


def fails_call(items: Iterable[Scored]) -> bool:
    """The default verdict: a kept fatal or major finding the agent is answerable for fails the call."""
    return any(i.counts and i.severity in FAILING_SEVERITIES for i in items)


def card_to_json(card: Scorecard) -> dict:
    return {"base": card.base, "severity_points": dict(card.severity_points), "rule_points": dict(card.rule_points),
            "fatal_fails": card.fatal_fails}


def card_from_json(doc: dict | None) -> Scorecard:
    """The scorecard stored with an analysis; the default one for analyses stored without it."""
    if not doc:
        return Scorecard()
    return Scorecard(base=float(doc["base"]), severity_points=dict(doc["severity_points"]),
                     rule_points=dict(doc.get("rule_points") or {}), fatal_fails=bool(doc["fatal_fails"]))


def score(pack: RulePack, outcomes: tuple[RuleOutcome, ...]) -> ScoreResult:
    card = pack.scorecard
    rules = {r.id: r for r in pack.rules}
    fired: list[Scored] = []
    items: dict[str, dict] = {}
    for o in outcomes:
        rule = rules[o.rule_id]
        points = 0.0
        if o.status == FIRED:
            scored = Scored(rule.id, rule.severity, rule.kind, rule.points)
            fired.append(scored)
            points = deduction(card, scored)
        items[o.rule_id] = {"status": o.status, "severity": o.severity, "category": o.category,
                            "deduction": points}
    final, fatal = score_findings(card, fired)
    counts = [sum(o.status == s for o in outcomes) for s in (FIRED, PASSED, NA)]
    return ScoreResult(final, fatal, *counts, items=items, card=card_to_json(card))
