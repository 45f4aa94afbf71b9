"""Stored transcripts as the rules see them: the current Transcript of a call, its
utterances and features, turned into a CallTranscript."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain import CallFeatures, CallMeta, CallTranscript, Utterance
from ..errors import NotFound
from .models import Analysis, Call, ClassifierScore, Transcript, UtteranceRow

log = logging.getLogger(__name__)


def stored_features(doc: dict | None) -> CallFeatures | None:
    """The features stored with a transcript; None (the rules then compute timing features
    from the utterances) when there are none or they cannot be read."""
    if not doc:
        return None
    try:
        return CallFeatures.from_json(doc)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("stored features unreadable (%s): computing them from the utterances", e)
        return None


def current_transcript(session: Session, call: Call) -> tuple[Transcript, CallTranscript, list[int]] | None:
    """The call's current transcript as a CallTranscript, with the stored idx of each utterance."""
    transcript = session.scalars(select(Transcript).where(Transcript.call_id == call.id, Transcript.is_current.is_(True))
                                 .order_by(Transcript.id.desc())).first()
    if transcript is None:
        return None
    rows = session.scalars(select(UtteranceRow).where(UtteranceRow.transcript_id == transcript.id)
                           .order_by(UtteranceRow.idx)).all()
    utts = tuple(Utterance(r.role, r.start_s, r.end_s, r.text, r.avg_logprob, r.no_speech_prob, r.role_inferred,
                           r.loudness_db) for r in rows)
    features = stored_features(transcript.features)
    meta = CallMeta(call_id=call.call_id, agent_id=call.agent_id, team=call.team, started_at=call.started_at,
                    direction=call.direction, business_line=call.business_line, channel_layout=call.channel_layout,
                    customer_ref=call.customer_ref)
    duration = call.duration_s or (features.duration_s if features else max((u.end_s for u in utts), default=0.0))
    return transcript, CallTranscript(meta, utts, features, duration), [r.idx for r in rows]


def call_named(session: Session, call_id: str) -> Call:
    """The call with external id ``call_id``; NotFound otherwise."""
    call = session.scalars(select(Call).where(Call.call_id == call_id)).first()
    if call is None:
        raise NotFound(f"no call {call_id!r}")
    return call


def transcript_of(session: Session, call_id: str) -> CallTranscript:
    """The current transcript of the call with external id ``call_id``; NotFound otherwise."""
    loaded = current_transcript(session, call_named(session, call_id))
    if loaded is None:
        raise NotFound(f"call {call_id!r} has no current transcript")
    return loaded[1]


def current_scores(session: Session, call: Call) -> list[ClassifierScore]:
    """The classifier predictions stored with the call's current analysis (none before one)."""
    return list(session.scalars(
        select(ClassifierScore).join(Analysis, Analysis.id == ClassifierScore.analysis_id)
        .where(ClassifierScore.call_id == call.id, Analysis.is_current.is_(True))
        .order_by(ClassifierScore.model_name)))
