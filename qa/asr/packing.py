"""Pack short speech segments into shared 30 s windows and split the decoded text back.

Whisper's encoder always reads 30 s, so a 2 s turn decoded alone costs as much encoder time as
30 s of speech. Packing puts consecutive segments (each with its decode padding, separated by
``gap_s`` of digital silence) into one window of at most ``max_window_s``; the window is decoded
like any other (greedy, no timestamp tokens, same fallback), then one teacher-forced decoder
pass over the decoded tokens yields the cross-attention of the model's alignment heads, dynamic
time warping over it gives every token a time in the window, and each token goes to the segment
whose span in the window holds it (the nearest one when it falls in a gap). Segments keep their
own call-time start and end; only their text comes from the shared window.

Per segment, ``avg_logprob`` is the mean log-probability of its own tokens (recomputed in the
alignment pass with the decoder's suppression rules), so one badly heard turn is not hidden by
its well-heard neighbours; ``no_speech_prob``, ``temperature`` and ``looped`` are the window's
(whisper computes no-speech once per window); ``compression_ratio`` is the segment text's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .engine import (
    HOP_LENGTH,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    BatchedDecoder,
    DecodeOptions,
    WindowResult,
    compression_ratio,
)

log = logging.getLogger(__name__)

FRAME_S = 2 * HOP_LENGTH / SAMPLE_RATE  # one encoder output frame: 20 ms
MEDIAN_WIDTH = 7  # frames; smooths single-frame attention spikes before the warping


@dataclass(frozen=True)
class PackOptions:
    max_window_s: float = 30.0  # 0: no packing, one segment per window
    gap_s: float = 0.6  # digital silence between two packed segments (0.4 and 0.6 measured alike)
    across_channels: bool = False  # let segments of different channels and calls share a window

    @property
    def enabled(self) -> bool:
        return self.max_window_s > 0

    def validate(self) -> None:
        if self.max_window_s != 0 and not 1.0 <= self.max_window_s <= WINDOW_SAMPLES / SAMPLE_RATE:
            raise ValueError(f"max_window_s must be 0 (off) or between 1 and 30 s, got {self.max_window_s}")
        if not 0.0 <= self.gap_s <= 5.0:
            raise ValueError(f"gap_s must be between 0 and 5 s, got {self.gap_s}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Piece:
    """One segment's audio as cut for decoding; pieces of different groups never share a window."""

    audio: np.ndarray
    group: int = 0


@dataclass(frozen=True)
class Placement:
    piece: int  # index into the packed pieces
    start_s: float  # the piece's span in window time
    end_s: float


@dataclass(frozen=True)
class PackedWindow:
    audio: np.ndarray
    placements: tuple[Placement, ...]


def _placement_audio(window: PackedWindow, place: Placement) -> np.ndarray:
    return window.audio[round(place.start_s * SAMPLE_RATE): round(place.end_s * SAMPLE_RATE)]


def pack(pieces: Sequence[Piece], options: PackOptions) -> list[PackedWindow]:
    """Greedy packing in input order: a piece joins the open window when it is of the same group
    and fits with its gap; otherwise it opens a new one. A piece longer than the window limit
    gets a window of its own (VAD already keeps every segment inside 30 s)."""
    options.validate()
    limit = round(options.max_window_s * SAMPLE_RATE)
    gap = round(options.gap_s * SAMPLE_RATE)
    windows: list[PackedWindow] = []
    parts: list[np.ndarray] = []
    places: list[Placement] = []
    used, group = 0, None

    def close() -> None:
        if places:
            windows.append(PackedWindow(np.concatenate(parts).astype(np.float32, copy=False), tuple(places)))

    for index, piece in enumerate(pieces):
        n = len(piece.audio)
        if places and (piece.group != group or used + gap + n > limit):
            close()
            parts, places, used = [], [], 0
        if places:
            parts.append(np.zeros(gap, dtype=np.float32))
            used += gap
        parts.append(np.asarray(piece.audio, dtype=np.float32))
        places.append(Placement(index, used / SAMPLE_RATE, (used + n) / SAMPLE_RATE))
        used += n
        group = piece.group
    close()
    return windows


def group_characters(tokens: Sequence[int], decode: Callable[[list[int]], str]) -> list[list[int]]:
    """Runs of tokens that decode to whole characters: a Chinese character is often two or
    three byte-level tokens, and cutting between them would leave broken bytes in both halves.
    A run ends when its text no longer ends in an unfinished character, or at four tokens (no
    UTF-8 character is longer), so a stray invalid byte from the model cannot swallow the rest."""
    groups: list[list[int]] = []
    run: list[int] = []
    for token in tokens:
        run.append(token)
        if len(run) >= 4 or not decode(run).endswith("\ufffd"):
            groups.append(run)
            run = []
    if run:
        groups.append(run)
    return groups


def nearest_placement(time_s: float, placements: Sequence[Placement]) -> int:
    """Index of the placement whose span holds ``time_s``, else of the closest one."""
    def distance(p: Placement) -> float:
        return max(p.start_s - time_s, time_s - p.end_s, 0.0)

    return min(range(len(placements)), key=lambda i: distance(placements[i]))


def split_tokens(tokens: Sequence[int], spans: np.ndarray, placements: Sequence[Placement],
                 decode: Callable[[list[int]], str]) -> list[list[int]]:
    """Distribute a window's tokens over its placements. ``spans`` is [len(tokens), 2]: each
    token's start and end in window seconds. A character's tokens stay together and go where
    the character starts: the path gives the silence between two segments to the last
    character before it, so an end or a middle in a gap says little (on S12 the middle put
    the first character of the next turn, or the last of this one, on the wrong side)."""
    if len(spans) != len(tokens):
        raise ValueError(f"{len(spans)} token spans for {len(tokens)} tokens")
    out: list[list[int]] = [[] for _ in placements]
    at = 0
    for run in group_characters(tokens, decode):
        out[nearest_placement(float(spans[at, 0]), placements)].extend(run)
        at += len(run)
    return out


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path from the top-left to the bottom-right cell of ``cost`` [T, F]
    with diagonal, down and right moves; returns its (rows, cols).

    Each row is computed at once: with ``a[j] = c[j] + min(D[i-1, j-1], D[i-1, j])`` and ``S``
    the running sum of the row's costs, ``D[i, j] = S[j] + min_{k<=j}(a[k] - S[k])``."""
    cost = np.asarray(cost, dtype=np.float64)
    T, n = cost.shape
    D = np.empty((T, n))
    D[0] = np.cumsum(cost[0])
    for i in range(1, T):
        prev = D[i - 1]
        best = np.minimum(prev, np.concatenate(([np.inf], prev[:-1])))
        a = cost[i] + best
        s = np.cumsum(cost[i])
        D[i] = s + np.minimum.accumulate(a - s)
    rows, cols = [T - 1], [n - 1]
    i, j = T - 1, n - 1
    while i > 0 or j > 0:
        moves = []
        if i > 0 and j > 0:
            moves.append((D[i - 1, j - 1], i - 1, j - 1))
        if i > 0:
            moves.append((D[i - 1, j], i - 1, j))
        if j > 0:
            moves.append((D[i, j - 1], i, j - 1))
        _, i, j = min(moves, key=lambda m: m[0])  # min keeps the first on ties: diagonal first
        rows.append(i)
        cols.append(j)
    return np.array(rows[::-1]), np.array(cols[::-1])


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window along the last axis, edges padded by reflection."""
    if width <= 1 or x.shape[-1] < width:
        return x
    if width % 2 == 0:
        raise ValueError(f"median width must be odd, got {width}")
    half = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    # torch's median of an odd count is the middle value, as numpy's; it is 4x faster here
    windows = torch.from_numpy(np.ascontiguousarray(padded)).unfold(-1, width, 1)
    return windows.median(dim=-1).values.numpy()


def token_spans(attention: np.ndarray, n_tokens: int) -> np.ndarray:
    """Token times in window seconds [n_tokens, 2] from the alignment heads' cross-attention
    [heads, n_tokens + 1, frames] (the last row is the query that predicted end-of-text)."""
    w = attention.astype(np.float64)
    # standardise each head per frame over the tokens, so heads of different sharpness weigh alike
    w = (w - w.mean(axis=1, keepdims=True)) / (w.std(axis=1, keepdims=True) + 1e-8)
    matrix = median_filter(w, MEDIAN_WIDTH).mean(axis=0)
    rows, cols = dtw_path(-matrix)
    spans = np.zeros((n_tokens, 2))
    for t in range(n_tokens):
        frames = cols[rows == t]
        spans[t] = (frames.min() * FRAME_S, (frames.max() + 1) * FRAME_S)
    return spans


class AligningDecoder(BatchedDecoder):
    """The batched decoder plus the alignment pass for packed windows. It keeps each window's
    encoder output for the length of one :meth:`decode_packed` call, so neither the alignment
    pass nor a temperature fallback runs the encoder a second time."""

    def __init__(self, model: torch.nn.Module, options: DecodeOptions, align_batch: int = 8):
        super().__init__(model, options)
        heads = model.alignment_heads.to_dense().nonzero().tolist()
        self._align_heads: dict[int, list[int]] = {}
        for layer, head in heads:
            self._align_heads.setdefault(layer, []).append(head)
        self._align_batch = align_batch
        self._kept: dict[int, torch.Tensor] | None = None

    def decode_packed(self, windows: Sequence[PackedWindow]) -> list[list[WindowResult]]:
        """Decode packed windows; per window, one result per placement, in placement order."""
        audio = [w.audio for w in windows]
        self._kept = {}
        try:
            results = self.decode(audio)
            out: list[list[WindowResult]] = []
            for start in range(0, len(windows), self._align_batch):
                chunk = range(start, min(len(windows), start + self._align_batch))
                aligned = self._align([audio[i] for i in chunk], [results[i] for i in chunk])
                for i, (spans, logprobs) in zip(chunk, aligned):
                    out.append(self._split(windows[i], results[i], spans, logprobs))
            self._redecode_dropped(windows, out)
            return out
        finally:
            self._kept = None

    def _redecode_dropped(self, windows: Sequence[PackedWindow], out: list[list[WindowResult]]) -> None:
        """Whisper sometimes ends a window early (end-of-text after the first turns), which would
        leave the later segments of a window that did produce text without any. Those segments
        are decoded again on their own, as the unpacked path does; a window with no text at all
        is silence or noise and stays as it is."""
        dropped = [(w, p) for w, parts in enumerate(out) if any(r.text for r in parts)
                   for p, r in enumerate(parts) if not r.text]
        if not dropped:
            return
        log.info("%d packed segment(s) came back without text; decoding them alone", len(dropped))
        alone = self.decode([_placement_audio(windows[w], windows[w].placements[p]) for w, p in dropped])
        for (w, p), result in zip(dropped, alone):
            out[w][p] = result

    def _encode(self, windows: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        kept = self._kept
        if kept is not None and all(id(w) in kept for w in windows):
            return torch.stack([kept[id(w)] for w in windows])
        features = super()._encode(windows)
        if kept is not None:
            for w, f in zip(windows, features):
                kept[id(w)] = f
        return features

    def _split(self, window: PackedWindow, result: WindowResult, spans: np.ndarray,
               logprobs: np.ndarray) -> list[WindowResult]:
        parts = split_tokens(result.tokens, spans, window.placements, self.tokenizer.decode)
        out, at = [], 0
        for tokens in parts:  # parts keep the window's token order, so log-probs follow along
            lp = logprobs[at : at + len(tokens)]
            at += len(tokens)
            text = self.tokenizer.decode(tokens).strip()
            out.append(WindowResult(
                tokens=tuple(tokens), text=text,
                avg_logprob=float(lp.mean()) if len(tokens) else result.avg_logprob,
                no_speech_prob=result.no_speech_prob, compression_ratio=compression_ratio(text),
                temperature=result.temperature, looped=result.looped,
            ))
        return out

    @torch.inference_mode()
    def _align(self, audio: list[np.ndarray], results: list[WindowResult]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One teacher-forced decoder pass over the prompt, the decoded tokens and end-of-text:
        the alignment heads' cross-attention gives token times, the logits token log-probs."""
        dec = self.model.decoder
        features = self._encode(audio)
        P = self.n_prompt
        seqs = [list(self.initial_tokens) + list(r.tokens) + [self.eot] for r in results]
        L = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), L), self.eot, device=self.device, dtype=torch.long)
        for row, seq in enumerate(seqs):
            tokens[row, : len(seq)] = torch.tensor(seq, device=self.device)
        x = (dec.token_embedding(tokens) + dec.positional_embedding[:L]).to(self.dtype)
        H, hd = self._heads, self._head_dim
        R = len(seqs)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(R, t.shape[1], H, hd).transpose(1, 2)

        captured = []
        for i, block in enumerate(dec.blocks):
            x = x + block.attn(block.attn_ln(x), mask=dec.mask)[0]  # right padding cannot leak back
            h = block.cross_attn_ln(x)
            q = heads(block.cross_attn.query(h))
            k, v = heads(block.cross_attn.key(features)), heads(block.cross_attn.value(features))
            if i in self._align_heads:
                sel = self._align_heads[i]
                qk = q[:, sel].float() @ k[:, sel].float().transpose(-1, -2) / hd**0.5
                captured.append(qk.softmax(dim=-1))
            a = F.scaled_dot_product_attention(q, k, v)
            x = x + block.cross_attn.out(a.transpose(1, 2).reshape(R, L, -1))
            x = x + block.mlp(block.mlp_ln(x))
        weights = torch.cat(captured, dim=1)  # [R, align heads, L, frames]
        out = []
        for row, (wav, res) in enumerate(zip(audio, results)):
            n = len(res.tokens)
            if n == 0:
                out.append((np.zeros((0, 2)), np.zeros(0)))
                continue
            frames = min(weights.shape[-1], -(-len(wav) // (2 * HOP_LENGTH)))
            att = weights[row, :, P : P + n + 1, :frames].cpu().numpy()
            out.append((token_spans(att, n), self._token_logprobs(dec, x[row, P - 1 : P - 1 + n], res.tokens)))
        return out

    def _token_logprobs(self, dec, hidden: torch.Tensor, tokens: Sequence[int]) -> np.ndarray:
        """Log-probabilities of the decoded tokens under the decoder's own suppression rules
        (as its running sum is computed), one per token."""
        logits = self._logits(dec.ln(hidden)).float()
        logits.index_fill_(1, self._suppress, -float("inf"))
        logits[0, self._blank] = -float("inf")
        chosen = torch.tensor(tokens, device=logits.device)
        return F.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0].cpu().numpy()
