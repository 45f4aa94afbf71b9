"""Per-call state shared by every rule: normalised texts, per-role joined texts, pinyin
indexes and word boundaries, each computed at most once per call and only when a rule needs it."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import time, tzinfo

from ..asr.features import call_features
from ..domain import CallFeatures, CallTranscript
from ..timeutil import zone
from .calltype import InferredLine
from .text import normalize_with_breaks, sound_table

ANY_ROLE = "any"
SEP = "\n"  # joins utterances; no term or regex (without (?s)) can match across it


@dataclass(frozen=True)
class Hit:
    """Where a condition matched. ``utt`` indexes the transcript's utterances; ``start``/``end``
    are character offsets in that utterance's normalised text. Hits from features (a silence
    gap, an overlap) have ``utt`` None and carry their own times."""

    utt: int | None
    start: int = 0
    end: int = 0
    text: str = ""
    start_s: float | None = None
    end_s: float | None = None
    term: str = ""  # the rule term a pinyin hit sounded like (its text is what was said)
    calls: tuple[str, ...] = ()  # other calls a cross-call hit cites as its evidence


@dataclass
class RoleText:
    """The normalised utterances of one role joined with SEP, and where each one starts."""

    text: str
    starts: list[int]
    utts: list[int]
    # the text as UTF-8 and where each utterance starts in it, for the RE2 scans (which
    # work on bytes); a sound string has the same byte layout (text.SoundTable)
    data: bytes = field(init=False, repr=False)
    byte_starts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data = self.text.encode()
        self.byte_starts = [0]
        for piece in self.text.split(SEP)[:-1]:
            self.byte_starts.append(self.byte_starts[-1] + len(piece.encode()) + 1)

    def locate(self, pos: int) -> tuple[int, int]:
        """(utterance index, offset inside it) of a position in the joined text."""
        k = bisect_right(self.starts, pos) - 1
        return self.utts[k], pos - self.starts[k]

    def locate_bytes(self, start: int, end: int) -> tuple[int, int, int]:
        """(utterance index, start, end in characters inside it) of a byte span of ``data``
        that lies inside one utterance."""
        k = bisect_right(self.byte_starts, start) - 1
        first = self.byte_starts[k]
        off = len(self.data[first:start].decode())
        return self.utts[k], off, off + len(self.data[start:end].decode())


@dataclass(frozen=True)
class HoursWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> HoursWindow:
        start, sep, end = text.partition("-")
        if not sep:
            raise ValueError(f"contact hours must look like 08:00-21:00, got {text!r}")
        return cls(_hhmm(start), _hhmm(end))

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # a window across midnight


def _hhmm(text: str) -> time:
    hh, sep, mm = text.strip().partition(":")
    if not (sep and hh.isdigit() and mm.isdigit()) or not (0 <= int(hh) <= 24 and 0 <= int(mm) < 60):
        raise ValueError(f"time must look like 08:00, got {text!r}")
    return time(23, 59, 59) if int(hh) == 24 else time(int(hh), int(mm))


@dataclass(frozen=True)
class EngineOptions:
    contact_hours: str = "08:00-21:00"
    timezone: str = "Asia/Shanghai"  # the call centre's clock: stored UTC start times are read in it

    def validate(self) -> None:
        HoursWindow.parse(self.contact_hours)
        self.tz  # noqa: B018 - raises on an unknown zone

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)


@dataclass
class CallContext:
    """What the conditions read. Build one per call; everything expensive is lazy and cached."""

    transcript: CallTranscript
    options: EngineOptions
    # the business line the topic classifier gave a call whose manifest names none
    inferred_line: InferredLine | None = None
    texts: list[str] = field(init=False)
    breaks: list[frozenset[int]] = field(init=False)  # clause breaks in each normalised text
    quoted: list[tuple[tuple[int, int], ...]] = field(init=False)  # stretches in quotation marks
    roles: list[str] = field(init=False)
    turn_no: list[int] = field(init=False)  # index of each utterance among its role's turns
    offsets: list[int] = field(init=False)  # call-wide character offset of each utterance
    _role_texts: dict[str, RoleText] = field(init=False, default_factory=dict)
    _sounds: dict[tuple[str, str], bytes] = field(init=False, default_factory=dict)
    _bounds: dict[int, frozenset[int]] = field(init=False, default_factory=dict)
    _features: CallFeatures | None = field(init=False, default=None)
    _cache: dict = field(init=False, default_factory=dict)  # per-call results of operators (detector scores)
    # categories of the findings this call's own (single-call) rules produced: set by the
    # engine before it evaluates the rules that look at other calls
    own_categories: frozenset[str] = field(init=False, default=frozenset())
    # set by the engine while it looks for a required statement on a call whose roles were
    # inferred (mono recordings): text operators then search both roles' utterances
    lenient_roles: bool = field(init=False, default=False)
    # the engine's matchers.Prefilter: which RE2 operators can match anywhere in this call
    prefilter: object | None = None

    @property
    def roles_inferred(self) -> bool:
        return any(u.role_inferred for u in self.transcript.utterances)

    def __post_init__(self) -> None:
        normalized = [normalize_with_breaks(u.text) for u in self.transcript.utterances]
        self.texts = [n.text for n in normalized]
        self.breaks = [n.breaks for n in normalized]
        self.quoted = [n.quoted for n in normalized]
        self.roles = [u.role for u in self.transcript.utterances]
        counts: dict[str, int] = {}
        self.turn_no = []
        self.offsets = []
        pos = 0
        for role, text in zip(self.roles, self.texts):
            self.turn_no.append(counts.get(role, 0))
            counts[role] = counts.get(role, 0) + 1
            self.offsets.append(pos)
            pos += len(text) + 1
        self.turn_counts = counts

    @property
    def utterances(self):
        return self.transcript.utterances

    @property
    def features(self) -> CallFeatures:
        """The stored features, or (reference transcripts, rule test snippets) the timing
        features computed from the utterances the way the features stage does."""
        if self._features is None:
            self._features = self.transcript.features or call_features(
                self.transcript.utterances, self.transcript.duration_s)
        return self._features

    @property
    def duration_s(self) -> float:
        return self.transcript.duration_s or self.features.duration_s

    def role_text(self, role: str) -> RoleText:
        cached = self._role_texts.get(role)
        if cached is None:
            utts = [i for i, r in enumerate(self.roles) if role == ANY_ROLE or r == role]
            starts, pos = [], 0
            for i in utts:
                starts.append(pos)
                pos += len(self.texts[i]) + 1
            cached = RoleText(SEP.join(self.texts[i] for i in utts), starts, utts)
            self._role_texts[role] = cached
        return cached

    def sound_text(self, role: str, level: str) -> bytes:
        """The role's joined text as a sound string (see text.SoundTable), position for
        position and byte for byte, in UTF-8."""
        key = (role, level)
        cached = self._sounds.get(key)
        if cached is None:
            cached = self._sounds[key] = sound_table(level).translate(self.role_text(role).text).encode()
        return cached

    def may_match(self, op) -> bool:
        """False when the prefilter knows ``op`` has no match anywhere in the call."""
        return self.prefilter is None or self.prefilter.allows(self, op)

    def cached(self, key, compute):
        """``compute()`` once per call and ``key``."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def word_bounds(self, utt: int, tokenizer) -> frozenset[int]:
        """Offsets in an utterance's normalised text where a jieba word starts or ends."""
        cached = self._bounds.get(utt)
        if cached is None:
            bounds = {0}
            pos = 0
            for token in tokenizer.cut(self.texts[utt], HMM=True):
                pos += len(token)
                bounds.add(pos)
            cached = frozenset(bounds)
            self._bounds[utt] = cached
        return cached

    def hit_times(self, hit: Hit) -> tuple[float | None, float | None]:
        if hit.utt is None:
            return hit.start_s, hit.end_s
        u = self.utterances[hit.utt]
        return u.start_s, u.end_s

    def global_pos(self, hit: Hit) -> int:
        return self.offsets[hit.utt] + hit.start if hit.utt is not None else -1
