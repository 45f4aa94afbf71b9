"""Training and evaluation: fit on the training split (plus review examples), report
cross-validated metrics on it and held-out metrics on templates it never saw. The role model
is also scored in context: on held-out dialogues, as the transcription stage uses it."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sklearn
import skops
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

from ..config import REPO_ROOT
from ..domain import AGENT, CUSTOMER
from ..errors import ClassifierError
from .cards import ModelCard
from .corpus import DialogueSet, Example, examples_sha256, load_dialogues, load_seed
from .fast import CompiledModel
from .persist import TRUSTED_TYPES, card_path, load_model, save_model
from .pipeline import build_pipeline, describe, strip_for_storage
from .roles import LearnedRoleAssigner
from .specs import MODEL_NAMES, SCOPE_UTTERANCE, ModelSpec, TrainOptions, default_options, spec_for
from .text import FEATURES_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    card: ModelCard
    models_dir: Path


@dataclass(frozen=True)
class Evaluation:
    card: ModelCard
    heldout_metrics: dict[str, Any]  # recomputed now with the stored artifact
    matches_card: bool  # the recomputed held-out metrics equal the card's


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, precision/recall/F1/support per class and the confusion matrix
    (rows: true label, columns: predicted label), rounded to 4 decimals for the card."""
    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(np.mean(np.asarray(y_true) == np.asarray(y_pred))), 4),
        "macro_f1": round(float(np.mean(f)), 4),
        "per_class": {
            lab: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                  "f1": round(float(f[i]), 4), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": matrix.astype(int).tolist()},
    }


def in_context_metrics(pipeline, spec: ModelSpec, dialogues: DialogueSet) -> dict[str, Any]:
    """The role model on held-out dialogues through the learned assigner (model + turn-taking),
    with the same utterances labelled by the model alone and by the cue-word heuristic beside
    it, so the card shows what the context adds."""
    assigner = LearnedRoleAssigner(CompiledModel(pipeline))
    truth: list[str] = []
    in_context: list[str] = []
    alone: list[str] = []
    heuristic: list[str] = []
    for d in dialogues.dialogues:
        truth.extend(d.roles)
        in_context.extend(assigner(d.utterances))
        evidence = assigner.evidence([text for text, _, _ in d.utterances])
        alone.extend(AGENT if e >= 0 else CUSTOMER for e in evidence)
        heuristic.extend(assigner.options.turns(d.utterances))
    y = np.asarray(truth)
    return {
        **compute_metrics(truth, in_context, spec.labels),
        "dialogues": len(dialogues.dialogues),
        "utterance_only_accuracy": round(float(np.mean(y == np.asarray(alone))), 4),
        "heuristic_accuracy": round(float(np.mean(y == np.asarray(heuristic))), 4),
    }


def _previous_version(models_dir: Path, name: str) -> str | None:
    try:
        return ModelCard.read(card_path(models_dir, name)).version
    except ClassifierError:
        return None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _version(created: datetime, data_sha: str, options: TrainOptions) -> str:
    """Date plus a hash of what determines the model: the training data (so retraining with
    new review decisions changes the version), the options and the library versions."""
    recipe = json.dumps([data_sha, asdict(options), sklearn.__version__, FEATURES_VERSION], sort_keys=True)
    return f"{created:%Y.%m.%d}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def train_model(
    name: str,
    models_dir: str | Path,
    *,
    options: TrainOptions | None = None,
    review_examples: Sequence[Example] = (),
    review_summary: dict[str, Any] | None = None,
    seed_dir: str | Path | None = None,
    now: datetime | None = None,
) -> TrainResult:
    """Fit model ``name`` on its seed training split plus ``review_examples``, evaluate it,
    and write its artifact and card into ``models_dir``. ``review_summary`` (None when not
    trained from reviews) is recorded in the card. ``options`` default to the model's own
    (:func:`~qa.classifiers.specs.default_options`)."""
    spec = spec_for(name)
    options = options or default_options(name)
    options.validate()
    models_dir = Path(models_dir)
    corpus = load_seed(name, seed_dir)
    bad = sorted({e.label for e in review_examples} - set(spec.labels))
    if bad:
        raise ClassifierError(f"review examples for {name} carry unknown labels {bad}")
    examples = list(corpus.train) + list(review_examples)
    data_sha = examples_sha256(examples)
    # Calibration folds are taken in order, so mix the labels first (deterministically).
    random.Random(options.random_state).shuffle(examples)
    texts = [e.text for e in examples]
    labels = [e.label for e in examples]
    calibration_cv = None
    if spec.grouped_calibration:
        # Examples from the database have no template: each is a group of its own.
        groups = [e.group or f"text:{e.text}" for e in examples]
        calibration_cv = StratifiedGroupKFold(options.calibration_folds).split(texts, labels, groups)
    log.info("training %s on %d examples (%d from reviews)", name, len(examples), len(review_examples))

    try:
        cv = StratifiedKFold(options.cv_folds, shuffle=True, random_state=options.random_state)
        cv_pred = cross_val_predict(build_pipeline(options, spec), texts, labels, cv=cv)
        pipeline = build_pipeline(options, spec, calibration_cv).fit(texts, labels)
        heldout_pred = pipeline.predict([e.text for e in corpus.heldout])
    except ValueError as e:
        raise ClassifierError(f"cannot train {name}: {e}") from e
    strip_for_storage(pipeline)
    heldout_metrics = compute_metrics([e.label for e in corpus.heldout], heldout_pred, spec.labels)
    dialogues = load_dialogues(name, seed_dir) if spec.scope == SCOPE_UTTERANCE else None
    if dialogues is not None:
        heldout_metrics["in_context"] = in_context_metrics(pipeline, spec, dialogues)

    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    training: dict[str, Any] = {
        "seed_file": _relative(corpus.path),
        "seed_sha256": corpus.file_sha256,
        "seed_train_examples": len(corpus.train),
        "heldout_examples": len(corpus.heldout),
        "review_examples": len(review_examples),
        "from_reviews": review_summary is not None,
        "reviews": review_summary or {},
        "previous_version": _previous_version(models_dir, name),
        "calibration_folds": "grouped by seed template" if spec.grouped_calibration else "stratified",
    }
    if dialogues is not None:
        training["dialogues_file"] = _relative(dialogues.path)
        training["dialogues_sha256"] = dialogues.file_sha256
    card = ModelCard(
        name=name,
        version=_version(created, data_sha, options),
        description=spec.description,
        labels=[str(c) for c in pipeline.classes_],
        positive_label=spec.positive_label,
        scope=spec.scope,
        created_at=created.isoformat(timespec="seconds"),
        sklearn_version=sklearn.__version__,
        skops_version=skops.__version__,
        python_version=platform.python_version(),
        training_data_sha256=data_sha,
        training=training,
        options=asdict(options),
        pipeline=describe(pipeline),
        cv_metrics={"folds": options.cv_folds, **compute_metrics(labels, cv_pred, spec.labels)},
        heldout_metrics=heldout_metrics,
        artifact_file="",
        artifact_sha256="",
        artifact_bytes=0,
        trusted_types=list(TRUSTED_TYPES),
    )
    card = save_model(pipeline, card, models_dir)
    return TrainResult(card=card, models_dir=models_dir)


def evaluate_model(name: str, models_dir: str | Path, *, seed_dir: str | Path | None = None) -> Evaluation:
    """Re-run the stored artifact on the held-out split and compare with its card."""
    spec = spec_for(name)
    pipeline, card = load_model(models_dir, name)
    corpus = load_seed(name, seed_dir)
    if corpus.file_sha256 != card.training.get("seed_sha256"):
        log.warning("seed corpus %s changed since model %s was trained", corpus.path, card.version)
    predicted = pipeline.predict([e.text for e in corpus.heldout])
    metrics = compute_metrics([e.label for e in corpus.heldout], predicted, spec.labels)
    if spec.scope == SCOPE_UTTERANCE:
        dialogues = load_dialogues(name, seed_dir)
        if dialogues.file_sha256 != card.training.get("dialogues_sha256"):
            log.warning("seed dialogues %s changed since model %s was trained", dialogues.path, card.version)
        metrics["in_context"] = in_context_metrics(pipeline, spec, dialogues)
    return Evaluation(card=card, heldout_metrics=metrics, matches_card=metrics == card.heldout_metrics)


# What the database teaches a model (qa.review.harvest.review_examples): model -> (examples, card summary)
ReviewExamples = dict[str, tuple[tuple[Example, ...], dict[str, Any]]]


def train(models: Sequence[str] | None, models_dir: str | Path, *, reviews: ReviewExamples | None = None,
          options: TrainOptions | None = None, seed_dir: str | Path | None = None) -> list[TrainResult]:
    """Train ``models`` (default: all) into ``models_dir``. ``reviews`` adds examples from the
    database (inspectors' review decisions, stereo calls' utterances), recorded in the cards.
    ``options`` (default: each model's own) apply to every model trained."""
    names = tuple(models or MODEL_NAMES)
    for name in names:
        spec_for(name)
    results = []
    for name in names:
        examples, summary = (reviews or {}).get(name, ((), None))
        results.append(train_model(name, models_dir, options=options, review_examples=examples,
                                   review_summary=summary, seed_dir=seed_dir))
    return results


def evaluate(models: Sequence[str] | None, models_dir: str | Path, *,
             seed_dir: str | Path | None = None) -> list[Evaluation]:
    """Held-out metrics of the stored models, recomputed, beside their cards."""
    return [evaluate_model(name, models_dir, seed_dir=seed_dir) for name in (models or MODEL_NAMES)]
