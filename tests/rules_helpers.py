"""Helpers for the rule tests: a one-rule pack written to a temporary folder, and calls
built from (speaker, text[, start, end]) turns."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

from qa.domain import CallMeta, CallTranscript, Utterance
from qa.rules.context import EngineOptions
from qa.rules.engine import RuleEngine
from qa.rules.loader import load_pack

PACK_YAML = "name: t\nversion: '1'\n"
ROLE = {"A": "agent", "C": "customer"}


def write_pack(root: Path, rules: dict[str, str], pack_yaml: str = PACK_YAML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.yaml").write_text(pack_yaml, encoding="utf-8")
    for name, body in rules.items():
        (root / name).write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return root


def one_rule(tmp_path: Path, condition: str, *, category: str = "promise.guaranteed_return",
             extra: str = "", contact_hours: str = "08:00-21:00", timezone: str = "Asia/Shanghai") -> RuleEngine:
    """An engine over a pack of one rule whose ``condition:`` block is ``condition``."""
    body = f"id: r\ntitle: t\ncategory: {category}\n{textwrap.dedent(extra)}condition:\n" + textwrap.indent(
        textwrap.dedent(condition).strip() + "\n", "  ")
    pack = write_pack(tmp_path / "pack", {"r.yaml": body})
    return RuleEngine(load_pack(pack), EngineOptions(contact_hours=contact_hours, timezone=timezone))


def call(*turns, started_at: datetime | None = None, direction: str | None = None,
         business_line: str | None = None, duration_s: float | None = None) -> CallTranscript:
    """Turns are (speaker, text) spaced 3 s apart, or (speaker, text, start_s, end_s)."""
    utts = []
    for n, turn in enumerate(turns):
        speaker, text, *times = turn
        start, end = times if times else (n * 3.0, n * 3.0 + 2.5)
        utts.append(Utterance(ROLE[speaker], start, end, text))
    meta = CallMeta("c1", started_at=started_at, direction=direction, business_line=business_line)
    return CallTranscript(meta, tuple(utts), None, duration_s or max(u.end_s for u in utts))


def status(engine: RuleEngine, transcript: CallTranscript) -> str:
    return engine.evaluate(transcript).outcomes[0].status
