"""Training and evaluation: fit on the training split (plus review examples), report
cross-validated metrics on it and held-out metrics on templates it never saw."""

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
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ..config import REPO_ROOT
from ..errors import ClassifierError
from .cards import ModelCard
from .corpus import Example, examples_sha256, load_seed
from .persist import TRUSTED_TYPES, card_path, load_model, save_model
from .pipeline import build_pipeline, describe, strip_for_storage
from .specs import TrainOptions, spec_for
from .text import FEATURES_VERSION

log = logging.getLogger("qa.classify")


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
    options: TrainOptions = TrainOptions(),
    review_examples: Sequence[Example] = (),
    review_summary: dict[str, Any] | None = None,
    seed_dir: str | Path | None = None,
    now: datetime | None = None,
) -> TrainResult:
    """Fit model ``name`` on its seed training split plus ``review_examples``, evaluate it,
    and write its artifact and card into ``models_dir``. ``review_summary`` (None when not
    trained from reviews) is recorded in the card."""
    options.validate()
    spec = spec_for(name)
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
    log.info("training %s on %d examples (%d from reviews)", name, len(examples), len(review_examples))

    try:
        cv = StratifiedKFold(options.cv_folds, shuffle=True, random_state=options.random_state)
        cv_pred = cross_val_predict(build_pipeline(options), texts, labels, cv=cv)
        pipeline = build_pipeline(options).fit(texts, labels)
        heldout_pred = pipeline.predict([e.text for e in corpus.heldout])
    except ValueError as e:
        raise ClassifierError(f"cannot train {name}: {e}") from e
    strip_for_storage(pipeline)

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
    }
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
        heldout_metrics=compute_metrics([e.label for e in corpus.heldout], heldout_pred, spec.labels),
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
    return Evaluation(card=card, heldout_metrics=metrics, matches_card=metrics == card.heldout_metrics)
