"""Predictions of the classifier set: complaint risk, dissatisfaction, agent conduct and topic
of a call, and speaker roles of mono recordings.

``ClassifierSet.load(models_dir)`` loads every shipped model after checking each artifact
against its model card; the analyze stage calls ``predict_call`` per call and stores the
predictions with the model versions. Training is :mod:`qa.classifiers.training`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from sklearn.pipeline import Pipeline

from ..domain import AGENT, CUSTOMER, CallTranscript
from ..errors import ClassifierError
from .cards import ModelCard
from .fast import CompiledModel
from .persist import load_model
from .roles import ROLE_MODEL
from .specs import MODEL_NAMES, SCOPE_AGENT, SCOPE_CALL, SCOPE_CUSTOMER, SPECS
from .text import join_utterances

log = logging.getLogger(__name__)

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
