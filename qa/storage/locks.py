"""A named lock in the database so that two batch runs never work on one database at once.

The lock is a row in ``run_locks``. Its holder refreshes ``heartbeat_at`` from a background
thread; a lock whose holder is a dead process on this host, or whose heartbeat is older than
``stale_after``, is stale and is taken over (a crashed or ``kill -9``-ed run must not block
the next night). Take-over is a compare-and-swap on the old holder, so of two processes that
find the same stale lock only one wins.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import LockError
from ..timeutil import utcnow
from .models import RunLock

log = logging.getLogger(__name__)

DEFAULT_LOCK_NAME = "batch"


@dataclass(frozen=True)
class LockOptions:
    name: str = DEFAULT_LOCK_NAME
    stale_after: timedelta = timedelta(minutes=10)
    heartbeat_every: timedelta = timedelta(seconds=30)

    def validate(self) -> None:
        if not self.name:
            raise ValueError("lock name must not be empty")
        if self.stale_after <= timedelta(0) or self.heartbeat_every <= timedelta(0):
            raise ValueError("stale_after and heartbeat_every must be positive")
        if self.heartbeat_every * 2 > self.stale_after:
            # one missed heartbeat must not make a live holder look stale
            raise ValueError("heartbeat_every must be at most half of stale_after")


@dataclass(frozen=True)
class LockHolder:
    name: str
    holder: str
    pid: int
    host: str
    acquired_at: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        return (f"{self.holder} (pid {self.pid} on {self.host}, since {self.acquired_at:%Y-%m-%d %H:%M:%S}Z, "
                f"last heartbeat {self.heartbeat_at:%H:%M:%S}Z)")




def _holder_of(row: RunLock) -> LockHolder:
    return LockHolder(row.name, row.holder, row.pid, row.host, row.acquired_at, row.heartbeat_at)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(holder: LockHolder, *, now: datetime, stale_after: timedelta, host: str) -> str | None:
    """Why ``holder`` no longer holds the lock, or ``None`` when it still does."""
    if holder.host == host and not pid_alive(holder.pid):
        return f"its process {holder.pid} on {host} is gone"
    age = now - holder.heartbeat_at
    if age > stale_after:
        return (f"its heartbeat is {age.total_seconds() / 60:.1f} min old "
                f"(limit {stale_after.total_seconds() / 60:.0f} min)")
    return None


def current_holder(session: Session, name: str = DEFAULT_LOCK_NAME) -> LockHolder | None:
    row = session.get(RunLock, name, populate_existing=True)
    return _holder_of(row) if row else None


class RunLockHandle:
    """A held lock. Use as a context manager, or call :meth:`release`. The heartbeat thread
    uses its own sessions so it never shares a connection with the pipeline."""

    def __init__(self, factory: sessionmaker[Session], options: LockOptions, holder: str, took_over: str | None):
        self.factory = factory
        self.options = options
        self.holder = holder
        self.took_over = took_over  # description of the stale holder replaced, if any
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{options.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.options.heartbeat_every.total_seconds()):
            try:
                self.heartbeat()
            except LockError as e:
                log.error("%s", e)
                return
            except SQLAlchemyError as e:
                # a busy database delays one heartbeat; the next one catches up
                log.warning("lock heartbeat failed (will retry): %s", e)

    def heartbeat(self) -> None:
        with self.factory() as session:
            result = session.execute(
                update(RunLock).where(RunLock.name == self.options.name, RunLock.holder == self.holder)
                .values(heartbeat_at=utcnow()))
            session.commit()
        if result.rowcount == 0:
            self.lost = True
            raise LockError(f"lock {self.options.name!r} was taken over from {self.holder}; stop this run")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            with self.factory() as session:
                session.execute(delete(RunLock).where(RunLock.name == self.options.name, RunLock.holder == self.holder))
                session.commit()
        except SQLAlchemyError as e:
            # a lock left behind goes stale once this pid is gone; the next run takes it over
            log.warning("could not release lock %r: %s", self.options.name, e)

    def __enter__(self) -> RunLockHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(factory: sessionmaker[Session], options: LockOptions = LockOptions(), *,
            purpose: str = "run") -> RunLockHandle:
    """Take the lock or raise :class:`LockError` naming who holds it. A stale lock is taken over."""
    options.validate()
    host, pid = socket.gethostname(), os.getpid()
    holder = f"{purpose}@{host}:{pid}:{uuid.uuid4().hex[:8]}"
    stamp = utcnow()
    try:
        with factory() as session:
            try:
                session.add(RunLock(name=options.name, holder=holder, pid=pid, host=host,
                                    acquired_at=stamp, heartbeat_at=stamp))
                session.commit()
                log.info("lock %r acquired by %s", options.name, holder)
                return RunLockHandle(factory, options, holder, None)
            except IntegrityError:
                session.rollback()
            existing = current_holder(session, options.name)
            if existing is None:  # released between our insert and our read
                return acquire(factory, options, purpose=purpose)
            reason = stale_reason(existing, now=stamp, stale_after=options.stale_after, host=host)
            if reason is None:
                raise LockError(f"another run holds lock {options.name!r}: {existing.describe()}; "
                                f"wait for it to finish, or if it is dead on another host, its lock expires "
                                f"{options.stale_after.total_seconds() / 60:.0f} min after its last heartbeat")
            result = session.execute(
                update(RunLock).where(RunLock.name == options.name, RunLock.holder == existing.holder)
                .values(holder=holder, pid=pid, host=host, acquired_at=stamp, heartbeat_at=stamp))
            session.commit()
            if result.rowcount != 1:
                latest = current_holder(session, options.name)
                raise LockError(f"lock {options.name!r} was taken by "
                                f"{latest.describe() if latest else 'another run'} while we took it over")
    except SQLAlchemyError as e:
        raise LockError(f"cannot take lock {options.name!r}: {e}") from e
    log.warning("took over stale lock %r from %s: %s", options.name, existing.holder, reason)
    return RunLockHandle(factory, options, holder, f"{existing.describe()}: {reason}")


def locks(session: Session) -> list[LockHolder]:
    return [_holder_of(r) for r in session.scalars(select(RunLock).order_by(RunLock.name))]
