"""What each shipped model is: its labels, what part of a call it reads, its options."""

from __future__ import annotations

from dataclasses import dataclass

# Where a model's input comes from in a call.
SCOPE_CUSTOMER = "customer"  # the customer's utterances of one call, joined
SCOPE_AGENT = "agent"  # the agent's utterances of one call, joined
SCOPE_CALL = "call"  # every utterance of the call, joined
SCOPE_UTTERANCE = "utterance"  # one utterance (speaker role of mono recordings)

TOPIC_LABELS = ("信用卡", "贷款", "理财", "还款与催收", "支付与扣费", "账户安全", "其他")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    labels: tuple[str, ...]
    positive_label: str | None  # binary models: the label whose probability is the "score"
    scope: str
    description: str
    # The role model reads one short utterance, where who speaks shows in its length, its
    # question mark and its pronouns as much as in its words: a third feature block.
    cue_features: bool = False
    # Calibrate on folds that keep all renderings of a seed template together, so that the
    # probabilities are those of phrasings the model has not seen (what it meets in calls);
    # the role assigner adds them up over a dialogue and needs them honest.
    grouped_calibration: bool = False


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("complaint_risk", ("complaint", "normal"), "complaint", SCOPE_CUSTOMER,
                  "customer intends to complain or escalate (regulator, police, media, lawsuit, managers)"),
        ModelSpec("dissatisfaction", ("dissatisfied", "neutral"), "dissatisfied", SCOPE_CUSTOMER,
                  "customer is unhappy with the service, fees, delays or the answer"),
        ModelSpec("agent_conduct", ("misconduct", "proper"), "misconduct", SCOPE_AGENT,
                  "agent is impatient, dismissive, rude, threatening or shifts blame"),
        ModelSpec("topic", TOPIC_LABELS, None, SCOPE_CALL, "business topic of the call"),
        ModelSpec("role", ("agent", "customer"), None, SCOPE_UTTERANCE,
                  "who speaks one utterance, for mono recordings", cue_features=True, grouped_calibration=True),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(SPECS)
POSITIVE_LABELS: dict[str, str] = {s.name: s.positive_label for s in SPECS.values() if s.positive_label}


def spec_for(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODEL_NAMES)})") from None


@dataclass(frozen=True)
class TrainOptions:
    """How a pipeline is built and evaluated. ``random_state`` fixes every random choice."""

    random_state: int = 20261123
    cv_folds: int = 5
    calibration_folds: int = 3
    svm_c: float = 0.5
    # Small vocabularies keep the artifacts small and prediction fast.
    max_word_features: int = 4000
    max_char_features: int = 6000

    def validate(self) -> None:
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be at least 2, got {self.cv_folds}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.calibration_folds}")
        if self.svm_c <= 0:
            raise ValueError(f"svm_c must be positive, got {self.svm_c}")
        for name in ("max_word_features", "max_char_features"):
            if getattr(self, name) < 100:
                raise ValueError(f"{name} must be at least 100, got {getattr(self, name)}")


# Options other than the defaults, per model. The role model's were chosen by cross-validation
# on its training split with folds grouped by template (data/seed/README.md): a stronger
# regularization and room for the many short n-grams of single utterances.
MODEL_OPTIONS: dict[str, TrainOptions] = {
    "role": TrainOptions(svm_c=0.2, max_word_features=10000, max_char_features=20000),
}


def default_options(name: str) -> TrainOptions:
    spec_for(name)
    return MODEL_OPTIONS.get(name, TrainOptions())
