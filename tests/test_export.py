"""Audit exports: the three formats read back, filters, redaction and its permission, the
manifest and its verification, the audit event, and bounded memory on thousands of calls."""

from __future__ import annotations

import csv
import json
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from builders import (
    DAY0,
    add_analysis,
    add_assessment,
    add_review,
    add_transcript,
    add_user,
    make_call,
    seed_calls,
)
from click.testing import CliRunner
from openpyxl import load_workbook
from sqlalchemy import select

from qa.cli import cli
from qa.errors import ExportError, PermissionDenied
from qa.reporting.export import ExportFilters, ExportOptions, export_calls, verify_manifest
from qa.storage.models import AuditEvent

PHONE = "13812345678"
ID_NO = "11010519491231002X"


@pytest.fixture
def two_calls(session):
    """A flagged, reviewed call with PII in its transcript and evidence, and a clean one."""
    c1 = make_call(session, "CALL-1", agent_id="A001", team="理财一组", started_at=DAY0)
    tr = add_transcript(session, c1, [
        ("agent", 0.0, 3.0, "您好，这里是某某银行。"),
        ("customer", 3.5, 8.0, f"我的手机是{PHONE}，身份证{ID_NO}。"),
        ("agent", 8.5, 12.0, "这个产品保本保息，您放心。"),
        ("agent", 12.5, 14.0, "=HYPERLINK(\"http://x\")"),
    ])
    an = add_analysis(session, c1, tr, [
        dict(rule_id="R-PROMISE-01", category="promise.guaranteed_return", severity="fatal", role="agent",
             start_s=8.5, end_s=12.0, matched_text="保本保息", evidence="这个产品保本保息，您放心。"),
        dict(rule_id="R-PII-01", category="pii.sensitive_number_spoken", severity="fatal", role="customer",
             start_s=3.5, end_s=8.0, matched_text=PHONE, evidence=f"我的手机是{PHONE}"),
    ], scores=[("complaint_risk", "high", 0.91)])
    asm = add_assessment(session, c1, an, score=20.0, fatal=True, tier="T1")
    f1, f2 = an.findings
    add_review(session, c1, asm, tier="T1", verdict="fail", reviewer="insp01",
               decisions={f1.id: "confirmed", f2.id: "rejected"})
    c2 = make_call(session, "CALL-2", agent_id="A002", team="信贷二组", started_at=DAY0 + timedelta(days=1))
    tr2 = add_transcript(session, c2, [("agent", 0.0, 2.0, "您好。")])
    an2 = add_analysis(session, c2, tr2, [])
    add_assessment(session, c2, an2, score=98.0, tier=None)
    session.commit()
    return c1, c2


def test_jsonl_record_fields_and_redaction(session, tmp_path: Path, two_calls) -> None:
    out = tmp_path / "audit.jsonl"
    result = export_calls(session, out, ExportFilters(), ExportOptions(include_transcript=True), actor="tester")
    session.commit()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert result.calls == len(lines) == 2 and result.findings == 2
    rec = json.loads(lines[0])
    assert rec["call_id"] == "CALL-1" and rec["team"] == "理财一组" and rec["started_at"] == "2026-11-02T09:00:00+00:00"
    assert rec["asr"]["model"] == "base" and len(rec["asr"]["sha256"]) == 64
    assert rec["rule_pack"]["name"] == "finance-zh" and rec["rule_pack"]["version"] == "1.2.0"
    assert (rec["score"], rec["fatal"], rec["tier"]) == (20.0, True, "T1")
    assert rec["classifiers"] == {"complaint_risk": {"label": "high", "probability": 0.91, "model_version": "0.3.1"}}
    assert [f["rule_id"] for f in rec["findings"]] == ["R-PROMISE-01", "R-PII-01"]
    assert [f["review_decision"] for f in rec["findings"]] == ["confirmed", "rejected"]
    assert rec["review"]["verdict"] == "fail" and rec["review"]["reviewer"] == "insp01"
    assert rec["review"]["decided_at"] and [d["decision"] for d in rec["review"]["decisions"]] == ["confirmed", "rejected"]
    assert len(rec["transcript"]) == 4
    text = out.read_text(encoding="utf-8")
    assert PHONE not in text and ID_NO not in text and "*" * 11 in rec["transcript"][1]["text"]
    assert rec["findings"][1]["matched_text"] == "*" * 11
    assert json.loads(lines[1])["review"] is None and "transcript" in json.loads(lines[1])


def test_csv_files(session, tmp_path: Path, two_calls) -> None:
    out = tmp_path / "audit.csv"
    result = export_calls(session, out, ExportFilters(), ExportOptions(format="csv", include_transcript=True),
                          actor="tester")
    assert [p.name for p in result.files] == ["audit.csv", "audit-calls.csv", "audit-transcript.csv"]
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel reads the Chinese correctly
    with open(out, encoding="utf-8-sig", newline="") as fh:
        findings = list(csv.DictReader(fh))
    with open(tmp_path / "audit-calls.csv", encoding="utf-8-sig", newline="") as fh:
        calls = list(csv.DictReader(fh))
    with open(tmp_path / "audit-transcript.csv", encoding="utf-8-sig", newline="") as fh:
        utts = list(csv.DictReader(fh))
    assert [r["category"] for r in findings] == ["promise.guaranteed_return", "pii.sensitive_number_spoken"]
    assert findings[0]["team"] == "理财一组" and findings[1]["evidence"] == "我的手机是" + "*" * 11
    assert [c["call_id"] for c in calls] == ["CALL-1", "CALL-2"] and calls[0]["review_verdict"] == "fail"
    assert json.loads(calls[0]["classifiers"])["complaint_risk"]["label"] == "high"
    assert len(utts) == 5
    # A transcript line that looks like a formula stays text.
    assert utts[3]["text"].startswith("'=HYPERLINK")


def test_xlsx_reads_back(session, tmp_path: Path, two_calls) -> None:
    out = tmp_path / "audit.xlsx"
    export_calls(session, out, ExportFilters(), ExportOptions(format="xlsx", include_transcript=True), actor="tester")
    wb = load_workbook(out, read_only=True)
    assert wb.sheetnames == ["calls", "findings", "transcript", "summary"]
    calls = list(wb["calls"].iter_rows(values_only=True))
    findings = list(wb["findings"].iter_rows(values_only=True))
    summary = dict(list(wb["summary"].iter_rows(values_only=True))[1:])
    assert calls[0][0] == "call_id" and [r[0] for r in calls[1:]] == ["CALL-1", "CALL-2"]
    header = findings[0]
    assert findings[1][header.index("evidence")] == "这个产品保本保息，您放心。"
    assert findings[2][header.index("matched_text")] == "*" * 11
    assert summary["calls"] == 2 and summary["findings"] == 2 and summary["tier.T1"] == 1
    assert summary["category.promise.guaranteed_return"] == 1 and summary["redacted"] is True
    texts = [r[-1] for r in wb["transcript"].iter_rows(values_only=True)]
    assert "'=HYPERLINK(\"http://x\")" in texts and not any(PHONE in (t or "") for t in texts)
    wb.close()


@pytest.mark.parametrize("filters, expected", [
    (ExportFilters(tiers=("T1",)), ["CALL-1"]),
    (ExportFilters(categories=("promise.guaranteed_return",)), ["CALL-1"]),
    (ExportFilters(agents=("A002",)), ["CALL-2"]),
    (ExportFilters(teams=("理财一组",)), ["CALL-1"]),
    (ExportFilters(since=DAY0 + timedelta(hours=1)), ["CALL-2"]),
    (ExportFilters(until=DAY0 + timedelta(hours=1)), ["CALL-1"]),
    (ExportFilters(statuses=("failed",)), []),
])
def test_filters(session, tmp_path: Path, two_calls, filters, expected) -> None:
    out = tmp_path / "f.jsonl"
    result = export_calls(session, out, filters, ExportOptions(), actor="tester")
    assert [json.loads(line)["call_id"] for line in out.read_text(encoding="utf-8").splitlines()] == expected
    assert json.loads(result.manifest.read_text(encoding="utf-8"))["counts"]["calls"] == len(expected)


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="tier"):
        ExportFilters(tiers=("T9",)).validate()
    with pytest.raises(ValueError, match="before"):
        ExportFilters(since=DAY0, until=DAY0).validate()
    with pytest.raises(ValueError, match="format"):
        ExportOptions(format="pdf").validate()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "xlsx"])
def test_manifest_verifies_and_detects_one_byte(session, tmp_path: Path, two_calls, fmt: str) -> None:
    out = tmp_path / f"audit.{fmt}"
    result = export_calls(session, out, ExportFilters(tiers=("T1",)), ExportOptions(format=fmt), actor="tester")
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["filters"]["tiers"] == ["T1"] and manifest["counts"]["calls"] == 1
    assert manifest["tool_version"] and manifest["generated_at"].endswith("+00:00") and manifest["redacted"] is True
    assert {f["name"] for f in manifest["files"]} == {p.name for p in result.files}
    assert verify_manifest(result.manifest).ok
    for path in result.files:  # every file is covered, not just the main one
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        check = verify_manifest(result.manifest)
        assert not check.ok and [f.name for f in check.bad] == [path.name]
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    result.files[0].unlink()
    assert verify_manifest(result.manifest).bad[0].status == "missing"


def test_audit_events_and_unredacted_permission(session, tmp_path: Path, two_calls) -> None:
    export_calls(session, tmp_path / "a.jsonl", ExportFilters(), ExportOptions(), actor="alice")
    session.commit()
    with pytest.raises(PermissionDenied, match="not in the users table"):
        export_calls(session, tmp_path / "b.jsonl", ExportFilters(), ExportOptions(redact=False), actor="mallory")
    add_user(session, "ivan", "inspector")
    add_user(session, "audrey", "auditor")
    add_user(session, "gone", "admin", active=False)
    session.commit()
    for user, message in (("ivan", "role inspector"), ("gone", "deactivated")):
        with pytest.raises(PermissionDenied, match=message):
            export_calls(session, tmp_path / "b.jsonl", ExportFilters(), ExportOptions(redact=False), actor=user)
    assert not (tmp_path / "b.jsonl").exists()
    result = export_calls(session, tmp_path / "b.jsonl", ExportFilters(), ExportOptions(redact=False,
                          include_transcript=True), actor="audrey")
    session.commit()
    assert PHONE in (tmp_path / "b.jsonl").read_text(encoding="utf-8")
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [(e.actor, e.action) for e in events] == [("alice", "export.create"), ("audrey", "export.unredacted")]
    assert events[1].after["manifest_sha256"] == result.manifest_sha256 and events[1].after["calls"] == 2
    assert events[1].object_id == "b.jsonl.manifest.json"


def test_failed_audit_append_removes_the_files(session, tmp_path: Path, two_calls, monkeypatch) -> None:
    from qa import audit
    from qa.errors import AuditError

    def refuse(*args, **kwargs):
        raise AuditError("database is busy")

    monkeypatch.setattr(audit, "append", refuse)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(AuditError):
        export_calls(session, folder / "a.csv", ExportFilters(), ExportOptions(format="csv"), actor="t")
    assert list(folder.iterdir()) == []


def test_writer_committing_during_export_does_not_break_the_audit_append(engine, session, tmp_path: Path,
                                                                          two_calls, monkeypatch) -> None:
    """SQLite refuses the write lock to a transaction whose snapshot is stale; the export's
    reads must not leave one in the caller's session."""
    import qa.reporting.export as export_mod
    from qa import storage as qadb

    real = export_mod.load_chunk
    written = []

    def chunk_then_other_writer(*args, **kwargs):
        records = real(*args, **kwargs)
        if not written:
            with qadb.session_factory(engine)() as other:
                written.append(make_call(other, "LATE", started_at=DAY0 + timedelta(days=3)).id)
                other.commit()
        return records

    monkeypatch.setattr(export_mod, "load_chunk", chunk_then_other_writer)
    with qadb.write_session(qadb.session_factory(engine)) as caller:  # a fresh session, as the CLI has
        result = export_calls(caller, tmp_path / "a.jsonl", ExportFilters(), ExportOptions(chunk_size=1), actor="t")
        caller.commit()
    assert written and result.calls == 2  # one snapshot: the call committed meanwhile is not half in
    assert session.scalars(select(AuditEvent.action)).all() == ["export.create"]


def test_missing_folder(session, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_calls(session, tmp_path / "nope" / "a.jsonl", ExportFilters(), ExportOptions(), actor="t")


def test_cli_export_and_verify(cli_env, session, tmp_path: Path, two_calls) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.xlsx"
    r = runner.invoke(cli, ["export", "--out", str(out), "--tier", "T1,T2", "--since", "2026-11-01",
                            "--until", "2026-11-02", "--as", "alice"])
    assert r.exit_code == 0, r.output
    assert "1 calls, 2 findings, redacted" in r.output
    manifest = tmp_path / "cli.xlsx.manifest.json"
    r = runner.invoke(cli, ["export", "verify", str(manifest)])
    assert r.exit_code == 0 and "ok       cli.xlsx" in r.output
    r = runner.invoke(cli, ["export", "verify", "--audit", str(manifest)])
    assert r.exit_code == 0 and "export.create by alice" in r.output, r.output
    # A manifest rewritten to match (e.g. after editing the data) is not the one the log recorded.
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('"actor": "alice"', '"actor": "bob"'),
                        encoding="utf-8")
    r = runner.invoke(cli, ["export", "verify", "--audit", str(manifest)])
    assert r.exit_code == 3 and "no export event in the audit log" in r.output
    data = bytearray(out.read_bytes())
    data[100] ^= 0xFF
    out.write_bytes(bytes(data))
    r = runner.invoke(cli, ["export", "verify", str(manifest)])
    assert r.exit_code == 3 and "cli.xlsx (changed)" in r.output
    r = runner.invoke(cli, ["export", "--out", str(tmp_path / "x.jsonl"), "--no-redact"])
    assert r.exit_code != 0 and "--as" in r.output
    r = runner.invoke(cli, ["export", "--out", str(tmp_path / "x.jsonl"), "--no-redact", "--as", "nobody"])
    assert r.exit_code == 1 and "not in the users table" in r.output
    r = runner.invoke(cli, ["export", "--out", str(tmp_path / "x.txt")])
    assert r.exit_code != 0 and "--format" in r.output


@pytest.mark.slow
def test_streaming_memory_is_bounded(session, tmp_path: Path) -> None:
    """Peak traced memory of an export of 3,000 calls is about that of 600 calls: the
    export holds one chunk at a time, not the result set."""
    seeded = seed_calls(session, 3000, days=5)
    session.commit()
    peaks, rates = {}, {}
    for label, until in (("small", DAY0 + timedelta(days=1)), ("all", None)):
        filters = ExportFilters(until=until)
        tracemalloc.start()
        t0 = time.perf_counter()
        result = export_calls(session, tmp_path / f"{label}.jsonl", filters,
                              ExportOptions(include_transcript=True, chunk_size=200), actor="t")
        elapsed = time.perf_counter() - t0
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        session.rollback()
        rates[label] = result.calls / elapsed
        if label == "all":
            assert result.calls == seeded.calls and result.findings == seeded.findings
        else:
            assert 500 <= result.calls <= 700
    print(f"export peaks: {peaks}, calls/s under tracemalloc: {rates}")
    # 5x the calls may cost a little more (larger counters, longer ids) but nowhere near 5x.
    assert peaks["all"] < 1.5 * peaks["small"]
    assert peaks["all"] < 40 * 1024 * 1024


def _exported(runner, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "e.jsonl"
    r = runner.invoke(cli, ["export", "--out", str(out), "--as", "alice"])
    assert r.exit_code == 0, r.output
    return out, tmp_path / "e.jsonl.manifest.json"


def test_a_rewritten_file_with_its_hash_recomputed_breaks_the_signature(cli_env, session, tmp_path, two_calls):
    import hashlib
    import json as _json

    runner = CliRunner()
    out, manifest = _exported(runner, tmp_path)
    assert runner.invoke(cli, ["export", "verify", str(manifest)]).exit_code == 0
    out.write_text(out.read_text(encoding="utf-8").replace('"fail"', '"pass"'), encoding="utf-8")
    doc = _json.loads(manifest.read_text(encoding="utf-8"))
    doc["files"][0].update(sha256=hashlib.sha256(out.read_bytes()).hexdigest(), bytes=out.stat().st_size)
    manifest.write_text(_json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    r = runner.invoke(cli, ["export", "verify", str(manifest)])
    assert r.exit_code == 3 and "manifest signature invalid" in r.output


@pytest.mark.parametrize("edit", ["metadata", "empty files", "signature removed"])
def test_edited_manifests_fail(cli_env, session, tmp_path, two_calls, edit):
    import json as _json

    runner = CliRunner()
    _, manifest = _exported(runner, tmp_path)
    doc = _json.loads(manifest.read_text(encoding="utf-8"))
    if edit == "metadata":
        doc["counts"]["calls"] = 99
    elif edit == "empty files":
        doc["files"] = []
    else:
        del doc["signature"]
    manifest.write_text(_json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    r = runner.invoke(cli, ["export", "verify", str(manifest)])
    assert r.exit_code == 3, r.output


def test_a_forged_export_event_does_not_satisfy_audit(cli_env, session, tmp_path, two_calls, engine):
    """Someone who rewrites an export, its manifest, and appends a matching export.create
    event to the hash chain still has no signed checkpoint for that event."""
    import hashlib

    from qa import audit
    from qa import storage as qadb

    runner = CliRunner()
    _, manifest = _exported(runner, tmp_path)
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('"alice"', '"mallory"'), encoding="utf-8")
    with qadb.session_scope(qadb.session_factory(engine)) as s:
        audit.append(s, "mallory", "export.create", "export", manifest.name, None,
                     {"manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()})
    r = runner.invoke(cli, ["export", "verify", "--audit", "--public-key",
                            runner.invoke(cli, ["audit", "pubkey"]).output.strip(), str(manifest)])
    assert r.exit_code == 3 and "after the last signed checkpoint" in r.output, r.output


def test_an_unchanged_re_export_adds_no_audit_event(cli_env, session, tmp_path, two_calls):
    runner = CliRunner()
    _exported(runner, tmp_path)
    _exported(runner, tmp_path)
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.action == "export.create")).all()
    assert actions == ["export.create"]
