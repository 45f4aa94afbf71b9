#!/usr/bin/env python
"""Train the learned detectors of a rule pack (``qa.classifiers.detectors``) and print their
snippet-level figures: the training snippets out of fold and dev (pooled, where the thresholds
are chosen for the precision target) and test (never tuned on).

Fits on ``data/eval/train`` plus ``data/eval/extra/train_*.jsonl``, writes
``<pack>/models/detectors.skops`` and ``detectors.card.json``. The rules that use the
detector take its threshold from the card unless they name a ``min_prob``.

    .venv/bin/python scripts/train_detectors.py [--pack rules/finance-zh]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qa.classifiers.detectors import DetectorOptions, train_detector  # noqa: E402
from qa.rules.detect import MODELS_FOLDER  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default=str(REPO / "rules" / "finance-zh"))
    parser.add_argument("--corpus", default=str(REPO / "data" / "eval"))
    parser.add_argument("--precision", type=float, default=DetectorOptions().precision_target,
                        help="snippet-level precision the thresholds must reach (dev + training out of fold)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = time.process_time()
    detector, figures = train_detector(args.corpus, Path(args.pack) / MODELS_FOLDER,
                                       DetectorOptions(precision_target=args.precision))
    card = detector.card
    print(f"detectors {card.version}: {card.training['lines']} training lines, "
          f"{card.artifact_bytes / 1e6:.1f} MB, {time.process_time() - start:.0f} s CPU")
    print(f"{'category':<30} {'threshold':>9}  {'oof P':>6} {'oof R':>6}  {'dev P':>6} {'dev R':>6}  "
          f"{'test P':>6} {'test R':>6}")

    def pct(v):
        return "  -   " if v is None else f"{100 * v:5.1f}%"

    for category, threshold in figures["thresholds"].items():
        o, d, t = (figures[k][category] for k in ("train_out_of_fold", "dev", "test"))
        print(f"{category:<30} {threshold:>9.3f}  {pct(o['precision'])} {pct(o['recall'])}  "
              f"{pct(d['precision'])} {pct(d['recall'])}  {pct(t['precision'])} {pct(t['recall'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
