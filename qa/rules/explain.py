"""``qa rules explain``: for one call, every rule of a pack with fired / passed / N/A and why,
plus the evidence of each finding."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain import CallTranscript
from .calltype import InferredLine
from .engine import RuleEngine
from .results import FIRED, NA, CallResult


@dataclass(frozen=True)
class Explanation:
    call_id: str
    pack: str
    transcript: CallTranscript
    result: CallResult


def explain(engine: RuleEngine, transcript: CallTranscript, inferred_line: InferredLine | None = None) -> Explanation:
    pack = engine.pack
    return Explanation(transcript.meta.call_id, f"{pack.name} {pack.version} ({pack.sha256[:12]})", transcript,
                       engine.evaluate(transcript, inferred_line=inferred_line))


def render(expl: Explanation, show_transcript: bool = False) -> list[str]:
    r = expl.result
    lines = [f"call {expl.call_id} under {expl.pack}: score {r.score.score:g}"
             f"{' (fatal)' if r.score.fatal else ''}; {r.score.fired} fired, {r.score.passed} passed, {r.score.na} n/a"]
    if r.inferred_line is not None:
        lines.append(f"business line {r.inferred_line.business_line!r}: {r.inferred_line.note} (the manifest names none)")
    if show_transcript:
        lines += [f"  [{i}] {u.start_s:6.1f}-{u.end_s:6.1f} {u.role:8s} {u.text}"
                  for i, u in enumerate(expl.transcript.utterances)]
    order = {FIRED: 0, NA: 2}
    for o in sorted(r.outcomes, key=lambda o: (order.get(o.status, 1), o.rule_id)):
        lines.append(f"{o.status.upper():6s} {o.rule_id} [{o.category}, {o.severity}]")
        lines.append(f"       why: {o.why}")
        if o.finding is not None:
            f = o.finding
            when = f"{f.start_s:.1f}-{f.end_s:.1f}s" if f.start_s is not None else "-"
            lines.append(f"       evidence ({when}, utterances {list(f.utterance_idx)}): {f.evidence}")
    return lines
