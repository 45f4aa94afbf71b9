"""The queue page: filters by tier, category, agent, team, local day and call id; top
findings most severe first; keyset pages that cover every item once, in work order, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import QUEUE_CATEGORIES, QUEUE_TEAMS, T0, analyzed_call, seed_queue
from sqlalchemy import update

from qa import review
from qa import storage as qadb
from qa.review.routing import TierPolicy, score_and_route
from qa.storage.models import Call, ReviewItem
from qa.timeutil import local_day, zone

N = 360
TIERS = ("T1", "T2", "T3")
SHANGHAI = zone("Asia/Shanghai")


def model(i: int) -> dict:
    """What seed_queue gives item i (ids are i + 1), written out independently of the query."""
    return {"id": i + 1, "call_id": f"Q{i:07d}", "tier": TIERS[i % 3], "agent": f"A{i % 20:04d}",
            "team": QUEUE_TEAMS[i % len(QUEUE_TEAMS)], "started": T0 - timedelta(minutes=(i * 7) % (30 * 1440)),
            "due": T0 + timedelta(minutes=i % 97),
            "categories": {QUEUE_CATEGORIES[(i * 3 + k) % len(QUEUE_CATEGORIES)] for k in range(2)}}


def work_order(items: list[dict]) -> list[int]:
    return [m["id"] for m in sorted(items, key=lambda m: (m["tier"], m["due"], m["id"]))]


@pytest.fixture
def big_queue(db_url):
    engine = qadb.make_engine(db_url)
    seed_queue(engine, N, findings_per_item=2, agents=20, due=lambda i: T0 + timedelta(minutes=i % 97))
    factory = qadb.session_factory(engine)
    yield factory
    engine.dispose()


def all_pages(session, filters, limit=25, **kw) -> list[int]:
    ids, cursor, pages = [], None, 0
    while True:
        page = review.queue_page(session, filters, after=cursor, limit=limit, now=T0, **kw)
        ids += [e.item_id for e in page]
        pages += 1
        assert pages < 100
        if page.next_cursor is None:
            return ids
        cursor = review.QueueCursor.decode(page.next_cursor.encode())  # through the link, as the browser does


def test_pages_cover_every_item_once_in_work_order(big_queue):
    with big_queue() as s:
        assert all_pages(s, review.QueueFilters()) == work_order([model(i) for i in range(N)])


@pytest.mark.parametrize("filters, keep", [
    (review.QueueFilters(tier="T2"), lambda m: m["tier"] == "T2"),
    (review.QueueFilters(agent="A0007"), lambda m: m["agent"] == "A0007"),
    (review.QueueFilters(team="催收一组"), lambda m: m["team"] == "催收一组"),
    (review.QueueFilters(category="conduct.insult"), lambda m: "conduct.insult" in m["categories"]),
    (review.QueueFilters(call_search="0001"), lambda m: "0001" in m["call_id"]),
    (review.QueueFilters(tier="T1", team="信用卡一组", category="greeting.missing"),
     lambda m: m["tier"] == "T1" and m["team"] == "信用卡一组" and "greeting.missing" in m["categories"]),
], ids=["tier", "agent", "team", "category", "call-id", "combined"])
def test_filters_keep_exactly_the_matching_items(big_queue, filters, keep):
    expected = work_order([m for m in map(model, range(N)) if keep(m)])
    assert expected, "the filter must match something for the test to mean anything"
    with big_queue() as s:
        assert all_pages(s, filters, limit=7) == expected


def test_the_day_filter_is_a_local_day(big_queue):
    day = local_day(T0 - timedelta(days=1), SHANGHAI)
    expected = work_order([m for m in map(model, range(N)) if local_day(m["started"], SHANGHAI) == day])
    utc_expected = work_order([m for m in map(model, range(N)) if m["started"].date() == day])
    assert expected and expected != utc_expected  # the boundary matters on this data
    with big_queue() as s:
        assert all_pages(s, review.QueueFilters(day=day), tz=SHANGHAI) == expected


def test_a_claimed_item_between_pages_shifts_nothing(big_queue):
    with big_queue() as s:
        first = review.queue_page(s, review.QueueFilters(), limit=10, now=T0)
        s.execute(update(ReviewItem).where(ReviewItem.id == first.entries[-1].item_id).values(status="closed"))
        s.commit()
        second = review.queue_page(s, review.QueueFilters(), after=first.next_cursor, limit=10, now=T0)
        order = work_order([model(i) for i in range(N)])
        assert [e.item_id for e in second] == order[10:20]


def test_call_search_treats_like_wildcards_as_text(session):
    analyzed_call(session, "CALL_100%", [("R1", "conduct.insult", "fatal")])
    analyzed_call(session, "CALLX1000", [("R1", "conduct.insult", "fatal")])
    score_and_route(session, policy=TierPolicy(calibration_rate=0.0), now=T0)
    session.commit()
    assert [e.call_id for e in review.list_queue(session, review.QueueFilters(call_search="_100%"))] == ["CALL_100%"]


def test_top_findings_are_most_severe_first_one_per_category(session):
    analyzed_call(session, "MANY", [("R-CLOSE", "closing.missing", "minor"), ("R-SUP", "misrep.superlative", "major"),
                                    ("R-SUP2", "misrep.superlative", "major"), ("R-G", "greeting.missing", "minor"),
                                    ("R-PROM", "promise.guaranteed_return", "fatal")])
    score_and_route(session, policy=TierPolicy(calibration_rate=0.0), now=T0)
    session.commit()
    (entry,) = review.list_queue(session)
    assert [f.category for f in entry.top_findings] == ["promise.guaranteed_return", "misrep.superlative",
                                                         "closing.missing"]
    assert [f.severity for f in entry.top_findings] == ["fatal", "major", "minor"]
    assert entry.findings_total == 5


def test_bad_filters_and_positions_are_refused(session):
    with pytest.raises(ValueError, match="tier"):
        review.queue_page(session, review.QueueFilters(tier="T9"))
    with pytest.raises(ValueError, match="queue position"):
        review.QueueCursor.decode("not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        review.queue_page(session, limit=5000)


def test_agent_and_team_are_on_the_entry(session):
    call = analyzed_call(session, "WHO", [("R1", "conduct.insult", "fatal")], agent_id="A0099")
    session.execute(update(Call).where(Call.id == call.id).values(team="催收二组", business_line="collection"))
    score_and_route(session, policy=TierPolicy(calibration_rate=0.0), now=T0)
    session.commit()
    (entry,) = review.list_queue(session)
    assert (entry.agent_id, entry.team, entry.business_line) == ("A0099", "催收二组", "collection")
