"""Retention and erasure (``qa purge``): what goes (words, features, classifier scores,
people's comments, optionally the recording), what stays (findings' rule and category,
scores, verdicts, tombstones, the audit chain), refusals while a review or appeal is open,
and a purge killed in the middle that resumes without losing anything that must stay."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import add_analysis, add_assessment, add_review, add_transcript, add_user, make_call, tone, write_wav
from click.testing import CliRunner
from sqlalchemy import func, select

from qa import audit, signing
from qa import storage as qadb
from qa.cli import cli
from qa.config import Settings
from qa.errors import NotFound, PermissionDenied
from qa.domain import CallMeta
from qa.ingest.register import IngestOptions, Recording, ingest
from qa.permissions import Actor
from qa.retention import PurgeOptions, plan_purge, purge
from qa.storage.models import (Assessment, AuditEvent, Call, CallChannel, CallTombstone, ClassifierScore, Finding,
                               ReviewDecision, ReviewItem, UtteranceRow)

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
POLICY = {"collection": 730, "default": 1095}
REPO = Path(__file__).resolve().parent.parent


def _call(s, call_id, age_days, line, *, review="closed", audio: Path | None = None):
    started = NOW - timedelta(days=age_days)
    call = make_call(s, call_id, started_at=started, business_line=line, customer_ref="D-9",
                     extra={"source": "manifest:m.csv:2"})
    if audio is not None:
        call.file_path, call.recording_sha256 = str(audio), hashlib.sha256(audio.read_bytes()).hexdigest()
    s.add(CallChannel(call_id=call.id, channel_index=0, role="agent", duration_s=30.0, speech_segments=[[0, 3]]))
    tr = add_transcript(s, call, [("agent", 0.0, 3.0, "您好，请问是张三先生吗？"), ("customer", 3.5, 6.0, "我的卡号是6222020200112233445")])
    an = add_analysis(s, call, tr, [{"rule_id": "R-PII", "category": "pii.sensitive_number_spoken", "severity": "fatal",
                                     "matched_text": "6222020200112233445", "evidence": "[1] customer: 我的卡号是…",
                                     "details": {"title": "t", "why": "matched '6222020200112233445'", "kind": "must_not_say",
                                                 "basis": [{"document": "PIPL"}]}}],
                      scores=[("complaint_risk", "normal", 0.1)], score=0.0)
    asm = add_assessment(s, call, an, score=0.0, fatal=True, tier="T1")
    finding_id = an.findings[0].id
    add_review(s, call, asm, tier="T1", status=review, decisions={finding_id: "confirmed"} if review == "closed" else None,
               comment="客户报了卡号 6222020200112233445", verdict="fail" if review == "closed" else None)
    s.flush()
    return call


@pytest.fixture
def world(session, tmp_path):
    audio = tmp_path / "old.wav"
    write_wav(audio, tone(1.0, channels=2))
    calls = {
        "OLD-COLL": _call(session, "OLD-COLL", 800, "collection", audio=audio),  # past 730 days
        "OLD-WEALTH": _call(session, "OLD-WEALTH", 800, "wealth"),  # 800 < 1095: kept
        "ANCIENT": _call(session, "ANCIENT", 1200, None),  # no line: the default 1095
        "OPEN": _call(session, "OPEN", 900, "collection", review="open"),  # due, but under review
        "NEW": _call(session, "NEW", 10, "collection"),
    }
    session.commit()
    return calls


def test_the_plan_follows_the_policy_per_business_line(session, world):
    plan = plan_purge(session, PurgeOptions(policy=POLICY), now=NOW)
    assert [c.call_id for c in plan.due] == ["ANCIENT", "OLD-COLL"]
    assert [(c.call_id, c.refused) for c in plan.refused] == [("OPEN", f"review item {c.refused.split()[2]} is open")
                                                              for c in plan.refused]
    assert plan.due[0].why == {"retention_days": 1095, "policy_line": "default"}
    before = plan_purge(session, PurgeOptions(before=NOW - timedelta(days=850)), now=NOW)
    assert {c.call_id for c in before.candidates} == {"ANCIENT", "OPEN"}
    with pytest.raises(NotFound, match="no call 'NOPE'"):
        plan_purge(session, PurgeOptions(call_ids=("NOPE",)), now=NOW)
    with pytest.raises(ValueError, match="nothing to purge"):
        PurgeOptions().validate()


def test_purge_erases_the_words_and_keeps_the_figures(factory_settings, world):
    factory, settings = factory_settings
    report = purge(factory, settings, PurgeOptions(policy=POLICY, delete_audio=True, reason="retention"), now=NOW)
    assert sorted(p.call_id for p in report.purged) == ["ANCIENT", "OLD-COLL"]
    assert {p.call_id: p.audio for p in report.purged} == {"ANCIENT": "missing", "OLD-COLL": "deleted"}
    assert [c.call_id for c in report.refused] == ["OPEN"]
    with factory() as s:
        pk = {c.call_id: c.id for c in s.scalars(select(Call))}
        purged, kept = pk["OLD-COLL"], pk["OLD-WEALTH"]

        def count(model, call_pk, col="call_id"):
            return s.scalar(select(func.count()).select_from(model).where(getattr(model, col) == call_pk))

        assert count(UtteranceRow, purged) == 0 and count(UtteranceRow, kept) == 2
        assert count(CallChannel, purged) == 0 and count(ClassifierScore, purged) == 0
        finding = s.scalars(select(Finding).where(Finding.call_id == purged)).one()
        assert (finding.category, finding.severity, finding.rule_id) == ("pii.sensitive_number_spoken", "fatal", "R-PII")
        assert finding.evidence is None and finding.matched_text is None
        assert finding.details == {"title": "t", "kind": "must_not_say", "basis": [{"document": "PIPL"}]}
        assert count(Assessment, purged) == 1
        item = s.scalars(select(ReviewItem).where(ReviewItem.call_id == purged)).one()
        assert (item.verdict, item.comment) == ("fail", "[已清除]")
        assert s.scalars(select(ReviewDecision.comment).where(ReviewDecision.review_item_id == item.id)).all() == \
            ["[已清除]"]
        call = s.get(Call, purged)
        assert call.purged_at == NOW and call.customer_ref is None and call.extra == {} and call.file_path == ""
        assert call.agent_id and call.started_at and call.recording_sha256
        assert s.get(Call, kept).customer_ref == "D-9" and s.get(Call, kept).purged_at is None
        tomb = s.scalars(select(CallTombstone).where(CallTombstone.call_id == "OLD-COLL")).one()
        assert tomb.audio_deleted and tomb.policy == {"retention_days": 730, "policy_line": "collection",
                                                      "reason": "retention"}
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "call.purge")).all()
        assert sorted(e.object_id for e in events) == ["ANCIENT", "OLD-COLL"]
        assert "6222" not in str([e.after for e in events])
        verified = audit.verify(s, verifier=signing.signer(settings.audit_key_file).verifier,
                                database=signing.database_id(settings.effective_database_url))
        assert verified.ok and verified.checkpoints == 1  # the purge signed the chain's head
    assert not Path(world["OLD-COLL"].file_path or "/nonexistent").exists()
    # a second run finds nothing more to do
    again = purge(factory, settings, PurgeOptions(policy=POLICY), now=NOW)
    assert again.purged == [] and [c.call_id for c in again.refused] == ["OPEN"]


def test_an_erased_recording_is_not_registered_again(factory_settings, world, tmp_path):
    factory, settings = factory_settings
    audio = tmp_path / "again.wav"
    write_wav(audio, tone(1.5, channels=2, freq=500))
    with qadb.write_session(factory) as s:
        call = s.scalars(select(Call).where(Call.call_id == "NEW")).one()
        call.recording_sha256 = hashlib.sha256(audio.read_bytes()).hexdigest()
        s.commit()
    purge(factory, settings, PurgeOptions(call_ids=("NEW",), reason="erasure request 2026-118"), now=NOW)
    with qadb.write_session(factory) as s:
        report = ingest(s, [Recording(audio, CallMeta(call_id="NEW-AGAIN"), "dir")], IngestOptions())
        assert report.duplicates and "erased" in report.duplicates[0].detail
        assert s.scalar(select(func.count()).select_from(Call).where(Call.call_id == "NEW-AGAIN")) == 0
        tomb = s.scalars(select(CallTombstone).where(CallTombstone.call_id == "NEW")).one()
        assert tomb.policy == {"request": "erasure request 2026-118"}


def test_a_changed_file_is_not_deleted(factory_settings, world):
    factory, settings = factory_settings
    Path(world["OLD-COLL"].file_path).write_bytes(b"RIFF something else")
    report = purge(factory, settings, PurgeOptions(call_ids=("OLD-COLL",), delete_audio=True), now=NOW)
    assert [p.audio for p in report.purged] == ["changed"]
    assert Path(world["OLD-COLL"].file_path).exists()


def test_only_admins_purge(factory_settings, world):
    factory, settings = factory_settings
    with pytest.raises(PermissionDenied, match="may not purge calls"):
        purge(factory, settings, PurgeOptions(policy=POLICY), actor=Actor("ann", "auditor"), now=NOW)


def test_the_command_dry_runs_by_default_and_applies_as_an_admin(cli_env, session, world):
    add_user(session, "root", "admin")
    add_user(session, "ann", "inspector")
    session.commit()
    runner = CliRunner()
    env = {"QA_RETENTION_DAYS": "collection=730, default=1095"}
    dry = runner.invoke(cli, ["purge"], env=env)
    assert dry.exit_code == 0 and "2 calls due, 1 refused" in dry.output and "dry run" in dry.output
    assert session.scalar(select(func.count()).select_from(CallTombstone)) == 0
    session.rollback()  # the fixture's session writes: let go of the database for the commands
    assert runner.invoke(cli, ["purge", "--apply"], env=env).exit_code == 2  # usage: needs --as
    denied = runner.invoke(cli, ["purge", "--apply", "--as", "ann"], env=env)
    assert denied.exit_code == 1 and "may not purge" in denied.output
    done = runner.invoke(cli, ["purge", "--apply", "--as", "root"], env=env)
    assert done.exit_code == 2, done.output  # one call refused: finished, not all done
    assert "purge: 2 calls purged" in done.output and "refused OPEN" in done.output
    bad = runner.invoke(cli, ["purge"], env={"QA_RETENTION_DAYS": "collection=two years"})
    assert bad.exit_code != 0 and "retention_days" in bad.output


def test_a_killed_purge_resumes_and_loses_nothing_that_must_stay(tmp_path):
    data = tmp_path / "var"
    data.mkdir()
    url = f"sqlite:///{data / 'qa.db'}"
    qadb.upgrade(url)
    engine = qadb.make_engine(url)
    factory = qadb.session_factory(engine)
    names = [f"C{n}" for n in range(6)]
    with qadb.write_session(factory) as s:
        for n, name in enumerate(names):
            _call(s, name, 800 + n, "collection")
        s.commit()
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_DATA_DIR=str(data), QA_DATABASE_URL=url, QA_RETENTION_DAYS="collection=730",
               QA_AUDIT_KEY_FILE=str(tmp_path / "keys" / "audit.key"))
    command = [sys.executable, "-c", "from qa.cli import main; main()", "purge", "--apply", "--as", "root"]
    token = "purge-operator-token-0123456789"
    env.update(QA_OPERATOR_TOKEN=token, QA_OPERATOR_TOKEN_SHA256=hashlib.sha256(token.encode()).hexdigest())
    engine = qadb.make_engine(url)
    with qadb.write_session(qadb.session_factory(engine)) as s:
        add_user(s, "root", "admin")
        s.commit()
    killed = subprocess.run(command, env={**env, "QA_TEST_CRASH_AFTER": "purge:2"}, cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    def state():
        with qadb.session_factory(engine)() as s:
            return {"purged": sorted(s.scalars(select(Call.call_id).where(Call.purged_at.isnot(None)))),
                    "tombstones": sorted(s.scalars(select(CallTombstone.call_id))),
                    "utterances": s.scalar(select(func.count()).select_from(UtteranceRow)),
                    "findings": s.scalar(select(func.count()).select_from(Finding)),
                    "assessments": s.scalar(select(func.count()).select_from(Assessment)),
                    "verdicts": sorted(s.scalars(select(ReviewItem.verdict))),
                    "events": sorted(s.scalars(select(AuditEvent.object_id).where(AuditEvent.action == "call.purge"))),
                    "chain": audit.verify(s, verifier=signing.signer(env["QA_AUDIT_KEY_FILE"]).verifier,
                                          database=signing.database_id(url)).ok}

    half = state()
    # each call is purged wholly or not at all: two done (tombstone, event and erasure together)
    assert len(half["purged"]) == 2 and half["tombstones"] == half["purged"] == half["events"]
    assert half["utterances"] == 2 * 4 and half["chain"]
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
    done = state()
    assert done["purged"] == done["tombstones"] == done["events"] == names  # each once
    assert done["utterances"] == 0 and done["chain"]
    # what statistics and the audit need was never touched
    assert (done["findings"], done["assessments"], done["verdicts"]) == (6, 6, ["fail"] * 6)
    engine.dispose()


@pytest.fixture
def factory_settings(engine, settings, tmp_path):
    return qadb.session_factory(engine), Settings(data_dir=settings.data_dir, database_url=settings.database_url,
                                                  audit_key_file=str(tmp_path / "keys" / "audit.key"))


def test_the_nightly_job_purges_after_its_run(cli_env, session, world, tmp_path):
    session.rollback()
    empty = tmp_path / "tonight"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["nightly", "--source", str(empty), "--executor", "serial", "--purge"],
                                env={"QA_RETENTION_DAYS": "collection=730, default=1095"})
    assert result.exit_code == 2, result.output  # the call under review is refused
    assert "purge: 2 calls purged" in result.output
    assert sorted(session.scalars(select(CallTombstone.call_id))) == ["ANCIENT", "OLD-COLL"]
    assert {e.actor for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "call.purge"))} == {"system"}
