#!/usr/bin/env python
"""Role attribution on mono recordings, by turn position: the learned role model with the
turn-taking pass (``qa.classifiers.roles``), before and after the continuation rule (a piece
cut mid-sentence by VAD is the same speaker going on).

The dialogues of the evaluation corpus (``data/eval/*/dialogues.jsonl``, all splits: nothing
is tuned here) are laid out in time as the rule tests are (270 characters per minute, 0.5 s
between turns), and every agent turn longer than 12 characters that has a comma in its first
half is cut at that comma with a 0.7 s pause, as VAD cuts a turn where the speaker breathes.
Prints the share of utterances given the right role at each position (1st, 2nd, ... and the
rest), with and without the cuts.

    .venv/bin/python scripts/bench_roles.py
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qa.asr.roles import RoleHeuristic  # noqa: E402
from qa.classifiers.roles import RoleSequenceOptions, load_role_assigner  # noqa: E402
from qa.config import Settings  # noqa: E402
from qa.rules.corpus import read_dialogues  # noqa: E402

POSITIONS = 6
CUT_PAUSE_S = 0.7


def layouts(items, cut: bool) -> list[list[tuple[str, float, float, str]]]:
    calls = []
    for item in items:
        utts = []
        for u in item.sample.reference.utterances:
            comma = u.text.find("，")
            if cut and u.role == "agent" and len(u.text) > 12 and 0 < comma < len(u.text) // 2:
                mid = u.start_s + (u.end_s - u.start_s) * (comma + 1) / len(u.text)
                utts.append((u.text[:comma + 1], u.start_s, mid, u.role))
                utts.append((u.text[comma + 1:], mid + CUT_PAUSE_S, u.end_s + CUT_PAUSE_S, u.role))
            else:
                utts.append((u.text, u.start_s, u.end_s, u.role))
        calls.append(utts)
    return calls


def accuracy(assigner, calls) -> tuple[list[float], float]:
    right, seen = [0] * (POSITIONS + 1), [0] * (POSITIONS + 1)
    for utts in calls:
        got = assigner([(t, s, e) for t, s, e, _ in utts])
        for n, ((_, _, _, truth), role) in enumerate(zip(utts, got)):
            k = min(n, POSITIONS)
            seen[k] += 1
            right[k] += role == truth
    total = sum(right) / sum(seen)
    return [r / s if s else 0.0 for r, s in zip(right, seen)], total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=Settings().models_dir)
    args = parser.parse_args()
    items = [i for split in ("train", "dev", "test") for i in read_dialogues(REPO / "data" / "eval" / split /
                                                                            "dialogues.jsonl")]
    before = RoleSequenceOptions(turns=replace(RoleHeuristic(), continuation_switch_prob=0.5, continuation_gap_s=0.0))
    after = RoleSequenceOptions()
    print(f"{len(items)} dialogues; accuracy by utterance position (1..{POSITIONS}, then the rest), and overall")
    for cut in (False, True):
        calls = layouts(items, cut)
        n = sum(len(c) for c in calls)
        for name, options in (("without the continuation rule", before), ("with it", after)):
            per, total = accuracy(load_role_assigner(args.models_dir, options), calls)
            cells = " ".join(f"{100 * p:5.1f}" for p in per)
            print(f"{'VAD cuts' if cut else 'whole turns':<11} {name:<30} {cells}  overall {100 * total:5.1f}% "
                  f"({n} utterances)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
