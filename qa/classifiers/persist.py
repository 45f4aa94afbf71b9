"""Saving and loading artifacts: skops format only (never pickle or joblib), each artifact
checked against the sha256 in its model card before a single byte is deserialized, and
deserialized with an explicit list of trusted types."""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import sklearn
import skops.io as sio
from sklearn.pipeline import Pipeline

from ..errors import ClassifierError
from .cards import ModelCard

log = logging.getLogger(__name__)

# The only types outside skops' built-in safe set that our pipelines contain. The card
# lists them too, but the card is data and is never trusted for this: this list is.
TRUSTED_TYPES: tuple[str, ...] = (
    "qa.classifiers.text.char_ngrams",
    "qa.classifiers.text.context_sound_ngrams",
    "qa.classifiers.text.own_char_ngrams",
    "qa.classifiers.text.own_sound_ngrams",
    "qa.classifiers.text.sound_ngrams",
    "qa.classifiers.text.utterance_cues",
    "qa.classifiers.text.word_ngrams",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


def artifact_path(models_dir: str | Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.skops"


def card_path(models_dir: str | Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.card.json"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(pipeline: Pipeline, card: ModelCard, models_dir: str | Path) -> ModelCard:
    """Write ``<name>.skops`` and ``<name>.card.json``; returns the card with the artifact's
    file name, sha256 and size filled in."""
    data = sio.dumps(pipeline, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        # Saving something we would refuse to load is a bug in the pipeline definition.
        raise ClassifierError(f"model {card.name} contains types outside the trusted list: {untrusted}")
    directory = Path(models_dir)
    directory.mkdir(parents=True, exist_ok=True)
    card = replace(card, artifact_file=artifact_path(directory, card.name).name,
                   artifact_sha256=hashlib.sha256(data).hexdigest(), artifact_bytes=len(data),
                   trusted_types=list(TRUSTED_TYPES))
    _atomic_write(artifact_path(directory, card.name), data)
    _atomic_write(card_path(directory, card.name), card.to_json().encode("utf-8"))
    log.info("saved model %s version %s (%d bytes)", card.name, card.version, len(data))
    return card


def load_model(models_dir: str | Path, name: str) -> tuple[Pipeline, ModelCard]:
    """Read, verify and deserialize one model. Raises ClassifierError naming the file."""
    pipeline, card = read_artifact(models_dir, name)
    classes = [str(c) for c in pipeline.classes_]
    if sorted(classes) != sorted(card.labels):
        raise ClassifierError(f"artifact predicts {classes}, card says {card.labels}",
                              path=str(artifact_path(models_dir, name)))
    return pipeline, card


def read_artifact(models_dir: str | Path, name: str) -> tuple[Pipeline, ModelCard]:
    """The card and the pipeline it vouches for: the artifact's sha256 checked against the
    card before deserializing, only trusted types deserialized."""
    cpath = card_path(models_dir, name)
    card = ModelCard.read(cpath)
    if card.name != name:
        raise ClassifierError(f"card is for model {card.name!r}, expected {name!r}", path=str(cpath))
    apath = Path(models_dir) / card.artifact_file
    if apath != artifact_path(models_dir, name):
        raise ClassifierError(f"card names artifact {card.artifact_file!r}, expected {name}.skops", path=str(cpath))
    try:
        data = apath.read_bytes()
    except OSError as e:
        raise ClassifierError(f"cannot read model artifact: {e.strerror}", path=str(apath)) from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.artifact_sha256:
        raise ClassifierError(
            f"artifact sha256 {digest} does not match its model card ({card.artifact_sha256}): "
            "the file was modified or belongs to another card", path=str(apath))
    try:
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except Exception as e:  # noqa: BLE001 - skops raises assorted errors on malformed archives
        raise ClassifierError(f"artifact is not a readable skops file: {e}", path=str(apath)) from e
    if untrusted:
        raise ClassifierError(f"artifact contains untrusted types {untrusted}", path=str(apath))
    try:
        pipeline = sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as e:  # noqa: BLE001 - as above
        raise ClassifierError(f"cannot deserialize artifact: {e}", path=str(apath)) from e
    if not isinstance(pipeline, Pipeline):
        raise ClassifierError(f"artifact holds a {type(pipeline).__name__}, not a Pipeline", path=str(apath))
    if card.sklearn_version != sklearn.__version__:
        log.warning("model %s was trained with scikit-learn %s, running %s: retrain it",
                    name, card.sklearn_version, sklearn.__version__)
    return pipeline, card
