from __future__ import annotations

import math

import pytest
from builders import T0, add_user, analyzed_call
from click.testing import CliRunner
from sqlalchemy import select

from qa import audit, review
from qa import storage as qadb
from qa.cli import cli
from qa.errors import NotFound, PermissionDenied, ReviewError
from qa.review import calibration
from qa.review.queue import Actor, ReviewPolicy
from qa.review.routing import TierPolicy, score_and_route
from qa.storage.models import Finding, ReviewItem

SUE = Actor("sue", "senior")


def test_wilson_interval_known_values():
    low, high = calibration.wilson_interval(5, 100)
    assert (round(low, 4), round(high, 4)) == (0.0215, 0.1118)
    assert calibration.wilson_interval(0, 50)[0] == 0.0 and 0.07 < calibration.wilson_interval(0, 50)[1] < 0.072
    assert calibration.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        calibration.wilson_interval(3, 2)


def test_cohen_kappa_textbook_example():
    # 50 items: both yes 20, both no 15, A yes/B no 5, A no/B yes 10 -> po 0.7, pe 0.5, kappa 0.4
    pairs = [("y", "y")] * 20 + [("n", "n")] * 15 + [("y", "n")] * 5 + [("n", "y")] * 10
    assert calibration.cohen_kappa(pairs) == pytest.approx(0.4)
    assert calibration.cohen_kappa([("y", "y"), ("y", "y")]) is None
    assert calibration.cohen_kappa([("y", "n"), ("n", "y")]) == pytest.approx(-1.0)


def test_fleiss_kappa_wikipedia_example():
    # The worked example of Fleiss (1971) as given on Wikipedia: 10 items, 14 raters, kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(cat) for cat, count in enumerate(row) for _ in range(count)] for row in table]
    assert calibration.fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-4)
    # With two raters Fleiss' kappa is close to (not equal to) Cohen's; perfect agreement gives 1.
    assert calibration.fleiss_kappa([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert calibration.fleiss_kappa([["a", "a"], ["a", "a"]]) is None
    with pytest.raises(ValueError):
        calibration.fleiss_kappa([["a", "b"], ["a"]])


@pytest.fixture
def calls(session):
    ids = [analyzed_call(session, f"K{i}", [("R2", "closing.missing", "minor")]).id for i in range(4)]
    add_user(session, "ann", "inspector")
    add_user(session, "bob", "inspector")
    add_user(session, "cyd", "inspector")
    add_user(session, "old", "inspector", active=False)
    return ids


def test_session_votes_and_report(session, calls):
    with pytest.raises(PermissionDenied):
        calibration.start_session(session, Actor("ann", "inspector"), "nov", calls, ["ann", "bob"])
    with pytest.raises(ReviewError, match="old"):
        calibration.start_session(session, SUE, "nov", calls, ["ann", "old"])
    with pytest.raises(ValueError):
        calibration.start_session(session, SUE, "nov", calls, ["ann"])
    cs = calibration.start_session(session, SUE, "nov", calls, ["ann", "bob", "cyd"], now=T0)
    with pytest.raises(ReviewError, match="exists"):
        calibration.start_session(session, SUE, "nov", calls, ["ann", "bob"])

    verdicts = {  # call -> (ann, bob, cyd)
        calls[0]: ("fail", "fail", "fail"),
        calls[1]: ("pass", "pass", "fail"),
        calls[2]: ("pass", "pass", "pass"),
        calls[3]: ("fail", "pass", "pass"),
    }
    for call_id, values in verdicts.items():
        for name, value in zip(("ann", "bob", "cyd"), values):
            calibration.vote(session, Actor(name, "inspector"), cs.id, call_id, "verdict", value, now=T0)
    finding = session.scalars(select(Finding).where(Finding.call_id == calls[0])).one()
    calibration.vote(session, Actor("ann", "inspector"), cs.id, calls[0], f"finding:{finding.id}", "rejected")
    calibration.vote(session, Actor("ann", "inspector"), cs.id, calls[0], f"finding:{finding.id}", "confirmed")
    with pytest.raises(PermissionDenied):
        calibration.vote(session, Actor("dan", "inspector"), cs.id, calls[0], "verdict", "pass")
    with pytest.raises(ValueError):
        calibration.vote(session, Actor("ann", "inspector"), cs.id, calls[0], "verdict", "maybe")
    with pytest.raises(NotFound):
        calibration.vote(session, Actor("ann", "inspector"), cs.id, calls[1], f"finding:{finding.id}", "confirmed")

    rep = calibration.report(session, cs.id)
    by_key = {(i.call_id, i.item_key): i for i in rep.items}
    assert by_key[(calls[0], "verdict")].agreement == 1.0
    assert by_key[(calls[1], "verdict")].agreement == pytest.approx(1 / 3)
    assert by_key[(calls[1], "verdict")].majority == "pass"
    assert by_key[(calls[0], f"finding:{finding.id}")].votes == {"ann": "confirmed"}
    assert by_key[(calls[0], f"finding:{finding.id}")].agreement is None
    assert rep.complete_items == 4 and rep.cohen_kappa is None
    expected = calibration.fleiss_kappa([list(v) for v in verdicts.values()])
    # P-bar 2/3, 5 fail and 7 pass of 12 -> Pe 74/144 -> kappa 11/35
    assert rep.fleiss_kappa == pytest.approx(expected) and math.isclose(expected, 11 / 35, rel_tol=1e-9)
    assert rep.inspector_vs_majority == {"ann": 0.75, "bob": 1.0, "cyd": 0.75}

    assert [c.name for c in calibration.sessions(session)] == ["nov"]
    calibration.close_session(session, SUE, cs.id)
    with pytest.raises(ReviewError, match="closed"):
        calibration.vote(session, Actor("ann", "inspector"), cs.id, calls[0], "verdict", "pass")
    assert audit.verify(session).ok


def test_two_inspectors_get_cohen(session, calls):
    cs = calibration.start_session(session, SUE, "pair", calls, ["ann", "bob"])
    for call_id, (a, b) in zip(calls, [("fail", "fail"), ("pass", "pass"), ("pass", "fail"), ("pass", "pass")]):
        calibration.vote(session, Actor("ann", "inspector"), cs.id, call_id, "verdict", a)
        calibration.vote(session, Actor("bob", "inspector"), cs.id, call_id, "verdict", b)
    rep = calibration.report(session, cs.id)
    # po 0.75; ann: 1 fail/3 pass, bob: 2/2 -> pe 0.5 -> kappa 0.5
    assert rep.cohen_kappa == pytest.approx(0.5)
    assert rep.mean_agreement == pytest.approx(0.75)


def test_miss_rate_from_calibration_sample(session):
    policy = TierPolicy(calibration_rate=1.0)
    for i in range(10):
        analyzed_call(session, f"S{i}", [])
    score_and_route(session, policy=policy, now=T0)
    ann, rp = Actor("ann", "inspector"), ReviewPolicy()
    items = list(session.scalars(select(ReviewItem).order_by(ReviewItem.id)))
    assert {i.reason for i in items} == {"calibration"}
    for n, item in enumerate(items[:8]):  # 8 reviewed, 2 still open
        review.claim(session, ann, item.id, rp, now=T0)
        if n < 2:
            review.add_finding(session, ann, item.id, category="closing.missing", now=T0)
        if n == 1:
            review.add_finding(session, ann, item.id, category="disclosure.recording_missing", now=T0)
        review.close(session, ann, item.id, policy=rp, now=T0)
    mr = calibration.miss_rate(session)
    assert (mr.overall.faulty, mr.overall.reviewed) == (2, 8)
    assert (mr.overall.low, mr.overall.high) == pytest.approx(calibration.wilson_interval(2, 8))
    assert [(p.label, p.faulty, p.reviewed) for p in mr.by_category] == [
        ("closing.missing", 2, 8), ("disclosure.recording_missing", 1, 8)]
    assert mr.unflagged_calls == 10
    est, low, high = mr.estimated_missed
    assert est == pytest.approx(2.5) and low < est < high


def test_cli_calibration(cli_env, settings):
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    with qadb.session_scope(qadb.session_factory(engine)) as s:
        analyzed_call(s, "K1", [("R2", "closing.missing", "minor")])
        analyzed_call(s, "K2", [])
        add_user(s, "sue", "senior")
        add_user(s, "ann", "inspector")
        add_user(s, "bob", "inspector")
    engine.dispose()
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    out = run("calibrate", "start", "week48", "--call", "K1", "--call", "K2", "--inspector", "ann",
              "--inspector", "bob", "--as", "sue")
    assert "calibration session 1 (week48): 2 calls, inspectors ann, bob" in out
    for who, v1, v2 in (("ann", "fail", "pass"), ("bob", "fail", "fail")):
        run("calibrate", "vote", "1", "K1", "verdict", v1, "--as", who)
        run("calibrate", "vote", "1", "K2", "verdict", v2, "--as", who)
    out = run("calibrate", "report", "1")
    assert "2 of 2 items judged by all" in out and "mean pairwise agreement 50.0%" in out
    assert "Cohen's kappa 0.000" in out and "ann=pass bob=fail" in out
    out = run("calibrate", "report", "--miss-rate")
    assert "0 of 0 reviewed" in out
