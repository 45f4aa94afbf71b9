"""Text classifiers of calls: complaint risk, dissatisfaction, agent conduct, topic, and
speaker role for mono recordings.

``ClassifierSet.load(models_dir)`` loads every shipped model after checking each artifact
against its model card; the analyze stage calls ``predict_call`` per call and stores the
predictions with the model versions. ``train``/``evaluate`` are what ``qa train`` and
``qa evaluate`` run. The parts live in :mod:`qa.classifiers`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sklearn.pipeline import Pipeline
from sqlalchemy.orm import Session

from .cards import ModelCard
from .fast import CompiledModel
from .persist import load_model
from ..review.harvest import harvest_reviews, harvest_stereo_roles
from .roles import ROLE_MODEL
from .specs import (
    MODEL_NAMES, POSITIVE_LABELS, SCOPE_AGENT, SCOPE_CALL, SCOPE_CUSTOMER, SPECS, TrainOptions, spec_for,
)
from .text import join_utterances
from .training import Evaluation, TrainResult, evaluate_model, train_model
from ..domain import AGENT, CUSTOMER, CallTranscript
from ..errors import ClassifierError

log = logging.getLogger("qa.classify")

__all__ = [
    "MODEL_NAMES", "POSITIVE_LABELS", "ClassifierSet", "Evaluation", "LoadedModel", "Prediction",
    "TrainOptions", "TrainResult", "evaluate", "train",
]

CALL_MODELS = tuple(n for n in MODEL_NAMES if n != ROLE_MODEL)


@dataclass(frozen=True)
class Prediction:
    """One model's verdict on one call. ``probability`` is that of ``label``; for the binary
    models the risk score is ``probabilities[POSITIVE_LABELS[model_name]]``."""

    model_name: str
    model_version: str
    model_sha256: str
    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    pipeline: Pipeline  # the stored artifact, as trained
    compiled: CompiledModel  # the same model, fast to call on one document


class ClassifierSet:
    """Every shipped model, verified and ready to predict."""

    def __init__(self, models: dict[str, LoadedModel]):
        missing = [n for n in MODEL_NAMES if n not in models]
        if missing:
            raise ClassifierError(f"classifier set lacks models {missing}")
        self.models = dict(models)
        digest = hashlib.sha256()
        for name in sorted(self.models):
            digest.update(f"{name}:{self.models[name].card.artifact_sha256}\n".encode())
        self.fingerprint: str = digest.hexdigest()

    @classmethod
    def load(cls, models_dir: str | Path) -> ClassifierSet:
        """Load and verify ``<name>.skops`` + ``<name>.card.json`` of every model."""
        models = {}
        for name in MODEL_NAMES:
            pipeline, card = load_model(models_dir, name)
            try:
                compiled = CompiledModel(pipeline)
            except ValueError as e:
                raise ClassifierError(f"model {name} has an unexpected structure: {e}",
                                      path=str(Path(models_dir) / card.artifact_file)) from e
            models[name] = LoadedModel(card=card, pipeline=pipeline, compiled=compiled)
            log.debug("loaded model %s version %s", name, card.version)
        return cls(models)

    @property
    def versions(self) -> dict[str, str]:
        return {name: m.card.version for name, m in self.models.items()}

    def _predict(self, name: str, doc: str) -> Prediction:
        model = self.models[name]
        proba = model.compiled.predict_proba([doc])[0]
        best = int(proba.argmax())
        return Prediction(
            model_name=name,
            model_version=model.card.version,
            model_sha256=model.card.artifact_sha256,
            label=model.compiled.classes[best],
            probability=float(proba[best]),
            probabilities={c: round(float(p), 6) for c, p in zip(model.compiled.classes, proba)},
        )

    def predict_call(self, transcript: CallTranscript) -> list[Prediction]:
        """Complaint risk and dissatisfaction on the customer's text, conduct on the agent's,
        topic on the whole call. A model whose side of the call has no text is left out."""
        utts = transcript.utterances
        docs = {
            SCOPE_CUSTOMER: join_utterances(u.text for u in utts if u.role == CUSTOMER),
            SCOPE_AGENT: join_utterances(u.text for u in utts if u.role == AGENT),
            SCOPE_CALL: join_utterances(u.text for u in utts),
        }
        out = []
        for name in CALL_MODELS:
            doc = docs[SPECS[name].scope]
            if doc:
                out.append(self._predict(name, doc))
        return out

    def label_roles(self, texts: list[str]) -> list[tuple[str, float]]:
        """('agent' | 'customer', probability) per utterance text, for mono recordings."""
        if not texts:
            return []
        model = self.models[ROLE_MODEL].compiled
        proba = model.predict_proba([join_utterances([t]) for t in texts])
        best = proba.argmax(axis=1)
        return [(model.classes[int(b)], float(p[int(b)])) for b, p in zip(best, proba)]


def train(
    models: Sequence[str] | None,
    models_dir: str | Path,
    *,
    session: Session | None = None,
    options: TrainOptions | None = None,
    seed_dir: str | Path | None = None,
) -> list[TrainResult]:
    """Train ``models`` (default: all) into ``models_dir``. With ``session``, examples from
    that database are added and recorded in the cards: inspectors' review decisions for the
    complaint, dissatisfaction and conduct models, stereo calls' utterances for the role model.
    ``options`` (default: each model's own) apply to every model trained."""
    names = tuple(models or MODEL_NAMES)
    for name in names:
        spec_for(name)
    harvest = harvest_reviews(session, names) if session is not None else None
    results = []
    for name in names:
        review_examples: tuple = ()
        summary = None
        if session is not None and name == ROLE_MODEL:
            review_examples, summary = harvest_stereo_roles(session)
        elif harvest is not None:
            review_examples = harvest.examples.get(name, ())
            summary = harvest.summary.get(name) or {"decisions": {}, "examples": {}, "categories": [],
                                                    "note": "no finding category teaches this model"}
        results.append(train_model(name, models_dir, options=options, review_examples=review_examples,
                                   review_summary=summary, seed_dir=seed_dir))
    return results


def evaluate(models: Sequence[str] | None, models_dir: str | Path, *,
             seed_dir: str | Path | None = None) -> list[Evaluation]:
    """Held-out metrics of the stored models, recomputed, beside their cards."""
    return [evaluate_model(name, models_dir, seed_dir=seed_dir) for name in (models or MODEL_NAMES)]
