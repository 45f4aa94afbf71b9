"""Timing and acoustic features of a call, from its utterances (and, for loudness, its audio).

Rules read these: long silences (agent put the customer on hold without saying so), who
interrupts whom, speaking too fast through a risk disclosure, shouting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..domain import SAMPLE_RATE, CallFeatures, Overlap, RoleFeatures, SilenceGap, Utterance
from .text import strip_for_match

SILENCE_FLOOR_DB = -100.0


@dataclass(frozen=True)
class FeatureOptions:
    min_silence_s: float = 1.0  # shorter pauses are ordinary turn-taking
    min_overlap_s: float = 0.3  # shorter overlaps are VAD edges and back-channel clicks

    def validate(self) -> None:
        if self.min_silence_s < 0 or self.min_overlap_s < 0:
            raise ValueError("min_silence_s and min_overlap_s must not be negative")


def loudness_db(audio: np.ndarray, start_s: float, end_s: float, rate: int = SAMPLE_RATE) -> float | None:
    """RMS level in dBFS of ``audio[start_s:end_s]``; None for an empty span."""
    chunk = audio[max(0, int(start_s * rate)) : max(0, int(end_s * rate))]
    if chunk.size == 0:
        return None
    rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64))))
    return round(max(SILENCE_FLOOR_DB, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_FLOOR_DB, 2)


def char_count(text: str) -> int:
    return len(strip_for_match(text))


def speech_rate_cpm(text: str, duration_s: float) -> float:
    """Characters per minute of one utterance (0 for an empty or instantaneous one)."""
    return round(60.0 * char_count(text) / duration_s, 1) if duration_s > 0 else 0.0


def _union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def silences(utterances: Sequence[Utterance], min_s: float) -> tuple[SilenceGap, ...]:
    """Gaps where nobody talks, between the first and the last speech of the call."""
    spans = _union([(u.start_s, u.end_s) for u in utterances if u.end_s > u.start_s])
    gaps = [SilenceGap(round(a[1], 3), round(b[0] - a[1], 3)) for a, b in zip(spans, spans[1:])]
    return tuple(g for g in gaps if g.duration_s >= min_s)


def overlaps(utterances: Sequence[Utterance], min_s: float) -> tuple[Overlap, ...]:
    """Each time one party starts while the other is still talking; the one who started late
    is the interrupter."""
    found = []
    for u in utterances:
        for v in utterances:
            if v.role == u.role or not v.start_s < u.start_s < v.end_s:
                continue
            length = min(u.end_s, v.end_s) - u.start_s
            if length >= min_s:
                found.append(Overlap(round(u.start_s, 3), round(length, 3), u.role))
    return tuple(sorted(set(found), key=lambda o: o.start_s))


def role_features(utterances: Sequence[Utterance]) -> dict[str, RoleFeatures]:
    out = {}
    for role in sorted({u.role for u in utterances}):
        own = [u for u in utterances if u.role == role]
        talk = sum(b - a for a, b in _union([(u.start_s, u.end_s) for u in own]))
        chars = sum(char_count(u.text) for u in own)
        levels = [u.loudness_db for u in own if u.loudness_db is not None]
        out[role] = RoleFeatures(
            talk_time_s=round(talk, 3),
            utterances=len(own),
            chars=chars,
            speech_rate_cpm=round(60.0 * chars / talk, 1) if talk > 0 else 0.0,
            # mean of the levels in dB: loudness as heard, not energy-weighted
            mean_loudness_db=round(sum(levels) / len(levels), 2) if levels else None,
        )
    return out


def call_features(utterances: Sequence[Utterance], duration_s: float,
                  options: FeatureOptions = FeatureOptions()) -> CallFeatures:
    options.validate()
    ordered = sorted(utterances, key=lambda u: (u.start_s, u.end_s))
    return CallFeatures(
        duration_s=round(duration_s, 3),
        roles=role_features(ordered),
        silences=silences(ordered, options.min_silence_s),
        overlaps=overlaps(ordered, options.min_overlap_s),
    )
