"""The project's finding categories (qa/data/taxonomy.yaml, shipped as package data)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from ..domain import SEVERITIES, SPEAKER_ROLES
from ..errors import RuleError

KINDS = ("must_say", "must_not_say", "trigger", "acoustic", "context")


@dataclass(frozen=True)
class Category:
    id: str
    role: str
    kind: str
    severity: str
    desc: str
    zh: str  # the name shown to inspectors and in reports


@lru_cache(maxsize=1)
def load_taxonomy() -> dict[str, Category]:
    source = resources.files("qa") / "data" / "taxonomy.yaml"
    try:
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
        cats = {cid: Category(cid, v["role"], v["kind"], v["severity"], v["desc"], v["zh"])
                for cid, v in doc["categories"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise RuleError(f"cannot read the category list: {e}", path=str(source)) from e
    for cat in cats.values():
        if cat.role not in SPEAKER_ROLES or cat.kind not in KINDS or cat.severity not in SEVERITIES:
            raise RuleError(f"category {cat.id} has an invalid role, kind or severity", path=str(source))
    return cats
