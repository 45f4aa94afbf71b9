"""What one condition found on one call: matched or not, the hits, and why."""

from __future__ import annotations

from dataclasses import dataclass

from .context import Hit


@dataclass(frozen=True)
class Match:
    matched: bool
    hits: tuple[Hit, ...] = ()
    why: str = ""


def shorten(items: list[str] | tuple[str, ...], limit: int = 3) -> str:
    shown = "|".join(items[:limit])
    return shown + (f"|…(+{len(items) - limit})" if len(items) > limit else "")


def describe_hits(hits: tuple[Hit, ...] | list[Hit], limit: int = 3) -> str:
    parts = [f"'{h.text}' in #{h.utt}" if h.utt is not None else h.text for h in hits[:limit]]
    more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
    return ", ".join(parts) + more
