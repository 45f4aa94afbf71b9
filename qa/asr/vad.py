"""Voice activity detection: speech segments of one channel, ready to decode (alone or packed).

Silero VAD comes with the ``silero-vad`` package, model included (TorchScript, loaded from the
package's own data, no network). Its raw segments are merged when the pause between them is
short (a pause inside a turn is not a new utterance) and split so no segment exceeds
``max_segment_s``, which keeps every segment inside one 30 s Whisper window with room for the
decode padding.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..domain import SAMPLE_RATE
from ..errors import ModelError

log = logging.getLogger(__name__)

VAD_STEP = 512  # samples per silero step at 16 kHz
BATCH_CHANNELS = 64  # channels decoded side by side


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3  # silero's own merge of short pauses
    merge_gap_s: float = 0.6  # pauses shorter than this stay inside one utterance
    max_segment_s: float = 28.0
    pad_s: float = 0.2  # audio added on both sides when a segment is cut for decoding

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must be between 0 and 1, got {self.threshold}")
        if self.min_speech_s < 0 or self.min_silence_s < 0 or self.merge_gap_s < 0 or self.pad_s < 0:
            raise ValueError("VAD durations must not be negative")
        if not 1.0 <= self.max_segment_s <= 30.0 - 2 * self.pad_s:
            raise ValueError(f"max_segment_s must be between 1 and {30.0 - 2 * self.pad_s:.1f} s (one Whisper window)")

    def as_dict(self) -> dict:
        return {"model": "silero-vad", **asdict(self)}


@dataclass(frozen=True)
class SpeechSegment:
    """Speech in channel time, in seconds (without the decode padding)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def merge_segments(segments: list[SpeechSegment], *, gap_s: float, max_s: float) -> list[SpeechSegment]:
    """Join neighbours whose pause is shorter than ``gap_s`` while the result stays <= ``max_s``."""
    merged: list[SpeechSegment] = []
    for seg in sorted(segments, key=lambda s: s.start_s):
        if merged and seg.start_s - merged[-1].end_s < gap_s and seg.end_s - merged[-1].start_s <= max_s:
            merged[-1] = SpeechSegment(merged[-1].start_s, max(merged[-1].end_s, seg.end_s))
        else:
            merged.append(seg)
    return merged


def split_long(segments: list[SpeechSegment], max_s: float) -> list[SpeechSegment]:
    """Cut segments longer than ``max_s`` into equal parts no longer than ``max_s``."""
    out: list[SpeechSegment] = []
    for seg in segments:
        parts = max(1, int(np.ceil(seg.duration_s / max_s - 1e-9)))
        step = seg.duration_s / parts
        out.extend(SpeechSegment(seg.start_s + i * step, seg.start_s + (i + 1) * step) for i in range(parts))
    return out


def cut(audio: np.ndarray, segment: SpeechSegment, pad_s: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of ``segment`` with ``pad_s`` of context on both sides (clipped to the audio)."""
    start = max(0, int(round((segment.start_s - pad_s) * rate)))
    end = min(len(audio), int(round((segment.end_s + pad_s) * rate)))
    return np.ascontiguousarray(audio[start:end], dtype=np.float32)


class Vad:
    """Silero VAD; one instance per process (the TorchScript model is not thread-safe)."""

    def __init__(self, options: VadOptions = VadOptions()):
        options.validate()
        self.options = options
        self._lock = threading.Lock()
        import torch

        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad

            self._model = load_silero_vad(onnx=False)
        except Exception as e:  # noqa: BLE001 - a broken install surfaces as many kinds
            raise ModelError(f"cannot load the silero-vad model: {e}", code="model.vad") from e
        finally:
            # importing silero_vad sets torch to one thread for the whole process, which would
            # halve the speed of Whisper on two cores afterwards
            torch.set_num_threads(threads)

    def segments(self, audio: np.ndarray, rate: int = SAMPLE_RATE, *, merge: bool = True) -> list[SpeechSegment]:
        """Speech segments of one channel. ``merge=False`` keeps silero's own segments: on a
        mono mix a short pause is often a change of speaker, and must stay a boundary."""
        return self.segments_many([audio], rate, merge=[merge])[0]

    def segments_many(self, channels: Sequence[np.ndarray], rate: int = SAMPLE_RATE, *,
                      merge: Sequence[bool] | None = None) -> list[list[SpeechSegment]]:
        """Speech segments of many channels (of one call or many), as :meth:`segments` gives
        them one by one. Silero reads 32 ms at a time and its fixed cost per step dominates on
        the CPU, so the channels run side by side as rows of one batch (38 channels: 0.06 s
        per minute-long channel instead of 0.3-0.4 s); channels of similar length share a
        batch so little time goes into padding."""
        if rate != SAMPLE_RATE:
            raise ValueError(f"VAD expects {SAMPLE_RATE} Hz audio, got {rate}")
        from silero_vad.utils_vad import get_speech_timestamps_from_probs

        merge = [True] * len(channels) if merge is None else list(merge)
        if len(merge) != len(channels):
            raise ValueError(f"{len(merge)} merge flags for {len(channels)} channels")
        probs: list[list[float]] = [[] for _ in channels]
        usable = [i for i, a in enumerate(channels) if len(a) >= rate * 0.1]
        usable.sort(key=lambda i: len(channels[i]))
        for start in range(0, len(usable), BATCH_CHANNELS):
            rows = usable[start : start + BATCH_CHANNELS]
            for i, p in zip(rows, self._speech_probs([channels[i] for i in rows])):
                probs[i] = p
        opts = self.options
        out = []
        for audio, p, keep_apart in zip(channels, probs, merge):
            if not p:
                out.append([])
                continue
            raw = get_speech_timestamps_from_probs(
                p, sampling_rate=rate, threshold=opts.threshold,
                min_speech_duration_ms=int(opts.min_speech_s * 1000),
                min_silence_duration_ms=int(opts.min_silence_s * 1000),
                max_speech_duration_s=opts.max_segment_s, audio_length_samples=len(audio),
            )
            segs = [SpeechSegment(r["start"] / rate, r["end"] / rate) for r in raw]
            if keep_apart:
                segs = merge_segments(segs, gap_s=opts.merge_gap_s, max_s=opts.max_segment_s)
            out.append(split_long(segs, opts.max_segment_s))
        return out

    def _speech_probs(self, channels: Sequence[np.ndarray]) -> list[list[float]]:
        """Silero's speech probability per 512-sample step for each channel; the end of a
        shorter channel is padded with silence, whose steps are dropped again (the model runs
        forward in time, so padding after a channel cannot change its earlier steps)."""
        import torch

        steps = [-(-len(a) // VAD_STEP) for a in channels]
        batch = np.zeros((len(channels), max(steps) * VAD_STEP), dtype=np.float32)
        for row, audio in enumerate(channels):
            batch[row, : len(audio)] = audio
        x = torch.from_numpy(batch)
        with self._lock, torch.inference_mode():
            self._model.reset_states()
            out = torch.cat([self._model(x[:, s : s + VAD_STEP], SAMPLE_RATE)
                             for s in range(0, x.shape[1], VAD_STEP)], dim=1)
            self._model.reset_states()
        return [row[:n] for row, n in zip(out.tolist(), steps)]
