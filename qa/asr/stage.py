"""The transcription stage: recordings -> role-labelled, time-stamped Simplified-Chinese
utterances with their per-channel speech and call features.

Three steps, so the nightly pipeline can overlap them (CPU workers prepare the next calls while
the GPU decodes):

* :func:`prepare_calls` (CPU): decode the files, voice activity detection over all their channels;
* :meth:`Transcriber.decode` (GPU or CPU): the speech segments of every call in the batch
  become decoder rows (packed windows, or one per segment); rows from many calls share the batch;
* :func:`build_utterances`: normalised, guarded, role-labelled utterances of one decoded call,
  which the pipeline stores (:mod:`qa.pipeline.transcripts`), one transaction per call.

With packing on (``asr_pack_s``, the default), consecutive segments of a channel share a
<=30 s window and the decoded text is split back to its segments by cross-attention alignment
(:mod:`qa.asr.packing`): the encoder costs the same for a 2 s turn as for 30 s of speech. With
it off, every segment is its own window, which gives each segment its own no-speech probability
at the price of one encoder pass per turn. Either way every utterance keeps its segment's call
time, and windows from many calls share the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..classifiers.roles import RolesFromModel
from ..config import Settings
from ..domain import SAMPLE_RATE, Utterance
from ..errors import AudioError, ConfigError, TranscriptionError
from ..ingest.audio import DecodedAudio, channel_roles, decode_file
from .engine import BatchedDecoder, DecodeOptions, WindowResult
from .features import FeatureOptions, loudness_db, speech_rate_cpm
from .packing import AligningDecoder, PackedWindow, PackOptions, Piece, pack
from .roles import RoleAssigner, assign_roles, role_provenance
from .text import TextGuard, normalize_text
from .vad import SpeechSegment, Vad, VadOptions, cut
from .weights import LoadedModel, pick_device, resolve_model

log = logging.getLogger(__name__)

TEXT_VERSION = "normalize-v1"  # bump when qa.asr.text changes what is stored


def compute_type(settings: Settings) -> str:
    """The decoder's compute type for ``asr_compute_type`` on the device the model goes to."""
    from .precision import bf16_supported

    on_cpu = pick_device(settings.asr_device) == "cpu"
    if settings.asr_compute_type == "bfloat16" and not on_cpu:
        raise ConfigError("asr_compute_type 'bfloat16' is for the CPU; on CUDA use 'auto' or 'model' (fp16)")
    if settings.asr_compute_type != "auto":
        return settings.asr_compute_type
    return "bfloat16" if on_cpu and bf16_supported() else "model"


@dataclass(frozen=True)
class AsrOptions:
    """Everything besides the weights that changes a transcript; its sha256 is stored."""

    decode: DecodeOptions = DecodeOptions()
    vad: VadOptions = VadOptions()
    guard: TextGuard = TextGuard()
    features: FeatureOptions = FeatureOptions()
    pack: PackOptions = PackOptions()
    roles: RoleAssigner = assign_roles  # mono recordings; from_settings: the learned role model

    def validate(self) -> None:
        self.decode.validate()
        self.vad.validate()
        self.guard.validate()
        self.features.validate()
        self.pack.validate()

    @classmethod
    def from_settings(cls, settings: Settings) -> AsrOptions:
        decode = DecodeOptions(language="zh", prompt=settings.asr_prompt, batch_size=settings.asr_batch_size,
                               compute_type=compute_type(settings), beam_size=settings.asr_beam_size,
                               hotwords=tuple(settings.asr_hotwords.split()), hotword_bonus=settings.asr_hotword_bonus)
        return cls(decode=decode,
                   pack=PackOptions(max_window_s=settings.asr_pack_s), roles=RolesFromModel(settings.models_dir))

    def as_dict(self) -> dict:
        d = self.decode
        return {
            "language": d.language, "prompt": d.prompt, "temperatures": list(d.temperatures),
            "max_new_tokens": d.max_new_tokens, "compression_ratio_threshold": d.compression_ratio_threshold,
            "logprob_threshold": d.logprob_threshold, "no_speech_threshold": d.no_speech_threshold,
            "loop_min_span": d.loop_min_span, "compute_type": d.compute_type, "vad": self.vad.as_dict(), "guard": asdict(self.guard),
            "features": asdict(self.features), "pack": self.pack.as_dict(), "text": TEXT_VERSION,
            "roles": role_provenance(self.roles),
            # only when searched: greedy transcripts keep the options (and sha256) they had
            **({"beam": {"size": d.beam_size, "patience": d.patience, "length_penalty": d.length_penalty}}
               if d.beam_size > 1 else {}),
            **({"hotwords": list(d.hotwords), "hotword_bonus": d.hotword_bonus} if d.hotwords else {}),
        }

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class PreparedChannel:
    index: int
    role: str | None  # None: a mono mix whose roles must be inferred
    audio: np.ndarray  # 16 kHz float32
    segments: tuple[SpeechSegment, ...]
    rms_db: float | None


@dataclass(frozen=True)
class PreparedCall:
    """Decoded audio and speech segments of one call (picklable: crosses process boundaries)."""

    call_pk: int
    call_id: str
    duration_s: float
    audio_format: str | None
    sample_rate: int | None
    n_channels: int
    channels: tuple[PreparedChannel, ...] = ()
    silent: bool = False  # the recording carries no signal at all

    @property
    def roles_inferred(self) -> bool:
        return any(ch.role is None for ch in self.channels)


@dataclass(frozen=True)
class DecodedSegment:
    channel: int
    segment: SpeechSegment
    result: WindowResult


@dataclass(frozen=True)
class DecodedCall:
    call_pk: int
    segments: tuple[DecodedSegment, ...]


@dataclass(frozen=True)
class WindowRef:
    """Where one decoder row came from: call (index in the batch), channel and segment."""

    call: int
    channel: int
    segment: SpeechSegment


@dataclass(frozen=True)
class UtteranceRecord:
    """An utterance with the per-row values the Utterance domain type does not carry."""

    utterance: Utterance
    channel_index: int
    compression_ratio: float
    speech_rate_cpm: float


_VADS: dict[VadOptions, Vad] = {}


def _vad(options: VadOptions) -> Vad:
    # one silero model per process and options: loading it per call would dominate short calls
    if options not in _VADS:
        _VADS[options] = Vad(options)
    return _VADS[options]


@dataclass(frozen=True)
class CallAudio:
    """A recording to prepare: the call's key, id, file and declared channel layout."""

    call_pk: int
    call_id: str
    path: str
    channel_layout: str


def prepare_calls(settings: Settings, calls: Sequence[CallAudio],
                  options: AsrOptions | None = None) -> list[PreparedCall | Exception]:
    """Decode the recordings and find their speech (CPU only), one outcome per call in order:
    its :class:`PreparedCall`, or the exception that made it unusable (an AudioError for a
    broken file), so one bad recording does not stop the others. An entirely silent recording
    is not an error: it yields a call without speech. The channels of all calls go through
    voice activity detection together, which is several times faster than one by one."""
    options = options or AsrOptions.from_settings(settings)
    outcomes: list = []
    channels: list[tuple[int, int, np.ndarray, str | None]] = []  # (call, channel, samples, role)
    for at, call in enumerate(calls):
        try:
            audio = decode_file(call.path, max_duration_s=settings.max_duration_s)
        except AudioError as e:
            if e.code != "audio.silent":
                outcomes.append(e)
                continue
            log.info("call %s is silent", call.call_id)
            outcomes.append(PreparedCall(call.call_pk, call.call_id, 0.0, None, None, 0, silent=True))
            continue
        except Exception as e:  # noqa: BLE001 - anything else about one file is that call's failure
            outcomes.append(e)
            continue
        samples = list(audio.channels)
        roles = channel_roles(call.channel_layout, len(samples))
        if len(samples) > 1 and None in roles:  # stereo file declared mono: transcribe the mix once
            samples, roles = [np.mean(np.stack(samples), axis=0).astype(np.float32)], [None]
        channels.extend((at, index, s, role) for index, (s, role) in enumerate(zip(samples, roles)))
        outcomes.append(audio)
    found = _vad(options.vad).segments_many([c[2] for c in channels], merge=[c[3] is not None for c in channels])
    per_call: dict[int, list[PreparedChannel]] = {}
    for (at, index, samples, role), segments in zip(channels, found):
        per_call.setdefault(at, []).append(PreparedChannel(index, role, samples, tuple(segments),
                                                           loudness_db(samples, 0.0, len(samples) / SAMPLE_RATE)))
    for at, (call, outcome) in enumerate(zip(calls, outcomes)):
        if isinstance(outcome, DecodedAudio):
            outcomes[at] = PreparedCall(call.call_pk, call.call_id, outcome.duration_s, outcome.format,
                                        outcome.info.sample_rate, outcome.info.channels, tuple(per_call.get(at, ())))
    return outcomes


def prepare_call(settings: Settings, *, call_pk: int, call_id: str, path: str, channel_layout: str,
                 options: AsrOptions | None = None) -> PreparedCall:
    """:func:`prepare_calls` for one recording; raises what made it unusable."""
    (outcome,) = prepare_calls(settings, [CallAudio(call_pk, call_id, path, channel_layout)], options)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def plan_windows(calls: Sequence[PreparedCall], pad_s: float) -> tuple[list[WindowRef], list[np.ndarray]]:
    """One decoder row per speech segment of every channel of every call, with the map back."""
    refs, audio = [], []
    for ci, call in enumerate(calls):
        for ch in call.channels:
            for seg in ch.segments:
                refs.append(WindowRef(ci, ch.index, seg))
                audio.append(cut(ch.audio, seg, pad_s))
    return refs, audio


def plan_packed(calls: Sequence[PreparedCall], pad_s: float,
                options: PackOptions) -> tuple[list[WindowRef], list[PackedWindow]]:
    """Every speech segment as a piece, packed into shared windows (one channel per window
    unless ``options.across_channels``), with the map back from piece to segment."""
    refs, pieces = [], []
    group = 0
    for ci, call in enumerate(calls):
        for ch in call.channels:
            group += 0 if options.across_channels else 1
            for seg in ch.segments:
                refs.append(WindowRef(ci, ch.index, seg))
                pieces.append(Piece(cut(ch.audio, seg, pad_s), group))
    return refs, pack(pieces, options)


def unpack_results(calls: Sequence[PreparedCall], refs: Sequence[WindowRef],
                   results: Sequence[WindowResult]) -> list[DecodedCall]:
    if len(refs) != len(results):
        raise TranscriptionError(f"decoder returned {len(results)} results for {len(refs)} segments")
    per_call: list[list[DecodedSegment]] = [[] for _ in calls]
    for ref, res in zip(refs, results):
        per_call[ref.call].append(DecodedSegment(ref.channel, ref.segment, res))
    return [DecodedCall(call.call_pk, tuple(segs)) for call, segs in zip(calls, per_call)]


class Transcriber:
    """The loaded model and its batched decoder; create once per process (:func:`load_asr`)."""

    def __init__(self, loaded: LoadedModel, options: AsrOptions):
        options.validate()
        self.loaded = loaded
        self.options = options
        decoder = AligningDecoder if options.pack.enabled else BatchedDecoder
        self.decoder = decoder(loaded.model, options.decode)
        resolve = getattr(options.roles, "resolve", None)
        if resolve is not None:  # load the role model now, not inside the first mono call's timing
            resolve()

    def decode(self, calls: Sequence[PreparedCall]) -> list[DecodedCall]:
        if self.options.pack.enabled:
            return self._decode_packed(calls)
        refs, audio = plan_windows(calls, self.options.vad.pad_s)
        try:
            results = self.decoder.decode(audio) if audio else []
        except (RuntimeError, ValueError) as e:  # torch reports device and shape problems so
            raise TranscriptionError(f"decoding {len(audio)} segments failed: {e}") from e
        return unpack_results(calls, refs, results)

    def _decode_packed(self, calls: Sequence[PreparedCall]) -> list[DecodedCall]:
        refs, windows = plan_packed(calls, self.options.vad.pad_s, self.options.pack)
        try:
            per_window = self.decoder.decode_packed(windows) if windows else []
        except (RuntimeError, ValueError) as e:  # torch reports device and shape problems so
            raise TranscriptionError(f"decoding {len(refs)} segments in {len(windows)} windows failed: {e}") from e
        results: list[WindowResult | None] = [None] * len(refs)
        for window, found in zip(windows, per_window, strict=True):
            for place, res in zip(window.placements, found, strict=True):
                results[place.piece] = res
        log.debug("%d segments packed into %d windows", len(refs), len(windows))
        return unpack_results(calls, refs, [r for r in results if r is not None])


def load_asr(settings: Settings, options: AsrOptions | None = None) -> Transcriber:
    import torch

    if settings.asr_threads > 0:
        torch.set_num_threads(settings.asr_threads)
    return Transcriber(resolve_model(settings), options or AsrOptions.from_settings(settings))


def build_utterances(prepared: PreparedCall, decoded: DecodedCall, options: AsrOptions,
                     roles: RoleAssigner | None = None) -> list[UtteranceRecord]:
    """Normalise, guard, attribute roles (mono) and measure each decoded segment."""
    audio = {ch.index: ch for ch in prepared.channels}
    prompt_words = tuple(options.decode.prompt.split())
    kept = []
    for seg in sorted(decoded.segments, key=lambda s: (s.segment.start_s, s.channel)):
        res = seg.result
        text = normalize_text(res.text)
        if not options.guard.keep(text, avg_logprob=res.avg_logprob, no_speech_prob=res.no_speech_prob,
                                  compression_ratio=res.compression_ratio, duration_s=seg.segment.duration_s,
                                  prompt_words=prompt_words):
            continue
        kept.append((seg, text))
    roles = roles or options.roles
    inferred = [roles([(t, s.segment.start_s, s.segment.end_s) for s, t in kept])] if prepared.roles_inferred else []
    records = []
    for i, (seg, text) in enumerate(kept):
        channel = audio[seg.channel]
        role = inferred[0][i] if channel.role is None else channel.role
        start, end = round(seg.segment.start_s, 3), round(seg.segment.end_s, 3)
        utt = Utterance(role=role, start_s=start, end_s=end, text=text,
                        avg_logprob=round(seg.result.avg_logprob, 4), no_speech_prob=round(seg.result.no_speech_prob, 4),
                        role_inferred=channel.role is None, loudness_db=loudness_db(channel.audio, start, end))
        records.append(UtteranceRecord(utt, seg.channel, round(seg.result.compression_ratio, 3),
                                       speech_rate_cpm(text, end - start)))
    return records
