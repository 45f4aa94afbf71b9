"""The evaluation corpus (``data/eval/``): labelled snippets and full dialogues written apart
from the rules, split into train / dev / test, read as :class:`~qa.rules.evaluate.SampleCall`
so that :func:`~qa.rules.evaluate.evaluate` scores them like the sample calls.

* A **snippet** tests one category: a positive must make it fire, a hard negative (negated,
  said by the other party, quoted, a question, the compliant act) must not. Only that
  category is scored on it.
* A **dialogue** is a whole call labelled with every category it exhibits: each expected one
  must fire and every other category must not (any other finding is a false alarm).

The files are JSON lines; the formats are in ``data/eval/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import RuleError
from .evaluate import EvalReport, SampleCall
from .schema import RuleTest, TestTurn
from .taxonomy import load_taxonomy
from .testing import snippet_transcript

SPLITS = ("train", "dev", "test")
SNIPPETS = "snippets.jsonl"
DIALOGUES = "dialogues.jsonl"
TURN_ROLES = {"A": "agent", "C": "customer"}


def _turn(item: Any, where: str) -> TestTurn:
    if isinstance(item, str):
        who, sep, text = item.partition(":")
        if not sep or who.strip() not in TURN_ROLES:
            raise ValueError(f"{where}: a turn looks like 'A: text' or 'C: text', got {item[:40]!r}")
        return TestTurn(TURN_ROLES[who.strip()], text.strip())
    if isinstance(item, dict) and "pause" in item:
        return TestTurn(None, pause_s=float(item["pause"]))
    if isinstance(item, dict):
        said = [k for k in item if k in TURN_ROLES]
        if len(said) != 1:
            raise ValueError(f"{where}: a turn names exactly one speaker (A or C)")
        return TestTurn(TURN_ROLES[said[0]], str(item[said[0]]), cpm=float(item.get("cpm", 270.0)),
                        overlap_s=float(item.get("overlap", 0.0)))
    raise ValueError(f"{where}: a turn is text or a mapping, got {type(item).__name__}")


def _dialogue_turns(turns: list[dict], where: str) -> list[TestTurn]:
    out: list[TestTurn] = []
    for n, t in enumerate(turns):
        if t.get("role") not in ("agent", "customer") or not str(t.get("text", "")).strip():
            raise ValueError(f"{where}: turn {n + 1} needs a role (agent/customer) and text")
        if t.get("pause_before_s"):
            out.append(TestTurn(None, pause_s=float(t["pause_before_s"])))
        out.append(TestTurn(t["role"], str(t["text"]), cpm=float(t.get("cpm", 270.0)),
                            overlap_s=float(t.get("overlap_s", 0.0))))
    return out


def _started(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as e:
        raise ValueError(f"{where}: started_at {value!r} is not an ISO time") from e


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(f"{path}: cannot read: {e}", path=str(path)) from e
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise RuleError(f"{path}:{lineno}: invalid JSON: {e}", path=str(path)) from e


@dataclass(frozen=True)
class CorpusItem:
    """One snippet or dialogue with what the reports break figures down by."""

    sample: SampleCall
    kind: str  # snippet kind (paraphrase, negated, ...) or "dialogue"
    business_line: str | None
    positive: bool  # a snippet positive, or a dialogue with at least one expected category


def read_snippets(path: str | Path) -> list[CorpusItem]:
    path = Path(path)
    taxonomy = load_taxonomy()
    items = []
    for lineno, doc in _lines(path):
        where = f"{path}:{lineno}"
        try:
            category, label = doc["category"], doc["label"]
            if category not in taxonomy or label not in ("positive", "negative"):
                raise ValueError(f"{where}: unknown category {category!r} or label {label!r}")
            test = RuleTest("fire" if label == "positive" else "pass",
                            tuple(_turn(t, where) for t in doc["dialogue"]), lineno, doc["id"],
                            _started(doc.get("started_at"), where), doc.get("direction"), doc.get("business_line"))
        except (KeyError, TypeError, ValueError) as e:
            raise RuleError(f"{where}: bad snippet: {e}", path=str(path)) from e
        positive = label == "positive"
        sample = SampleCall(doc["id"], snippet_transcript(test, doc["id"]),
                            frozenset({category}) if positive else frozenset(),
                            frozenset() if positive else frozenset({category}))
        items.append(CorpusItem(sample, doc.get("kind", ""), doc.get("business_line"), positive))
    return items


def read_dialogues(path: str | Path) -> list[CorpusItem]:
    path = Path(path)
    every = frozenset(load_taxonomy())
    items = []
    for lineno, doc in _lines(path):
        where = f"{path}:{lineno}"
        try:
            expected = frozenset(doc["expected_categories"])
            unknown = expected - every
            if unknown:
                raise ValueError(f"unknown categories {sorted(unknown)}")
            test = RuleTest("fire", tuple(_dialogue_turns(doc["turns"], where)), lineno, doc["id"],
                            _started(doc.get("started_at"), where), doc.get("direction"), doc.get("business_line"))
        except (KeyError, TypeError, ValueError) as e:
            raise RuleError(f"{where}: bad dialogue: {e}", path=str(path)) from e
        sample = SampleCall(doc["id"], snippet_transcript(test, doc["id"]), expected, every - expected)
        items.append(CorpusItem(sample, "dialogue", doc.get("business_line"), bool(expected)))
    return items


def read_split(root: str | Path, split: str) -> tuple[list[CorpusItem], list[CorpusItem]]:
    """The snippets and dialogues of one split (``train``, ``dev`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = Path(root) / split
    return read_snippets(folder / SNIPPETS), read_dialogues(folder / DIALOGUES)


@dataclass(frozen=True)
class CorpusFigures:
    """The headline figures of one evaluation: recall over every expected finding, false
    findings (over snippet negatives and over compliant dialogues), the worst categories."""

    recall: float
    expected: int
    found: int
    false_findings: int  # in the dialogues: categories fired that were not expected
    compliant_dialogues: int
    false_on_compliant: int  # findings on fully compliant dialogues
    snippet_false_alarms: int
    snippet_negatives: int
    per_category: dict[str, float | None]

    @property
    def false_per_50_compliant(self) -> float | None:
        return 50 * self.false_on_compliant / self.compliant_dialogues if self.compliant_dialogues else None


def figures(snippets: EvalReport, dialogues: EvalReport, dialogue_items: list[CorpusItem]) -> CorpusFigures:
    tp = sum(c.tp for r in (snippets, dialogues) for c in r.categories)
    fn = sum(c.fn for r in (snippets, dialogues) for c in r.categories)
    compliant = {i.sample.call_id for i in dialogue_items if not i.positive}
    per: dict[str, list[int]] = {}
    for report in (snippets, dialogues):
        for c in report.categories:
            got = per.setdefault(c.category, [0, 0])
            got[0] += c.tp
            got[1] += c.tp + c.fn
    return CorpusFigures(
        recall=tp / (tp + fn) if tp + fn else 0.0, expected=tp + fn, found=tp,
        false_findings=sum(len(c.false_alarms) for c in dialogues.calls),
        compliant_dialogues=len(compliant),
        false_on_compliant=sum(len(c.false_alarms) for c in dialogues.calls if c.call_id in compliant),
        snippet_false_alarms=sum(len(c.false_alarms) for c in snippets.calls),
        snippet_negatives=sum(bool(c.must_not_fire) for c in snippets.calls),
        per_category={cat: (k / n if n else None) for cat, (k, n) in sorted(per.items())})
