from __future__ import annotations

from datetime import timedelta

import pytest
from builders import T0, add_user, analyzed_call
from click.testing import CliRunner
from sqlalchemy import select

from qa import audit, review
from qa import storage as qadb
from qa.cli import cli
from qa.errors import NotFound, PermissionDenied, ReviewError
from qa.review.queue import Actor, ReviewPolicy
from qa.review.routing import TierPolicy, score_and_route
from qa.storage.models import AuditEvent, Finding, ReviewDecision, ReviewItem

POLICY = ReviewPolicy(claim_ttl_minutes=30, appeal_window_days=7)
ANN = Actor("ann", "inspector")
BOB = Actor("bob", "inspector")
SUE = Actor("sue", "senior")
TOM = Actor("tom", "senior")


@pytest.fixture
def queue(session):
    """Three routed calls: T2 (major), T1 (fatal), T3 (minor); returns item ids by tier."""
    analyzed_call(session, "C-MAJOR", [("R3", "misrep.superlative", "major"), ("R2", "closing.missing", "minor")],
                  agent_id="A7")
    analyzed_call(session, "C-FATAL", [("R1", "promise.guaranteed_return", "fatal")], agent_id="A7")
    analyzed_call(session, "C-MINOR", [("R2", "closing.missing", "minor")], agent_id="A8")
    score_and_route(session, policy=TierPolicy(calibration_rate=0.0), now=T0)
    session.commit()
    return {i.tier: i.id for i in session.scalars(select(ReviewItem))}


def _findings(session, item_id):
    return review.item_findings(session, session.get(ReviewItem, item_id))


def test_queue_lists_in_work_order(session, queue):
    entries = review.list_queue(session, now=T0)
    assert [e.tier for e in entries] == ["T1", "T2", "T3"]
    assert [e.call_id for e in entries] == ["C-FATAL", "C-MAJOR", "C-MINOR"]
    assert not any(e.overdue for e in entries)
    later = review.list_queue(session, review.QueueFilters(overdue_only=True), now=T0 + timedelta(hours=30))
    assert [e.tier for e in later] == ["T1", "T2"]
    counts = {c.tier: (c.open, c.claimed, c.overdue) for c in review.queue_counts(session, now=T0 + timedelta(hours=5))}
    assert counts == {"T1": (1, 0, 1), "T2": (1, 0, 0), "T3": (1, 0, 0)}


def test_claims_are_exclusive_and_expire(session, queue):
    first = review.claim_next(session, ANN, POLICY, now=T0)
    second = review.claim_next(session, BOB, POLICY, now=T0)
    assert (first.id, second.id) == (queue["T1"], queue["T2"])
    assert first.claim_expires_at == T0 + timedelta(minutes=30)
    with pytest.raises(ReviewError, match="claimed by ann"):
        review.claim(session, BOB, queue["T1"], POLICY, now=T0 + timedelta(minutes=10))
    # Renewing one's own claim is allowed.
    assert review.claim(session, ANN, queue["T1"], POLICY, now=T0 + timedelta(minutes=10)).claimed_by == "ann"
    # After expiry the item goes back to the queue and is first again (T1).
    took = review.claim_next(session, BOB, POLICY, now=T0 + timedelta(hours=1))
    assert took.id == queue["T1"] and took.claimed_by == "bob"
    actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
    assert actions[-2:] == ["review.claim_expired", "review.claim"]
    # bob holds T1 and T2 (T2's claim expired too, but nobody took it), ann can take T3 only.
    assert review.claim_next(session, ANN, POLICY, now=T0 + timedelta(hours=1)).id in (queue["T2"], queue["T3"])


def test_claim_next_by_tier_and_empty_queue(session, queue):
    assert review.claim_next(session, ANN, POLICY, tier="T3", now=T0).id == queue["T3"]
    assert review.claim_next(session, ANN, POLICY, tier="T3", now=T0) is None
    review.claim_next(session, ANN, POLICY, now=T0)
    review.claim_next(session, ANN, POLICY, now=T0)
    assert review.claim_next(session, ANN, POLICY, now=T0) is None


def test_release_and_permissions(session, queue):
    item = review.claim_next(session, ANN, POLICY, now=T0)
    with pytest.raises(PermissionDenied):
        review.release(session, BOB, item.id, now=T0)
    with pytest.raises(PermissionDenied, match="auditor"):
        review.claim_next(session, Actor("aud", "auditor"), POLICY, now=T0)
    assert review.release(session, SUE, item.id, now=T0).status == "open"  # a senior may release any claim
    with pytest.raises(ReviewError, match="not claimed"):
        review.release(session, ANN, item.id, now=T0)
    with pytest.raises(NotFound):
        review.claim(session, ANN, 9999, POLICY)
    with pytest.raises(ValueError):
        Actor("x", "boss").validate()


def test_assigned_items_wait_for_their_inspector(session, queue):
    add_user(session, "bob", "inspector")
    review.assign(session, SUE, queue["T1"], "bob", now=T0)
    assert review.claim_next(session, ANN, POLICY, now=T0).id == queue["T2"]
    with pytest.raises(PermissionDenied, match="assigned to bob"):
        review.claim(session, ANN, queue["T1"], POLICY, now=T0)
    assert review.claim_next(session, BOB, POLICY, now=T0).id == queue["T1"]
    with pytest.raises(ReviewError, match="not an active inspector"):
        review.assign(session, SUE, queue["T3"], "nobody", now=T0)


def test_round_robin_assignment(session, queue):
    for name in ("ann", "bob"):
        add_user(session, name, "inspector")
    add_user(session, "old", "inspector", active=False)
    with pytest.raises(PermissionDenied):
        review.assign_round_robin(session, ANN, now=T0)
    assigned = review.assign_round_robin(session, SUE, now=T0)
    assert assigned == {queue["T1"]: "ann", queue["T2"]: "bob", queue["T3"]: "ann"}


def test_decide_add_close(session, queue):
    item_id = queue["T2"]
    major, minor = _findings(session, item_id)
    with pytest.raises(ReviewError, match="claim it first"):
        review.decide(session, ANN, item_id, major.id, "confirmed")
    review.claim(session, ANN, item_id, POLICY, now=T0)
    with pytest.raises(PermissionDenied):
        review.decide(session, BOB, item_id, major.id, "confirmed")
    other = _findings(session, queue["T1"])[0]
    with pytest.raises(NotFound):
        review.decide(session, ANN, item_id, other.id, "confirmed")
    review.decide(session, ANN, item_id, major.id, "rejected", "not a superlative here", now=T0)
    review.decide(session, ANN, item_id, major.id, "confirmed", "on second listen it is", now=T0)
    with pytest.raises(ReviewError, match="decide finding"):
        review.close(session, ANN, item_id, policy=POLICY, now=T0)
    review.decide(session, ANN, item_id, minor.id, "rejected", "closing was said", now=T0)
    with pytest.raises(ReviewError, match="unknown category"):
        review.add_finding(session, ANN, item_id, category="made.up")
    added = review.add_finding(session, ANN, item_id, category="disclosure.recording_missing", start_s=0.0,
                               comment="no recording notice", now=T0)
    assert (added.source, added.severity, added.role, added.call_id) == ("inspector", "major", "agent",
                                                                          session.get(ReviewItem, item_id).call_id)
    decisions = {(d.finding_id, d.decision) for d in session.scalars(select(ReviewDecision))}
    assert decisions == {(major.id, "confirmed"), (minor.id, "rejected"), (added.id, "added")}

    closed = review.close(session, ANN, item_id, comment="two major problems", policy=POLICY, now=T0)
    assert (closed.status, closed.verdict, closed.final_score, closed.closed_by) == ("closed", "fail", 80.0, "ann")
    with pytest.raises(ReviewError):
        review.decide(session, ANN, item_id, minor.id, "confirmed")

    detail = review.get_item(session, item_id)
    assert [v.finding.id for v in detail.findings] == [major.id, added.id, minor.id]  # by time
    assert [v.added_by_inspector for v in detail.findings] == [False, True, False]
    assert [e.action for e in detail.history] == [
        "review.route", "review.claim", "review.decide", "review.decide", "review.decide",
        "review.add_finding", "review.close"]
    assert audit.verify(session).ok


def test_close_defaults_to_pass_when_findings_rejected(session, queue):
    item_id = queue["T1"]
    review.claim(session, ANN, item_id, POLICY, now=T0)
    (fatal,) = _findings(session, item_id)
    review.decide(session, ANN, item_id, fatal.id, "rejected", "the agent denied a guarantee", now=T0)
    item = review.close(session, ANN, item_id, policy=POLICY, now=T0)
    assert (item.verdict, item.final_score) == ("pass", 100.0)
    with pytest.raises(ReviewError, match="fail verdict"):
        review.open_appeal(session, Actor("A7", "agent"), item_id, "why", POLICY, now=T0)


def _failed_item(session, queue, closer=ANN):
    item_id = queue["T1"]
    review.claim(session, closer, item_id, POLICY, now=T0)
    (fatal,) = _findings(session, item_id)
    review.decide(session, closer, item_id, fatal.id, "confirmed", now=T0)
    review.close(session, closer, item_id, policy=POLICY, now=T0)
    return item_id


def test_appeal_flow(session, queue):
    item_id = _failed_item(session, queue, closer=SUE)
    with pytest.raises(PermissionDenied, match="own calls"):
        review.open_appeal(session, Actor("A8", "agent"), item_id, "not me", POLICY, now=T0)
    with pytest.raises(PermissionDenied):
        review.open_appeal(session, BOB, item_id, "on their behalf", POLICY, now=T0)
    with pytest.raises(ReviewError, match="appeal window"):
        review.open_appeal(session, Actor("A7", "agent"), item_id, "late", POLICY, now=T0 + timedelta(days=8))
    appeal = review.open_appeal(session, Actor("A7", "agent"), item_id, "I said 不保本", POLICY,
                                now=T0 + timedelta(days=1))
    assert session.get(ReviewItem, item_id).status == "appealed"
    with pytest.raises(ReviewError):
        review.open_appeal(session, Actor("A7", "agent"), item_id, "again", POLICY, now=T0 + timedelta(days=1))
    with pytest.raises(PermissionDenied, match="needs senior"):
        review.decide_appeal(session, ANN, appeal.id, "overturned", "agree")
    with pytest.raises(PermissionDenied, match="another senior"):
        review.decide_appeal(session, SUE, appeal.id, "overturned", "agree")
    decided = review.decide_appeal(session, TOM, appeal.id, "overturned", "the recording has the denial",
                                   final_score=95, now=T0 + timedelta(days=2))
    item = session.get(ReviewItem, item_id)
    assert (decided.status, decided.decided_by, item.status, item.verdict, item.final_score) == (
        "overturned", "tom", "appeal_decided", "pass", 95.0)
    with pytest.raises(ReviewError, match="already decided"):
        review.decide_appeal(session, TOM, appeal.id, "upheld", "changed my mind")
    with pytest.raises(NotFound):
        review.find_appeal(session, item_id)
    assert audit.verify(session).ok


def test_upheld_appeal_keeps_verdict(session, queue):
    item_id = _failed_item(session, queue)
    appeal = review.open_appeal(session, SUE, item_id, "filed for agent A7", POLICY, now=T0)
    review.decide_appeal(session, TOM, appeal.id, "upheld", "the promise is clear at 0:10", now=T0)
    item = session.get(ReviewItem, item_id)
    assert (item.status, item.verdict, item.final_score) == ("appeal_decided", "fail", 0.0)


def test_policy_validation():
    with pytest.raises(ValueError):
        ReviewPolicy(claim_ttl_minutes=0).validate()
    with pytest.raises(ValueError):
        ReviewPolicy(appeal_window_days=-1).validate()


def _run(runner, *args):
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_review_session(cli_env, settings):
    """A scripted session: score, list, claim, decide, add, close, appeal, decide the appeal."""
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    with qadb.session_scope(qadb.session_factory(engine)) as s:
        analyzed_call(s, "CALL-1", [("R1", "promise.guaranteed_return", "fatal"), ("R2", "closing.missing", "minor")],
                      agent_id="A7")
        analyzed_call(s, "CALL-2", [("R3", "misrep.superlative", "major")], agent_id="A8")
        analyzed_call(s, "CALL-3", [], agent_id="A8")
        add_user(s, "ann", "inspector")
        add_user(s, "sue", "senior")
        add_user(s, "zed", "inspector", active=False)
    runner = CliRunner()
    out = _run(runner, "score", "--auto-assign")
    assert "3 calls assessed, 2 routed (T1 1, T2 1, T3 0" in out
    out = _run(runner, "queue", "list", "--assigned-to", "sue")
    assert "CALL-2" in out and "CALL-1" not in out  # round robin: ann got CALL-1, sue CALL-2
    out = _run(runner, "queue", "list")
    assert "T1: 1 open" in out and "CALL-1" in out and out.index("CALL-1") < out.index("CALL-2")

    out = _run(runner, "queue", "claim", "--as", "ann")
    assert out.startswith("claimed item 1 (T1")
    refused = runner.invoke(cli, ["queue", "claim", "1", "--as", "sue"])
    assert refused.exit_code == 1 and "claimed by ann" in refused.output
    assert "disabled" in runner.invoke(cli, ["queue", "claim", "--as", "zed"]).output
    assert "has role inspector" in runner.invoke(cli, ["queue", "claim", "--as", "ann", "--role", "senior"]).output
    assert "give --role" in runner.invoke(cli, ["queue", "claim", "--as", "stranger"]).output

    with engine.connect() as conn:
        fatal_id, minor_id = [r[0] for r in conn.execute(select(Finding.id).where(Finding.call_id == 1)
                                                         .order_by(Finding.id))]
    show = _run(runner, "review", "show", "1")
    assert "promise.guaranteed_return" in show and "claimed by ann" in show
    _run(runner, "review", "decide", "1", str(fatal_id), "confirmed", "-m", "保本保息 at 0:00", "--as", "ann")
    _run(runner, "review", "decide", "1", str(minor_id), "rejected", "-m", "closing said", "--as", "ann")
    out = _run(runner, "review", "add", "1", "--category", "disclosure.risk_missing", "--start", "42", "--as", "ann")
    assert "(disclosure.risk_missing, fatal)" in out
    out = _run(runner, "review", "close", "1", "--as", "ann", "-m", "fails")
    assert "item 1 closed: fail, score 0.0" in out

    out = _run(runner, "appeal", "open", "1", "--reason", "我说的是不保本", "--as", "A7", "--role", "agent")
    assert "appeal 1 opened on item 1" in out
    out = _run(runner, "appeal", "decide", "1", "overturned", "--reason", "denial audible", "--score", "90",
               "--as", "sue")
    assert "appeal 1 on item 1: overturned" in out
    show = _run(runner, "review", "show", "1")
    assert "status appeal_decided" in show and "verdict pass" in show and "appeal 1 by A7" in show
    assert "#" in show and "appeal.decide" in show

    assert "assigned to sue" in runner.invoke(cli, ["queue", "claim", "2", "--as", "ann"]).output
    _run(runner, "queue", "claim", "2", "--as", "sue")
    _run(runner, "queue", "release", "2", "--as", "sue")
    out = _run(runner, "queue", "list", "--status", "open")
    assert "CALL-2" in out and "CALL-1" not in out
    out = _run(runner, "audit", "verify")
    assert out.startswith("audit log OK")
    engine.dispose()


def test_claim_pick_walks_the_queue_index(session):
    sql = str(review.next_open_query("ann", skip_locked=False).compile(session.get_bind(),
                                                                       compile_kwargs={"literal_binds": True}))
    plan = " ".join(str(row[-1]) for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "USING INDEX ix_review_queue" in plan and "TEMP B-TREE" not in plan
