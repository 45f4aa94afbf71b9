"""Parsing of form fields that HTML sends as text. Errors are ``ValueError`` with a message
naming the field: the app answers them with 400 and that message."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from ..timeutil import parse_when


def optional_float(value: str, name: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError as e:
        raise ValueError(f"{name} must be a number, got {value!r}") from e


def optional_date(value: str, name: str, tz: tzinfo) -> datetime | None:
    """A date or date-time (``2026-11-02``: local midnight); without an offset it is on the
    clock of ``tz`` (the ``timezone`` setting)."""
    value = value.strip()
    if not value:
        return None
    try:
        return parse_when(value, tz)
    except ValueError as e:
        raise ValueError(f"{name} must be a date like 2026-11-02, got {value!r}") from e


def split_list(text: str) -> list[str]:
    """Items separated by spaces or (full-width) commas, semicolons or 、."""
    return [w for w in re.split(r"[\s,，、;；]+", text) if w]
