"""Beam search for the batched decoder, with openai-whisper's ``BeamSearchDecoder`` semantics.

A window decoded with beam size ``k`` occupies ``k`` consecutive slots of the batch (a
*group*). Each step the decoder computes every slot's log-probabilities on the device; this
module then does, per group, what whisper's ``BeamSearchDecoder.update`` does:

* each beam proposes its ``k + 1`` likeliest next tokens, scored by the beam's sum of
  log-probabilities plus the token's (on the first step all beams are the same sequence, so
  only one proposes: whisper's dictionary of sequences collapses the copies);
* the proposals are taken best first (a stable sort, so ties keep whisper's order): one that
  ends the text is a finished candidate, the others become the next beams until ``k`` are kept;
* finished candidates are kept, best first, until the group has ``round(k * patience)``;
  then the group is done;
* a group that reaches the token limit first is completed with its live beams, best first;
* the best finished sequence is the one with the highest sum of log-probabilities divided by
  the length penalty (its length, or ``((5 + length) / 6) ** length_penalty``).

The result for every window is the one ``whisper.decode(..., beam_size=k)`` gives, up to
floating-point ties. ``patience < 1`` differs in one corner: whisper completes such a group
with beams that went on decoding until the whole batch was done; here it is completed at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int
    patience: float = 1.0
    length_penalty: float | None = None

    @property
    def max_candidates(self) -> int:
        return round(self.beam_size * self.patience)

    def validate(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if not self.patience > 0 or self.max_candidates < 1:
            raise ValueError(f"patience must be positive (and beam_size * patience >= 1), got {self.patience}")
        if self.length_penalty is not None and not 0.0 <= self.length_penalty <= 1.0:
            raise ValueError(f"length_penalty must be between 0 and 1, got {self.length_penalty}")


@dataclass
class Group:
    """The host side of one window's beams."""

    item: int  # the window's index in the decode call
    prefixes: list[list[int]]  # generated tokens of each beam (slot order)
    finished: dict[tuple[int, ...], float] = field(default_factory=dict)  # tokens + eot -> score
    # the model's own sum of log-probs of each finished sequence (the score adds hotword bonuses)
    finished_logprob: dict[tuple[int, ...], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """What one group does this step: for each of its slots the source slot (within the
    group) and the token it appends, with the new sum of log-probabilities."""

    sources: list[int]
    tokens: list[int]
    sums: list[float]
    logprobs: list[float]  # the model's own sums (equal to sums without hotword biasing)
    done: bool


def advance(group: Group, options: BeamOptions, scores: np.ndarray, tokens: np.ndarray, eot: int,
            first: bool, at_limit: bool, logprobs: np.ndarray | None = None) -> Step:
    """One step of one group. ``scores[j, r]`` / ``tokens[j, r]``: the score after beam ``j``
    appends its ``r``-th best token (``k + 1`` per beam, best first); the score is the sum of
    log-probs, plus hotword bonuses when ``logprobs`` (the model's own sums) are given."""
    k = options.beam_size
    own = scores if logprobs is None else logprobs
    proposals = []  # (score, beam, token, own sum) in whisper's dictionary order
    for j in range(1 if first else k):
        for r in range(scores.shape[1]):
            proposals.append((float(scores[j, r]), j, int(tokens[j, r]), float(own[j, r])))
    proposals.sort(key=lambda p: p[0], reverse=True)  # stable: equal scores keep that order
    keep: list[tuple[float, int, int, float]] = []
    newly: list[tuple[tuple[int, ...], float, float]] = []
    for score, j, token, lp in proposals:
        if token == eot:
            newly.append((tuple(group.prefixes[j] + [eot]), score, lp))
        else:
            keep.append((score, j, token, lp))
            if len(keep) == k:
                break
    for sequence, score, lp in sorted(newly, key=lambda p: p[1], reverse=True):
        if len(group.finished) >= options.max_candidates:
            break
        group.finished[sequence] = score
        group.finished_logprob[sequence] = lp
    # whisper keeps the sums in a float32 tensor
    sums = [np.float32(s).item() for s, _, _, _ in keep]
    own_sums = [np.float32(lp).item() for _, _, _, lp in keep]
    group.prefixes = [group.prefixes[j] + [t] for _, j, t, _ in keep]
    done = len(group.finished) >= options.max_candidates or at_limit
    return Step([j for _, j, _, _ in keep], [t for _, _, t, _ in keep], sums, own_sums, done)


def best_sequence(group: Group, options: BeamOptions, live_sums: list[float], eot: int,
                  live_logprobs: list[float] | None = None) -> tuple[list[int], float]:
    """The tokens (without end-of-text) and the model's sum of log-probabilities of the
    group's result: the best scored of the finished sequences, completed with the live beams
    when fewer than ``k`` finished."""
    sequences = dict(group.finished)
    own = dict(group.finished_logprob)
    live_own = live_sums if live_logprobs is None else live_logprobs
    if len(sequences) < options.beam_size:
        order = np.argsort(np.asarray(live_sums, dtype=np.float32))[::-1]
        for j in order:
            sequence = tuple(group.prefixes[j] + [eot])
            sequences[sequence] = float(np.float32(live_sums[j]))
            own[sequence] = float(np.float32(live_own[j]))
            if len(sequences) >= options.beam_size:
                break
    candidates = [(list(seq[:seq.index(eot)] if eot in seq else seq), lp) for seq, lp in sequences.items()]

    def ranked(tokens: list[int], logprob: float) -> float:
        length = len(tokens)
        penalty = length if options.length_penalty is None else ((5 + length) / 6) ** options.length_penalty
        return logprob / penalty if penalty else -math.inf

    scores = [ranked(t, lp) for t, lp in candidates]
    best = int(np.argmax(scores))
    return candidates[best][0], own[list(sequences)[best]]
