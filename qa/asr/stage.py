"""The transcription stage: recordings -> role-labelled, time-stamped Simplified-Chinese
utterances, channel rows and call features.

Three steps, so the nightly pipeline can overlap them (CPU workers prepare the next calls while
the GPU decodes):

* :func:`prepare_calls` (CPU): decode the files, voice activity detection over all their channels;
* :meth:`Transcriber.decode` (GPU or CPU): the speech segments of every call in the batch
  become decoder rows (packed windows, or one per segment); rows from many calls share the batch;
* :func:`store_transcript` (database): one transaction per call.

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
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from .engine import BatchedDecoder, DecodeOptions, WindowResult
from .packing import AligningDecoder, PackedWindow, PackOptions, Piece, pack
from .roles import RoleAssigner, assign_roles, role_provenance
from .text import TextGuard, normalize_text
from .vad import SpeechSegment, Vad, VadOptions, cut
from .weights import LoadedModel, pick_device, resolve_model
from ..ingest.audio import DecodedAudio, channel_roles, decode_file
from ..classifiers.roles import RolesFromModel
from ..config import Settings
from ..domain import Utterance
from ..errors import AudioError, ConfigError, QAError, TranscriptionError
from .features import FeatureOptions, call_features, features_to_json, loudness_db, speech_rate_cpm
from ..storage.models import Call, CallChannel, Transcript, UtteranceRow, utcnow

log = logging.getLogger("qa.asr.stage")

TEXT_VERSION = "normalize-v1"  # bump when qa.asr.text changes what is stored
TO_TRANSCRIBE = ("registered", "prepared")


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
    calls_per_batch: int = 8  # calls prepared and decoded together by transcribe_calls
    roles: RoleAssigner = assign_roles  # mono recordings; from_settings: the learned role model

    def validate(self) -> None:
        self.decode.validate()
        self.vad.validate()
        self.guard.validate()
        self.features.validate()
        self.pack.validate()
        if self.calls_per_batch < 1:
            raise ValueError("calls_per_batch must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> AsrOptions:
        decode = DecodeOptions(language="zh", prompt=settings.asr_prompt, batch_size=settings.asr_batch_size,
                               compute_type=compute_type(settings))
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


@dataclass
class TranscribeReport:
    calls: int = 0
    transcribed: int = 0
    failed: int = 0
    utterances: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (call_id, code, message)

    @property
    def speed(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


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
                                                           loudness_db(samples, 0.0, len(samples) / 16000)))
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
    kept = []
    for seg in sorted(decoded.segments, key=lambda s: (s.segment.start_s, s.channel)):
        res = seg.result
        text = normalize_text(res.text)
        if not options.guard.keep(text, avg_logprob=res.avg_logprob, no_speech_prob=res.no_speech_prob,
                                  compression_ratio=res.compression_ratio):
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


def store_transcript(session: Session, asr: Transcriber, prepared: PreparedCall, decoded: DecodedCall,
                     *, force: bool = False) -> int:
    """Write channels, the transcript, its utterances and features, and mark the call
    transcribed, in the caller's transaction. Returns the number of utterances stored."""
    call = session.get(Call, prepared.call_pk)
    if call is None:
        raise TranscriptionError(f"call #{prepared.call_pk} ({prepared.call_id}) no longer exists")
    options = asr.options
    records = build_utterances(prepared, decoded, options)
    call.duration_s = prepared.duration_s or call.duration_s
    call.sample_rate = prepared.sample_rate or call.sample_rate
    call.channels = prepared.n_channels or call.channels
    call.audio_format = prepared.audio_format or call.audio_format
    call.roles_inferred = prepared.roles_inferred
    existing = {ch.channel_index: ch for ch in session.scalars(select(CallChannel).where(CallChannel.call_id == call.id))}
    for ch in prepared.channels:
        row = existing.get(ch.index) or CallChannel(call_id=call.id, channel_index=ch.index)
        row.role, row.duration_s, row.rms_db = ch.role, len(ch.audio) / 16000, ch.rms_db
        row.speech_s = round(sum(s.duration_s for s in ch.segments), 3)
        row.speech_segments = [[round(s.start_s, 3), round(s.end_s, 3)] for s in ch.segments]
        row.vad = options.vad.as_dict()
        session.add(row)
    sha = options.sha256
    transcript = session.scalars(select(Transcript).where(
        Transcript.call_id == call.id, Transcript.asr_sha256 == asr.loaded.sha256, Transcript.options_sha256 == sha)).first()
    if transcript is not None and not force:
        count = len(transcript.utterances)
    else:
        if transcript is None:
            transcript = Transcript(call_id=call.id, asr_model=asr.loaded.name, asr_sha256=asr.loaded.sha256,
                                    options=options.as_dict(), options_sha256=sha)
            session.add(transcript)
        else:
            transcript.utterances.clear()
            session.flush()  # the old rows go before new ones reuse their idx
        features = call_features([r.utterance for r in records], prepared.duration_s, options.features)
        transcript.features = features_to_json(features)
        transcript.created_at = utcnow()
        for idx, r in enumerate(records):
            u = r.utterance
            transcript.utterances.append(UtteranceRow(
                call_id=call.id, idx=idx, role=u.role, role_inferred=u.role_inferred, channel_index=r.channel_index,
                start_s=u.start_s, end_s=u.end_s, text=u.text, avg_logprob=u.avg_logprob,
                no_speech_prob=u.no_speech_prob, compression_ratio=r.compression_ratio,
                speech_rate_cpm=r.speech_rate_cpm, loudness_db=u.loudness_db))
        count = len(records)
    session.flush()
    session.execute(update(Transcript).where(Transcript.call_id == call.id, Transcript.id != transcript.id)
                    .values(is_current=False))
    transcript.is_current = True
    call.status, call.error_code, call.error_message = "transcribed", None, None
    return count


def _mark_failed(factory: sessionmaker[Session], call_pk: int, code: str, message: str) -> None:
    with factory() as session:
        session.execute(update(Call).where(Call.id == call_pk).values(
            status="failed", error_code=code, error_message=message[:4000], updated_at=utcnow()))
        session.commit()


def _error(e: Exception) -> tuple[str, str]:
    return (e.code if isinstance(e, QAError) else "asr.internal"), str(e)


def transcribe_calls(factory: sessionmaker[Session], settings: Settings, *, call_ids: Sequence[str] | None = None,
                     force: bool = False, progress: Callable[[int, int], None] | None = None,
                     asr: Transcriber | None = None) -> TranscribeReport:
    """Transcribe the calls waiting for it (``registered``/``prepared``; every call with
    ``force``), committing call by call. A call that fails is marked ``failed`` with its error
    code and the batch goes on; a model that cannot load raises (every call would fail)."""
    started = time.perf_counter()
    with factory() as session:
        query = select(Call.id, Call.call_id, Call.file_path, Call.channel_layout).order_by(Call.id)
        if call_ids:
            query = query.where(Call.call_id.in_(list(call_ids)))
        if not force:
            query = query.where(Call.status.in_(TO_TRANSCRIBE))
        todo = session.execute(query).all()
    report = TranscribeReport(calls=len(todo))
    if not todo:
        return report
    asr = asr or load_asr(settings)
    step = asr.options.calls_per_batch

    def fail(pk: int, call_id: str, e: Exception) -> None:
        code, message = _error(e)
        log.warning("call %s failed: [%s] %s", call_id, code, message, exc_info=not isinstance(e, QAError))
        _mark_failed(factory, pk, code, message)
        report.failed += 1
        report.failures.append((call_id, code, message))

    done = 0
    for start in range(0, len(todo), step):
        batch = []
        sources = [CallAudio(*row) for row in todo[start : start + step]]
        for source, outcome in zip(sources, prepare_calls(settings, sources, asr.options)):
            if isinstance(outcome, Exception):  # one bad recording must not stop the batch
                fail(source.call_pk, source.call_id, outcome)
            else:
                batch.append(outcome)
        for prepared, decoded in _decode_isolated(asr, batch, fail):
            try:
                with factory() as session:
                    report.utterances += store_transcript(session, asr, prepared, decoded, force=force)
                    session.commit()
                report.transcribed += 1
                report.audio_s += prepared.duration_s
            except Exception as e:  # noqa: BLE001 - isolate the call
                fail(prepared.call_pk, prepared.call_id, e)
        done = min(len(todo), start + step)
        if progress is not None:
            progress(done, len(todo))
    report.wall_s = time.perf_counter() - started
    log.info("transcribed %d of %d calls (%d failed), %.0f s of audio at %.1fx realtime",
             report.transcribed, report.calls, report.failed, report.audio_s, report.speed)
    return report


def _decode_isolated(asr: Transcriber, batch: list[PreparedCall], fail) -> list[tuple[PreparedCall, DecodedCall]]:
    """Decode the batch together; if that fails, call by call so only the culprit fails."""
    if not batch:
        return []
    try:
        return list(zip(batch, asr.decode(batch), strict=True))
    except Exception as e:  # noqa: BLE001 - fall back to isolating the call that broke the batch
        if len(batch) == 1:
            fail(batch[0].call_pk, batch[0].call_id, e)
            return []
        log.warning("decoding %d calls together failed (%s); decoding them one by one", len(batch), e)
    out = []
    for prepared in batch:
        out += _decode_isolated(asr, [prepared], fail)
    return out

