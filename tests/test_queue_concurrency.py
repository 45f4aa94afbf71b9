"""8 processes claim from 1,000 queued items until the queue is empty: every item must be
claimed exactly once and none lost, on PostgreSQL (FOR UPDATE SKIP LOCKED) and on SQLite
(write lock + conditional UPDATE). Each process has its own engine."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import pytest
from builders import seed_queue
from sqlalchemy import func, select

from qa import audit
from qa import storage as qadb
from qa.review.queue import Actor, ReviewPolicy, claim_next
from qa.storage.models import ReviewItem

PROCESSES = 8
ITEMS = 1000


def _claimer(url: str, name: str, start, results) -> None:
    engine = qadb.make_engine(url)
    factory = qadb.session_factory(engine)
    actor, policy = Actor(name, "inspector"), ReviewPolicy()
    claimed: list[int] = []
    start.wait()
    try:
        while True:
            with qadb.session_scope(factory) as session:
                item = claim_next(session, actor, policy)
                if item is None:
                    break
                claimed.append(item.id)
        results.put((name, claimed, None))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((name, claimed, repr(e)))
    finally:
        engine.dispose()


def _run_claimers(url: str) -> dict[str, list[int]]:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"insp{n}", start, results)) for n in range(PROCESSES)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    collected = [results.get(timeout=240) for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
    errors = [(name, err) for name, _, err in collected if err]
    assert not errors, errors
    by_proc = {name: ids for name, ids, _ in collected}
    print(f"\n{url.split(':')[0]}: {PROCESSES} processes claimed {sum(map(len, by_proc.values()))} items in "
          f"{elapsed:.2f} s ({sum(map(len, by_proc.values())) / elapsed:.0f} claims/s); per process "
          f"{sorted(len(v) for v in by_proc.values())}")
    return by_proc


def _check(url: str, by_proc: dict[str, list[int]]) -> None:
    counts = Counter(i for ids in by_proc.values() for i in ids)
    assert len(counts) == ITEMS, "items lost"
    assert max(counts.values()) == 1, f"claimed twice: {[i for i, c in counts.items() if c > 1][:10]}"
    assert sum(1 for ids in by_proc.values() if ids) > 1  # the work was actually shared
    engine = qadb.make_engine(url)
    with qadb.session_factory(engine)() as s:
        owner = dict(s.execute(select(ReviewItem.id, ReviewItem.claimed_by)).all())
        assert s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.status != "claimed")) == 0
        result = audit.verify(s)
    engine.dispose()
    assert all(owner[i] == name for name, ids in by_proc.items() for i in ids)
    assert result.ok and result.events == ITEMS


def _prepare(url: str) -> None:
    engine = qadb.make_engine(url)
    seed_queue(engine, ITEMS)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_claims_exactly_once(pg_url):
    _prepare(pg_url)
    _check(pg_url, _run_claimers(pg_url))


def test_sqlite_claims_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    qadb.upgrade(url)
    _prepare(url)
    _check(url, _run_claimers(url))
