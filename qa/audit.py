"""Append-only, hash-chained audit log.

Every event stores ``prev_hash`` (the hash of the event before it) and
``hash = sha256(prev_hash + canonical JSON of the event)``. Editing, inserting, deleting or
reordering rows breaks the chain at a point :func:`verify` names. Events are numbered by a
gap-free ``seq``; two writers must never read the same "last event", so :func:`append`
serialises writers: an advisory transaction lock on PostgreSQL, the database write lock on
SQLite (appends need a :func:`qa.storage.write_session`). The lock is held until the caller
commits, which is what makes the action and its audit event land together or not at all.

No code path updates or deletes audit rows.

A hash chain alone proves only that the rows agree with each other: someone with write access
to the database can truncate it, or rewrite it and recompute every hash (the function is
public). So the chain's head is signed at every export, at the end of every batch run and on
demand (:func:`checkpoint`, with the key of :mod:`qa.signing`, which does not live in the
database), and :func:`verify` checks the chain against the signed checkpoints and against the
newest one kept beside the key: rewrites and truncations before the last checkpoint are found;
events appended after it are reported as not yet anchored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from . import signing
from .errors import AuditError
from .storage import is_sqlite, require_write_session
from .storage.models import AuditCheckpoint, AuditEvent
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


# --- checkpoints ------------------------------------------------------------------------------

def _checkpoint_body(cp: AuditCheckpoint | dict, database: str) -> bytes:
    get = cp.get if isinstance(cp, dict) else lambda k: getattr(cp, k)
    return signing.canonical({"database": database, "seq": get("seq"), "head_hash": get("head_hash"),
                              "ts": _ts_text(get("ts")) if not isinstance(get("ts"), str) else get("ts"),
                              "reason": get("reason"), "key_id": get("key_id"), "prev": get("prev")})


def checkpoint(session: Session, signer: signing.Signer, database: str, reason: str,
               now: datetime | None = None) -> dict:
    """Sign the chain's current head in the caller's write transaction and return the
    checkpoint (for :func:`anchor`, once the caller has committed)."""
    require_write_session(session, "writing an audit checkpoint")
    if not is_sqlite(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK_KEY})
    seq, head = _last_event(session)
    last = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)).first()
    row = AuditCheckpoint(seq=seq, head_hash=head, ts=as_utc(now) if now else utcnow(), reason=reason[:64],
                          key_id=signer.key_id,
                          prev=hashlib.sha256(last.signature.encode()).hexdigest() if last else "")
    row.signature = signer.sign(_checkpoint_body(row, database))
    session.add(row)
    session.flush()
    log.debug("audit checkpoint at seq %d (%s)", seq, reason)
    return {"seq": row.seq, "head_hash": row.head_hash, "ts": _ts_text(row.ts), "reason": row.reason,
            "key_id": row.key_id, "prev": row.prev, "signature": row.signature}


def anchor(signer: signing.Signer, database: str, cp: dict) -> None:
    """Keep the newest checkpoint beside the key, out of reach of a database writer."""
    signing.record_anchor(signer, database, cp)


def checkpoint_now(factory, key_file: str, database_url: str, reason: str) -> dict:
    """A checkpoint in a write transaction of its own, committed and anchored (what a batch
    run and ``qa audit checkpoint`` do)."""
    from .storage import write_session

    signer = signing.signer(key_file)
    database = signing.database_id(database_url)
    with write_session(factory) as session:
        cp = checkpoint(session, signer, database, reason)
        session.commit()
    anchor(signer, database, cp)
    return cp


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    kind: str  # edited | missing | inserted | reordered | broken_link | checkpoint | truncated
    message: str


@dataclass(frozen=True)
class AuditVerification:
    events: int
    head_seq: int
    head_hash: str
    problems: tuple[AuditProblem, ...] = field(default_factory=tuple)
    checkpoints: int = 0  # signed checkpoints checked
    anchored_seq: int = 0  # the newest seq a valid checkpoint covers
    key_id: str | None = None  # whose signatures were checked; None: none were

    @property
    def unanchored(self) -> int:
        """Events after the last checkpoint: consistent, but not yet signed for."""
        return max(0, self.head_seq - self.anchored_seq) if self.key_id else self.events

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        return self.problems[0].seq if self.problems else None


def _check_checkpoints(session: Session, verifier: signing.Verifier, database: str, hashes: dict[int, str],
                       problems: list[AuditProblem], expected: dict | None) -> tuple[int, int]:
    """Signatures, the checkpoints' own chain, the chain passing through each of them, and the
    newest one kept beside the key. Returns (checkpoints, newest seq they cover)."""
    prev, anchored, count = "", 0, 0
    signatures = set()
    for cp in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)):
        count += 1
        signatures.add(cp.signature)
        if cp.key_id != verifier.key_id or not verifier.verify(_checkpoint_body(cp, database), cp.signature):
            problems.append(AuditProblem(cp.seq, "checkpoint", f"checkpoint {cp.id} (seq {cp.seq}): signature "
                                         f"does not verify with key {verifier.key_id}; forged or edited"))
            continue
        if cp.prev != prev:
            problems.append(AuditProblem(cp.seq, "checkpoint", f"checkpoint {cp.id} (seq {cp.seq}): the checkpoint "
                                         "before it is missing or was replaced"))
        prev = hashlib.sha256(cp.signature.encode()).hexdigest()
        if cp.seq and hashes.get(cp.seq) != cp.head_hash:
            what = "is missing" if cp.seq not in hashes else "has another hash"
            problems.append(AuditProblem(cp.seq, "truncated" if cp.seq not in hashes else "edited",
                                         f"seq {cp.seq} {what} than the signed checkpoint {cp.id} of "
                                         f"{_ts_text(cp.ts)} says: the chain was cut or rewritten"))
        anchored = max(anchored, cp.seq)
    if expected is not None and expected.get("signature") not in signatures:
        problems.append(AuditProblem(int(expected.get("seq", 0)), "truncated",
                                     f"the newest checkpoint kept beside the key (seq {expected.get('seq')}, "
                                     f"{expected.get('ts')}) is not in the database: checkpoints were deleted"))
    return count, anchored


def verify(session: Session, *, anchor: tuple[int, str] | None = None, batch_size: int = 2000,
           verifier: signing.Verifier | None = None, database: str | None = None,
           expected_anchor: dict | None = None) -> AuditVerification:
    """Recompute the whole chain and report every place where it does not hold.

    - a row whose hash does not match its content: ``edited``;
    - a seq number that is missing: ``missing`` (a deleted row);
    - a row whose ``prev_hash`` is not its predecessor's hash: ``broken_link`` (an inserted
      or renumbered row), or ``inserted`` when its seq is out of the numbering;
    - rows whose insertion order (id) disagrees with their seq: ``reordered``.

    A hash chain alone cannot tell a forged but correctly re-hashed tail from the real one.
    With ``verifier`` (the public signing key), every signed checkpoint is checked and the
    chain must pass through each; ``expected_anchor`` is the newest checkpoint kept beside the
    key, which must still be in the database. ``anchor=(seq, hash)`` (a head recorded elsewhere,
    e.g. printed by an earlier verify) checks that the chain still passes through that point.
    """
    problems: list[AuditProblem] = []
    expected_seq = 1
    prev_hash = GENESIS_HASH
    prev_id: int | None = None
    count = 0
    head_seq, head_hash = 0, GENESIS_HASH
    anchor_seen = False
    hashes: dict[int, str] = {}
    stmt = select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch_size)
    for ev in session.scalars(stmt):
        count += 1
        hashes[ev.seq] = ev.hash
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
    cps, anchored, key = 0, 0, None
    if verifier is not None:
        cps, anchored = _check_checkpoints(session, verifier, database or "", hashes, problems, expected_anchor)
        key = verifier.key_id
    else:
        cps = session.scalar(select(func.count()).select_from(AuditCheckpoint)) or 0
        if cps:
            problems.append(AuditProblem(0, "checkpoint", f"{cps} signed checkpoint(s) exist but no public key was "
                                         "given to check them: the signing key is missing"))
    problems.sort(key=lambda p: p.seq)
    result = AuditVerification(events=count, head_seq=head_seq, head_hash=head_hash, problems=tuple(problems),
                               checkpoints=cps, anchored_seq=anchored, key_id=key)
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
