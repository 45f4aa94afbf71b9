"""Model cards: the JSON beside each artifact that says what it is and how good it is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ClassifierError

CARD_FORMAT = 1


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    description: str
    labels: list[str]
    positive_label: str | None
    scope: str
    created_at: str  # ISO 8601, UTC
    sklearn_version: str
    skops_version: str
    python_version: str
    training_data_sha256: str
    training: dict[str, Any]  # seed file + sha256, example counts, review harvest, previous version
    options: dict[str, Any]  # TrainOptions used
    pipeline: dict[str, Any]  # named steps and vocabulary sizes of the fitted pipeline
    cv_metrics: dict[str, Any]  # cross-validated on the training split
    heldout_metrics: dict[str, Any]  # on the held-out split (templates never seen in training)
    artifact_file: str
    artifact_sha256: str
    artifact_bytes: int
    trusted_types: list[str]
    card_format: int = CARD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ClassifierError(f"cannot read model card: {e.strerror}", path=str(path)) from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ClassifierError(f"model card is not valid JSON: {e}", path=str(path)) from e
        if not isinstance(doc, dict):
            raise ClassifierError("model card is not a JSON object", path=str(path))
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name != "card_format"}
        missing = sorted(required - doc.keys())
        if missing:
            raise ClassifierError(f"model card lacks {', '.join(missing)}", path=str(path))
        if doc.get("card_format", CARD_FORMAT) != CARD_FORMAT:
            raise ClassifierError(f"unsupported card_format {doc.get('card_format')!r}", path=str(path))
        return cls(**{k: v for k, v in doc.items() if k in known})
