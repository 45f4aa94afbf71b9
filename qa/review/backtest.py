"""``qa rules backtest``: run a candidate pack over the stored transcripts and compare with
the current analyses (hits gained and lost per rule), and estimate each rule's precision
from inspectors' decisions (ReviewDecision confirmed / rejected on its findings)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..rules.engine import RuleEngine
from ..storage.models import Analysis, Call, Finding, ReviewDecision, Transcript
from ..storage.history import with_customer_history
from ..storage.transcripts import current_transcript


@dataclass(frozen=True)
class RuleBacktest:
    rule_id: str
    current_hits: int  # calls where the current analysis has this rule's finding
    candidate_hits: int  # calls where the candidate pack fires it
    gained: int
    lost: int
    confirmed: int  # inspectors' decisions on this rule's findings (any analysis)
    rejected: int
    candidate_confirmed: int  # reviewed calls where the candidate fires: confirmed ...
    candidate_rejected: int  # ... and rejected ones
    lost_confirmed: int  # confirmed findings the candidate no longer fires

    @property
    def precision(self) -> float | None:
        n = self.confirmed + self.rejected
        return self.confirmed / n if n else None

    @property
    def candidate_precision(self) -> float | None:
        n = self.candidate_confirmed + self.candidate_rejected
        return self.candidate_confirmed / n if n else None


@dataclass(frozen=True)
class BacktestReport:
    candidate: str
    calls: int
    rules: tuple[RuleBacktest, ...]
    gained: tuple[tuple[str, str], ...]  # (call_id, rule_id)
    lost: tuple[tuple[str, str], ...]


def backtest(session: Session, engine: RuleEngine) -> BacktestReport:
    calls = session.scalars(select(Call).where(Call.id.in_(
        select(Transcript.call_id).where(Transcript.is_current.is_(True)))).order_by(Call.id)).all()
    current: set[tuple[str, str]] = set()
    rows = session.execute(select(Call.call_id, Finding.rule_id).join(Finding, Finding.call_id == Call.id)
                           .join(Analysis, Analysis.id == Finding.analysis_id)
                           .where(Analysis.is_current.is_(True), Finding.source == "rule")).all()
    current.update((c, r) for c, r in rows)
    candidate: set[tuple[str, str]] = set()
    for call in calls:
        loaded = current_transcript(session, call)
        if loaded is not None:
            transcript, _ = with_customer_history(session, call, loaded[1], engine)
            candidate.update((call.call_id, f.rule_id) for f in engine.evaluate(transcript).findings)

    decisions: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for cid, rid, decision in session.execute(
            select(Call.call_id, Finding.rule_id, ReviewDecision.decision)
            .join(Finding, Finding.id == ReviewDecision.finding_id).join(Call, Call.id == Finding.call_id)
            .where(ReviewDecision.decision.in_(("confirmed", "rejected")))).all():
        decisions[(cid, rid)][decision] += 1

    def verdict(key: tuple[str, str]) -> str | None:
        c = decisions.get(key)
        if not c:
            return None
        return "confirmed" if c["confirmed"] >= c["rejected"] else "rejected"

    rule_ids = sorted({r for _, r in current | candidate} | {r.id for r in engine.pack.rules}
                      | {r for _, r in decisions})
    out = []
    for rid in rule_ids:
        cur = {k for k in current if k[1] == rid}
        cand = {k for k in candidate if k[1] == rid}
        reviewed = {k: verdict(k) for k in decisions if k[1] == rid}
        out.append(RuleBacktest(
            rid, len(cur), len(cand), len(cand - cur), len(cur - cand),
            confirmed=sum(decisions[k]["confirmed"] for k in reviewed),
            rejected=sum(decisions[k]["rejected"] for k in reviewed),
            candidate_confirmed=sum(1 for k, v in reviewed.items() if v == "confirmed" and k in cand),
            candidate_rejected=sum(1 for k, v in reviewed.items() if v == "rejected" and k in cand),
            lost_confirmed=sum(1 for k, v in reviewed.items() if v == "confirmed" and k not in cand),
        ))
    pack = engine.pack
    return BacktestReport(f"{pack.name} {pack.version} ({pack.sha256[:12]})", len(calls), tuple(out),
                          tuple(sorted(candidate - current)), tuple(sorted(current - candidate)))
