"""Retention and erasure: ``qa purge``.

A call's personal data (what was said, who to, the speech features, the classifiers' reading
of it, the free text people wrote about it, optionally the recording itself) is erased when
its business line's retention period (the ``retention_days`` setting) has passed since the
call started, for a period given by hand (``before``), or for named calls (an erasure request).
What statistics and the audit trail need stays: the call row with its agent, team, times and
recording sha256, the findings' rule, category, severity and times, the scores, tiers and
verdicts. Each purged call gets a tombstone row and an audit event in the same transaction as
the erasure, so a crash leaves every call either untouched or wholly purged, and a re-run goes
on with the rest. Calls with an open review or appeal are refused (they are still being
judged); they are purged by a later run once closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence

from sqlalchemy import delete, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from . import audit
from .config import Settings
from .errors import NotFound
from .ingest.register import sha256_file
from .permissions import ADMIN, Actor
from .pipeline.jobs import CrashHook
from .storage import chunked, write_session
from .storage.locks import LockOptions, acquire
from .storage.models import (Analysis, Appeal, Call, CallChannel, CallTombstone, ClassifierScore, Finding,
                             ReviewDecision, ReviewItem, ReviewStatus, Transcript, UtteranceRow)
from .timeutil import utc_or_now

log = logging.getLogger(__name__)

SYSTEM = Actor("system", ADMIN)  # the scheduled purge of the nightly job
ERASED = "[已清除]"  # what free text typed by people reads as after a purge
# review states in which a call is still being judged: it is not purged then
OPEN_REVIEW = (ReviewStatus.OPEN, ReviewStatus.CLAIMED, ReviewStatus.APPEALED)
KEPT_DETAILS = ("title", "kind", "fire_when", "basis")  # of a finding's details: no words of the call


@dataclass(frozen=True)
class PurgeOptions:
    """What to purge. Without ``before`` and ``call_ids``: the calls past their business
    line's retention period (``policy``: line -> days, ``default`` for the others)."""

    policy: dict[str, int] = field(default_factory=dict)
    before: datetime | None = None  # calls started before this instant, whatever the policy
    call_ids: tuple[str, ...] = ()  # these calls, whatever their age (an erasure request)
    delete_audio: bool = False
    reason: str = ""  # recorded with each tombstone, e.g. an erasure request's reference

    def validate(self) -> None:
        if self.before is not None and self.before.tzinfo is None:
            raise ValueError("before must be an aware time")
        if self.before is not None and self.call_ids:
            raise ValueError("give a period (before) or calls, not both")
        if not (self.policy or self.before or self.call_ids):
            raise ValueError("nothing to purge: set retention_days (e.g. 'collection=730, default=1095'), "
                             "or give --before DATE or --call ID")
        bad = [f"{k}={v}" for k, v in self.policy.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"retention periods must be whole days >= 1, got {', '.join(bad)}")
        if len(self.reason) > 200:
            raise ValueError("reason must be at most 200 characters")


@dataclass(frozen=True)
class Candidate:
    call_pk: int
    call_id: str
    business_line: str | None
    started_at: datetime | None
    why: dict  # the policy that makes it due: {"retention_days": 730} | {"before": ...} | {"request": ...}
    refused: str | None = None  # why it is not purged now


@dataclass(frozen=True)
class PurgePlan:
    candidates: tuple[Candidate, ...]

    @property
    def due(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.refused is None)

    @property
    def refused(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.refused is not None)


@dataclass(frozen=True)
class Purged:
    call_id: str
    utterances: int
    audio: str  # deleted | kept | missing | changed (the file is no longer that recording: kept)


@dataclass
class PurgeReport:
    purged: list[Purged] = field(default_factory=list)
    refused: list[Candidate] = field(default_factory=list)

    @property
    def audio_deleted(self) -> int:
        return sum(p.audio == "deleted" for p in self.purged)


def _open_reviews(session: Session, pks: Sequence[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in chunked(list(pks)):
        for call_pk, item_id, status in session.execute(
                select(ReviewItem.call_id, ReviewItem.id, ReviewItem.status)
                .where(ReviewItem.call_id.in_(chunk), ReviewItem.status.in_(OPEN_REVIEW))):
            found.setdefault(call_pk, f"review item {item_id} is {status}")
    return found


def plan_purge(session: Session, options: PurgeOptions, *, now: datetime | None = None) -> PurgePlan:
    """The calls the options make due, oldest first, each with why, and those refused."""
    options.validate()
    now = utc_or_now(now)
    live = Call.purged_at.is_(None)
    started = func.coalesce(Call.started_at, Call.created_at)
    rows: list[tuple[Call, dict]] = []
    columns = (Call.id, Call.call_id, Call.business_line, Call.started_at)
    if options.call_ids:
        found = {r.call_id: r for r in session.execute(select(*columns).where(
            Call.call_id.in_(list(options.call_ids))))}
        missing = [c for c in options.call_ids if c not in found]
        if missing:
            raise NotFound(f"no call {', '.join(repr(c) for c in missing[:5])}")
        purged = set(session.scalars(select(Call.call_id).where(Call.call_id.in_(list(found)), ~live)))
        rows = [(found[c], {"request": options.reason or "named calls"}) for c in options.call_ids if c not in purged]
    elif options.before is not None:
        rows = [(r, {"before": options.before.isoformat()}) for r in session.execute(
            select(*columns).where(live, started < options.before).order_by(started, Call.id))]
    else:
        named = [line for line in options.policy if line != "default"]
        conds = [((Call.business_line == line) & (started < now - timedelta(days=days)), line, days)
                 for line, days in options.policy.items() if line != "default"]
        if "default" in options.policy:
            days = options.policy["default"]
            others = or_(Call.business_line.is_(None), Call.business_line.not_in(named)) if named else true()
            conds.append((others & (started < now - timedelta(days=days)), "default", days))
        for cond, line, days in conds:
            rows += [(r, {"retention_days": days, "policy_line": line}) for r in session.execute(
                select(*columns).where(live, cond).order_by(started, Call.id))]
        rows.sort(key=lambda rw: (rw[0].started_at is None, rw[0].started_at or now, rw[0].id))
    blocked = _open_reviews(session, [r.id for r, _ in rows])
    return PurgePlan(tuple(Candidate(r.id, r.call_id, r.business_line, r.started_at, why, blocked.get(r.id))
                           for r, why in rows))


def _erase_audio(call: Call) -> str:
    path = Path(call.file_path) if call.file_path else None
    if path is None or not path.is_file():
        return "missing"
    try:
        if sha256_file(path) != call.recording_sha256:
            log.warning("call %s: %s is no longer its recording; not deleted", call.call_id, path)
            return "changed"
        path.unlink()
    except OSError as e:
        log.warning("call %s: cannot delete %s (%s)", call.call_id, path, e)
        return "kept"
    return "deleted"


def purge_call(session: Session, candidate: Candidate, options: PurgeOptions, *, actor: str,
               now: datetime | None = None) -> Purged | None:
    """Erase one call's personal data in the caller's write transaction (its tombstone and
    audit event included). ``None`` when it is no longer due: purged meanwhile, or a review
    opened on it since it was planned."""
    now = utc_or_now(now)
    call = session.get(Call, candidate.call_pk)
    if call is None or call.purged_at is not None or _open_reviews(session, [call.id]):
        return None
    transcripts = select(Transcript.id).where(Transcript.call_id == call.id)
    utterances = session.scalar(select(func.count()).select_from(UtteranceRow).where(
        UtteranceRow.call_id == call.id)) or 0
    session.execute(delete(UtteranceRow).where(UtteranceRow.transcript_id.in_(transcripts)))
    session.execute(update(Transcript).where(Transcript.call_id == call.id).values(features={}))
    session.execute(delete(CallChannel).where(CallChannel.call_id == call.id))
    session.execute(delete(ClassifierScore).where(ClassifierScore.call_id == call.id))
    for finding in session.scalars(select(Finding).where(Finding.call_id == call.id)):
        finding.evidence = finding.matched_text = None
        finding.details = {k: v for k, v in (finding.details or {}).items() if k in KEPT_DETAILS}
    items = select(ReviewItem.id).where(ReviewItem.call_id == call.id)
    session.execute(update(ReviewItem).where(ReviewItem.call_id == call.id, ReviewItem.comment.isnot(None))
                    .values(comment=ERASED))
    session.execute(update(ReviewDecision).where(ReviewDecision.review_item_id.in_(items),
                                                 ReviewDecision.comment.isnot(None)).values(comment=ERASED))
    session.execute(update(Appeal).where(Appeal.review_item_id.in_(items)).values(reason=ERASED))
    session.execute(update(Appeal).where(Appeal.review_item_id.in_(items), Appeal.decision_reason.isnot(None))
                    .values(decision_reason=ERASED))
    audio = _erase_audio(call) if options.delete_audio else "kept"
    call.customer_ref = None
    call.extra = {}
    call.error_message = None
    if audio in ("deleted", "missing"):
        call.file_path = ""
    call.purged_at = now
    policy = {**candidate.why, **({"reason": options.reason} if options.reason and "request" not in candidate.why
                                  else {})}
    session.add(CallTombstone(call_pk=call.id, call_id=call.call_id, recording_sha256=call.recording_sha256,
                              business_line=call.business_line, started_at=call.started_at, purged_at=now,
                              policy=policy, actor=actor, audio_deleted=audio in ("deleted", "missing")))
    audit.append(session, actor, "call.purge", "call", call.call_id, None,
                 {"policy": policy, "utterances_erased": utterances, "audio": audio,
                  "analyses_kept": session.scalar(select(func.count()).select_from(Analysis)
                                                  .where(Analysis.call_id == call.id)) or 0}, now=now)
    return Purged(call.call_id, utterances, audio)


def purge(factory: sessionmaker[Session], settings: Settings, options: PurgeOptions, *, actor: Actor = SYSTEM,
          now: datetime | None = None, progress: Callable[[Purged], None] | None = None) -> PurgeReport:
    """Plan and apply: one write transaction per call under the run lock (never beside a
    pipeline run), then a signed audit checkpoint. Safe to re-run after a crash."""
    actor.require("data.purge", "purge calls")
    options.validate()
    report = PurgeReport()
    crash = CrashHook.from_env()
    with acquire(factory, LockOptions(), purpose="purge"):
        with factory() as session:
            plan = plan_purge(session, options, now=now)
        report.refused = list(plan.refused)
        for candidate in plan.due:
            with write_session(factory) as session:
                done = purge_call(session, candidate, options, actor=actor.username, now=now)
                session.commit()
            if done is not None:
                report.purged.append(done)
                if progress is not None:
                    progress(done)
                crash.tick("purge")
        if report.purged:
            audit.checkpoint_now(factory, settings.audit_key_file, settings.effective_database_url,
                                 f"purge of {len(report.purged)} calls")
    log.info("purged %d calls (%d recordings deleted); %d refused", len(report.purged), report.audio_deleted,
             len(report.refused))
    return report


__all__ = ["SYSTEM", "Candidate", "PurgeOptions", "PurgePlan", "PurgeReport", "Purged", "plan_purge", "purge", "purge_call"]
