"""Append-only, hash-chained audit log.

Every event stores ``prev_hash`` (the hash of the event before it) and
``hash = sha256(prev_hash + canonical JSON of the event)``. Editing, inserting, deleting or
reordering rows breaks the chain at a point :func:`verify` names. Events are numbered by a
gap-free ``seq``; two writers must never read the same "last event", so :func:`append`
serialises writers: an advisory transaction lock on PostgreSQL, the database write lock on
SQLite (appends need a :func:`qa.storage.write_session`). The lock is held until the caller
commits, which is what makes the action and its audit event land together or not at all.

No code path updates or deletes audit rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .errors import AuditError
from .storage import is_sqlite, require_write_session
from .storage.models import AuditEvent
from .timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Arbitrary constant key of the PostgreSQL advisory lock that orders audit writers.
_PG_AUDIT_LOCK_KEY = 0x5141_4155_4454  # "QAAUDT"
_INSERT_ATTEMPTS = 3


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ts_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the audit log")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=_json_default, allow_nan=False)


def _ts_text(ts: datetime) -> str:
    return as_utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalise(value: Any) -> Any:
    """What the JSON column will give back (string keys, ISO timestamps), so the hash computed
    now matches the one recomputed from the stored row later."""
    return None if value is None else json.loads(canonical_json(value))


def event_hash(*, seq: int, ts: datetime, actor: str, action: str, object_type: str, object_id: str,
               before: Any, after: Any, prev_hash: str) -> str:
    body = canonical_json({
        "seq": seq, "ts": _ts_text(ts), "actor": actor, "action": action,
        "object_type": object_type, "object_id": object_id,
        "before": before, "after": after, "prev_hash": prev_hash,
    })
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _last_event(session: Session) -> tuple[int, str]:
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return (row.seq, row.hash) if row else (0, GENESIS_HASH)


def append(session: Session, actor: str, action: str, object_type: str, object_id: Any,
           before: dict | None = None, after: dict | None = None, *, now: datetime | None = None) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (the caller commits).

    ``before``/``after`` are JSON-able dicts of the fields the action changed."""
    if not actor or not action or not object_type:
        raise AuditError("audit events need an actor, an action and an object type")
    ts = as_utc(now) if now is not None else utcnow()
    before_n, after_n = _normalise(before), _normalise(after)
    object_id = str(object_id)

    require_write_session(session, "appending to the audit log")
    if not is_sqlite(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK_KEY})

    # The lock makes a duplicate seq impossible between our writers; the retry covers a writer
    # that appends without it, by re-reading the chain head. ON CONFLICT DO NOTHING instead of
    # a savepoint keeps the locked stretch to two statements.
    if is_sqlite(session):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    for _ in range(_INSERT_ATTEMPTS):
        seq, prev_hash = _last_event(session)
        seq += 1
        values = dict(seq=seq, ts=ts, actor=actor, action=action, object_type=object_type, object_id=object_id,
                      before=before_n, after=after_n, prev_hash=prev_hash)
        values["hash"] = event_hash(**values)
        event = session.scalars(insert(AuditEvent).values(**values).on_conflict_do_nothing()
                                .returning(AuditEvent)).first()
        if event is None:
            log.warning("audit seq %d taken by a concurrent writer; retrying", seq)
            continue
        log.debug("audit %d %s %s %s:%s", seq, actor, action, object_type, object_id)
        return event
    raise AuditError(f"could not append audit event {action}: the chain head moved {_INSERT_ATTEMPTS} times",
                     code="audit.conflict")


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    kind: str  # edited | missing | inserted | reordered | broken_link
    message: str


@dataclass(frozen=True)
class AuditVerification:
    events: int
    head_seq: int
    head_hash: str
    problems: tuple[AuditProblem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        return self.problems[0].seq if self.problems else None


def verify(session: Session, *, anchor: tuple[int, str] | None = None, batch_size: int = 2000) -> AuditVerification:
    """Recompute the whole chain and report every place where it does not hold.

    - a row whose hash does not match its content: ``edited``;
    - a seq number that is missing: ``missing`` (a deleted row);
    - a row whose ``prev_hash`` is not its predecessor's hash: ``broken_link`` (an inserted
      or renumbered row), or ``inserted`` when its seq is out of the numbering;
    - rows whose insertion order (id) disagrees with their seq: ``reordered``.

    A hash chain alone cannot tell a forged but correctly re-hashed tail from the real one;
    ``anchor=(seq, hash)`` (a head recorded elsewhere, e.g. printed by an earlier verify) checks
    that the chain still passes through that point.
    """
    problems: list[AuditProblem] = []
    expected_seq = 1
    prev_hash = GENESIS_HASH
    prev_id: int | None = None
    count = 0
    head_seq, head_hash = 0, GENESIS_HASH
    anchor_seen = False
    stmt = select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch_size)
    for ev in session.scalars(stmt):
        count += 1
        if ev.seq < expected_seq:
            # Outside the numbering: report it and keep checking the chain without it.
            problems.append(AuditProblem(ev.seq, "inserted", f"seq {ev.seq}: unexpected number "
                                         f"(expected {expected_seq} or later); row inserted"))
            continue
        if ev.seq > expected_seq:
            missing = (f"seq {expected_seq}" if ev.seq == expected_seq + 1
                       else f"seq {expected_seq}..{ev.seq - 1}")
            problems.append(AuditProblem(expected_seq, "missing", f"{missing} missing: row(s) deleted"))
        elif ev.prev_hash != prev_hash:
            problems.append(AuditProblem(ev.seq, "broken_link", f"seq {ev.seq}: prev_hash does not match "
                                         f"the hash of seq {ev.seq - 1}; row inserted or replaced"))
        if prev_id is not None and ev.id < prev_id:
            problems.append(AuditProblem(ev.seq, "reordered", f"seq {ev.seq}: stored before seq "
                                         f"{ev.seq - 1} (id {ev.id} < {prev_id}); rows renumbered"))
        recomputed = event_hash(seq=ev.seq, ts=ev.ts, actor=ev.actor, action=ev.action,
                                object_type=ev.object_type, object_id=ev.object_id, before=ev.before,
                                after=ev.after, prev_hash=ev.prev_hash)
        if recomputed != ev.hash:
            problems.append(AuditProblem(ev.seq, "edited", f"seq {ev.seq}: content does not match its "
                                         f"hash; row edited"))
        if anchor is not None and ev.seq == anchor[0]:
            anchor_seen = True
            if ev.hash != anchor[1]:
                problems.append(AuditProblem(ev.seq, "edited", f"seq {ev.seq}: hash differs from the "
                                             f"anchor {anchor[1][:12]}…; chain rewritten"))
        expected_seq = max(expected_seq, ev.seq) + 1
        prev_hash, prev_id = ev.hash, ev.id
        head_seq, head_hash = ev.seq, ev.hash
    if anchor is not None and not anchor_seen:
        problems.append(AuditProblem(anchor[0], "missing", f"seq {anchor[0]} (the anchor) is missing"))
    problems.sort(key=lambda p: p.seq)
    result = AuditVerification(events=count, head_seq=head_seq, head_hash=head_hash, problems=tuple(problems))
    if problems:
        log.error("audit chain broken: %d problem(s), first at seq %d", len(problems), problems[0].seq)
    return result


def history(session: Session, object_type: str | None = None, object_id: Any = None,
            limit: int = 200) -> list[AuditEvent]:
    """Events, newest first, optionally for one object."""
    stmt = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if object_type is not None:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == str(object_id))
    return list(session.scalars(stmt))
