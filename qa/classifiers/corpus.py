"""Labelled examples: the seed corpus shipped in ``data/seed/`` and examples from reviews."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..config import REPO_ROOT
from ..errors import ClassifierError
from .specs import spec_for

SEED_DIR = REPO_ROOT / "data" / "seed"
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    source: str = "seed"  # seed | review (inspectors' decisions) | stereo (channel-labelled utterances)
    # Seed examples: the templates the text was rendered from, so that folds can keep every
    # rendering of a template on one side; "" for examples from the database.
    group: str = ""


@dataclass(frozen=True)
class Corpus:
    name: str
    path: Path
    file_sha256: str
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]


def seed_path(name: str, seed_dir: str | Path | None = None) -> Path:
    return Path(seed_dir or SEED_DIR) / f"{name}.jsonl"


def load_seed(name: str, seed_dir: str | Path | None = None) -> Corpus:
    """Read ``<seed_dir>/<name>.jsonl`` (one ``{"text", "label", "split"}`` object per line)."""
    spec = spec_for(name)
    path = seed_path(name, seed_dir)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ClassifierError(f"cannot read seed corpus: {e.strerror}", path=str(path)) from e
    rows: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            text, label, split = doc["text"], doc["label"], doc["split"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ClassifierError(f"line {lineno}: not a {{text, label, split}} object ({e})", path=str(path)) from e
        if label not in spec.labels:
            raise ClassifierError(f"line {lineno}: label {label!r} is not one of {spec.labels}", path=str(path))
        if split not in SPLITS:
            raise ClassifierError(f"line {lineno}: split {split!r} is not one of {SPLITS}", path=str(path))
        if not isinstance(text, str) or not text.strip():
            raise ClassifierError(f"line {lineno}: empty text", path=str(path))
        rows[split].append(Example(text, label, group="+".join(doc.get("templates") or ())))
    for split in SPLITS:
        missing = set(spec.labels) - {e.label for e in rows[split]}
        if missing:
            raise ClassifierError(f"{split} split has no example of {sorted(missing)}", path=str(path))
    return Corpus(name, path, hashlib.sha256(raw).hexdigest(), tuple(rows["train"]), tuple(rows["heldout"]))


def examples_sha256(examples: Iterable[Example]) -> str:
    """sha256 of the examples as canonical JSON lines, in order (the training data hash)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, e.label], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Dialogue:
    """One mono call of the seed corpus: (text, start_s, end_s) per utterance and true roles."""

    utterances: tuple[tuple[str, float, float], ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class DialogueSet:
    path: Path
    file_sha256: str
    dialogues: tuple[Dialogue, ...]


def dialogues_path(name: str, seed_dir: str | Path | None = None) -> Path:
    return Path(seed_dir or SEED_DIR) / f"{name}_dialogues.jsonl"


def load_dialogues(name: str, seed_dir: str | Path | None = None) -> DialogueSet:
    """Read ``<seed_dir>/<name>_dialogues.jsonl`` (one ``{"turns": [{text, role, start_s,
    end_s}], "split"}`` object per line). Every dialogue must be held out: they measure a model
    in context on templates it never saw, and are never trained on."""
    spec = spec_for(name)
    path = dialogues_path(name, seed_dir)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ClassifierError(f"cannot read seed dialogues: {e.strerror}", path=str(path)) from e
    dialogues = []
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            turns = [(t["text"], float(t["start_s"]), float(t["end_s"]), t["role"]) for t in doc["turns"]]
            split = doc["split"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ClassifierError(f"line {lineno}: not a {{turns, split}} dialogue ({e})", path=str(path)) from e
        if split != "heldout":
            raise ClassifierError(f"line {lineno}: dialogue split {split!r}, only 'heldout' is allowed", path=str(path))
        if not turns or any(role not in spec.labels for *_, role in turns):
            raise ClassifierError(f"line {lineno}: a dialogue needs turns labelled {spec.labels}", path=str(path))
        dialogues.append(Dialogue(tuple((text, start, end) for text, start, end, _ in turns),
                                  tuple(role for *_, role in turns)))
    if not dialogues:
        raise ClassifierError("no dialogues", path=str(path))
    return DialogueSet(path, hashlib.sha256(raw).hexdigest(), tuple(dialogues))
