"""The vocabulary and typed values passed between stages. Stages take and return these,
never loose dicts; the ORM rows in :mod:`qa.storage.models` are how they are stored. Kept free
of heavy imports: the command line builds its options from these names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

SAMPLE_RATE = 16000  # Hz: what decoding produces and every speech stage reads (Whisper's rate)

AGENT = "agent"
CUSTOMER = "customer"
SPEAKER_ROLES = (AGENT, CUSTOMER)  # who speaks in a call; user roles are in qa.permissions

SEVERITIES = ("fatal", "major", "minor")

CHANNEL_LAYOUTS = ("stereo-agent-left", "stereo-agent-right", "mono")

TIERS = ("T1", "T2", "T3")  # review tiers, most urgent first
DECISIONS = ("confirmed", "rejected")  # an inspector's decision on a finding
VERDICTS = ("pass", "fail")  # the verdict that closes a review
APPEAL_OUTCOMES = ("upheld", "overturned")


class CallStatus(StrEnum):
    """Where a call is, in pipeline order; ``failed`` can follow any of them."""

    REGISTERED = "registered"
    TRANSCRIBED = "transcribed"
    NO_SPEECH = "no_speech"  # transcribed, and nobody spoke: nothing to check or review
    ANALYZED = "analyzed"
    SCORED = "scored"  # assessed; no review needed
    ROUTED = "routed"  # assessed and in a review queue
    FAILED = "failed"


CALL_STATUSES = tuple(s.value for s in CallStatus)


class ReviewStatus(StrEnum):
    """A review item's life cycle: open -> claimed (-> open on release or claim expiry) ->
    closed (a verdict) -> appealed (fail verdicts only) -> appeal_decided."""

    OPEN = "open"
    CLAIMED = "claimed"
    CLOSED = "closed"
    APPEALED = "appealed"
    APPEAL_DECIDED = "appeal_decided"


REVIEW_STATUSES = tuple(s.value for s in ReviewStatus)


@dataclass(frozen=True)
class CallMeta:
    """What is known about a call besides its audio."""

    call_id: str
    agent_id: str | None = None
    team: str | None = None
    started_at: datetime | None = None
    direction: str | None = None
    business_line: str | None = None
    channel_layout: str = "stereo-agent-left"
    # the customer or debtor the call was with: an opaque id, or the keyed hash of a phone
    # number (qa.ingest.customers); calls sharing it are one customer's contacts
    customer_ref: str | None = None


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech by one party, in call time (seconds from the start)."""

    role: str
    start_s: float
    end_s: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    role_inferred: bool = False
    loudness_db: float | None = None

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


@dataclass(frozen=True)
class SilenceGap:
    start_s: float
    duration_s: float


@dataclass(frozen=True)
class Overlap:
    start_s: float
    duration_s: float
    interrupter: str  # the role that started talking while the other was still talking


@dataclass(frozen=True)
class RoleFeatures:
    talk_time_s: float = 0.0
    utterances: int = 0
    chars: int = 0
    speech_rate_cpm: float = 0.0  # characters per minute over the role's talk time
    mean_loudness_db: float | None = None


@dataclass(frozen=True)
class CallFeatures:
    """Acoustic and timing features of one call; rules read these."""

    duration_s: float
    roles: dict[str, RoleFeatures] = field(default_factory=dict)
    silences: tuple[SilenceGap, ...] = ()
    overlaps: tuple[Overlap, ...] = ()

    @property
    def max_silence_s(self) -> float:
        return max((s.duration_s for s in self.silences), default=0.0)

    def to_json(self) -> dict:
        return {
            "duration_s": self.duration_s,
            "roles": {
                role: {"talk_time_s": rf.talk_time_s, "utterances": rf.utterances, "chars": rf.chars,
                       "speech_rate_cpm": rf.speech_rate_cpm, "mean_loudness_db": rf.mean_loudness_db}
                for role, rf in self.roles.items()
            },
            "silences": [{"start_s": s.start_s, "duration_s": s.duration_s} for s in self.silences],
            "overlaps": [{"start_s": o.start_s, "duration_s": o.duration_s, "interrupter": o.interrupter}
                         for o in self.overlaps],
        }

    @classmethod
    def from_json(cls, doc: dict) -> CallFeatures:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError on a bad document."""
        return cls(
            duration_s=float(doc["duration_s"]),
            roles={
                role: RoleFeatures(
                    talk_time_s=float(rf["talk_time_s"]), utterances=int(rf["utterances"]), chars=int(rf["chars"]),
                    speech_rate_cpm=float(rf["speech_rate_cpm"]),
                    mean_loudness_db=None if rf.get("mean_loudness_db") is None else float(rf["mean_loudness_db"]),
                )
                for role, rf in doc.get("roles", {}).items()
            },
            silences=tuple(SilenceGap(float(s["start_s"]), float(s["duration_s"])) for s in doc.get("silences", ())),
            overlaps=tuple(Overlap(float(o["start_s"]), float(o["duration_s"]), str(o["interrupter"]))
                           for o in doc.get("overlaps", ())),
        )


@dataclass(frozen=True)
class PriorContact:
    """Another call with the same customer, known before this one arrived: what cross-call
    rules (contact frequency, contact after a do-not-call request, repeat complaints) read."""

    call_id: str
    started_at: datetime | None
    direction: str | None = None
    business_line: str | None = None
    effective: bool = True  # it connected and someone spoke (transcribed, not no_speech or failed)
    categories: frozenset[str] = frozenset()  # the categories of its findings under the same rule pack


@dataclass(frozen=True)
class CallTranscript:
    """Everything the analysis stage needs about one call."""

    meta: CallMeta
    utterances: tuple[Utterance, ...]
    features: CallFeatures | None = None
    duration_s: float = 0.0
    history: tuple[PriorContact, ...] = ()  # the customer's earlier-known calls (empty: none, or unknown)
