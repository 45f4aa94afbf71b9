"""The manifest written beside every export: what was exported (filters, counts), by which
tool version and when, and the sha256 of each file, so an auditor can check that the files
are the ones the system wrote. The manifest is signed with the audit signing key
(:mod:`qa.signing`): rewriting a file and its hash in the manifest, or editing the manifest,
breaks the signature."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import signing
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


def write_manifest(path: Path, doc: dict[str, Any], signer: signing.Signer | None = None) -> str:
    """Write the manifest, signed when a ``signer`` is given; returns its own sha256 (recorded
    in the audit log)."""
    doc = {"schema": MANIFEST_SCHEMA, **doc}
    if signer is not None:
        doc["signature"] = {"key_id": signer.key_id, "ed25519": signer.sign(signing.canonical(doc))}
    data = (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
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
    signature: str = "unchecked"  # ok | missing | invalid | unchecked (no key given)
    key_id: str | None = None

    @property
    def problems(self) -> list[str]:
        found = [f"{f.name} ({f.status})" for f in self.bad]
        if not self.files:
            found.append("the manifest lists no files")
        if self.signature in ("missing", "invalid"):
            found.append(f"manifest signature {self.signature}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad(self) -> tuple[FileCheck, ...]:
        return tuple(f for f in self.files if f.status != "ok")


def verify_manifest(path: Path, verifier: signing.Verifier | None = None) -> ManifestCheck:
    """Recompute the sha256 of every file the manifest lists (looked up beside it) and, with a
    ``verifier``, check the manifest's signature.

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
    signature, key = "unchecked", None
    if verifier is not None:
        signed = doc.get("signature")
        body = {k: v for k, v in doc.items() if k != "signature"}
        key = verifier.key_id
        if not isinstance(signed, dict) or not isinstance(signed.get("ed25519"), str):
            signature = "missing"
        elif signed.get("key_id") != key or not verifier.verify(signing.canonical(body), signed["ed25519"]):
            signature = "invalid"
        else:
            signature = "ok"
    return ManifestCheck(manifest=path, manifest_sha256=hashlib.sha256(raw).hexdigest(), files=tuple(checks),
                         signature=signature, key_id=key)
