"""The ``similar`` operator: an utterance matches when some stretch of it sounds close enough
to one of a rule's example sentences, and closer to the examples than to the rule's
counter-examples.

Text is compared as sound strings (one symbol per syllable, tone ignored: see
:class:`~qa.rules.text.SoundTable`), so the homophones ASR writes (立财 for 理财, 报本 for
保本) cost nothing, and an inserted or swapped word costs only the syllables it changes. The
score of an example against a stretch of an utterance of about the example's length is

    0.7 * (the example's syllable pairs found in the stretch) / (its syllable pairs)
  + 0.3 * (the example's syllables found in the stretch) / (its syllables)

so 1.0 is the example said as written (by sound), word order matters through the pairs, and
a paraphrase that keeps most of the words in order scores 0.7-0.9. The best stretch of the
best example is the hit; the negation guard of the text operators then applies to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .context import CallContext, Hit
from .match import Match
from .matchers import TextOp
from .text import HOMOPHONE, normalize, sound_table

PAIR_WEIGHT = 0.7
DEFAULT_THRESHOLD = 0.75
SLACK = 3  # a stretch may be this many syllables longer or shorter than the example


@dataclass(frozen=True)
class _Example:
    text: str  # as written in the rule (for explain)
    sound: str
    pairs: Counter
    units: Counter

    @classmethod
    def of(cls, text: str) -> _Example:
        sound = sound_table(HOMOPHONE).translate(normalize(text))
        return cls(text, sound, _pairs(sound), Counter(sound))


def _pairs(sound: str) -> Counter:
    return Counter(sound[i:i + 2] for i in range(len(sound) - 1))


def _overlap(want: Counter, have: Counter) -> int:
    return sum(min(n, have[k]) for k, n in want.items() if k in have)


def _score(example: _Example, pairs: Counter, units: Counter) -> float:
    p = _overlap(example.pairs, pairs) / sum(example.pairs.values()) if example.pairs else 0.0
    u = _overlap(example.units, units) / sum(example.units.values()) if example.units else 0.0
    return PAIR_WEIGHT * p + (1 - PAIR_WEIGHT) * u


def best_stretch(example: _Example, sound: str, floor: float = 0.0) -> tuple[float, int, int]:
    """(score, start, end) of the stretch of ``sound`` most like ``example``; (0, 0, 0) when
    no stretch can reach ``floor``."""
    m, n = len(example.sound), len(sound)
    if not m or not n:
        return 0.0, 0, 0
    # the whole utterance scores at least as high as any stretch of it: most stop here
    if _score(example, _pairs(sound), Counter(sound)) < floor:
        return 0.0, 0, 0
    best = (0.0, 0, 0)
    for length in range(max(2, m - SLACK), min(n, m + SLACK) + 1):
        for start in range(0, n - length + 1):
            piece = sound[start:start + length]
            s = _score(example, _pairs(piece), Counter(piece))
            # at equal score the shorter stretch: the hit then marks only what was said
            if s > best[0] + 1e-9:
                best = (s, start, start + length)
    return best


def nearest(examples: tuple[_Example, ...], sound: str, floor: float = 0.0
            ) -> tuple[float, _Example | None, int, int]:
    best: tuple[float, _Example | None, int, int] = (0.0, None, 0, 0)
    for ex in examples:
        score, start, end = best_stretch(ex, sound, max(floor, best[0]))
        if score > best[0]:
            best = (score, ex, start, end)
    return best


@dataclass(frozen=True, kw_only=True)
class SimilarOp(TextOp):
    """Matches utterances that sound like one of ``examples`` (score >= ``threshold``) more
    than like any of ``counter_examples``."""

    examples: tuple[str, ...]
    counter_examples: tuple[str, ...] = ()
    threshold: float = DEFAULT_THRESHOLD
    _examples: tuple[_Example, ...] = field(default=(), init=False, compare=False, repr=False)
    _counters: tuple[_Example, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_examples", tuple(_Example.of(e) for e in self.examples))
        object.__setattr__(self, "_counters", tuple(_Example.of(e) for e in self.counter_examples))

    def conflicts(self) -> list[tuple[str, str, float]]:
        """(example, counter-example, score) for every counter-example an example matches:
        such a rule would fire on the very sentences it says it must not."""
        out = []
        for counter in self._counters:
            score, ex, _, _ = nearest(self._examples, counter.sound, self.threshold)
            if ex is not None and score >= self.threshold:
                out.append((ex.text, counter.text, round(score, 2)))
        return out

    def _judge(self, ctx: CallContext, utt: int, floor: float) -> tuple[float, _Example | None, int, int, float]:
        sound = sound_table(HOMOPHONE).translate(ctx.texts[utt])
        score, ex, start, end = nearest(self._examples, sound, floor)
        counter = nearest(self._counters, sound, score)[0] if self._counters and ex is not None else 0.0
        return score, ex, start, end, counter

    def candidates(self, ctx: CallContext) -> list[Hit]:
        hits = []
        for utt in ctx.role_text(self.scope(ctx)).utts:
            score, ex, start, end, counter = self._judge(ctx, utt, self.threshold)
            if ex is not None and score >= self.threshold and score > counter:
                hits.append(Hit(utt, start, end, ctx.texts[utt][start:end], term=f"{ex.text} ({score:.2f})"))
        return hits

    def evaluate(self, ctx: CallContext) -> Match:
        out = super().evaluate(ctx)
        if out.matched:
            nearest_shown = "; ".join(dict.fromkeys(f"#{h.utt} like '{h.term}'" for h in out.hits[:3]))
            return Match(True, out.hits, f"{out.why} ({nearest_shown})")
        # say how near the nearest sentence came, so a threshold can be set from explain
        best = max((self._judge(ctx, u, 0.3) for u in ctx.role_text(self.scope(ctx)).utts), key=lambda j: j[0],
                   default=(0.0, None, 0, 0, 0.0))
        if best[1] is None:
            return out
        return Match(False, (), f"{out.why}; nearest: '{best[1].text}' {best[0]:.2f} "
                                f"(threshold {self.threshold:.2f}{', counter ' + format(best[4], '.2f') if best[4] else ''})")
