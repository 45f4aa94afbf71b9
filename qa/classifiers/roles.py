"""Speaker roles of mono recordings from the role model, in context.

One utterance alone is often ambiguous (好的，您说 / 对，没错 come from either side; a curt
agent sounds like a customer), while the turn-taking around it is not. The learned assigner
therefore runs the heuristic's two-state Viterbi pass (:func:`qa.asr.roles.decode_roles`) with
the role model's calibrated log-odds in place of the cue words: the model says what each
utterance sounds like, the pauses say how likely the speaker changed.

The transcription stage gets it through :class:`RolesFromModel`, which loads
``<models_dir>/role.skops`` (checked against its card, trusted types only) on first use and falls
back to the cue-word heuristic, with a warning, when the model is missing or refused. Either
way the assigner's ``provenance`` (method, model version and artifact sha256) is what the
stage records with the transcript.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..asr.roles import RoleAssigner, RoleHeuristic, decode_roles
from ..domain import AGENT, CUSTOMER
from ..errors import ClassifierError
from .text import join_utterances

if TYPE_CHECKING:  # scikit-learn loads only when a model does
    from .cards import ModelCard
    from .fast import CompiledModel

log = logging.getLogger(__name__)

ROLE_MODEL = "role"
SEQUENCE_VERSION = "viterbi-v1"  # bump when decode_roles or the evidence changes


@dataclass(frozen=True)
class RoleSequenceOptions:
    """How the role model's probabilities meet the turn-taking prior."""

    # The model is calibrated on folds of unseen templates (specs.grouped_calibration), so its
    # log-odds are used as they are, not scaled to fit any evaluation.
    evidence_weight: float = 1.0
    # Probabilities are clipped to [floor, 1 - floor]: ASR errors can make any utterance look
    # certain, and one utterance must not outvote the turn-taking of a whole exchange.
    probability_floor: float = 0.001
    turns: RoleHeuristic = field(default_factory=RoleHeuristic)

    def validate(self) -> None:
        if self.evidence_weight <= 0:
            raise ValueError(f"evidence_weight must be positive, got {self.evidence_weight}")
        if not 0.0 < self.probability_floor < 0.5:
            raise ValueError(f"probability_floor must be strictly between 0 and 0.5, got {self.probability_floor}")
        self.turns.validate()


class LearnedRoleAssigner:
    """A :data:`~qa.asr.roles.RoleAssigner` driven by the role model."""

    def __init__(self, model: CompiledModel, options: RoleSequenceOptions = RoleSequenceOptions(),
                 card: ModelCard | None = None):
        options.validate()
        if sorted(model.classes) != sorted((AGENT, CUSTOMER)):
            raise ValueError(f"a role model predicts {AGENT!r} and {CUSTOMER!r}, not {model.classes}")
        self._model = model
        self._agent = model.classes.index(AGENT)
        self.options = options
        self.card = card  # None while training: the card is written after evaluation

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "method": "role-model",
            "model": ROLE_MODEL,
            "version": self.card.version if self.card else None,
            "sha256": self.card.artifact_sha256 if self.card else None,
            "sequence": SEQUENCE_VERSION,
            "evidence_weight": self.options.evidence_weight,
            "probability_floor": self.options.probability_floor,
        }

    def evidence(self, texts: Sequence[str]) -> np.ndarray:
        """Log-odds that each text is the agent's rather than the customer's."""
        if not texts:
            return np.zeros(0)
        proba = self._model.predict_proba([join_utterances([t]) for t in texts])[:, self._agent]
        floor = self.options.probability_floor
        proba = np.clip(proba, floor, 1.0 - floor)
        return self.options.evidence_weight * np.log(proba / (1.0 - proba))

    def __call__(self, utterances: Sequence[tuple[str, float, float]]) -> list[str]:
        if not utterances:
            return []
        evidence = self.evidence([text for text, _, _ in utterances])
        return decode_roles(evidence.tolist(), utterances, self.options.turns)


def load_role_assigner(models_dir: str | Path, options: RoleSequenceOptions = RoleSequenceOptions()) -> RoleAssigner:
    """The learned assigner from ``<models_dir>/role.skops``, verified against its card; the
    cue-word heuristic (with ``options.turns``) and a logged warning when the model is
    missing, tampered with or not a role model."""
    try:
        from .fast import CompiledModel
        from .persist import load_model

        pipeline, card = load_model(models_dir, ROLE_MODEL)
        return LearnedRoleAssigner(CompiledModel(pipeline), options, card)
    except (ClassifierError, ValueError, ImportError) as e:
        log.warning("role model unavailable in %s (%s): mono recordings get roles from the cue-word heuristic",
                    models_dir, e)
        return options.turns


_loaded: dict[tuple[str, RoleSequenceOptions], RoleAssigner] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class RolesFromModel:
    """The transcription stage's assigner: the model in ``models_dir``, loaded on first use and
    once per process (worker processes that only cut audio never load it). Small and
    picklable, so options that carry it can cross process boundaries."""

    models_dir: str
    options: RoleSequenceOptions = field(default_factory=RoleSequenceOptions)

    def resolve(self) -> RoleAssigner:
        key = (str(Path(self.models_dir).resolve()), self.options)
        with _lock:
            if key not in _loaded:
                _loaded[key] = load_role_assigner(self.models_dir, self.options)
            return _loaded[key]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.resolve().provenance

    def __call__(self, utterances: Sequence[tuple[str, float, float]]) -> list[str]:
        return self.resolve()(utterances)
