#!/usr/bin/env python
"""Claim-next latency with a large queue, on SQLite and (when reachable) PostgreSQL.

Fills a fresh database with N open review items (default 100,000; with the calls, analyses
and assessments they hang on), prints the query plan of the pick, then times ``claim_next``
one transaction at a time (what an inspector's click costs, audit event and commit included)
and prints median / p95 / max.

    .venv/bin/python scripts/bench_claim.py                  # 100,000 items, both databases
    .venv/bin/python scripts/bench_claim.py --items 1000 --claims 200 --no-postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the project, and the builders the tests use

from builders import seed_queue  # noqa: E402

from qa import storage  # noqa: E402
from qa.permissions import Actor  # noqa: E402
from qa.review.queue import ReviewPolicy, claim_next, next_open_query  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 11, 23, tzinfo=timezone.utc)


def plan(engine: sa.Engine) -> str:
    stmt = next_open_query("bench", skip_locked=engine.dialect.name == "postgresql")
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + sql).all()
    return "\n".join("    " + str(r[-1]) for r in rows)


def bench(label: str, url: str, items: int, claims: int) -> None:
    storage.upgrade(url)
    engine = storage.make_engine(url)
    t = time.perf_counter()
    seed_queue(engine, items, batch=10_000, due=lambda i: T0 + timedelta(seconds=(i * 7919) % items))
    print(f"{label}: seeded {items:,} open items in {time.perf_counter() - t:.1f} s")
    print(f"  plan of the pick:\n{plan(engine)}")
    pick = next_open_query("bench", skip_locked=False)
    with engine.connect() as conn:
        t = time.perf_counter()
        for _ in range(200):
            conn.execute(pick).scalar()
        print(f"  the pick query alone: {(time.perf_counter() - t) / 200 * 1000:.3f} ms")
    factory = storage.session_factory(engine)
    actor, policy = Actor("bench", "inspector"), ReviewPolicy()
    times = []
    for _ in range(claims):
        t = time.perf_counter()
        with storage.session_scope(factory) as session:
            item = claim_next(session, actor, policy)
        times.append((time.perf_counter() - t) * 1000)
        if item is None:
            raise SystemExit("queue ran empty: use fewer --claims")
    times.sort()
    print(f"  claim_next over {claims} claims (one transaction each, audit event + commit included): "
          f"median {statistics.median(times):.2f} ms, p95 {times[int(0.95 * len(times)) - 1]:.2f} ms, "
          f"max {times[-1]:.2f} ms")
    engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--claims", type=int, default=500)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-url", default=PG_ADMIN_URL, help="server/database used to create a scratch database")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bench("SQLite", f"sqlite:///{tmp}/bench.db", args.items, args.claims)
    if args.no_postgres:
        return 0
    name = f"qa_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        print(f"PostgreSQL: skipped ({e.__class__.__name__}: not reachable at {args.pg_url})")
        return 0
    try:
        bench("PostgreSQL", args.pg_url.rsplit("/", 1)[0] + "/" + name, args.items, args.claims)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
