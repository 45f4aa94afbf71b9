"""Times are instants: the same manifest gives the same stored and exported times on SQLite
and PostgreSQL, a time without an offset is the call centre's clock (the ``timezone``
setting), the contact-hours rule judges the instant on that clock, and days (the nightly's
"yesterday", ``--since`` days, report and dashboard days) are that clock's days."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from builders import make_call, tone, write_wav
from click.testing import CliRunner
from sqlalchemy import select

from qa import storage
from qa.cli import cli
from qa.reporting.report import ReportOptions, collect
from qa import timeutil
from qa.ingest.register import IngestOptions, find_recordings, ingest
from qa.reporting.export import ExportFilters, ExportOptions, export_calls
from qa.rules.context import EngineOptions
from qa.rules.engine import RuleEngine
from qa.rules.loader import load_pack
from qa.storage.models import AuditEvent, Call, Transcript, UtteranceRow
from qa.storage.transcripts import transcript_of

PACK = "rules/finance-zh"
SHANGHAI = ZoneInfo("Asia/Shanghai")
INSTANT = datetime(2026, 11, 5, 14, 30, tzinfo=timezone.utc)  # 22:30 in Shanghai: too late to call
MANIFEST = """call_id,file,started_at,direction,business_line
Z1,a.wav,2026-11-05T14:30:00Z,outbound,collection
Z2,b.wav,2026-11-05T22:30:00+08:00,outbound,collection
Z3,c.wav,2026-11-05T22:30:00,outbound,collection
"""


def _ingest_and_export(url: str, tmp_path) -> tuple[dict[str, datetime], dict[str, str], dict[str, str]]:
    folder = tmp_path / "calls"
    folder.mkdir()
    for i, name in enumerate("abc"):
        write_wav(folder / f"{name}.wav", tone(1.0 + 0.1 * i, channels=2, freq=300 + 50 * i))
    (folder / "m.csv").write_text(MANIFEST, encoding="utf-8")
    engine = storage.make_engine(url)
    factory = storage.session_factory(engine)
    with storage.write_session(factory) as s:
        ingest(s, find_recordings(manifest=folder / "m.csv", zone=SHANGHAI), IngestOptions())
        for call in s.scalars(select(Call)):
            tr = Transcript(call_id=call.id, asr_model="base", asr_sha256="a" * 64, options_sha256="o" * 64)
            s.add(tr)
            s.flush()
            s.add(UtteranceRow(transcript_id=tr.id, call_id=call.id, idx=0, role="agent", start_s=0.0, end_s=2.0,
                               text="您好，提醒您尽快还款。"))
        s.commit()
    out = tmp_path / "e.jsonl"
    with storage.write_session(factory) as s:
        export_calls(s, out, ExportFilters(), ExportOptions(timezone="Asia/Shanghai"), actor="test")
        s.commit()
    exported = {r["call_id"]: r["started_at"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    rules = RuleEngine(load_pack(PACK), EngineOptions(timezone="Asia/Shanghai"))
    with factory() as s:
        stored = dict(s.execute(select(Call.call_id, Call.started_at)).all())
        verdicts = {cid: rules.evaluate(transcript_of(s, cid)).outcome("collection-contact-hours").status
                    for cid in stored}
    engine.dispose()
    return stored, exported, verdicts


def test_the_same_manifest_gives_the_same_instants_on_both_backends(db_url, tmp_path):
    stored, exported, verdicts = _ingest_and_export(db_url, tmp_path)
    assert stored == {"Z1": INSTANT, "Z2": INSTANT, "Z3": INSTANT}
    assert all(ts.tzinfo is not None for ts in stored.values())  # aware, SQLite included
    assert {datetime.fromisoformat(v) for v in exported.values()} == {INSTANT}
    # one spelling of one instant, on the call centre's clock with its offset
    assert set(exported.values()) == {"2026-11-05T22:30:00+08:00"}
    assert verdicts == {"Z1": "fired", "Z2": "fired", "Z3": "fired"}


def test_a_naive_time_is_refused_by_the_database_layer(engine):
    factory = storage.session_factory(engine)
    with storage.write_session(factory) as s:
        s.add(Call(call_id="N", recording_sha256="n" * 64, file_path="/x", file_size=1,
                   started_at=datetime(2026, 11, 5, 22, 30)))
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()


NEW_YORK = ZoneInfo("America/New_York")  # a zone with summer time: its offset changes on 2026-11-01


def test_today_and_yesterday_are_the_call_centres():
    late_utc = datetime(2026, 11, 5, 17, 30, tzinfo=timezone.utc)  # 01:30 on the 6th in Shanghai
    assert timeutil.local_today(SHANGHAI, late_utc) == date(2026, 11, 6)
    assert timeutil.parse_day("yesterday", SHANGHAI, late_utc) == date(2026, 11, 5)
    assert timeutil.parse_day("yesterday", timezone.utc, late_utc) == date(2026, 11, 4)
    with pytest.raises(ValueError, match="not a day"):
        timeutil.parse_day("2026-13-01", SHANGHAI)


def test_since_and_until_days_begin_at_local_midnight():
    assert timeutil.parse_when("2026-11-05", SHANGHAI) == datetime(2026, 11, 4, 16, tzinfo=timezone.utc)
    assert timeutil.parse_when("2026-11-05", SHANGHAI, end=True) == datetime(2026, 11, 5, 16, tzinfo=timezone.utc)
    assert timeutil.parse_when("2026-11-05T08:00", SHANGHAI) == datetime(2026, 11, 5, 0, tzinfo=timezone.utc)
    assert timeutil.parse_when("2026-11-05T08:00Z", SHANGHAI) == datetime(2026, 11, 5, 8, tzinfo=timezone.utc)


def test_offset_spans_find_the_summer_time_change():
    spans = timeutil.offset_spans(NEW_YORK, datetime(2026, 10, 30, tzinfo=timezone.utc),
                                  datetime(2026, 11, 4, tzinfo=timezone.utc))
    assert [s.offset_seconds for s in spans] == [-4 * 3600, -5 * 3600]
    assert spans[0].end == datetime(2026, 11, 1, 6, tzinfo=timezone.utc)  # 02:00 EDT
    assert len(timeutil.offset_spans(SHANGHAI, datetime(2026, 1, 1, tzinfo=timezone.utc),
                                     datetime(2027, 1, 1, tzinfo=timezone.utc))) == 1


@pytest.mark.parametrize("zone_name, days", [
    ("Asia/Shanghai", {"2026-11-05": 1, "2026-11-06": 2}),
    ("UTC", {"2026-11-05": 3}),
    # 04:30 UTC on 11-01 is 00:30 EDT (the 1st), 04:30 on 11-02 is 23:30 EST (still the 1st)
    ("America/New_York", {"2026-10-31": 1, "2026-11-01": 2}),
])
def test_report_days_are_local_days_on_both_backends(db_url, zone_name, days):
    engine = storage.make_engine(db_url)
    try:
        with storage.write_session(storage.session_factory(engine)) as s:
            if zone_name == "America/New_York":
                starts = [datetime(2026, 11, 1, 2, 30), datetime(2026, 11, 1, 4, 30), datetime(2026, 11, 2, 4, 30)]
            else:  # 10:00 UTC (18:00 Shanghai), then 16:30 and 23:00 UTC (after midnight there)
                starts = [datetime(2026, 11, 5, 10), datetime(2026, 11, 5, 16, 30), datetime(2026, 11, 5, 23)]
            for n, start in enumerate(starts):
                make_call(s, f"D{n}", started_at=start.replace(tzinfo=timezone.utc))
            s.commit()
            data = collect(s, ReportOptions(since=datetime(2026, 10, 25, tzinfo=timezone.utc),
                                            until=datetime(2026, 11, 10, tzinfo=timezone.utc), timezone=zone_name))
        got = dict(zip(data.days, (p + f for p, f in zip(data.daily_processed, data.daily_failed))))
        assert got == days
    finally:
        engine.dispose()


def test_cli_since_day_is_local_and_tables_print_local_times(cli_env, session, tmp_path):
    make_call(session, "EARLY", started_at=datetime(2026, 11, 4, 15, 59, tzinfo=timezone.utc))  # 23:59 on the 4th
    make_call(session, "LATE", started_at=datetime(2026, 11, 4, 16, 0, tzinfo=timezone.utc))  # 00:00 on the 5th
    session.commit()
    out = tmp_path / "e.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--since", "2026-11-05", "--until", "2026-11-05", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["call_id"] for r in records] == ["LATE"] and records[0]["started_at"] == "2026-11-05T00:00:00+08:00"
    result = runner.invoke(cli, ["export", "--since", "2026-11-04", "--until", "2026-11-04",
                                 "--out", str(tmp_path / "u.jsonl")], env={"QA_TIMEZONE": "UTC"})
    assert result.exit_code == 0, result.output
    utc_records = [json.loads(line) for line in (tmp_path / "u.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["started_at"] for r in utc_records] == ["2026-11-04T15:59:00+00:00", "2026-11-04T16:00:00+00:00"]
    result = runner.invoke(cli, ["audit", "log"])
    event_ts = session.scalars(select(AuditEvent.ts).order_by(AuditEvent.seq)).first()
    assert "time (Asia/Shanghai)" in result.output
    assert event_ts.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") in result.output
    result = runner.invoke(cli, ["config", "day", "--days-ago", "1"])
    assert result.output.strip() == (timeutil.local_today(SHANGHAI) - timedelta(days=1)).isoformat()
