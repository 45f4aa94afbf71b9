"""Customer references: the manifest's ``customer_ref`` says which customer or debtor a call
was with, so that rules can look at all of one customer's calls (contact frequency, calls
after a do-not-call request, repeat complaints).

An opaque id (a CRM or loan account number that is not a phone number) is stored as given.
A phone number, or anything shaped like one or like a PRC ID number, is stored only as a
keyed hash (HMAC-SHA256): the same number always gives the same reference, the number itself
is not kept, and without the key nobody can test guesses against the stored values. The key
is the ``customer_ref_key`` setting, or a random one kept in ``<data_dir>/customer-ref.key``
(created once, owner-only): back it up with the database, as a new key makes new references
and older calls then look like another customer's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "customer-ref.key"
MAX_REF = 64
HASH_PREFIX = "h:"
_SEPARATORS = re.compile(r"[\s\-().（）]")
_PHONE = re.compile(r"^\+?\d{7,15}$")
_ID_NUMBER = re.compile(r"^\d{17}[\dXx]$")


def looks_personal(value: str) -> bool:
    """A phone number (any format: +86 138-1234-5678, 010 8888 6666) or a PRC ID number."""
    compact = _SEPARATORS.sub("", value)
    return bool(_PHONE.match(compact) or _ID_NUMBER.match(compact))


def _canonical_number(value: str) -> str:
    compact = _SEPARATORS.sub("", value).upper()
    if compact.startswith("+"):
        compact = compact[1:]
    if compact.startswith("0086"):
        compact = compact[4:]
    elif compact.startswith("86") and len(compact) == 13:  # 86 + an 11-digit mobile number
        compact = compact[2:]
    return compact


def customer_ref(value: str | None, key: bytes) -> str | None:
    """What is stored for a manifest's ``customer_ref``: ``None`` for none, the keyed hash
    ``h:<32 hex>`` of a phone or ID number, else the id itself. ``ValueError`` for an id longer
    than :data:`MAX_REF` characters or with control characters."""
    text = (value or "").strip()
    if not text:
        return None
    if looks_personal(text):
        digest = hmac.new(key, _canonical_number(text).encode(), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:32]
    if len(text) > MAX_REF or any(ord(ch) < 32 for ch in text) or text.startswith(HASH_PREFIX):
        raise ValueError(f"customer_ref must be at most {MAX_REF} printable characters and not start with "
                         f"{HASH_PREFIX!r}")
    return text


def customer_key(secret: str, data_dir: str | os.PathLike) -> bytes:
    """The hashing key: ``secret`` (the ``customer_ref_key`` setting) or the key file in the
    data folder, created on first use. Raises :class:`ConfigError` when it cannot be read."""
    if secret:
        return hashlib.sha256(("qa-speech customer_ref " + secret).encode()).digest()
    path = Path(data_dir) / KEY_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(32))
            log.info("created the customer reference key %s (back it up with the database)", path)
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileExistsError:  # another process created it meanwhile
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the customer reference key {path}: {e}") from e
    if len(key) < 16:
        raise ConfigError(f"the customer reference key {path} is too short")
    return key
