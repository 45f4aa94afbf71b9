"""Times are instants: the same manifest gives the same stored and exported times on SQLite
and PostgreSQL, a time without an offset is the call centre's clock (the ``timezone``
setting), and the contact-hours rule judges the instant on that clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from builders import tone, write_wav
from sqlalchemy import select

from qa import storage
from qa.ingest.register import IngestOptions, find_recordings, ingest
from qa.reporting.export import ExportFilters, ExportOptions, export_calls
from qa.rules.context import EngineOptions
from qa.rules.engine import RuleEngine
from qa.rules.loader import load_pack
from qa.storage.models import Call, Transcript, UtteranceRow
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
        export_calls(s, out, ExportFilters(), ExportOptions(), actor="test")
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
    assert set(exported.values()) == {exported["Z1"]}  # one spelling of one instant
    assert verdicts == {"Z1": "fired", "Z2": "fired", "Z3": "fired"}


def test_a_naive_time_is_refused_by_the_database_layer(engine):
    import pytest

    factory = storage.session_factory(engine)
    with storage.write_session(factory) as s:
        s.add(Call(call_id="N", recording_sha256="n" * 64, file_path="/x", file_size=1,
                   started_at=datetime(2026, 11, 5, 22, 30)))
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()
