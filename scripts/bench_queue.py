#!/usr/bin/env python
"""Queue page time with a large queue, on SQLite and (when reachable) PostgreSQL.

Fills a fresh database with N open review items (default 100,000; with calls spread over
agents, teams and thirty days, and two findings each), then times the web queue page as an
inspector gets it (``GET /queue``, rendered HTML, through the FastAPI app and its session)
for the first page, a page deep in the queue, and each filter, and prints median / p95 per
view. The library call alone (:func:`qa.review.queue_page`) is timed beside it.

    .venv/bin/python scripts/bench_queue.py                  # 100,000 items, both databases
    .venv/bin/python scripts/bench_queue.py --items 5000 --runs 5 --no-postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the project, and the builders the tests use

from builders import T0, seed_queue  # noqa: E402

from qa import review, storage  # noqa: E402
from qa.config import Settings  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def views(deep_cursor: str) -> dict[str, str]:
    day = (T0.date()).isoformat()
    return {
        "first page": "/queue",
        "page after 50,000 items": f"/queue?after={deep_cursor}",
        "tier T2": "/queue?tier=T2",
        "category (conduct.insult)": "/queue?category=conduct.insult",
        "agent A0042": "/queue?agent=A0042",
        "team 催收一组": "/queue?team=催收一组",
        "day": f"/queue?day={day}",
        "call id search '12345'": "/queue?call=12345",
        "agent + category": "/queue?agent=A0042&category=closing.missing",
    }


def time_it(fn, runs: int) -> tuple[float, float]:
    fn()  # warm: templates compiled, caches filled
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]


def bench(url: str, items: int, runs: int, data_dir: Path) -> list[tuple[str, str, float, float, int]]:
    from fastapi.testclient import TestClient

    from web_helpers import login  # the login the web tests use

    from qa.web.app import create_app

    storage.upgrade(url)
    engine = storage.make_engine(url)
    t0 = time.perf_counter()
    seed_queue(engine, items, findings_per_item=2)
    print(f"  seeded {items:,} items in {time.perf_counter() - t0:.1f} s", flush=True)
    factory = storage.session_factory(engine)
    with storage.write_session(factory) as s:
        review.users.create_user(s, "bench", "bench", "inspector", "bench-password-1")
        s.commit()
    settings = Settings(data_dir=str(data_dir), database_url=url, secret_key="bench-secret-key-0123456789")
    app = create_app(settings, session_factory=factory)
    rows = []
    with TestClient(app) as client:
        login(client, "bench", "bench-password-1")
        with factory() as s:
            deep = review.queue_page(s, limit=200)
            for _ in range(249):  # 250 pages of 200: after item 50,000
                if deep.next_cursor is None:
                    break
                deep = review.queue_page(s, after=deep.next_cursor, limit=200)
            cursor = deep.next_cursor.encode() if deep.next_cursor else ""
        for name, path in views(cursor).items():
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            shown = response.text.count('class="queue-row')
            median, p95 = time_it(lambda p=path: client.get(p), runs)
            rows.append((name, "page", median, p95, shown))
        with factory() as s:
            for name, filters in (("first page", review.QueueFilters()),
                                  ("agent + category", review.QueueFilters(agent="A0042", category="closing.missing"))):
                median, p95 = time_it(lambda f=filters: review.queue_page(s, f, limit=50), runs)
                rows.append((name, "library", median, p95, len(review.queue_page(s, filters, limit=50))))
    engine.dispose()
    return rows


def _pg_url() -> str | None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = f"bench_queue_{uuid.uuid4().hex[:8]}"
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as e:
        print(f"PostgreSQL not reachable ({e.orig}); skipped")
        return None
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg(url: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"SQLite, {args.items:,} open items:", flush=True)
        results["SQLite"] = bench(f"sqlite:///{tmp}/bench.db", args.items, args.runs, Path(tmp))
        if not args.no_postgres:
            url = _pg_url()
            if url:
                print(f"PostgreSQL, {args.items:,} open items:", flush=True)
                try:
                    results["PostgreSQL"] = bench(url, args.items, args.runs, Path(tmp))
                finally:
                    _drop_pg(url)
    print(f"\nqueue page time, {args.items:,} open items, {args.runs} runs each (ms; 'page' = GET /queue, "
          f"rendered HTML with 50 rows; 'library' = queue_page() alone)")
    print(f"{'backend':<11} {'view':<28} {'what':<8} {'median':>8} {'p95':>8} {'rows':>5}")
    for backend, rows in results.items():
        for name, what, median, p95, shown in rows:
            print(f"{backend:<11} {name:<28} {what:<8} {median:8.1f} {p95:8.1f} {shown:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
