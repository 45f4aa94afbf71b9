from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from builders import T0, add_user, analyzed_call, sha
from sqlalchemy import func, select

from qa import audit
from qa.config import Settings
from qa.errors import NotFound
from qa.review.routing import TierPolicy, assess_call, in_calibration_sample, route, score_and_route
from qa.rules.scorecard import Scorecard, Scored, score_findings
from qa.storage.models import Analysis, Assessment, AuditEvent, Call, Finding, ReviewItem

NO_SAMPLE = TierPolicy(calibration_rate=0.0)


def test_policy_from_settings_and_validation():
    policy = TierPolicy.from_settings(Settings(tier1_sla_hours=2, complaint_risk_threshold=0.7, calibration_rate=0.05))
    assert (policy.tier1_sla_hours, policy.complaint_risk_threshold, policy.calibration_rate) == (2, 0.7, 0.05)
    for bad in (dict(tier2_sla_hours=0), dict(complaint_risk_threshold=1.5), dict(calibration_rate=-0.1)):
        with pytest.raises(ValueError):
            dataclasses.replace(policy, **bad).validate()
    # Assignment does not change how calls are assessed, so it does not change the policy hash.
    assert dataclasses.replace(policy, auto_assign=True).sha256 == policy.sha256
    assert dataclasses.replace(policy, complaint_risk_threshold=0.5).sha256 != policy.sha256


@pytest.mark.parametrize("findings,risk,tier,fatal", [
    ([("R1", "promise.guaranteed_return", "fatal"), ("R2", "closing.missing", "minor")], None, "T1", True),
    ([("R2", "closing.missing", "minor")], 0.93, "T1", False),
    ([("R3", "misrep.superlative", "major"), ("R2", "closing.missing", "minor")], 0.2, "T2", False),
    ([("R2", "closing.missing", "minor")], 0.79, "T3", False),
    ([], None, None, False),
])
def test_tiers(session, findings, risk, tier, fatal):
    call = analyzed_call(session, "C1", findings, risk=risk)
    a = assess_call(session, call, NO_SAMPLE, now=T0)
    assert (a.tier, a.fatal, a.calibration_sample) == (tier, fatal, False)
    item = route(session, a, NO_SAMPLE, now=T0)
    if tier is None:
        assert item is None
    else:
        assert item.tier == tier and item.reason == "flagged" and item.status == "open"
        assert item.due_at == T0 + timedelta(hours=NO_SAMPLE.sla_hours(tier))


def test_reasons_and_score(session):
    call = analyzed_call(session, "C1", [("R3", "misrep.superlative", "major"), ("R2", "closing.missing", "minor")],
                         risk=0.95)
    a = assess_call(session, call, NO_SAMPLE, now=T0)
    assert a.reasons == ["complaint_risk:0.950", "major:R3", "minor:R2"]
    assert a.score == 100 - 10 - 5  # the pack's scorecard: what the analysis would have given
    fatal = analyzed_call(session, "C2", [("R1", "promise.guaranteed_return", "fatal")])
    assert assess_call(session, fatal, NO_SAMPLE).score == 0.0
    # The rule pack's own scorecard result wins when there is one.
    scored = analyzed_call(session, "C3", [("R2", "closing.missing", "minor")], analysis_score=88.5)
    assert assess_call(session, scored, NO_SAMPLE).score == 88.5


def test_assessment_is_idempotent_per_policy(session):
    call = analyzed_call(session, "C1", [("R3", "misrep.superlative", "major")])
    first = assess_call(session, call, NO_SAMPLE, now=T0)
    assert assess_call(session, call, NO_SAMPLE, now=T0).id == first.id
    stricter = dataclasses.replace(NO_SAMPLE, tier2_sla_hours=8)
    second = assess_call(session, call, stricter, now=T0)
    assert second.id != first.id and second.score == first.score == 90
    session.refresh(first)
    assert (first.is_current, second.is_current) == (False, True)
    assert second.policy["tier2_sla_hours"] == 8 and second.policy_sha256 == stricter.sha256


def test_calibration_sample_is_reproducible_and_near_rate():
    shas = [sha(f"rec{i}") for i in range(20000)]
    drawn = [in_calibration_sample(7, s, 0.02) for s in shas]
    assert drawn == [in_calibration_sample(7, s, 0.02) for s in shas]
    assert 0.015 < sum(drawn) / len(drawn) < 0.025
    other_seed = [in_calibration_sample(8, s, 0.02) for s in shas]
    assert other_seed != drawn
    # A larger rate keeps every call the smaller rate drew (the sample grows, never reshuffles).
    assert all(in_calibration_sample(7, s, 0.05) for s, d in zip(shas, drawn) if d)


def test_sampled_clean_calls_get_a_calibration_item(session):
    policy = TierPolicy(calibration_rate=1.0)
    clean = analyzed_call(session, "CLEAN", [])
    flagged = analyzed_call(session, "FLAG", [("R2", "closing.missing", "minor")])
    a = assess_call(session, clean, policy, now=T0)
    assert a.tier is None and a.calibration_sample and a.reasons == ["calibration_sample"]
    item = route(session, a, policy, now=T0)
    assert (item.reason, item.tier, item.due_at) == ("calibration", "T3", T0 + timedelta(hours=72))
    # Calls with findings are never part of the sample: their review is already flagged.
    assert assess_call(session, flagged, policy).calibration_sample is False


def test_score_and_route_stage(session):
    analyzed_call(session, "F", [("R1", "promise.guaranteed_return", "fatal")])
    analyzed_call(session, "M", [("R3", "misrep.superlative", "major")])
    analyzed_call(session, "OK", [])
    broken = Call(call_id="NOANALYSIS", recording_sha256=sha("NA"), file_path="/x", file_size=1, status="analyzed")
    session.add(broken)
    session.flush()

    report = score_and_route(session, policy=NO_SAMPLE, now=T0)
    assert report.routed == 2 and report.failed == 1
    assert report.by_tier() == {"T1": 1, "T2": 1, "none": 1}
    statuses = dict(session.execute(select(Call.call_id, Call.status)).all())
    assert statuses == {"F": "routed", "M": "routed", "OK": "scored", "NOANALYSIS": "failed"}
    assert broken.error_code == "scoring.no_analysis"
    routed_events = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "review.route"))
    assert routed_events == 2
    assert audit.verify(session).ok

    # Re-running over the same calls adds nothing.
    ids = list(session.scalars(select(Call.id).where(Call.status.in_(("routed", "scored")))))
    again = score_and_route(session, NO_SAMPLE, call_pks=ids, now=T0 + timedelta(hours=1))
    assert again.routed == 2
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 2
    assert session.scalar(select(func.count()).select_from(Assessment)) == 3


def test_assess_without_analysis_raises(session):
    call = Call(call_id="X", recording_sha256=sha("X"), file_path="/x", file_size=1, status="transcribed")
    session.add(call)
    session.flush()
    with pytest.raises(NotFound, match="no current analysis"):
        assess_call(session, call, NO_SAMPLE)


def test_auto_assign_round_robin(session):
    for name, role, active in (("ann", "inspector", True), ("bob", "inspector", True),
                               ("cat", "senior", True), ("dan", "inspector", False), ("eve", "auditor", True)):
        add_user(session, name, role, active=active)
    for i in range(7):
        analyzed_call(session, f"C{i}", [("R2", "closing.missing", "minor")])
    score_and_route(session, policy=dataclasses.replace(NO_SAMPLE, auto_assign=True), now=T0)
    assigned = list(session.scalars(select(ReviewItem.assigned_to).order_by(ReviewItem.id)))
    assert assigned == ["ann", "bob", "cat", "ann", "bob", "cat", "ann"]


def test_score_findings_floor():
    card = Scorecard()
    assert score_findings(card, [Scored("R3", "major", "violation")] * 12) == (0.0, False)
    assert score_findings(card, [Scored("R2", "minor", "violation")] * 2) == (90.0, False)
    assert score_findings(Scorecard(fatal_fails=False), [Scored("R1", "fatal", "violation")]) == (0.0, True)


def test_reanalysis_moves_the_waiting_item(session):
    call = analyzed_call(session, "C1", [("R2", "closing.missing", "minor")])
    first = route(session, assess_call(session, call, NO_SAMPLE, now=T0), NO_SAMPLE, now=T0)
    assert (first.tier, first.due_at) == ("T3", T0 + timedelta(hours=72))
    # A new rule pack finds a fatal problem in the same transcript.
    old = session.scalars(select(Analysis).where(Analysis.call_id == call.id)).one()
    old.is_current = False
    new = Analysis(call_id=call.id, transcript_id=old.transcript_id, rule_pack_name="finance-zh",
                   rule_pack_version="2", rule_pack_sha256=sha("pack2"))
    session.add(new)
    session.flush()
    session.add(Finding(analysis_id=new.id, call_id=call.id, source="rule", rule_id="R1",
                        category="promise.guaranteed_return", severity="fatal"))
    session.flush()
    later = T0 + timedelta(hours=1)
    moved = route(session, assess_call(session, call, NO_SAMPLE, now=later), NO_SAMPLE, now=later)
    assert moved.id == first.id and moved.tier == "T1" and moved.due_at == later + timedelta(hours=4)
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 1
    last = audit.history(session, "review_item", first.id, limit=1)[0]
    assert (last.action, last.before["tier"], last.after["tier"]) == ("review.requeue", "T3", "T1")
