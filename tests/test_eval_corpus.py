"""The evaluation corpus (data/eval/): complete, parseable, and split as scripts/split_eval.py says."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qa.rules.corpus import SPLITS, read_split
from qa.rules.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "eval"


def _raw(pattern: str) -> list[dict]:
    return [json.loads(line) for path in sorted((CORPUS / "raw").glob(pattern))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_split_files_are_up_to_date():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "split_eval.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_category_has_positives_and_hard_negatives():
    counts = Counter((s["category"], s["label"]) for s in _raw("snippets_*.jsonl"))
    for category in load_taxonomy():
        assert counts[(category, "positive")] >= 40, category
        assert counts[(category, "negative")] >= 40, category
    kinds = Counter(s["kind"] for s in _raw("snippets_*.jsonl"))
    assert kinds["paraphrase"] >= sum(kinds.values()) / 3


def test_dialogues_cover_the_taxonomy():
    dialogues = _raw("dialogues_*.jsonl")
    assert len(dialogues) >= 150
    assert sum(not d["expected_categories"] for d in dialogues) >= 30
    per = Counter(c for d in dialogues for c in d["expected_categories"])
    assert {c: n for c, n in per.items() if n < 4} == {}
    assert set(per) == set(load_taxonomy())


@pytest.mark.parametrize("split", SPLITS)
def test_each_split_reads_and_holds_every_category(split):
    snippets, dialogues = read_split(CORPUS, split)
    assert {next(iter(i.sample.expected or i.sample.must_not_fire)) for i in snippets} == set(load_taxonomy())
    assert any(not d.positive for d in dialogues)
    ids = [i.sample.call_id for i in snippets + dialogues]
    assert len(ids) == len(set(ids))


def test_splits_do_not_share_items():
    seen: dict[str, str] = {}
    for split in SPLITS:
        for path in (CORPUS / split).glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                item_id = json.loads(line)["id"]
                assert item_id not in seen, f"{item_id} in {seen.get(item_id)} and {split}"
                seen[item_id] = split
