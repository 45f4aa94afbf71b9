from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from qa import audit
from qa import storage as qadb
from qa.cli import cli
from qa.errors import AuditError, StorageError
from qa.storage.models import AuditEvent

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def _fill(factory, n: int = 10) -> None:
    with qadb.session_scope(factory) as s:
        for i in range(n):
            audit.append(s, f"user{i % 3}", "review.decide", "finding", i,
                         {"decision": None}, {"decision": "confirmed", "score": 85.5, "at": T0, "备注": "保本保息"},
                         now=T0 + timedelta(seconds=i))


@pytest.fixture
def factory(db_url):
    engine = qadb.make_engine(db_url)
    yield qadb.session_factory(engine)
    engine.dispose()


def _verify(factory) -> audit.AuditVerification:
    with factory() as s:
        return audit.verify(s)


def test_chain_links_and_verifies(factory):
    _fill(factory)
    with factory() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    assert [e.seq for e in events] == list(range(1, 11))
    assert events[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))
    # Stored JSON is what was hashed: timestamps as ISO text, non-ASCII kept.
    assert events[0].after["at"] == "2026-11-23T09:00:00.000000Z" and events[0].after["备注"] == "保本保息"
    result = _verify(factory)
    assert result.ok and result.events == 10 and result.head_seq == 10 and result.head_hash == events[-1].hash


def test_empty_log_verifies(factory):
    result = _verify(factory)
    assert result.ok and result.events == 0 and result.head_hash == audit.GENESIS_HASH


@pytest.mark.parametrize("tamper,seq,kind", [
    ("UPDATE audit_events SET actor = 'mallory' WHERE seq = 4", 4, "edited"),
    ("UPDATE audit_events SET ts = ts - INTERVAL '1 hour' WHERE seq = 7", 7, "edited"),
    ("DELETE FROM audit_events WHERE seq = 5", 5, "missing"),
    ("DELETE FROM audit_events WHERE seq = 10", None, None),  # see test_tail_deletion_needs_anchor
    ("INSERT INTO audit_events (seq, ts, actor, action, object_type, object_id, prev_hash, hash) "
     "SELECT 11, ts, 'mallory', 'review.close', 'review_item', '1', hash, 'f00' FROM audit_events WHERE seq = 10",
     11, "edited"),
    ("INSERT INTO audit_events (seq, ts, actor, action, object_type, object_id, prev_hash, hash) "
     "SELECT 0, ts, 'mallory', 'review.close', 'review_item', '1', prev_hash, 'f00' FROM audit_events WHERE seq = 1",
     0, "inserted"),
])
def test_tampering_is_found_at_its_seq(factory, db_url, tamper, seq, kind):
    _fill(factory)
    if db_url.startswith("sqlite"):
        tamper = tamper.replace("ts - INTERVAL '1 hour'", "datetime(ts, '-1 hour')")
    with factory() as s:
        s.execute(text(tamper))
        s.commit()
    result = _verify(factory)
    if seq is None:
        assert result.ok and result.head_seq == 9
        return
    assert not result.ok
    assert result.first_bad_seq == seq and result.problems[0].kind == kind
    assert f"seq {seq}" in result.problems[0].message


def test_tail_deletion_needs_anchor(factory):
    _fill(factory)
    head = _verify(factory)
    with factory() as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 10"))
        s.commit()
    with factory() as s:
        result = audit.verify(s, anchor=(head.head_seq, head.head_hash))
    assert not result.ok and result.first_bad_seq == 10 and result.problems[0].kind == "missing"


def test_reordering_is_found(factory):
    _fill(factory)
    with factory() as s:  # swap the numbers of seq 3 and 6
        s.execute(text("UPDATE audit_events SET seq = -3 WHERE seq = 3"))
        s.execute(text("UPDATE audit_events SET seq = 3 WHERE seq = 6"))
        s.execute(text("UPDATE audit_events SET seq = 6 WHERE seq = -3"))
        s.commit()
    result = _verify(factory)
    kinds = {(p.seq, p.kind) for p in result.problems}
    assert result.first_bad_seq == 3
    # Row 6 now sits at seq 3: its content no longer hashes, the links break, and the rows
    # stored between the two are out of insertion order.
    assert {(3, "broken_link"), (3, "edited"), (4, "reordered"), (6, "edited"), (6, "reordered")} <= kinds


def test_concurrent_appends_keep_one_chain(factory):
    def worker(n: int) -> None:
        for i in range(20):
            with qadb.session_scope(factory) as s:
                audit.append(s, f"w{n}", "test.append", "thing", f"{n}-{i}", None, {"i": i})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = _verify(factory)
    assert result.ok and result.events == 80 and result.head_seq == 80


def test_append_retries_when_the_head_moved(factory, monkeypatch):
    """A writer that read a stale head (one that bypassed the lock) retries with the new one."""
    _fill(factory, 2)
    real = audit._last_event
    stale = iter([(1, "stale")])
    monkeypatch.setattr(audit, "_last_event", lambda s: next(stale, None) or real(s))
    with qadb.session_scope(factory) as s:
        assert audit.append(s, "ann", "review.claim", "review_item", 1).seq == 3
    monkeypatch.setattr(audit, "_last_event", lambda s: (0, audit.GENESIS_HASH))
    with qadb.write_session(factory) as s, pytest.raises(AuditError, match="chain head moved"):
        audit.append(s, "ann", "review.claim", "review_item", 1)
    assert _verify(factory).ok


def test_sqlite_write_session_holds_the_lock_from_its_first_statement(tmp_path):
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    qadb.upgrade(url)
    engine = qadb.make_engine(url)
    fast = sa.create_engine(url, connect_args={"timeout": 0.2})  # a second writer that gives up quickly
    factory = qadb.session_factory(engine)
    with qadb.write_session(factory) as holder:
        holder.execute(text("SELECT COUNT(*) FROM audit_events")).scalar()  # only a read so far
        with pytest.raises(OperationalError, match="locked"), fast.begin() as conn:
            conn.exec_driver_sql("INSERT INTO users (username, role, password_hash, active, created_at) "
                                 "VALUES ('x', 'admin', 'x', 1, '2026-01-01')")
        holder.rollback()
    # A read session blocks no writer, and the audit log refuses to be written through it: a
    # transaction that read first might hold a stale snapshot that SQLite cannot upgrade.
    with factory() as reader:
        reader.execute(text("SELECT COUNT(*) FROM audit_events")).scalar()
        with qadb.session_scope(factory) as other:
            audit.append(other, "ann", "x", "y", 1)
        with pytest.raises(StorageError, match="write session"):
            audit.append(reader, "ann", "x", "y", 2)
    fast.dispose()
    engine.dispose()


def test_rollback_leaves_no_event(factory):
    with qadb.write_session(factory) as s:
        audit.append(s, "ann", "review.claim", "review_item", 1, None, {"status": "claimed"})
        s.rollback()
    assert _verify(factory).events == 0


def test_append_validates(factory):
    with factory() as s, pytest.raises(AuditError):
        audit.append(s, "", "review.claim", "review_item", 1)
    with factory() as s, pytest.raises(TypeError):
        audit.append(s, "ann", "x", "y", 1, None, {"bad": object()})


def test_cli_verify(cli_env, settings):
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    _fill(qadb.session_factory(engine), 5)
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "audit log OK: 5 events, head 5:" in ok.output
    anchor = ok.output.split("head ", 1)[1].split()[0]
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET after = '{\"decision\": \"rejected\"}' WHERE seq = 3"))
    engine.dispose()
    bad = runner.invoke(cli, ["audit", "verify", "--anchor", anchor])
    assert bad.exit_code == 3
    assert "first at seq 3" in bad.output and "seq 3: edited" in bad.output
    log = runner.invoke(cli, ["audit", "log", "--object", "finding:2"])
    assert log.exit_code == 0 and "review.decide" in log.output and "finding:2" in log.output


# --- signed checkpoints: tampering by someone who can write the database ---------------------

def _recompute_chain(engine) -> None:
    """What an attacker with write access does after editing rows: rehash the whole chain
    with the public function, so the chain alone agrees with itself again."""
    with engine.begin() as conn:
        rows = conn.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq)).mappings().all()
        prev = audit.GENESIS_HASH
        for new_seq, r in enumerate(rows, start=1):
            values = dict(seq=new_seq, ts=r["ts"], actor=r["actor"], action=r["action"], object_type=r["object_type"],
                          object_id=r["object_id"], before=r["before"], after=r["after"], prev_hash=prev)
            digest = audit.event_hash(**values)
            conn.execute(sa.update(AuditEvent.__table__).where(AuditEvent.id == r["id"])
                         .values(seq=-new_seq, prev_hash=prev, hash=digest))
            prev = digest
        conn.execute(sa.update(AuditEvent.__table__).values(seq=-AuditEvent.seq))


@pytest.fixture
def signed(cli_env, settings):
    """A database with 10 events whose head was signed by ``qa audit checkpoint``."""
    qadb.upgrade(settings.effective_database_url)
    engine = qadb.make_engine(settings.effective_database_url)
    _fill(qadb.session_factory(engine), 10)
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "checkpoint"])
    assert r.exit_code == 0 and "checkpoint at seq 10" in r.output, r.output
    yield engine, runner
    engine.dispose()


def _verify_cli(runner) -> tuple[int, str]:
    r = runner.invoke(cli, ["audit", "verify"])
    return r.exit_code, r.output


def test_a_signed_chain_verifies(signed):
    _, runner = signed
    code, out = _verify_cli(runner)
    assert code == 0 and "1 signed checkpoint(s) checked" in out and "audit log OK: 10 events" in out


@pytest.mark.parametrize("attack", ["delete the last rows", "delete every row", "rewrite a verdict and rehash",
                                    "delete a row, renumber and rehash", "delete the checkpoints too"])
def test_truncation_and_rewrites_are_found(signed, attack):
    engine, runner = signed
    with engine.begin() as conn:
        if attack == "delete the last rows":
            conn.execute(text("DELETE FROM audit_events WHERE seq > 7"))
        elif attack == "delete every row":
            conn.execute(text("DELETE FROM audit_events"))
        elif attack == "rewrite a verdict and rehash":
            conn.execute(text("UPDATE audit_events SET after = '{\"decision\": \"rejected\"}' WHERE seq = 9"))
        elif attack == "delete a row, renumber and rehash":
            conn.execute(text("DELETE FROM audit_events WHERE seq = 4"))
        else:
            conn.execute(text("DELETE FROM audit_events WHERE seq > 7"))
            conn.execute(text("DELETE FROM audit_checkpoints"))
    if "rehash" in attack:
        _recompute_chain(engine)
    code, out = _verify_cli(runner)
    assert code == 3, (attack, out)
    assert "BROKEN" in out


def test_a_forged_checkpoint_does_not_verify(signed):
    engine, runner = signed
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_checkpoints SET seq = 9"))
    code, out = _verify_cli(runner)
    assert code == 3 and "signature does not verify" in out


def test_events_after_the_last_checkpoint_are_reported_unanchored(signed):
    engine, runner = signed
    _fill(qadb.session_factory(engine), 1)  # a forged append would look just like this one
    code, out = _verify_cli(runner)
    assert code == 0 and "1 event(s) after the last checkpoint are not anchored yet" in out
    assert runner.invoke(cli, ["audit", "checkpoint"]).exit_code == 0
    assert "not anchored" not in _verify_cli(runner)[1]


def test_keys_are_made_once_and_printed(signed, settings):
    _, runner = signed
    again = runner.invoke(cli, ["audit", "keygen"])
    assert again.exit_code == 1 and "exists already" in again.output
    pub = runner.invoke(cli, ["audit", "pubkey"]).output.strip()
    assert len(pub) == 64
    elsewhere = runner.invoke(cli, ["audit", "verify", "--public-key", pub])
    assert elsewhere.exit_code == 0, elsewhere.output
    wrong = runner.invoke(cli, ["audit", "verify", "--public-key", "ab" * 32])
    assert wrong.exit_code == 3
