"""Builders for the review tests: analyzed calls with chosen findings, and large queues
inserted in bulk."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from qa.storage.models import Analysis, Assessment, Call, ClassifierScore, Finding, ReviewItem, Transcript, User

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def utc(ts: datetime | None) -> datetime | None:
    """SQLite gives stored UTC timestamps back naive; compare them as aware ones."""
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def analyzed_call(session: Session, call_id: str, findings: list[tuple[str, str, str]] = (),
                  *, agent_id: str = "A001", risk: float | None = None, analysis_score: float | None = None) -> Call:
    """A call with a current analysis; ``findings`` are (rule_id, category, severity)."""
    call = Call(call_id=call_id, recording_sha256=sha(call_id), file_path=f"/rec/{call_id}.wav", file_size=1,
                agent_id=agent_id, status="analyzed")
    session.add(call)
    session.flush()
    transcript = Transcript(call_id=call.id, asr_model="base", asr_sha256=sha("asr"), options_sha256=sha("o"))
    session.add(transcript)
    session.flush()
    analysis = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name="finance-zh",
                        rule_pack_version="1", rule_pack_sha256=sha("pack"), score=analysis_score)
    session.add(analysis)
    session.flush()
    for n, (rule_id, category, severity) in enumerate(findings):
        session.add(Finding(analysis_id=analysis.id, call_id=call.id, source="rule", rule_id=rule_id,
                            category=category, severity=severity, role="agent", start_s=10.0 * n,
                            end_s=10.0 * n + 3, matched_text="保本保息", evidence="我们这个产品保本保息"))
    if risk is not None:
        session.add(ClassifierScore(analysis_id=analysis.id, call_id=call.id, model_name="complaint_risk",
                                    model_version="1", model_sha256=sha("m"), label="complaint",
                                    probability=risk, probabilities={"complaint": risk, "none": 1 - risk}))
    session.flush()
    return call


def add_user(session: Session, username: str, role: str, active: bool = True) -> User:
    user = User(username=username, role=role, password_hash="x", active=active)
    session.add(user)
    session.flush()
    return user


def seed_queue(engine: Engine, n: int, *, tiers: tuple[str, ...] = ("T1", "T2", "T3"), batch: int = 5000) -> None:
    """``n`` open review items (with the calls, analyses and assessments they hang on),
    inserted in bulk."""
    with engine.begin() as conn:
        for start in range(0, n, batch):
            idx = range(start, min(n, start + batch))
            conn.execute(insert(Call), [dict(id=i + 1, call_id=f"Q{i:07d}", recording_sha256=sha(f"Q{i}"),
                                             file_path="/x", file_size=1, status="routed", extra={},
                                             channel_layout="stereo-agent-left", roles_inferred=False)
                                        for i in idx])
            conn.execute(insert(Transcript), [dict(id=i + 1, call_id=i + 1, asr_model="base", asr_sha256="a",
                                                   options_sha256="o", options={}, features={}, is_current=True)
                                              for i in idx])
            conn.execute(insert(Analysis), [dict(id=i + 1, call_id=i + 1, transcript_id=i + 1, rule_pack_name="p",
                                                 rule_pack_version="1", rule_pack_sha256="s", classifiers_sha256="",
                                                 is_current=True, scorecard={}) for i in idx])
            conn.execute(insert(Assessment), [dict(id=i + 1, call_id=i + 1, analysis_id=i + 1, score=90.0,
                                                   fatal=False, tier=tiers[i % len(tiers)], reasons=[], policy={},
                                                   policy_sha256="p", calibration_sample=False, is_current=True)
                                              for i in idx])
            conn.execute(insert(ReviewItem), [dict(id=i + 1, call_id=i + 1, assessment_id=i + 1,
                                                   tier=tiers[i % len(tiers)], reason="flagged", status="open",
                                                   priority=0.0, due_at=T0 + timedelta(minutes=i % 997))
                                              for i in idx])
    if engine.dialect.name == "postgresql":
        # Explicit ids leave the sequences behind; later ORM inserts must not collide.
        with engine.begin() as conn:
            for table in ("calls", "transcripts", "analyses", "assessments", "review_items"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT MAX(id) FROM {table}))")
