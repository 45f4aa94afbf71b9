"""Decode and validate recordings: WAV (PCM 16/24/32-bit, float, A-law, μ-law), MP3, FLAC
and OGG through libsndfile (the ``soundfile`` wheel bundles it; no ffmpeg program is
called). Output is float32 at 16 kHz, one array per channel.

Every rejection is an :class:`~qa.errors.AudioError` whose ``code`` names the reason
(``audio.empty``, ``audio.truncated``, ``audio.corrupt``, ``audio.wrong_extension``,
``audio.nan``, ``audio.channels``, ``audio.too_long``, ``audio.silent``) and whose message
names the file.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from ..domain import AGENT, CUSTOMER, SAMPLE_RATE
from ..errors import AudioError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav": "WAV", ".mp3": "MP3", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}
# A recording whose loudest sample stays under this (about -66 dBFS) carries no speech.
SILENCE_PEAK = 5e-4


@dataclass(frozen=True)
class AudioInfo:
    """What the container says, before decoding."""

    container: str  # WAV, MP3, FLAC, OGG
    subtype: str  # PCM_16, ULAW, ALAW, FLOAT, MPEG_LAYER_III, VORBIS ...
    sample_rate: int
    channels: int
    frames: int

    @property
    def format(self) -> str:
        return f"{self.container.lower()}/{self.subtype.lower()}"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class DecodedAudio:
    path: str
    info: AudioInfo
    channels: tuple[np.ndarray, ...]  # float32, SAMPLE_RATE
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.channels[0]) / self.sample_rate if self.channels else 0.0

    @property
    def format(self) -> str:
        return self.info.format


def channel_roles(layout: str, n_channels: int) -> list[str | None]:
    """Which party each decoded channel carries; ``None`` for a mono mix."""
    if n_channels == 1 or layout == "mono":
        return [None] * n_channels
    if layout == "stereo-agent-left":
        return [AGENT, CUSTOMER]
    if layout == "stereo-agent-right":
        return [CUSTOMER, AGENT]
    raise ValueError(f"unknown channel layout {layout!r}")


def _fail(path: Path, code: str, message: str) -> AudioError:
    return AudioError(f"{path}: {message}", code=code, path=str(path))


def _check_wav_header(path: Path, size: int) -> None:
    """libsndfile quietly reads what is there of a cut-off WAV; a recording cut off in
    transfer must be rejected, so compare the declared data size with the file size."""
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return  # not RIFF/WAVE: let the decoder say what it is
        offset = 12
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise _fail(path, "audio.truncated", "WAV header is cut off before the data chunk")
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            offset += 8
            if chunk_id == b"data":
                if head[:4] == b"RIFF" and chunk_size != 0xFFFFFFFF and offset + chunk_size > size:
                    raise _fail(
                        path,
                        "audio.truncated",
                        f"WAV data chunk declares {chunk_size} bytes but only {size - offset} are present",
                    )
                return
            offset += chunk_size + (chunk_size & 1)
            if offset > size:
                raise _fail(path, "audio.truncated", f"WAV chunk {chunk_id!r} runs past the end of the file")
            f.seek(offset)


def probe(path: str | Path) -> AudioInfo:
    """Read the container's header; raise :class:`AudioError` if the file is not usable audio."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise _fail(path, "audio.unreadable", f"cannot read file: {e.strerror or e}") from e
    if size == 0:
        raise _fail(path, "audio.empty", "file is empty (0 bytes)")
    expected = AUDIO_EXTENSIONS.get(path.suffix.lower())
    if expected is None:
        raise _fail(path, "audio.wrong_extension",
                    f"extension {path.suffix or '(none)'} is not one of {', '.join(sorted(AUDIO_EXTENSIONS))}")
    if expected == "WAV":
        _check_wav_header(path, size)
    try:
        raw = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise _fail(path, "audio.corrupt", f"not a decodable {expected} file ({e})") from e
    container = "WAV" if raw.format in ("WAV", "WAVEX", "RF64") else raw.format
    if container != expected:
        raise _fail(path, "audio.wrong_extension",
                    f"content is {container} but the extension {path.suffix} says {expected}")
    info = AudioInfo(container=container, subtype=raw.subtype, sample_rate=int(raw.samplerate),
                     channels=int(raw.channels), frames=int(raw.frames))
    if info.frames <= 0 or info.sample_rate <= 0:
        raise _fail(path, "audio.empty", "file holds no audio frames")
    if info.channels > 2:
        raise _fail(path, "audio.channels", f"{info.channels} channels; at most 2 (agent and customer) are supported")
    return info


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    g = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // g, source_rate // g).astype(np.float32)


def decode_file(path: str | Path, *, max_duration_s: float = 4 * 3600.0) -> DecodedAudio:
    """Decode, validate and resample one recording to 16 kHz float32 channels."""
    path = Path(path)
    info = probe(path)
    if info.duration_s > max_duration_s:
        raise _fail(path, "audio.too_long",
                    f"{info.duration_s:.0f} s long; the configured maximum is {max_duration_s:.0f} s")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise _fail(path, "audio.corrupt", f"decoding failed part-way ({e})") from e
    if data.shape[0] == 0:
        raise _fail(path, "audio.empty", "file holds no audio frames")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise _fail(path, "audio.nan", f"{bad} samples are NaN or infinite")
    if float(np.abs(data).max()) < SILENCE_PEAK:
        raise _fail(path, "audio.silent", "recording is entirely silent")
    channels = tuple(resample(data[:, c], int(rate)) for c in range(data.shape[1]))
    return DecodedAudio(path=str(path), info=info, channels=channels)
