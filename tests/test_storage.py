"""Schema, migrations and constraints on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from qa import storage as db
from qa.storage.models import Analysis, Base, Call, Finding, Transcript, UtteranceRow


def _call(n: int, **kw) -> Call:
    return Call(call_id=f"C{n}", recording_sha256=f"{n:064x}", file_path=f"/x/{n}.wav", file_size=10, **kw)


def test_migrations_match_the_models(db_url):
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_is_idempotent(db_url):
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    assert db.current_revision(engine) == db.SCHEMA_REVISION
    engine.dispose()


def test_the_expected_revision_is_the_migrations_head():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head() == db.SCHEMA_REVISION


def test_ensure_schema_migrates_a_new_database_and_leaves_a_current_one(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert not db.has_schema(engine)
    db.ensure_schema(engine)
    assert db.has_schema(engine) and db.current_revision(engine) == db.SCHEMA_REVISION
    db.ensure_schema(engine)  # at the head already: nothing to do
    assert db.current_revision(engine) == db.SCHEMA_REVISION
    engine.dispose()


def test_unique_keys_make_stages_idempotent(db_url):
    factory = db.session_factory(db.make_engine(db_url))
    with factory() as s:
        s.add(_call(1))
        s.commit()
        s.add(Call(call_id="C1-again", recording_sha256=f"{1:064x}", file_path="/y", file_size=1))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        call = s.scalar(select(Call))
        s.add_all([
            Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64),
            Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64),
        ])
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()


def test_call_graph_round_trip_and_cascade(db_url):
    engine = db.make_engine(db_url)
    factory = db.session_factory(engine)
    with factory() as s:
        call = _call(2, agent_id="A1", team="信用卡一组", extra={"source": "测试"})
        s.add(call)
        s.flush()
        tr = Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64,
                        features={"duration_s": 12.5})
        tr.utterances = [UtteranceRow(call_id=call.id, idx=i, role="agent", start_s=i, end_s=i + 1, text=f"您好{i}")
                         for i in range(3)]
        s.add(tr)
        s.flush()
        an = Analysis(call_id=call.id, transcript_id=tr.id, rule_pack_name="finance-zh", rule_pack_version="1",
                      rule_pack_sha256="p" * 64)
        an.findings = [Finding(call_id=call.id, rule_id="r1", category="greeting.missing", severity="minor")]
        s.add(an)
        s.commit()
    with factory() as s:
        call = s.scalar(select(Call).where(Call.call_id == "C2"))
        assert call.team == "信用卡一组" and call.extra == {"source": "测试"}
        tr = s.scalar(select(Transcript))
        assert [u.text for u in tr.utterances] == ["您好0", "您好1", "您好2"]
        assert tr.features["duration_s"] == 12.5
        s.delete(call)
        s.commit()
        assert s.scalar(select(text("count(*)")).select_from(UtteranceRow)) == 0
        assert s.scalar(select(text("count(*)")).select_from(Finding)) == 0
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = db.make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_redact_url_hides_password():
    assert db.redact_url("postgresql://qa:pw@h:5432/d") == "postgresql://qa:***@h:5432/d"
    assert db.redact_url("sqlite:///var/qa.db") == "sqlite:///var/qa.db"
