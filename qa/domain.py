"""Typed values passed between stages. Stages take and return these, never loose dicts;
the ORM rows in :mod:`qa.models` are how they are stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

AGENT = "agent"
CUSTOMER = "customer"
ROLES = (AGENT, CUSTOMER)

SEVERITIES = ("fatal", "major", "minor")

CHANNEL_LAYOUTS = ("stereo-agent-left", "stereo-agent-right", "mono")


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


@dataclass(frozen=True)
class CallTranscript:
    """Everything the analysis stage needs about one call."""

    meta: CallMeta
    utterances: tuple[Utterance, ...]
    features: CallFeatures | None = None
    duration_s: float = 0.0
