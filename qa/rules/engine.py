"""Runs a rule pack over one call: per rule fired / passed / not applicable, with evidence."""

from __future__ import annotations

from ..domain import CallTranscript
from .calltype import InferredLine
from .conditions import leaves
from .context import CallContext, EngineOptions, Hit
from .matchers import Prefilter
from .results import FIRED, NA, PASSED, CallResult, RuleFinding, RuleOutcome
from .schema import ABSENT, Rule, RulePack
from .scorecard import score


class RuleEngine:
    """Holds a loaded pack (patterns are compiled at load time) and evaluates calls."""

    def __init__(self, pack: RulePack, options: EngineOptions | None = None):
        self.pack = pack
        self.options = options or EngineOptions()
        self.options.validate()
        self.operators = tuple(op for rule in pack.rules for top in (rule.when, rule.condition)
                                   if top is not None for op in leaves(top))
        self.prefilter: Prefilter | None = Prefilter(self.operators)

    def context(self, transcript: CallTranscript, inferred_line: InferredLine | None = None) -> CallContext:
        return CallContext(transcript, self.options, inferred_line, prefilter=self.prefilter)

    def evaluate(self, transcript: CallTranscript, rules: tuple[Rule, ...] | None = None,
                 inferred_line: InferredLine | None = None) -> CallResult:
        """Every rule (or ``rules``) over one call. Rules that look at the customer's other
        calls or at this call's own findings run after the others, which they can then see.
        ``inferred_line``: the business line to assume where the manifest names none."""
        ctx = self.context(transcript, inferred_line)
        chosen = self.pack.rules if rules is None else rules
        done = {rule.id: self._rule(ctx, rule) for rule in chosen if not rule.cross_call}
        later = [rule for rule in chosen if rule.cross_call]
        if later:
            ctx.own_categories = frozenset(o.category for o in done.values() if o.status == FIRED)
            done.update((rule.id, self._rule(ctx, rule)) for rule in later)
        outcomes = tuple(done[rule.id] for rule in chosen)
        return CallResult(outcomes, score(self.pack, outcomes), inferred_line)

    def categories(self, transcript: CallTranscript) -> frozenset[str]:
        """The categories the pack's single-call rules find in a call: what an earlier call of
        the customer contributes to the cross-call rules when it has no stored analysis yet."""
        result = self.evaluate(transcript, tuple(r for r in self.pack.rules if not r.cross_call))
        return frozenset(o.category for o in result.outcomes if o.status == FIRED)

    def _rule(self, ctx: CallContext, rule: Rule) -> RuleOutcome:
        when_hits: tuple[Hit, ...] = ()
        when_why = ""
        if rule.when is not None:
            applies = rule.when.evaluate(ctx)
            if not applies.matched:
                return RuleOutcome(rule.id, rule.category, rule.severity, NA, f"not applicable: {applies.why}")
            when_hits, when_why = applies.hits, f"applies because {applies.why}; "
        lenient = rule.fire_when == ABSENT and ctx.roles_inferred
        ctx.lenient_roles = lenient
        try:
            out = rule.condition.evaluate(ctx)
        finally:
            ctx.lenient_roles = False
        if rule.fire_when == ABSENT:
            if out.matched:
                return RuleOutcome(rule.id, rule.category, rule.severity, PASSED, f"{when_why}required: {out.why}")
            why = f"{when_why}required but missing: {out.why}"
            return RuleOutcome(rule.id, rule.category, rule.severity, FIRED, why,
                               self._finding(ctx, rule, when_hits, None, why))
        if not out.matched:
            return RuleOutcome(rule.id, rule.category, rule.severity, PASSED, f"{when_why}{out.why}")
        why = f"{when_why}{out.why}"
        matched = "；".join(dict.fromkeys(h.text for h in out.hits if h.text)) or None
        return RuleOutcome(rule.id, rule.category, rule.severity, FIRED, why,
                           self._finding(ctx, rule, out.hits, matched, why))

    def _finding(self, ctx: CallContext, rule: Rule, hits: tuple[Hit, ...], matched: str | None,
                 why: str) -> RuleFinding:
        utts = tuple(sorted({h.utt for h in hits if h.utt is not None}))
        times = [t for h in hits for t in ctx.hit_times(h) if t is not None]
        evidence = " / ".join(f"[{i}] {ctx.roles[i]}: {ctx.utterances[i].text}" for i in utts)
        if not evidence:
            evidence = "; ".join(h.text for h in hits) or why
        return RuleFinding(
            rule_id=rule.id, category=rule.category, severity=rule.severity, role=rule.role,
            utterance_idx=utts, matched_text=matched, evidence=evidence,
            start_s=min(times) if times else None, end_s=max(times) if times else None,
            details={"title": rule.title, "why": why, "fire_when": rule.fire_when, "kind": rule.kind,
                     **({"basis": [b.to_json() for b in rule.basis]} if rule.basis else {}),
                     **({"related_calls": related} if (related := sorted({c for h in hits for c in h.calls}))
                        else {})},
        )
