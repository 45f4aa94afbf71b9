"""The run lock: one batch run per database, stale locks taken over, clear errors otherwise.
Storage behaviour, so it runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from qa import storage as qadb
from qa.errors import LockError
from qa.storage.locks import LockOptions, acquire, current_holder, pid_alive
from qa.storage.models import RunLock, utcnow


@pytest.fixture
def factory(db_url):
    engine = qadb.make_engine(db_url)
    yield qadb.session_factory(engine)
    engine.dispose()


def _plant(factory, *, pid: int, host: str, heartbeat_age: timedelta = timedelta(0), name: str = "batch") -> None:
    stamp = utcnow() - heartbeat_age
    with factory() as s:
        s.add(RunLock(name=name, holder=f"nightly@{host}:{pid}:planted", pid=pid, host=host, acquired_at=stamp,
                      heartbeat_at=stamp))
        s.commit()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_acquire_and_release(factory):
    with acquire(factory, purpose="nightly") as handle:
        with factory() as s:
            holder = current_holder(s)
        assert holder.holder == handle.holder and holder.pid == os.getpid()
        assert holder.holder.startswith("nightly@")
    with factory() as s:
        assert current_holder(s) is None


def test_second_acquire_names_the_holder(factory):
    with acquire(factory, purpose="nightly"):
        with pytest.raises(LockError) as err:
            acquire(factory, purpose="run")
    message = str(err.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "nightly@" in message


def test_lock_of_a_dead_process_on_this_host_is_taken_over(factory):
    dead = _dead_pid()
    assert not pid_alive(dead)
    _plant(factory, pid=dead, host=socket.gethostname())
    with acquire(factory) as handle:
        assert handle.took_over and f"process {dead}" in handle.took_over
        with factory() as s:
            assert current_holder(s).pid == os.getpid()


def test_live_holder_on_another_host_blocks_until_its_heartbeat_expires(factory):
    _plant(factory, pid=1, host="other-host", heartbeat_age=timedelta(minutes=3))
    with pytest.raises(LockError, match="other-host"):
        acquire(factory, LockOptions(stale_after=timedelta(minutes=10)))
    with acquire(factory, LockOptions(stale_after=timedelta(minutes=2), heartbeat_every=timedelta(seconds=30))) as h:
        assert "heartbeat is 3.0 min old" in h.took_over


def test_heartbeat_refreshes_and_detects_a_lost_lock(factory):
    options = LockOptions(stale_after=timedelta(seconds=1), heartbeat_every=timedelta(milliseconds=200))
    handle = acquire(factory, options)
    with factory() as s:
        first = s.scalar(select(RunLock.heartbeat_at))
    time.sleep(0.6)
    with factory() as s:
        assert s.scalar(select(RunLock.heartbeat_at)) > first
    # somebody else took the lock over (e.g. after a long freeze of this process). A fresh
    # transaction: on SQLite a read snapshot older than the heartbeat's write cannot be upgraded.
    with factory() as s:
        s.execute(update(RunLock).where(RunLock.name == "batch").values(holder="someone-else"))
        s.commit()
    with pytest.raises(LockError, match="taken over"):
        handle.heartbeat()
    assert handle.lost
    handle.release()
    with factory() as s:
        assert current_holder(s).holder == "someone-else"  # release never deletes another holder's lock


def test_locks_are_per_name(factory):
    with acquire(factory, LockOptions(name="batch")), acquire(factory, LockOptions(name="retrain")):
        with factory() as s:
            assert {r.name for r in s.scalars(select(RunLock))} == {"batch", "retrain"}


def test_lock_options_are_validated():
    with pytest.raises(ValueError, match="half"):
        LockOptions(stale_after=timedelta(minutes=1), heartbeat_every=timedelta(minutes=1)).validate()
    with pytest.raises(ValueError, match="empty"):
        LockOptions(name="").validate()
