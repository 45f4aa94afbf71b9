#!/usr/bin/env python
"""Split the evaluation corpus's raw files (``data/eval/raw/``) into ``data/eval/{train,dev,test}/``.

Deterministic: every item's place follows from the sha256 of its id, so adding items never
moves the existing ones. Snippets are split per (category, label): 35 % test, 25 % dev, 40 %
train. Dialogues are dealt in hash order to the split whose share of each of their categories
(and of compliant calls) lags its target most (test 40 %, dev 30 %, train 30 %), so that every
category appears in each split. Run once when items are added; the test split is never tuned on.

    .venv/bin/python scripts/split_eval.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "data" / "eval"
SNIPPET_SHARES = (("test", 0.35), ("dev", 0.25), ("train", 0.40))
DIALOGUE_SHARES = {"test": 0.40, "dev": 0.30, "train": 0.30}


def key(item_id: str) -> str:
    return hashlib.sha256(item_id.encode()).hexdigest()


def read(pattern: str) -> list[dict]:
    out = []
    for path in sorted((ROOT / "raw").glob(pattern)):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{n}: {e}") from e
    ids = Counter(d["id"] for d in out)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise SystemExit(f"duplicate ids: {dupes[:5]}")
    return out


def split_snippets(snippets: list[dict]) -> dict[str, list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in snippets:
        groups[(s["category"], s["label"])].append(s)
    out: dict[str, list[dict]] = {name: [] for name, _ in SNIPPET_SHARES}
    for _, items in sorted(groups.items()):
        items.sort(key=lambda s: key(s["id"]))
        at = 0
        for n, (name, share) in enumerate(SNIPPET_SHARES):
            take = len(items) - at if n == len(SNIPPET_SHARES) - 1 else round(share * len(items))
            out[name] += items[at:at + take]
            at += take
    return out


def split_dialogues(dialogues: list[dict]) -> dict[str, list[dict]]:
    totals = Counter(c for d in dialogues for c in (d["expected_categories"] or ["(compliant)"]))
    have: dict[str, Counter] = {name: Counter() for name in DIALOGUE_SHARES}
    out: dict[str, list[dict]] = {name: [] for name in DIALOGUE_SHARES}
    for d in sorted(dialogues, key=lambda d: key(d["id"])):
        cats = d["expected_categories"] or ["(compliant)"]

        def lag(name: str) -> float:
            return sum(DIALOGUE_SHARES[name] - have[name][c] / totals[c] for c in cats) / len(cats)

        name = max(DIALOGUE_SHARES, key=lambda n: (lag(n), DIALOGUE_SHARES[n]))
        out[name].append(d)
        have[name].update(cats)
    return out


def write(split: dict[str, list[dict]], file_name: str, check: bool) -> bool:
    same = True
    for name, items in split.items():
        path = ROOT / name / file_name
        text = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in sorted(items, key=lambda i: i["id"]))
        if check:
            same &= path.is_file() and path.read_text(encoding="utf-8") == text
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Only check that the split files are up to date.")
    args = parser.parse_args()
    snippets, dialogues = split_snippets(read("snippets_*.jsonl")), split_dialogues(read("dialogues_*.jsonl"))
    same = write(snippets, "snippets.jsonl", args.check) & write(dialogues, "dialogues.jsonl", args.check)
    for name in DIALOGUE_SHARES:
        d = dialogues[name]
        cats = Counter(c for x in d for c in x["expected_categories"])
        print(f"{name:5}: {len(snippets[name]):4d} snippets, {len(d):3d} dialogues "
              f"({sum(not x['expected_categories'] for x in d)} compliant; "
              f"categories in {min(cats.values()) if cats else 0}-{max(cats.values()) if cats else 0} dialogues each, "
              f"{len(cats)} of 28 present)")
    if args.check and not same:
        print("the split files are out of date: run scripts/split_eval.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
