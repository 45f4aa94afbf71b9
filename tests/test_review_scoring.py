"""One scoring formula: a review that confirms every finding the rules raised ends with the
score the rules gave, and a customer-side trigger (a complaint threat) costs the agent
neither points nor the verdict, automatically or after review."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from builders import add_transcript, add_user, make_call
from sqlalchemy import select

from qa import review
from qa import storage as qadb
from qa.pipeline.run import PipelineOptions, run_pipeline
from qa.review import Actor, ReviewPolicy
from qa.storage.models import Assessment, Finding, ReviewItem

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
ANN = Actor("ann", "inspector")
# Discloses the recording, gives a job number, closes politely; the one fault: no greeting.
NO_GREETING = [("agent", "喂，本次通话将被录音，说吧。"),
               ("customer", "我想查一下积分。"),
               ("agent", "您的积分是五千分，感谢您的来电，再见。")]
THREAT = [("agent", "您好，嘉禾银行信用卡中心，工号一零零一，本次通话将被录音。"),
          ("customer", "你们再这样乱扣费，我就去银保监会投诉你们。"),
          ("agent", "非常抱歉，已为您登记投诉，三个工作日内给您回复，感谢您的来电，再见。")]


@pytest.mark.parametrize("turns,found,automatic", [
    (NO_GREETING, [("greeting.missing", "minor")], 95.0),  # was 97 after review: minor cost 5, then 3
    (THREAT, [("complaint.escalation_threat", "major")], 100.0),  # was "fail, 90" after review
], ids=["one-minor-finding", "customer-threat"])
def test_confirming_every_finding_keeps_the_automatic_score_and_verdict(engine, settings, turns, found, automatic):
    factory = qadb.session_factory(engine)
    with qadb.write_session(factory) as s:
        call = make_call(s, "C1", status="transcribed", business_line="credit_card", direction="inbound",
                         duration_s=4.0 * len(turns))
        add_transcript(s, call, [(role, 4.0 * i, 4.0 * i + 3.0, text) for i, (role, text) in enumerate(turns)])
        add_user(s, "ann", "inspector")
        s.commit()
        pk = call.id
    run_pipeline(factory, dataclasses.replace(settings, calibration_rate=0.0),
                 PipelineOptions(steps=("analyze", "score"), executor="serial"))
    with factory() as s:
        assert [(f.category, f.severity) for f in s.scalars(select(Finding).where(Finding.call_id == pk))] == found
        assert s.scalars(select(Assessment.score).where(Assessment.call_id == pk)).one() == automatic
    with qadb.write_session(factory) as s:
        item = s.scalars(select(ReviewItem).where(ReviewItem.call_id == pk)).one()
        review.claim(s, ANN, item.id, ReviewPolicy(), now=T0)
        for f in review.item_findings(s, item):
            review.decide(s, ANN, item.id, f.id, "confirmed", now=T0)
        closed = review.close(s, ANN, item.id, now=T0)
        s.commit()
    assert (closed.verdict, closed.final_score) == ("pass", automatic)
