import csv
import json
from datetime import datetime, timezone

import pytest
from builders import BAD_CORPUS_MAX_DURATION_S, make_bad_corpus, tone, write_wav
from click.testing import CliRunner
from sqlalchemy import func, select

from qa.cli import cli
from qa.errors import ManifestError
from qa.ingest.register import IngestOptions, ingest, read_manifest, scan_directory
from qa.storage.models import Call


def _count(session, **where):
    stmt = select(func.count()).select_from(Call)
    for key, value in where.items():
        stmt = stmt.where(getattr(Call, key) == value)
    return session.scalar(stmt)


def test_sample_manifest_registers_every_call_once(cli_env, samples_dir):
    with open(samples_dir / "manifest.csv", encoding="utf-8") as f:
        ids = [row["call_id"] for row in csv.DictReader(f)]
    assert len(ids) >= 16
    runner = CliRunner()
    first = runner.invoke(cli, ["ingest", "--manifest", str(samples_dir / "manifest.csv")])
    assert first.exit_code == 0, first.output
    assert f"{len(ids)} registered, 0 already known, 0 failed" in first.output
    second = runner.invoke(cli, ["ingest", "--manifest", str(samples_dir / "manifest.csv")])
    assert second.exit_code == 0, second.output
    assert f"0 registered, {len(ids)} already known" in second.output


def test_sample_metadata_is_stored(cli_env, samples_dir, session):
    CliRunner().invoke(cli, ["ingest", "--manifest", str(samples_dir / "manifest.csv")])
    rows = {c.call_id: c for c in session.scalars(select(Call))}
    with open(samples_dir / "manifest.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            call = rows[row["call_id"]]
            assert call.status == "registered"
            assert call.agent_id == row["agent_id"] and call.business_line == row["business_line"]
            assert call.started_at is not None and call.duration_s > 5
            assert len(call.recording_sha256) == 64


def test_bad_files_rejected_one_by_one_beside_good_ones(tmp_path, session):
    folder = tmp_path / "inbox"
    expected = make_bad_corpus(folder)
    (folder / "good").mkdir()
    write_wav(folder / "good" / "one.wav", tone(3.0, channels=2))
    write_wav(folder / "good" / "two.wav", tone(2.0, freq=300.0))
    report = ingest(session, scan_directory(folder), IngestOptions(max_duration_s=BAD_CORPUS_MAX_DURATION_S))
    assert {o.call_id for o in report.registered} == {"good/one", "good/two"}
    got = {o.call_id: o.error_code for o in report.failed}
    want = {name.rsplit(".", 1)[0]: code for name, code in expected.items()}
    assert got == want
    assert _count(session, status="failed") == len(expected)
    mono = session.scalar(select(Call).where(Call.call_id == "good/two"))
    assert mono.channel_layout == "mono" and mono.roles_inferred
    assert "audio.nan" == session.scalar(select(Call.error_code).where(Call.call_id == "nan"))


def test_cli_exit_status_tells_partial_failure(cli_env, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_wav(folder / "ok.wav", tone(2.0))
    (folder / "empty.wav").write_bytes(b"")
    result = CliRunner().invoke(cli, ["ingest", str(folder)])
    assert result.exit_code == 2
    assert "1 registered" in result.output and "1 failed" in result.output
    assert "[audio.empty]" in result.output and "empty.wav" in result.output


def test_same_call_id_with_other_bytes_is_a_conflict(tmp_path, session):
    a = write_wav(tmp_path / "a.wav", tone(2.0))
    manifest = tmp_path / "m.csv"
    manifest.write_text("call_id,file\nX1,a.wav\n", encoding="utf-8")
    ingest(session, read_manifest(manifest), IngestOptions())
    original = session.scalar(select(Call.recording_sha256))
    write_wav(a, tone(2.0, freq=500.0))  # new bytes, same id
    report = ingest(session, read_manifest(manifest), IngestOptions())
    assert [o.outcome for o in report.outcomes] == ["conflict"]
    assert "not overwritten" in report.conflicts[0].detail
    assert session.scalar(select(Call.recording_sha256)) == original


def test_jsonl_manifest_with_relative_paths_and_layout(tmp_path, session):
    sub = tmp_path / "rec"
    sub.mkdir()
    write_wav(sub / "r.wav", tone(2.0, channels=2))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"call_id": "J1", "file": "rec/r.wav", "agent_id": "A9",
                                    "started_at": "2026-11-02T22:30:00+08:00", "direction": "outbound",
                                    "business_line": "collection", "channel_layout": "stereo-agent-right"}) + "\n",
                        encoding="utf-8")
    report = ingest(session, read_manifest(manifest), IngestOptions())
    assert [o.outcome for o in report.outcomes] == ["registered"]
    call = session.scalar(select(Call))
    assert (call.channel_layout, call.direction) == ("stereo-agent-right", "outbound")
    # the instant, not the wall-clock digits: 22:30 in Beijing is 14:30 UTC (on SQLite too)
    assert call.started_at == datetime(2026, 11, 2, 14, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,agent_id\na.wav,A1\n", r"m.csv:1: header lacks required column\(s\) call_id"),
        ("call_id,file\nX,a.wav\nX,b.wav\n", r"m.csv:3: call_id 'X' already appears on line 2"),
        ("call_id,file,channel_layout\nX,a.wav,quad\n", r"m.csv:2: channel_layout 'quad'"),
        ("call_id,file,started_at\nX,a.wav,yesterday\n", r"m.csv:2: started_at 'yesterday' is not an ISO 8601"),
        ("call_id,file,direction\nX,a.wav,sideways\n", r"m.csv:2: direction 'sideways'"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)


def test_missing_file_in_manifest_fails_that_call_only(tmp_path, session):
    write_wav(tmp_path / "a.wav", tone(2.0))
    manifest = tmp_path / "m.csv"
    manifest.write_text("call_id,file\nA,a.wav\nB,missing.wav\n", encoding="utf-8")
    report = ingest(session, read_manifest(manifest), IngestOptions())
    assert [(o.call_id, o.outcome) for o in report.outcomes] == [("A", "registered"), ("B", "failed")]
    assert report.failed[0].error_code == "audio.missing"
