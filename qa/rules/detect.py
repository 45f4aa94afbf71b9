"""The ``detector`` operator: an utterance matches when the pack's learned detector
(:mod:`qa.classifiers.detectors`) gives it at least ``min_prob`` for the rule's category.

The detector ships inside the pack (``<pack>/models/detectors.skops`` and its card), so the
pack's sha256 covers it and a stored result names the model through the pack. It is loaded
once per process and pack folder, checked against its card like every classifier. A call's
utterances are scored once, for every category, however many rules ask.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .context import CallContext, Hit
from .match import Match
from .matchers import TextOp

MODELS_FOLDER = "models"

_loaded: dict[Path, object] = {}
_lock = threading.Lock()


def pack_detector(pack_dir: Path):
    """The detector of the pack in ``pack_dir`` (loaded on first use). Raises
    ClassifierError naming the file when it is missing, altered or unreadable."""
    from ..classifiers.detectors import load_detector

    folder = (pack_dir / MODELS_FOLDER).resolve()
    with _lock:
        detector = _loaded.get(folder)
        if detector is None:
            detector = _loaded[folder] = load_detector(folder)
    return detector


@dataclass(frozen=True, kw_only=True)
class DetectorOp(TextOp):
    category: str
    min_prob: float
    detector: object = field(compare=False, repr=False)

    def candidates(self, ctx: CallContext) -> list[Hit]:
        scores = ctx.cached(("detector", id(self.detector)),
                            lambda: self.detector.call_scores([u.text for u in ctx.utterances]))
        column = self.detector.index[self.category]
        hits = []
        for utt in ctx.role_text(self.scope(ctx)).utts:
            p = float(scores[utt, column])
            if p >= self.min_prob:
                hits.append(Hit(utt, 0, len(ctx.texts[utt]), ctx.texts[utt], term=f"p={p:.2f}"))
        return hits

    def evaluate(self, ctx: CallContext) -> Match:
        out = super().evaluate(ctx)
        if out.matched:  # say with what probability, so a threshold can be judged from explain
            scores = ", ".join(f"#{h.utt} {h.term}" for h in out.hits[:3])
            return Match(True, out.hits, f"{out.why} ({scores})")
        return out
