"""Batch-run records: what a run did, how fast each stage went and which versions produced
the results. A run row is written as ``running`` when the run starts (so a crashed run stays
visible) and completed with counts, timings, versions and its exit status at the end."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import Analysis, Assessment, BatchRun, Transcript
from ..timeutil import utcnow

RUN_STATUSES = ("running", "ok", "partial", "failed")


@dataclass
class StageTiming:
    """Wall time of one stage over the calls it handled."""

    stage: str
    seconds: float = 0.0
    calls: int = 0
    audio_s: float = 0.0
    failed: int = 0
    busy_s: float | None = None  # time the GPU loop spent decoding (transcription only)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def audio_hours_per_hour(self) -> float:
        """Hours of audio handled per hour of wall time (the real-time factor's inverse)."""
        return self.audio_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def utilisation(self) -> float | None:
        """Fraction of the stage's wall time the decode loop was busy."""
        if self.busy_s is None or self.seconds <= 0:
            return None
        return min(1.0, self.busy_s / self.seconds)

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc.update(calls_per_s=round(self.calls_per_s, 4), audio_hours_per_hour=round(self.audio_hours_per_hour, 3),
                   seconds=round(self.seconds, 3), audio_s=round(self.audio_s, 3))
        if self.busy_s is not None:
            doc["busy_s"] = round(self.busy_s, 3)
            doc["utilisation"] = round(self.utilisation or 0.0, 4)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> StageTiming:
        return cls(stage=doc["stage"], seconds=doc.get("seconds", 0.0), calls=doc.get("calls", 0),
                   audio_s=doc.get("audio_s", 0.0), failed=doc.get("failed", 0), busy_s=doc.get("busy_s"))


@dataclass(frozen=True)
class RunSummary:
    """A batch run as read back from the database."""

    id: int
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    host: str | None
    pid: int | None
    options: dict
    counts: dict
    timings: list[StageTiming] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def start_run(session: Session, kind: str, options: dict) -> int:
    """Insert a ``running`` row and commit it; returns its id."""
    run = BatchRun(kind=kind, status="running", started_at=utcnow(), host=socket.gethostname(), pid=os.getpid(),
                   options=options)
    session.add(run)
    session.commit()
    return run.id


def finish_run(session: Session, run_id: int, *, status: str, counts: dict, timings: list[StageTiming],
               versions: dict, error: str | None = None, extra_timings: dict | None = None) -> None:
    if status not in RUN_STATUSES[1:]:
        raise ValueError(f"a finished run's status is one of {', '.join(RUN_STATUSES[1:])}, got {status!r}")
    run = session.get(BatchRun, run_id)
    run.status = status
    run.finished_at = utcnow()
    run.counts = counts
    run.timings = {"stages": [t.as_dict() for t in timings], **(extra_timings or {})}
    run.versions = versions
    run.error = error
    session.commit()


def current_versions(session: Session, since: datetime | None = None) -> dict:
    """The ASR model, rule pack and classifier fingerprint behind the current results; with
    ``since``, preferably those of rows written after it (this run's own work)."""
    def latest(model, *cols):
        stmt = select(*cols).where(model.is_current.is_(True)).order_by(model.id.desc()).limit(1)
        if since is not None:
            row = session.execute(stmt.where(model.created_at >= since)).first()
            if row is not None:
                return row
        return session.execute(stmt).first()

    versions: dict = {}
    asr = latest(Transcript, Transcript.asr_model, Transcript.asr_sha256, Transcript.options_sha256)
    if asr:
        versions["asr"] = {"model": asr[0], "sha256": asr[1], "options_sha256": asr[2]}
    pack = latest(Analysis, Analysis.rule_pack_name, Analysis.rule_pack_version, Analysis.rule_pack_sha256,
                  Analysis.classifiers_sha256)
    if pack:
        versions["rule_pack"] = {"name": pack[0], "version": pack[1], "sha256": pack[2]}
        versions["classifiers_sha256"] = pack[3]
    policy = latest(Assessment, Assessment.policy_sha256)
    if policy:
        versions["tier_policy_sha256"] = policy[0]
    return versions


def _summary(run: BatchRun) -> RunSummary:
    stages = (run.timings or {}).get("stages", [])
    return RunSummary(id=run.id, kind=run.kind, status=run.status, started_at=run.started_at,
                      finished_at=run.finished_at, host=run.host, pid=run.pid, options=run.options or {},
                      counts=run.counts or {}, timings=[StageTiming.from_dict(d) for d in stages],
                      versions=run.versions or {}, error=run.error)


def list_runs(session: Session, *, limit: int = 20, kind: str | None = None) -> list[RunSummary]:
    stmt = select(BatchRun).order_by(BatchRun.id.desc()).limit(limit)
    if kind:
        stmt = stmt.where(BatchRun.kind == kind)
    return [_summary(r) for r in session.scalars(stmt)]


def get_run(session: Session, run_id: int) -> RunSummary | None:
    run = session.get(BatchRun, run_id)
    return _summary(run) if run else None
