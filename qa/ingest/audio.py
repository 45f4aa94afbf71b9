"""Decode and validate recordings: WAV (PCM 16/24/32-bit, float, A-law, μ-law), MP3, FLAC
and OGG through libsndfile (the ``soundfile`` wheel bundles it; no ffmpeg program is
called). Output is float32 at 16 kHz, one array per channel.

Every rejection is an :class:`~qa.errors.AudioError` whose ``code`` names the reason
(``audio.empty``, ``audio.truncated``, ``audio.corrupt``, ``audio.wrong_extension``,
``audio.sample_rate``, ``audio.nan``, ``audio.out_of_range``, ``audio.channels``,
``audio.too_long``, ``audio.silent``) and whose message names the file. The container is
checked before anything is decoded (a header's sample rate or length must be plausible), so a
hostile header cannot make decoding allocate what the machine does not have.
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
# Telephone audio is 8 kHz, studio audio at most 192 kHz; anything else is a broken header
# (1 Hz makes a 7 KB file an hour-long call, 2 GHz makes resampling ask for 320 GiB).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 192_000
# Float samples may overshoot full scale a little; a thousandfold is not audio.
MAX_FLOAT_PEAK = 16.0
# A compressed stream that decodes to less than this share of what its container declares
# was cut off or damaged part-way.
MIN_DECODED_SHARE = 0.98


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


# MPEG audio frame headers: bitrates (kbit/s) by [version is MPEG-1][layer], sample rates by version
_MP3_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int | None:
    """Bytes of the MPEG audio frame starting with ``header`` (4 bytes), or None when it is no
    frame header."""
    b1, b2 = header[1], header[2]
    if header[0] != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 3, 4 - ((b1 >> 1) & 3)
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    return (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding


def _check_mp3_frames(path: Path, size: int) -> None:
    """Walk the MPEG frames: the last one must end where the file (less an ID3v1 tag) ends. A
    transfer cut off part-way leaves half a frame; libsndfile would decode the rest and call it
    the whole recording."""
    data = path.read_bytes()
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: its size is four 7-bit bytes
        at = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    end = size - 128 if size >= 128 and data[-128:-125] == b"TAG" else size
    frames = 0
    while at + 4 <= end:
        length = _mp3_frame_length(data[at:at + 4])
        if length is None or length < 4:
            break  # not a frame here: stop walking; the decoded length check judges the rest
        if at + length > end:
            raise _fail(path, "audio.truncated", f"MP3 frame {frames + 1} needs {length} bytes but the file "
                        f"ends after {end - at}: the file is cut off")
        at += length
        frames += 1


def _check_ogg_end(path: Path, size: int) -> None:
    """The last Ogg page must be complete and carry the end-of-stream flag."""
    with path.open("rb") as f:
        f.seek(max(0, size - 65_307 - 27))  # a page is at most 27 + 255 + 255 * 255 bytes
        tail = f.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) - start < 27:
        raise _fail(path, "audio.truncated", "no complete Ogg page at the end of the file: the file is cut off")
    header_type, n_segments = tail[start + 5], tail[start + 26]
    segments = tail[start + 27:start + 27 + n_segments]
    page_end = start + 27 + n_segments + sum(segments)
    if len(segments) < n_segments or page_end > len(tail) or not header_type & 0x04:
        raise _fail(path, "audio.truncated", "the Ogg stream has no end-of-stream page: the file is cut off")


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
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise _fail(path, "audio.sample_rate", f"sample rate {info.sample_rate} Hz is outside "
                    f"{MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz: the header is broken")
    if container == "MP3":
        _check_mp3_frames(path, size)
    elif container == "OGG":
        _check_ogg_end(path, size)
    if info.frames <= 0:
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
    if info.container in ("MP3", "OGG") and data.shape[0] < MIN_DECODED_SHARE * info.frames:
        raise _fail(path, "audio.truncated", f"decoded {data.shape[0] / rate:.1f} s of the "
                    f"{info.duration_s:.1f} s the stream declares: damaged or cut off part-way")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise _fail(path, "audio.nan", f"{bad} samples are NaN or infinite")
    peak = float(np.abs(data).max())
    if peak > MAX_FLOAT_PEAK:
        raise _fail(path, "audio.out_of_range", f"samples reach {peak:.3g} times full scale: not audio")
    if peak < SILENCE_PEAK:
        raise _fail(path, "audio.silent", "recording is entirely silent")
    channels = tuple(resample(data[:, c], int(rate)) for c in range(data.shape[1]))
    return DecodedAudio(path=str(path), info=info, channels=channels)
