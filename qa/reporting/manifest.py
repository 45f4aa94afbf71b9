"""The manifest written beside every export: what was exported (filters, counts), by which
tool version and when, and the sha256 of each file, so an auditor can check that the files
are the ones the system wrote."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError

MANIFEST_SCHEMA = "qa-export-manifest/1"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(export_path: Path) -> Path:
    """``audit.jsonl`` -> ``audit.jsonl.manifest.json``."""
    return export_path.with_name(export_path.name + ".manifest.json")


def file_entries(paths: list[Path]) -> list[dict[str, Any]]:
    return [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]


def write_manifest(path: Path, doc: dict[str, Any]) -> str:
    """Write the manifest; returns its own sha256 (recorded in the audit log, which is what
    makes a rewritten manifest detectable)."""
    data = (json.dumps({"schema": MANIFEST_SCHEMA, **doc}, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write manifest {path}: {e}", path=str(path)) from e
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FileCheck:
    name: str
    status: str  # ok | changed | missing
    expected_sha256: str
    actual_sha256: str | None


@dataclass(frozen=True)
class ManifestCheck:
    manifest: Path
    manifest_sha256: str
    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.files)

    @property
    def bad(self) -> tuple[FileCheck, ...]:
        return tuple(f for f in self.files if f.status != "ok")


def verify_manifest(path: Path) -> ManifestCheck:
    """Recompute the sha256 of every file the manifest lists (looked up beside it).

    Raises :class:`ExportError` when the manifest itself cannot be read or is not one."""
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"cannot read manifest: {e}", path=str(path)) from e
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA or not isinstance(doc.get("files"), list):
        raise ExportError(f"not an export manifest (expected schema {MANIFEST_SCHEMA})", path=str(path))
    checks = []
    for entry in doc["files"]:
        name, expected = entry.get("name"), entry.get("sha256")
        # Only files beside the manifest: a manifest must not make us read arbitrary paths.
        if not isinstance(name, str) or not isinstance(expected, str) or Path(name).name != name:
            raise ExportError(f"bad file entry {entry!r}", path=str(path))
        target = path.parent / name
        if not target.is_file():
            checks.append(FileCheck(name, "missing", expected, None))
            continue
        actual = sha256_file(target)
        checks.append(FileCheck(name, "ok" if actual == expected else "changed", expected, actual))
    return ManifestCheck(manifest=path, manifest_sha256=hashlib.sha256(raw).hexdigest(), files=tuple(checks))
