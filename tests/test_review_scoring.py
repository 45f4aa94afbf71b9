"""One scoring formula: a review that confirms every finding the rules raised ends with the
score the rules gave, and a customer-side trigger (a complaint threat) costs the agent
neither points nor the verdict, automatically or after review."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from qa import review
from qa import storage as qadb
from qa.pipeline.run import PipelineOptions, run_pipeline
from qa.review import Actor, ReviewPolicy
from qa.storage.models import Assessment, Call, Finding, ReviewItem, Transcript, User, UtteranceRow

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
ANN = Actor("ann", "inspector")
# Discloses the recording, gives a job number, closes politely; the one fault: no greeting.
NO_GREETING = [("agent", "嘉禾银行信用卡中心，工号一零零一，本次通话将被录音。"),
               ("customer", "我想查一下积分。"),
               ("agent", "您的积分是五千分，感谢您的来电，再见。")]
THREAT = [("agent", "您好，嘉禾银行信用卡中心，工号一零零一，本次通话将被录音。"),
          ("customer", "你们再这样乱扣费，我就去银保监会投诉你们。"),
          ("agent", "非常抱歉，已为您登记投诉，三个工作日内给您回复，感谢您的来电，再见。")]


@pytest.fixture
def factory(engine):
    return qadb.session_factory(engine)


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, calibration_rate=0.0)


def _routed_call(factory, settings, call_id: str, turns) -> int:
    with factory.begin() as s:
        call = Call(call_id=call_id, recording_sha256=call_id.ljust(64, "0"), file_path=f"{call_id}.wav",
                    file_size=1, status="transcribed", direction="inbound", business_line="credit_card",
                    started_at=datetime(2026, 11, 3, 6, 0, tzinfo=timezone.utc), duration_s=4.0 * len(turns))
        s.add(call)
        s.add(User(username="ann", role="inspector", password_hash="x"))
        s.flush()
        tr = Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64)
        s.add(tr)
        s.flush()
        for i, (role, text) in enumerate(turns):
            s.add(UtteranceRow(transcript_id=tr.id, call_id=call.id, idx=i, role=role, start_s=4.0 * i,
                               end_s=4.0 * i + 3.0, text=text))
        pk = call.id
    run_pipeline(factory, settings, PipelineOptions(steps=("analyze", "score"), executor="serial"))
    return pk


def _confirm_all_and_close(factory, pk: int) -> ReviewItem:
    with qadb.write_session(factory) as s:
        item = s.scalars(select(ReviewItem).where(ReviewItem.call_id == pk)).one()
        review.claim(s, ANN, item.id, ReviewPolicy(), now=T0)
        for f in review.item_findings(s, item):
            review.decide(s, ANN, item.id, f.id, "confirmed", now=T0)
        closed = review.close(s, ANN, item.id, now=T0)
        s.commit()
        return closed


def _automatic(factory, pk: int) -> tuple[float, list[tuple[str, str]]]:
    with factory() as s:
        score = s.scalars(select(Assessment.score).where(Assessment.call_id == pk)).one()
        found = [(f.category, f.severity) for f in s.scalars(select(Finding).where(Finding.call_id == pk))]
    return score, found


def test_confirming_the_only_minor_finding_keeps_the_automatic_score(factory, settings):
    pk = _routed_call(factory, settings, "NOGREET", NO_GREETING)
    score, found = _automatic(factory, pk)
    assert found == [("greeting.missing", "minor")]
    assert score == 95.0
    item = _confirm_all_and_close(factory, pk)
    assert (item.verdict, item.final_score) == ("pass", score)


def test_a_confirmed_customer_threat_does_not_fail_the_agent(factory, settings):
    pk = _routed_call(factory, settings, "THREAT", THREAT)
    score, found = _automatic(factory, pk)
    assert found == [("complaint.escalation_threat", "major")]
    assert score == 100.0
    item = _confirm_all_and_close(factory, pk)
    assert (item.verdict, item.final_score) == ("pass", 100.0)
