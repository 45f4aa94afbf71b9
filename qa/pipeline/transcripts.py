"""The transcribe stage's database side: one decoded call's channels, transcript, utterances
and features written in the caller's transaction, and the call marked transcribed.

A transcript is unique per (call, model sha256, options sha256): storing the same call again
with the same model and options finds the existing row (``force`` rewrites its utterances),
while a new model or options adds a transcript and the older ones stop being current.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..asr.features import call_features
from ..asr.stage import DecodedCall, PreparedCall, Transcriber, build_utterances
from ..domain import SAMPLE_RATE, CallStatus
from ..errors import TranscriptionError
from ..storage.models import Call, CallChannel, Transcript, UtteranceRow
from ..timeutil import utcnow


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
        row.role, row.duration_s, row.rms_db = ch.role, len(ch.audio) / SAMPLE_RATE, ch.rms_db
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
        transcript.features = features.to_json()
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
    # a recording in which nobody spoke (noise, a tone, hold music) has nothing to check: it is
    # recorded as such instead of going to review with every must-say rule "missing"
    call.status = CallStatus.TRANSCRIBED if count else CallStatus.NO_SPEECH
    call.error_code = call.error_message = None
    return count
