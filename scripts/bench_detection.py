#!/usr/bin/env python
"""Detection on the evaluation corpus (``data/eval/``), dev and test side by side.

For each rule pack given (default: the configured one; ``--baseline DIR`` adds another in
the same run), on the dev and test splits: recall over every expected finding (snippet
positives and the categories of the dialogues), false findings on the fully compliant
dialogues (per 50), false alarms on the snippets' hard negatives, the same with random
homophone noise in the test transcripts (``--noise``, several seeds), and per-category recall
on test; with ``--samples`` also the bundled sample calls on their reference transcripts.

    .venv/bin/python scripts/bench_detection.py
    .venv/bin/python scripts/bench_detection.py --baseline /tmp/old-pack --per-category
    .venv/bin/python scripts/bench_detection.py --call-type --noise 0   # manifests without a business line
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qa.config import Settings  # noqa: E402
from qa.rules.corpus import CorpusFigures, figures, read_split  # noqa: E402
from qa.rules.evaluate import evaluate, read_samples, with_homophone_noise  # noqa: E402

CORPUS = REPO / "data" / "eval"


def engine_for(pack: str, models_dir: str):
    from qa.rules.stage import AnalyzeOptions, open_analyzer

    return open_analyzer(AnalyzeOptions(rules_pack=pack, models_dir=None)).engine


class InferringEngine:
    """The analyze stage's rules with the business line inferred by the topic classifier
    (what a call whose manifest names no line gets), shaped as the engine ``evaluate`` reads."""

    def __init__(self, pack: str, models_dir: str):
        from qa.rules.stage import AnalyzeOptions, open_analyzer

        self.analyzer = open_analyzer(AnalyzeOptions(rules_pack=pack, models_dir=models_dir))
        self.pack = self.analyzer.engine.pack

    def evaluate(self, transcript):
        return self.analyzer.analyze(transcript)[0]


def without_lines(items):
    return [replace(i, sample=replace(i.sample, reference=replace(
        i.sample.reference, meta=replace(i.sample.reference.meta, business_line=None)))) for i in items]


def run(engine, split: str, noise: float = 0.0, seed: int = 0,
        strip_lines: bool = False) -> tuple[CorpusFigures, object, object]:
    snippets, dialogues = read_split(CORPUS, split)
    if strip_lines:
        snippets, dialogues = without_lines(snippets), without_lines(dialogues)
    if noise:
        rng = random.Random(seed)
        snippets = [replace(i, sample=replace(i.sample, reference=with_homophone_noise(i.sample.reference, noise, rng)))
                    for i in snippets]
        dialogues = [replace(i, sample=replace(i.sample, reference=with_homophone_noise(i.sample.reference, noise,
                                                                                       rng))) for i in dialogues]
    s_report = evaluate(engine, [i.sample for i in snippets], label="reference")
    d_report = evaluate(engine, [i.sample for i in dialogues], label="reference")
    return figures(s_report, d_report, dialogues), s_report, d_report


def line(name: str, f: CorpusFigures) -> str:
    per50 = f.false_per_50_compliant
    worst = sorted((r, c) for c, r in f.per_category.items() if r is not None)[:3]
    return (f"{name:<26} recall {100 * f.recall:5.1f}% ({f.found}/{f.expected})  "
            f"false on compliant {f.false_on_compliant}/{f.compliant_dialogues} "
            f"({per50:.1f} per 50)  dialogue false findings {f.false_findings}  "
            f"snippet false alarms {f.snippet_false_alarms}/{f.snippet_negatives}  "
            f"worst: {', '.join(f'{c} {100 * r:.0f}%' for r, c in worst)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    settings = Settings()
    parser.add_argument("--pack", default=settings.rules_pack)
    parser.add_argument("--baseline", help="Another pack to evaluate in the same run (e.g. the previous one).")
    parser.add_argument("--models-dir", default=settings.models_dir)
    parser.add_argument("--noise", type=float, default=0.10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-category", action="store_true")
    parser.add_argument("--samples", action="store_true", help="Also the sample calls' reference transcripts.")
    parser.add_argument("--splits", default="dev,test")
    parser.add_argument("--call-type", action="store_true",
                        help="Also with the business lines removed: unknown, then inferred by the topic classifier.")
    args = parser.parse_args()
    packs = [("pack", args.pack)] + ([("baseline", args.baseline)] if args.baseline else [])
    for label, pack in packs:
        engine = engine_for(pack, args.models_dir)
        print(f"== {label}: {engine.pack.name} {engine.pack.version} ({len(engine.pack.rules)} rules, {pack})")
        test = None
        for split in args.splits.split(","):
            f, s_report, d_report = run(engine, split)
            print(line(split, f))
            if split == "test":
                test = f
        if args.call_type:
            inferring = InferringEngine(pack, args.models_dir)
            for split in args.splits.split(","):
                print(line(f"{split}, no business line", run(engine, split, strip_lines=True)[0]))
                print(line(f"{split}, line from topic", run(inferring, split, strip_lines=True)[0]))
        if args.noise and "test" in args.splits:
            recalls, false = [], []
            for seed in range(args.seeds):
                f, _, _ = run(engine, "test", args.noise, seed)
                recalls.append(f.recall)
                false.append(f.false_per_50_compliant or 0.0)
            print(f"{'test + ' + format(args.noise, '.0%') + ' homophones':<26} recall "
                  f"{100 * sum(recalls) / len(recalls):5.1f}% (mean of {args.seeds} seeds, "
                  f"min {100 * min(recalls):.1f}%)  false per 50 compliant {sum(false) / len(false):.1f}")
        if args.samples:
            report = evaluate(engine, read_samples(REPO / "audio_samples"), label="reference")
            t = report.totals()
            print(f"{'samples (reference)':<26} recall {100 * (t.recall or 0):5.1f}% ({t.tp}/{t.tp + t.fn})  "
                  f"false alarms {t.fp}")
        if args.per_category and test is not None:
            for cat, r in test.per_category.items():
                print(f"    {cat:<36} {'-' if r is None else format(100 * r, '5.1f') + '%'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
