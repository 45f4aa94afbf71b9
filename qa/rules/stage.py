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
from .calltype import infer_business_line
from .context import EngineOptions
from .engine import RuleEngine
from .loader import load_pack
from .results import CallResult

log = logging.getLogger(__name__)


CLASSIFIER_ERRORS = ("stop", "fail_calls")


@dataclass(frozen=True)
class AnalyzeOptions:
    rules_pack: str
    engine: EngineOptions = EngineOptions()
    models_dir: str | None = None  # None: rules only
    # a model that is there but cannot be trusted or loaded: stop the stage, or fail each call
    classifier_errors: str = "stop"
    # a call without a business line in its manifest takes the topic classifier's at this
    # probability or above (qa.rules.calltype); None: never inferred
    business_line_min_prob: float | None = 0.8

    def validate(self) -> None:
        if self.business_line_min_prob is not None and not 0.0 <= self.business_line_min_prob <= 1.0:
            raise ValueError(f"business_line_min_prob must be between 0 and 1, got {self.business_line_min_prob}")
        if not self.rules_pack:
            raise ValueError("rules_pack must name a rule-pack folder")
        if self.classifier_errors not in CLASSIFIER_ERRORS:
            raise ValueError(f"classifier_errors must be one of {', '.join(CLASSIFIER_ERRORS)}, "
                             f"got {self.classifier_errors!r}")
        self.engine.validate()

    @classmethod
    def from_settings(cls, settings: Settings, *, rules_pack: str | None = None,
                      classifiers: bool = True) -> AnalyzeOptions:
        return cls(rules_pack=rules_pack or settings.rules_pack, engine=engine_options(settings),
                   models_dir=settings.models_dir if classifiers else None,
                   classifier_errors=settings.classifier_errors,
                   business_line_min_prob=settings.business_line_min_prob if settings.infer_business_line else None)


def engine_options(settings: Settings) -> EngineOptions:
    return EngineOptions(contact_hours=settings.contact_hours, timezone=settings.timezone)


@dataclass
class Analyzer:
    """A loaded rule pack and, when available, the classifier set; open once per worker.
    ``unavailable``: the models could not be loaded and each call is to fail with that error
    (``classifier_errors = "fail_calls"``) rather than be analysed without them."""

    engine: RuleEngine
    classifiers: Any = None  # qa.classifiers.predict.ClassifierSet
    unavailable: ClassifierError | None = None
    business_line_min_prob: float | None = None

    @property
    def classifiers_sha256(self) -> str:
        return self.classifiers.fingerprint if self.classifiers is not None else ""

    def analyze(self, transcript: CallTranscript) -> tuple[CallResult, list]:
        """The rule outcomes of one call and the classifiers' predictions (none without models).
        The predictions come first: a call without a business line takes the topic's."""
        if self.unavailable is not None:
            raise ClassifierError(f"classifiers unavailable: {self.unavailable}", code="classifiers.unavailable",
                                  path=self.unavailable.path)
        predictions = self.classifiers.predict_call(transcript) if self.classifiers is not None else []
        inferred = infer_business_line(transcript.meta, predictions, self.business_line_min_prob)
        return self.engine.evaluate(transcript, inferred_line=inferred), predictions


def load_classifiers(models_dir: str) -> Any:
    """The classifier set; ``None`` when ``models_dir`` holds no model at all (analysis then
    runs the rules alone, and says so). A model that is there but missing a part, damaged,
    tampered with (its sha256 disagrees with its card) or unloadable raises
    :class:`ClassifierError`: a silent fallback would quietly stop complaint-risk routing."""
    from ..classifiers.persist import artifact_path, card_path
    from ..classifiers.specs import MODEL_NAMES

    present = [n for n in MODEL_NAMES if artifact_path(models_dir, n).exists() or card_path(models_dir, n).exists()]
    if not present:
        log.warning("no classifier models in %s: analysing with the rules only (no complaint-risk routing)",
                    models_dir)
        return None
    from ..classifiers.predict import ClassifierSet

    return ClassifierSet.load(models_dir)


def open_analyzer(settings: Settings | AnalyzeOptions) -> Analyzer:
    options = settings if isinstance(settings, AnalyzeOptions) else AnalyzeOptions.from_settings(settings)
    options.validate()
    engine = RuleEngine(load_pack(options.rules_pack), options.engine)
    if not options.models_dir:
        return Analyzer(engine)
    try:
        return Analyzer(engine, load_classifiers(options.models_dir),
                        business_line_min_prob=options.business_line_min_prob)
    except ClassifierError as e:
        if options.classifier_errors == "stop":
            raise
        log.error("classifiers unavailable (%s): every call analysed now fails with classifiers.unavailable", e)
        return Analyzer(engine, unavailable=e)
