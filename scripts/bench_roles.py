#!/usr/bin/env python
"""Speaker roles of mono recordings: accuracy per turn position, heuristic and role model.

Two sources, each printed per position in the call (1st, 2nd, 3rd, 4th-5th, 6th-10th, 11th
on) and for the opening (every piece of the agent's first turn given to the agent, the case
where ``greeting.missing`` would fire on a call that greeted):

* **samples, mono**: the bundled calls transcribed as mono recordings (``--db``, a database
  where ``qa ingest`` of a manifest with ``channel_layout`` mono and ``qa transcribe`` ran),
  so the pieces are what VAD and Whisper really cut; each piece's true role is that of the
  sidecar turn it overlaps most.
* **corpus dialogues** (``data/eval``, dev and test): the reference turns, and the same turns
  cut in two the way VAD cuts a long turn at a breath (``--cut-gap`` seconds between the
  pieces).

    .venv/bin/python scripts/bench_roles.py --db sqlite:////tmp/mono/var/qa.db
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qa.asr.roles import RoleHeuristic  # noqa: E402
from qa.classifiers.roles import load_role_assigner  # noqa: E402
from qa.domain import AGENT  # noqa: E402
from qa.rules.corpus import read_split  # noqa: E402
from qa.rules.evaluate import read_samples  # noqa: E402

BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 10**9))


@dataclass
class Piece:
    text: str
    start_s: float
    end_s: float
    role: str  # the truth
    turn: int  # index of the true turn it belongs to


@dataclass
class Tally:
    right: dict[int, int] = field(default_factory=dict)
    total: dict[int, int] = field(default_factory=dict)
    openings: int = 0
    openings_right: int = 0

    def add(self, pieces: list[Piece], roles: list[str]) -> None:
        for n, (piece, role) in enumerate(zip(pieces, roles), 1):
            b = next(k for k, (lo, hi) in enumerate(BUCKETS) if lo <= n <= hi)
            self.total[b] = self.total.get(b, 0) + 1
            self.right[b] = self.right.get(b, 0) + (role == piece.role)
        first_agent = next((p.turn for p in pieces if p.role == AGENT), None)
        if first_agent is not None:
            self.openings += 1
            self.openings_right += all(r == AGENT for p, r in zip(pieces, roles) if p.turn == first_agent)

    def line(self, name: str) -> str:
        cells = []
        for b, (lo, hi) in enumerate(BUCKETS):
            label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
            n = self.total.get(b, 0)
            cells.append(f"{label}: {100 * self.right.get(b, 0) / n:5.1f}%" if n else f"{label}: -")
        overall = sum(self.right.values()) / max(1, sum(self.total.values()))
        return (f"{name:<34} all {100 * overall:5.1f}% ({sum(self.total.values())} pieces)  "
                + "  ".join(cells) + f"  opening to agent {self.openings_right}/{self.openings}")


def cut_in_two(pieces: list[Piece], gap_s: float, min_chars: int = 12) -> list[Piece]:
    """Each turn of at least ``min_chars`` characters as two pieces, split at the clause
    break nearest its middle (the middle when it has none), ``gap_s`` apart."""
    out = []
    for p in pieces:
        if len(p.text) < min_chars:
            out.append(p)
            continue
        middle = len(p.text) // 2
        breaks = [i + 1 for i, c in enumerate(p.text[:-1]) if c in "，,。；;？?！!"]
        at = min(breaks, key=lambda i: abs(i - middle)) if breaks else middle
        span = p.end_s - p.start_s - gap_s
        split = p.start_s + span * at / len(p.text)
        out += [Piece(p.text[:at], p.start_s, split, p.role, p.turn),
                Piece(p.text[at:], split + gap_s, p.end_s, p.role, p.turn)]
    return out


def corpus_calls(split: str) -> list[list[Piece]]:
    _, dialogues = read_split(REPO / "data" / "eval", split)
    return [[Piece(u.text, u.start_s, u.end_s, u.role, n) for n, u in enumerate(d.sample.reference.utterances)]
            for d in dialogues]


def sample_calls(db_url: str) -> list[list[Piece]]:
    """The mono transcripts stored in ``db_url``, each piece labelled with its sidecar turn."""
    from qa import storage as qadb
    from qa.storage.transcripts import transcript_of

    truth = {s.call_id: s.reference for s in read_samples(REPO / "audio_samples")}
    factory = qadb.session_factory(qadb.make_engine(db_url))
    calls = []
    with factory() as session:
        for call_id, reference in sorted(truth.items()):
            transcript = transcript_of(session, call_id)
            pieces = []
            for u in transcript.utterances:
                overlaps = [(min(u.end_s, r.end_s) - max(u.start_s, r.start_s), n)
                            for n, r in enumerate(reference.utterances)]
                overlap, n = max(overlaps)
                if overlap > 0:
                    pieces.append(Piece(u.text, u.start_s, u.end_s, reference.utterances[n].role, n))
            calls.append(pieces)
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="Database with the samples transcribed as mono recordings.")
    parser.add_argument("--models-dir", default=str(REPO / "models"))
    parser.add_argument("--cut-gap", type=float, default=0.7,
                        help="Seconds between the two pieces of a cut turn (the VAD keeps shorter pauses inside).")
    args = parser.parse_args()
    assigners = {"heuristic": RoleHeuristic(), "role model": load_role_assigner(args.models_dir)}
    sources = []
    if args.db:
        sources.append(("samples, mono ASR", sample_calls(args.db)))
    for split in ("dev", "test"):
        calls = corpus_calls(split)
        sources.append((f"corpus {split}, turns", calls))
        sources.append((f"corpus {split}, turns cut in two", [cut_in_two(c, args.cut_gap) for c in calls]))
    for source, calls in sources:
        print(f"== {source}: {len(calls)} calls")
        for name, assign in assigners.items():
            tally = Tally()
            for pieces in calls:
                tally.add(pieces, assign([(p.text, p.start_s, p.end_s) for p in pieces]))
            print(tally.line(f"  {name}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
