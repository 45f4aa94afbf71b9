"""Per-category recall and precision of a rule pack on labelled sample calls
(``audio_samples/``: manifest.csv plus one JSON sidecar per call with ``turns``,
``expected_categories`` and ``must_not_fire``).

Only what a sidecar asserts is scored: a fired category in ``expected_categories`` is a true
positive, one in ``must_not_fire`` a false positive, an expected category that did not fire
a miss. Categories in neither list are reported as unasserted and not scored."""

from __future__ import annotations

import csv
import json
import random
from functools import lru_cache
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from ..domain import CallMeta, CallTranscript, Utterance
from ..errors import RuleError
from .engine import RuleEngine
from .results import FIRED
from .text import HOMOPHONE, sound_table


@dataclass(frozen=True)
class SampleCall:
    call_id: str
    reference: CallTranscript  # the turns as scripted and rendered
    expected: frozenset[str]
    must_not_fire: frozenset[str]


@dataclass(frozen=True)
class CallEval:
    call_id: str
    source: str  # asr | reference
    fired: frozenset[str]
    expected: frozenset[str]
    must_not_fire: frozenset[str]
    why: dict[str, str]  # category -> why its rules fired (false alarms) or not (misses)

    @property
    def missed(self) -> frozenset[str]:
        return self.expected - self.fired

    @property
    def false_alarms(self) -> frozenset[str]:
        return self.fired & self.must_not_fire


@dataclass(frozen=True)
class CategoryStats:
    category: str
    tp: int
    fn: int
    fp: int

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None


@dataclass(frozen=True)
class EvalReport:
    calls: tuple[CallEval, ...]
    categories: tuple[CategoryStats, ...]

    def totals(self) -> CategoryStats:
        return CategoryStats("all", sum(c.tp for c in self.categories), sum(c.fn for c in self.categories),
                             sum(c.fp for c in self.categories))


def read_samples(samples_dir: str | Path) -> list[SampleCall]:
    root = Path(samples_dir)
    manifest = root / "manifest.csv"
    try:
        with manifest.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise RuleError(f"cannot read the sample manifest: {e}", path=str(manifest)) from e
    samples = []
    for row in rows:
        sidecar = (root / row["file"]).with_suffix(".json")
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
            started = doc.get("started_at") or row.get("started_at")
            meta = CallMeta(call_id=row["call_id"], agent_id=doc.get("agent_id"), team=doc.get("team"),
                            started_at=datetime.fromisoformat(started) if started else None,
                            direction=doc.get("direction"), business_line=doc.get("business_line"),
                            channel_layout=doc.get("channel_layout", "stereo-agent-left"))
            utts = tuple(Utterance(t["role"], float(t["start_s"]), float(t["end_s"]), t["text"]) for t in doc["turns"])
            samples.append(SampleCall(row["call_id"], CallTranscript(meta, utts, None, float(doc["duration_s"])),
                                      frozenset(doc.get("expected_categories", ())),
                                      frozenset(doc.get("must_not_fire", ()))))
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise RuleError(f"invalid sample sidecar: {e}", path=str(sidecar)) from e
    return samples


def evaluate(engine: RuleEngine, samples: list[SampleCall],
             transcripts: dict[str, CallTranscript] | None = None, label: str = "asr") -> EvalReport:
    """Run the pack over each sample: on ``transcripts[call_id]`` (the stored ASR transcript,
    reported as ``label``) when given, else on the sidecar reference turns."""
    calls = []
    for sample in samples:
        transcript = (transcripts or {}).get(sample.call_id)
        source = label if transcript is not None else "reference"
        result = engine.evaluate(transcript or sample.reference)
        fired = frozenset(o.category for o in result.outcomes if o.status == FIRED)
        why: dict[str, str] = {}
        for o in result.outcomes:
            if (o.category in sample.expected and o.category not in fired) or \
                    (o.category in sample.must_not_fire and o.status == FIRED):
                why[o.category] = f"{o.rule_id}: {o.why}"
        calls.append(CallEval(sample.call_id, source, fired, sample.expected, sample.must_not_fire, why))
    cats = sorted({c for s in samples for c in s.expected | s.must_not_fire})
    stats = tuple(CategoryStats(cat,
                                tp=sum(cat in c.expected and cat in c.fired for c in calls),
                                fn=sum(cat in c.missed for c in calls),
                                fp=sum(cat in c.false_alarms for c in calls)) for cat in cats)
    return EvalReport(tuple(calls), stats)


@lru_cache(maxsize=1)
def _homophone_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for cp, sym in sound_table(HOMOPHONE).char_symbol.items():
        groups.setdefault(sym, []).append(chr(cp))
    return groups


def homophone_noise(text: str, rate: float, rng: random.Random, drop_rate: float = 0.0) -> str:
    """``text`` with a share ``rate`` of its Chinese characters replaced by random homophones
    (same main reading, any tone) and a share ``drop_rate`` dropped: the kind of errors
    Whisper makes (报本保锡 for 保本保息), independent of any ASR model."""
    table, groups = sound_table(HOMOPHONE), _homophone_groups()
    out = []
    for ch in text:
        sym = table.char_symbol.get(ord(ch))
        if sym is not None and drop_rate and rng.random() < drop_rate:
            continue
        out.append(rng.choice(groups[sym]) if sym is not None and rng.random() < rate else ch)
    return "".join(out)


def with_homophone_noise(transcript: CallTranscript, rate: float, rng: random.Random) -> CallTranscript:
    """The transcript with :func:`homophone_noise` in every utterance: a stress test of the
    rules against recognition errors."""
    return replace(transcript, utterances=tuple(replace(u, text=homophone_noise(u.text, rate, rng))
                                                for u in transcript.utterances))
