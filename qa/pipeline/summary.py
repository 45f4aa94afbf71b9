"""Figures about a set of calls after a run: how far each got, what was found, where it was
routed. The run summary, the batch-run record and ``qa demo`` print these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..storage import chunked
from ..storage.models import Analysis, Assessment, Call, Finding, ReviewItem, Transcript, UtteranceRow


@dataclass(frozen=True)
class FailedCall:
    call_id: str
    code: str
    message: str


@dataclass
class CallFigures:
    calls: int = 0
    audio_s: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    utterances: int = 0
    findings: int = 0
    findings_by_category: dict[str, int] = field(default_factory=dict)
    findings_by_severity: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)  # T1/T2/T3/none
    review_items: int = 0
    calibration_items: int = 0
    failed_calls: list[FailedCall] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.by_status.get("failed", 0)

    def as_counts(self, ingest: dict[str, int] | None = None) -> dict:
        doc = {"calls": self.calls, "audio_s": round(self.audio_s, 3), "by_status": self.by_status,
               "utterances": self.utterances, "findings": self.findings,
               "findings_by_category": self.findings_by_category, "findings_by_severity": self.findings_by_severity,
               "tiers": self.tiers, "review_items": self.review_items, "calibration_items": self.calibration_items,
               "failed": self.failed}
        if ingest:
            doc["ingest"] = ingest
        return doc


def _add(target: dict[str, int], rows) -> None:
    for key, n in rows:
        target[str(key)] = target.get(str(key), 0) + int(n)


def call_figures(session: Session, call_pks: Sequence[int]) -> CallFigures:
    """Figures over the calls with these primary keys (current transcripts, analyses and
    assessments only: superseded history is not counted)."""
    fig = CallFigures()
    for chunk in chunked(list(call_pks)):
        pks = list(chunk)
        fig.calls += len(pks)
        fig.audio_s += session.scalar(select(func.coalesce(func.sum(Call.duration_s), 0.0))
                                      .where(Call.id.in_(pks))) or 0.0
        _add(fig.by_status, session.execute(select(Call.status, func.count()).where(Call.id.in_(pks))
                                            .group_by(Call.status)))
        fig.utterances += session.scalar(
            select(func.count()).select_from(UtteranceRow).join(Transcript, UtteranceRow.transcript_id == Transcript.id)
            .where(Transcript.call_id.in_(pks), Transcript.is_current.is_(True))) or 0
        findings = (select(Finding.category, Finding.severity, func.count())
                    .join(Analysis, Finding.analysis_id == Analysis.id)
                    .where(Analysis.call_id.in_(pks), Analysis.is_current.is_(True))
                    .group_by(Finding.category, Finding.severity))
        for category, severity, n in session.execute(findings):
            fig.findings += n
            _add(fig.findings_by_category, [(category, n)])
            _add(fig.findings_by_severity, [(severity, n)])
        _add(fig.tiers, ((tier or "none", n) for tier, n in session.execute(
            select(Assessment.tier, func.count()).where(Assessment.call_id.in_(pks), Assessment.is_current.is_(True))
            .group_by(Assessment.tier))))
        for reason, n in session.execute(select(ReviewItem.reason, func.count()).where(ReviewItem.call_id.in_(pks))
                                         .group_by(ReviewItem.reason)):
            fig.review_items += n
            if reason == "calibration":
                fig.calibration_items += n
        fig.failed_calls.extend(FailedCall(cid, code or "", msg or "") for cid, code, msg in session.execute(
            select(Call.call_id, Call.error_code, Call.error_message)
            .where(Call.id.in_(pks), Call.status == "failed").order_by(Call.call_id)))
    return fig
