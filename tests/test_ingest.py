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


def test_manifest_rows_are_checked_strictly(tmp_path):
    cases = {
        "call_id,file,channel_layot\nX,a.wav,mono\n": "unknown column(s) 'channel_layot'",
        "call_id,file\nX,a.wav,extra\n": "more fields than the header",
        "call_id,file\n   ,a.wav\n": "call_id and file are required",
        "call_id,file\n" + "C" * 300 + ",a.wav\n": "call_id is 300 characters long; at most 128",
        "call_id,file,agent_id\nX,a.wav," + "A" * 65 + "\n": "agent_id is 65 characters long",
    }
    for n, (text, message) in enumerate(cases.items()):
        manifest = tmp_path / f"m{n}.csv"
        manifest.write_text(text, encoding="utf-8")
        with pytest.raises(ManifestError) as caught:
            read_manifest(manifest)
        assert message in str(caught.value) and f"m{n}.csv:" in str(caught.value)


def test_a_line_separator_inside_a_field_does_not_split_the_row(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("call_id,file,team\nOne,a.wav,理财\u2028一组\n", encoding="utf-8")
    [rec] = read_manifest(manifest)
    assert (rec.meta.call_id, rec.meta.team) == ("One", "理财\u2028一组")


def test_a_file_rejected_once_is_registered_when_it_comes_back_fixed(tmp_path, session):
    import soundfile as sf

    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(str(folder / "call1.wav"), tone(2.0), 8000, format="FLAC")  # FLAC bytes named .wav
    first = ingest(session, scan_directory(folder), IngestOptions())
    assert [o.error_code for o in first.outcomes] == ["audio.wrong_extension"]
    (folder / "call1.wav").rename(folder / "call1.flac")
    again = ingest(session, scan_directory(folder), IngestOptions())
    assert [o.outcome for o in again.outcomes] == ["registered"]
    call = session.scalars(select(Call)).one()
    assert (call.status, call.error_code, call.file_path.endswith("call1.flac")) == ("registered", None, True)


def test_a_read_only_database_is_a_clear_error(tmp_path):
    from qa import storage
    from qa.errors import StorageError

    url = f"sqlite:///{tmp_path / 'ro.db'}"
    storage.upgrade(url)
    engine = storage.make_engine(f"sqlite:///file:{tmp_path / 'ro.db'}?mode=ro&uri=true")
    write_wav(tmp_path / "a.wav", tone(1.0))
    with storage.write_session(storage.session_factory(engine)) as s, pytest.raises(StorageError, match="refused"):
        ingest(s, [r for r in scan_directory(tmp_path)], IngestOptions())
    engine.dispose()
