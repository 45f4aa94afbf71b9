"""Character error rate of the transcription stage on the labelled sample calls.

Each sample has a sidecar JSON with the turns actually spoken (role, text, times). The call is
run through the same prepare/decode/normalise path as ``qa transcribe`` (no database), and per
role the time-ordered reference turns are compared with the time-ordered hypothesis utterances
after the same normalisation (punctuation and spaces stripped; digits spelled as Chinese digits
on both sides, since the references write numbers out and Whisper writes them as digits).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import QAError
from .text import char_error_rate, normalize_text, strip_for_match

log = logging.getLogger(__name__)

CALLS_PER_DECODE = 8  # sample calls whose windows share the decoder's batches

# Phrases whose loss changes a compliance verdict; listed when the reference has them and the
# hypothesis of that call does not.
KEY_PHRASES: tuple[str, ...] = (
    "保本保息", "保本", "保息", "年化利率", "利率", "理财", "风险", "验证码", "投诉", "手续费",
    "征信", "存款", "收益", "密码", "录音", "工号", "身份证", "逾期", "贷款", "分期",
)

_DIGITS = str.maketrans("0123456789", "零一二三四五六七八九")


def cer_form(text: str) -> str:
    return strip_for_match(normalize_text(text)).translate(_DIGITS)


@dataclass(frozen=True)
class Sample:
    call_id: str
    path: Path
    channel_layout: str
    turns: tuple[tuple[str, str, float, float], ...]  # (role, text, start_s, end_s)


@dataclass
class Score:
    errors: int = 0
    chars: int = 0

    def add(self, reference: str, hypothesis: str) -> None:
        e, n = char_error_rate(cer_form(reference), cer_form(hypothesis))
        self.errors += e
        self.chars += n

    @property
    def cer(self) -> float | None:
        return self.errors / self.chars if self.chars else None


@dataclass
class CallEval:
    call_id: str
    channel_layout: str
    roles: dict[str, Score]
    overall: Score
    missed_phrases: list[str]
    hypothesis: dict[str, str]


@dataclass
class AsrEvalReport:
    model: str
    sha256: str
    calls: list[CallEval] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0

    def role_score(self, role: str) -> Score:
        total = Score()
        for c in self.calls:
            if role in c.roles:
                total.errors += c.roles[role].errors
                total.chars += c.roles[role].chars
        return total

    @property
    def overall(self) -> Score:
        return Score(sum(c.overall.errors for c in self.calls), sum(c.overall.chars for c in self.calls))


def read_samples(samples_dir: str | Path) -> list[Sample]:
    root = Path(samples_dir)
    manifest = root / "manifest.csv"
    try:
        with open(manifest, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise QAError(f"cannot read sample manifest: {e}", path=str(manifest)) from e
    samples = []
    for row in rows:
        audio = root / row["file"]
        sidecar = audio.with_suffix(".json")
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise QAError(f"cannot read sidecar: {e}", path=str(sidecar)) from e
        turns = tuple((t["role"], t["text"], float(t["start_s"]), float(t["end_s"])) for t in doc.get("turns", ()))
        samples.append(Sample(row["call_id"], audio, row.get("channel_layout") or doc["channel_layout"], turns))
    return samples


def _joined(items: list[tuple[float, str]]) -> str:
    return "".join(text for _, text in sorted(items))


def evaluate_samples(settings, samples: list[Sample], *, asr=None,
                     progress: Callable[[int, int], None] | None = None) -> AsrEvalReport:
    from .stage import CallAudio, build_utterances, load_asr, prepare_calls

    asr = asr or load_asr(settings)
    report = AsrEvalReport(asr.loaded.name, asr.loaded.sha256)
    started = time.perf_counter()
    prepared = prepare_calls(settings, [CallAudio(i, s.call_id, str(s.path), s.channel_layout)
                                        for i, s in enumerate(samples)], asr.options)
    for outcome in prepared:
        if isinstance(outcome, Exception):  # a sample that cannot be read makes the figures meaningless
            raise outcome
    step = CALLS_PER_DECODE
    for start in range(0, len(samples), step):
        chunk = prepared[start : start + step]
        for sample, prep, dec in zip(samples[start : start + step], chunk, asr.decode(chunk)):
            records = build_utterances(prep, dec, asr.options)
            hyp = [(r.utterance.start_s, r.utterance.role, r.utterance.text) for r in records]
            roles = {}
            for role in sorted({t[0] for t in sample.turns}):
                score = Score()
                score.add(_joined([(t[2], t[1]) for t in sample.turns if t[0] == role]),
                          _joined([(h[0], h[2]) for h in hyp if h[1] == role]))
                roles[role] = score
            overall = Score()
            ref_text = _joined([(t[2], t[1]) for t in sample.turns])
            hyp_text = _joined([(h[0], h[2]) for h in hyp])
            overall.add(ref_text, hyp_text)
            ref_bare, hyp_bare = cer_form(ref_text), cer_form(hyp_text)
            missed = [p for p in KEY_PHRASES if p in ref_bare and p not in hyp_bare]
            report.calls.append(CallEval(sample.call_id, sample.channel_layout, roles, overall, missed,
                                         {role: _joined([(h[0], h[2]) for h in hyp if h[1] == role]) for role in roles}))
            report.audio_s += prep.duration_s
        if progress is not None:
            progress(min(len(samples), start + step), len(samples))
    report.wall_s = time.perf_counter() - started
    return report
