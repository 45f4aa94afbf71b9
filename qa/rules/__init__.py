"""Rule packs: schema, loader, matchers, engine, scorecard and rule tests."""

from .context import EngineOptions
from .engine import CallResult, RuleEngine, RuleFinding, RuleOutcome
from .loader import lint_pack, load_pack
from .schema import Rule, RulePack

__all__ = ["CallResult", "EngineOptions", "Rule", "RuleEngine", "RuleFinding", "RuleOutcome", "RulePack",
           "lint_pack", "load_pack"]
