"""The analyze stage: a call's transcript -> the rule pack's outcomes and findings, plus the
classifiers' predictions. :func:`open_analyzer` loads the pack and the models once per worker;
:meth:`Analyzer.analyze` evaluates one call. The pipeline stores the result as one Analysis
with its Findings and ClassifierScores (:mod:`qa.pipeline.analyses`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..domain import CallTranscript
from ..errors import ClassifierError
from .context import EngineOptions
from .engine import RuleEngine
from .loader import load_pack
from .results import CallResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzeOptions:
    rules_pack: str
    contact_hours: str = "08:00-21:00"
    models_dir: str | None = None  # None: rules only

    def validate(self) -> None:
        if not self.rules_pack:
            raise ValueError("rules_pack must name a rule-pack folder")
        EngineOptions(contact_hours=self.contact_hours).validate()

    @classmethod
    def from_settings(cls, settings: Settings, *, rules_pack: str | None = None,
                      classifiers: bool = True) -> AnalyzeOptions:
        return cls(rules_pack=rules_pack or settings.rules_pack, contact_hours=settings.contact_hours,
                   models_dir=settings.models_dir if classifiers else None)


@dataclass
class Analyzer:
    """A loaded rule pack and, when available, the classifier set; open once per worker."""

    engine: RuleEngine
    classifiers: Any = None  # qa.classifiers.predict.ClassifierSet

    @property
    def classifiers_sha256(self) -> str:
        return self.classifiers.fingerprint if self.classifiers is not None else ""

    def analyze(self, transcript: CallTranscript) -> tuple[CallResult, list]:
        """The rule outcomes of one call and the classifiers' predictions (none without models)."""
        result = self.engine.evaluate(transcript)
        predictions = self.classifiers.predict_call(transcript) if self.classifiers is not None else []
        return result, predictions


def load_classifiers(models_dir: str) -> Any:
    """The classifier set, or None when the module or the trained models are missing
    (analysis then runs the rules alone)."""
    try:
        from ..classifiers.predict import ClassifierSet
    except ImportError as e:
        log.info("classifiers unavailable (%s): analysing with rules only", e)
        return None
    try:
        return ClassifierSet.load(models_dir)
    except ClassifierError as e:
        log.info("no usable classifiers in %s (%s): analysing with rules only", models_dir, e)
        return None


def open_analyzer(settings: Settings | AnalyzeOptions) -> Analyzer:
    options = settings if isinstance(settings, AnalyzeOptions) else AnalyzeOptions.from_settings(settings)
    options.validate()
    engine = RuleEngine(load_pack(options.rules_pack), EngineOptions(contact_hours=options.contact_hours))
    classifiers = load_classifiers(options.models_dir) if options.models_dir else None
    return Analyzer(engine, classifiers)
