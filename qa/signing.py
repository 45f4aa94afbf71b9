"""The signing key that makes tampering by someone with database write access detectable.

An Ed25519 key (the ``cryptography`` package) lives in a file outside the data directory
(the ``audit_key_file`` setting, ``~/.config/qa-speech/audit-signing.key`` by default, mode
0600): someone who can rewrite the database, and recompute the public hash chain, still cannot
sign. It signs checkpoints of the audit chain's head (:func:`qa.audit.checkpoint`) and every
export manifest. Beside the key, an anchor file keeps the newest checkpoint of each database,
so that deleting checkpoints from the database (with the events they cover) is noticed too.

The key is created by ``qa audit keygen``, or by the first command that needs it; ``qa audit
pubkey`` prints the public half, which an auditor can keep apart and verify with
(``qa audit verify --public-key HEX``, ``qa export verify --public-key HEX``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import AuditError

log = logging.getLogger(__name__)

KEY_HEADER = "qa-speech audit signing key (Ed25519, private): keep it out of the data directory"


def default_key_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return str(Path(base) / "qa-speech" / "audit-signing.key")


def _crypto():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    return Ed25519PrivateKey, Ed25519PublicKey, InvalidSignature


def key_id(public_hex: str) -> str:
    """A short name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


@dataclass(frozen=True)
class Verifier:
    public_hex: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_hex)

    def verify(self, message: bytes, signature_hex: str) -> bool:
        _, public_cls, invalid = _crypto()
        try:
            public_cls.from_public_bytes(bytes.fromhex(self.public_hex)).verify(bytes.fromhex(signature_hex), message)
            return True
        except (invalid, ValueError):
            return False

    @classmethod
    def from_hex(cls, text: str) -> Verifier:
        text = text.strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise AuditError("a public key is 64 hex digits (qa audit pubkey prints it)", code="audit.key")
        return cls(text)


class Signer:
    """The private key, loaded from its file."""

    def __init__(self, path: Path, private_bytes: bytes):
        private_cls, _, _ = _crypto()
        self.path = path
        self._key = private_cls.from_private_bytes(private_bytes)
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.verifier = Verifier(raw.hex())

    @property
    def key_id(self) -> str:
        return self.verifier.key_id

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()

    @property
    def anchor_file(self) -> Path:
        return self.path.with_name(self.path.name + ".anchors.json")


def create_key(path: str | Path, *, overwrite: bool = False) -> Signer:
    """Write a new key file (mode 0600, its folder 0700). Refuses to replace one unless told:
    everything signed with the old key would then fail verification."""
    private_cls, _, _ = _crypto()
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise AuditError(f"a signing key exists already at {path}; it signed the checkpoints and exports so far",
                         code="audit.key_exists", path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    from cryptography.hazmat.primitives import serialization

    key = private_cls.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"# {KEY_HEADER}\n{raw.hex()}\n")
    os.replace(tmp, path)
    signer = Signer(path, raw)
    log.warning("created the audit signing key %s (public key %s): keep a copy of the public key apart",
                path, signer.verifier.public_hex)
    return signer


def load_key(path: str | Path) -> Signer | None:
    """The key in ``path``; ``None`` when there is no such file."""
    path = Path(path).expanduser()
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"cannot read the signing key: {e}", code="audit.key", path=str(path)) from e
    body = [ln for ln in lines if not ln.startswith("#")]
    try:
        raw = bytes.fromhex(body[0]) if len(body) == 1 else b""
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        return Signer(path, raw)
    except ValueError as e:
        raise AuditError(f"not a signing key file ({e})", code="audit.key", path=str(path)) from e


def signer(path: str | Path) -> Signer:
    """The key in ``path``, created there first when there is none."""
    return load_key(path) or create_key(path)


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- the anchor file: the newest checkpoint of each database, beside the key -----------------

def _read_anchors(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise AuditError(f"cannot read the audit anchor file: {e}", code="audit.anchor", path=str(path)) from e


def record_anchor(signer: Signer, database: str, checkpoint: dict) -> None:
    path = signer.anchor_file
    anchors = _read_anchors(path)
    anchors[database] = checkpoint
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(anchors, f, ensure_ascii=False, indent=1, sort_keys=True)
    os.replace(tmp, path)


def anchor_of(key_file: str | Path, database: str) -> dict | None:
    return _read_anchors(Path(key_file).expanduser().with_name(Path(key_file).name + ".anchors.json")).get(database)


def database_id(url: str) -> str:
    """How the anchor file names a database: a digest of its URL (no password kept)."""
    from .storage import normalize_url, redact_url

    return hashlib.sha256(redact_url(normalize_url(url)).encode("utf-8")).hexdigest()[:24]
