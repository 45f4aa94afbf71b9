"""Rules across one customer's calls (contact frequency, contact after a do-not-call request,
repeat complaints) on SQLite and PostgreSQL: the finding lands on the call that crossed the
line and cites the others, the result does not depend on the order calls are analysed in,
a late call can only raise findings on itself, and phone numbers are kept only as keyed
hashes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from builders import add_transcript, make_call, tone, write_wav
from pipeline_fakes import SidecarStages
from sqlalchemy import select

from qa import storage
from qa.config import Settings
from qa.ingest.customers import customer_key, customer_ref, looks_personal
from qa.ingest.register import read_manifest
from qa.pipeline.analyses import analyze_call
from qa.pipeline.run import PipelineOptions, run_pipeline
from qa.rules.stage import AnalyzeOptions, open_analyzer
from qa.storage.models import Call, Finding
from qa.timeutil import zone

PACK = "rules/finance-zh"
SHANGHAI = zone("Asia/Shanghai")
REMIND = [("agent", 0.0, 3.0, "您好，嘉禾银行贷后管理中心，提醒您按时还款。"), ("customer", 3.5, 5.0, "好的，知道了。")]
STOP = [("agent", 0.0, 3.0, "您好，提醒您还款。"), ("customer", 3.5, 6.0, "以后别再给我打电话了！")]
COMPLAIN = [("agent", 0.0, 3.0, "您好，请问有什么可以帮您？"), ("customer", 3.5, 6.0, "你们乱扣费，我要去银保监会投诉你们！")]


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=SHANGHAI)


@pytest.fixture
def analyzer():
    return open_analyzer(AnalyzeOptions(rules_pack=PACK, models_dir=""))


def _call(s, call_id, started, turns, *, ref="D-1", status="transcribed", direction="outbound",
          line="collection"):
    call = make_call(s, call_id, started_at=started, status=status, direction=direction, business_line=line,
                     customer_ref=ref)
    if turns is not None:
        add_transcript(s, call, turns)
    return call


def _findings(s) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for call_id, rule_id in s.execute(select(Call.call_id, Finding.rule_id).join(Finding, Finding.call_id == Call.id)):
        out.setdefault(call_id, set()).add(rule_id)
    return out


def _analyze_all(s, analyzer, order):
    for call in order:
        result = analyze_call(s, analyzer, call.id)
        assert result.status in ("analyzed", "unchanged"), (call.call_id, result.status)
    s.commit()


@pytest.mark.parametrize("order", ["arrival", "reverse"])
def test_the_fourth_contact_of_a_day_and_calls_after_a_do_not_call_request(db_url, analyzer, order):
    engine = storage.make_engine(db_url)
    try:
        with storage.write_session(storage.session_factory(engine)) as s:
            calls = [_call(s, "K1", at(20, 9), REMIND), _call(s, "K2", at(20, 11), STOP),
                     _call(s, "K3", at(20, 14), REMIND), _call(s, "K4", at(20, 16), REMIND),
                     _call(s, "K5", at(21, 10), REMIND), _call(s, "OTHER", at(20, 17), REMIND, ref="D-2")]
            _analyze_all(s, analyzer, calls if order == "arrival" else calls[::-1])
            got = _findings(s)
            assert "collection-contact-frequency" in got["K4"]
            assert not any("collection-contact-frequency" in got.get(c, set()) for c in ("K1", "K2", "K3", "K5"))
            assert [c for c in ("K1", "K2", "K3", "K4", "K5") if "contact-after-do-not-call" in got.get(c, set())] \
                == ["K3", "K4", "K5"]
            assert "customer-do-not-call" in got["K2"]
            assert not got.get("OTHER", set()) & {"collection-contact-frequency", "contact-after-do-not-call"}
            frequency = s.scalar(select(Finding).join(Call, Call.id == Finding.call_id).where(
                Call.call_id == "K4", Finding.rule_id == "collection-contact-frequency"))
            assert frequency.details["related_calls"] == ["K1", "K2", "K3"]
            assert "第4次联系" in frequency.evidence and "K1" in frequency.evidence
            basis = frequency.details["basis"][0]
            assert basis["document"].startswith("互联网金融逾期债务催收自律公约") and basis["effective"] == "2018-03-28"
            after = s.scalar(select(Finding).join(Call, Call.id == Finding.call_id).where(
                Call.call_id == "K5", Finding.rule_id == "contact-after-do-not-call"))
            assert after.details["related_calls"] == ["K2"]
    finally:
        engine.dispose()


def test_a_late_call_raises_findings_on_itself_and_rewrites_nothing(db_url, analyzer):
    engine = storage.make_engine(db_url)
    try:
        with storage.write_session(storage.session_factory(engine)) as s:
            calls = [_call(s, f"K{n}", at(20, 9 + 2 * n), REMIND) for n in range(1, 4)]
            _analyze_all(s, analyzer, calls)
            before = {f.id: (f.call_id, f.rule_id) for f in s.scalars(select(Finding))}
            late = _call(s, "LATE", at(20, 8), REMIND)  # started first, arrived last: the 4th known contact
            _analyze_all(s, analyzer, [late, *calls])  # the others again: unchanged
            after = {f.id: (f.call_id, f.rule_id) for f in s.scalars(select(Finding))}
            assert {k: v for k, v in after.items() if k in before} == before
            new = {v for k, v in after.items() if k not in before}
            assert (late.id, "collection-contact-frequency") in new
            assert all(call_pk == late.id for call_pk, _ in new)
    finally:
        engine.dispose()


def test_a_call_waits_for_an_untranscribed_earlier_call(session, analyzer):
    first = _call(session, "R1", at(20, 9), None, status="registered")
    stop_later = _call(session, "R2", at(20, 11), REMIND)
    session.commit()
    assert analyze_call(session, analyzer, stop_later.id).status == "deferred"
    assert session.get(Call, stop_later.id).status == "transcribed"
    result = analyze_call(session, analyzer, stop_later.id, wait_for_earlier=False)
    assert result.status == "analyzed" and first.status == "registered"


def test_a_repeat_complaint_within_30_days(session, analyzer):
    calls = [_call(session, "P1", at(1, 10), COMPLAIN, ref="L-7", direction="inbound", line="credit_card"),
             _call(session, "P2", at(20, 10), COMPLAIN, ref="L-7", direction="inbound", line="credit_card"),
             _call(session, "P3", at(20, 11), COMPLAIN, ref="L-8", direction="inbound", line="credit_card")]
    _analyze_all(session, analyzer, calls)
    got = _findings(session)
    assert "complaint-repeat-30d" in got["P2"]
    assert "complaint-repeat-30d" not in got["P1"] | got["P3"]
    assert "complaint-escalation-threat" in got["P1"] & got["P2"] & got["P3"]


def test_phone_numbers_are_stored_as_keyed_hashes(tmp_path):
    key = customer_key("", tmp_path)
    assert (tmp_path / "customer-ref.key").stat().st_mode & 0o077 == 0
    forms = ["13812345678", "+86 138-1234-5678", "8613812345678", "(0086) 138 1234 5678"]
    refs = {customer_ref(f, key) for f in forms}
    assert len(refs) == 1 and next(iter(refs)).startswith("h:") and "1381234" not in next(iter(refs))
    assert customer_ref("13812345678", customer_key("", tmp_path / "other")) not in refs  # another key
    assert customer_ref("LOAN-778", key) == "LOAN-778" and not looks_personal("LOAN-778")
    assert looks_personal("11010519491231002X")
    with pytest.raises(ValueError, match="at most 64"):
        customer_ref("x" * 65, key)


def _sidecar_call(folder, name, turns, n):
    write_wav(folder / f"{name}.wav", tone(2.0 + 0.1 * n, channels=2, freq=300 + 40 * n))  # distinct bytes
    (folder / f"{name}.json").write_text(json.dumps({"turns": [
        {"role": r, "start_s": a, "end_s": b, "text": t} for r, a, b, t in turns]}, ensure_ascii=False),
        encoding="utf-8")


def test_the_nightly_finds_them_end_to_end_with_hashed_phone_numbers(tmp_path, engine, settings):
    folder = tmp_path / "night"
    folder.mkdir()
    rows = [("N1", REMIND, "13812345678", "2026-11-20T09:00:00"), ("N2", STOP, "+86 138-1234-5678", "2026-11-20T11:00:00"),
            ("N3", REMIND, "8613812345678", "2026-11-20T14:00:00"), ("N4", REMIND, "138 1234 5678", "2026-11-20T16:00:00"),
            ("N5", REMIND, "", "2026-11-20T17:00:00")]
    lines = ["call_id,file,started_at,direction,business_line,customer_ref"]
    for n, (name, turns, phone, started) in enumerate(rows):
        _sidecar_call(folder, name, turns, n)
        lines.append(f"{name},{name}.wav,{started},outbound,collection,{phone}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    factory = storage.session_factory(engine)
    options = PipelineOptions(kind="nightly", manifest=str(folder / "manifest.csv"), executor="serial", export=False)
    result = run_pipeline(factory, settings, options, stages=SidecarStages())
    assert result.status == "ok", result.failures
    with factory() as s:
        refs = dict(s.execute(select(Call.call_id, Call.customer_ref)).all())
        got = _findings(s)
    assert refs["N5"] is None and len({refs[n] for n in ("N1", "N2", "N3", "N4")}) == 1
    assert refs["N1"].startswith("h:") and "12345678" not in refs["N1"]
    assert "collection-contact-frequency" in got["N4"]
    assert [n for n in ("N1", "N2", "N3", "N4") if "contact-after-do-not-call" in got.get(n, set())] == ["N3", "N4"]
    # the key the hashes were made with stays in the data folder, owner-only
    key_file = Path(settings.data_dir) / "customer-ref.key"
    assert key_file.stat().st_mode & 0o077 == 0
    assert customer_ref("13812345678", Settings(data_dir=settings.data_dir).customer_key()) == refs["N1"]


def test_a_phone_number_without_a_key_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("call_id,file,customer_ref\nX1,x.wav,13812345678\n", encoding="utf-8")
    with pytest.raises(Exception, match="m.csv:2: customer_ref looks like a phone"):
        read_manifest(tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv", customer_key=lambda: b"k" * 32)[0].meta.customer_ref.startswith("h:")


def test_rules_lint_the_cross_call_operators(tmp_path):
    from qa.errors import RuleError
    from qa.rules.loader import parse_rule

    bad = tmp_path / "r.yaml"
    bad.write_text("id: r\ntitle: t\ncategory: collection.contact_hours\ncondition:\n  contacts: {max: 3}\n",
                   encoding="utf-8")
    with pytest.raises(RuleError, match="r.yaml:5: contacts needs either per: day or within_days"):
        parse_rule(bad)
    bad.write_text("id: r\ntitle: t\ncategory: customer.do_not_call\ncondition:\n"
                   "  prior_finding: {category: nope.nothing, within_days: 30}\n", encoding="utf-8")
    with pytest.raises(RuleError, match="unknown category 'nope.nothing'"):
        parse_rule(bad)
    bad.write_text("id: r\ntitle: t\ncategory: customer.do_not_call\ncondition:\n"
                   "  prior_finding: {category: customer.do_not_call, within_days: 5000}\n", encoding="utf-8")
    with pytest.raises(RuleError, match="at most 366 days"):
        parse_rule(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("id: r\ntitle: t\ncategory: customer.do_not_call\ncondition:\n"
                  "  prior_finding: {category: customer.do_not_call, within_days: 45}\n", encoding="utf-8")
    rule = parse_rule(ok)
    assert rule.cross_call and rule.history_days == 45
    assert timedelta(days=rule.history_days) == timedelta(days=45)
