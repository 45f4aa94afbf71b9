"""The web UI through HTTP (FastAPI's TestClient): logins and roles, CSRF, the review flow,
audio range requests, redaction, exports, appeals, calibration, admin and the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select
from web_helpers import FAST_HASHER, PASSWORD, PHONE, World, csrf_of, login, world_database

from qa import storage as qadb
from qa.cli import cli
from qa.config import Settings
from qa.review import users
from qa.storage.models import AuditEvent, ReviewDecision, ReviewItem, User
from qa.web import create_app
from qa.web.app import resolve_secret_key
from qa.web.auth import COOKIE_NAME

SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(autouse=True, scope="module")
def fast_hashing():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "PASSWORD_HASHER", FAST_HASHER)
        yield


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web-world")


@pytest.fixture
def site(template_dir, tmp_path):
    """(settings, session factory, world) over a fresh copy of the test world."""
    url, world = world_database(template_dir, tmp_path / "var")
    settings = Settings(data_dir=str(tmp_path / "var"), database_url=url, secret_key=SECRET)
    engine = qadb.make_engine(url)
    yield settings, qadb.session_factory(engine), world
    engine.dispose()


@pytest.fixture
def app(site):
    settings, factory, _ = site
    return create_app(settings, session_factory=factory)


@pytest.fixture
def world(site) -> World:
    return site[2]


@pytest.fixture
def factory(site):
    return site[1]


def client_for(app, username: str | None = None) -> TestClient:
    client = TestClient(app)
    if username:
        page = login(client, username)
        assert page.status_code == 200, page.text
    return client


def token(client: TestClient, path: str = "/queue") -> str:
    return csrf_of(client.get(path).text)


def audit_actions(factory, actor: str | None = None) -> list[str]:
    with factory() as s:
        stmt = select(AuditEvent.action).order_by(AuditEvent.seq)
        if actor:
            stmt = stmt.where(AuditEvent.actor == actor)
        return list(s.scalars(stmt))


# --- login, sessions, headers ----------------------------------------------------------------

def test_login_page_is_utf8_chinese_with_security_headers(app):
    r = TestClient(app).get("/login")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "登录 · 语音质检系统" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie


def test_secure_cookie_option(site):
    settings, factory, _ = site
    r = TestClient(create_app(settings, session_factory=factory, secure_cookies=True)).get("/login")
    assert "Secure" in r.headers["set-cookie"]


def test_login_lands_on_the_role_home_and_logout_ends_the_session(app):
    client = TestClient(app)
    r = login(client, "zhangmin")
    assert r.url.path == "/queue" and "张敏" in r.text
    assert login(TestClient(app), "zhaolei").url.path == "/dashboard"
    r = client.post("/logout", data={"csrf_token": csrf_of(r.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/queue", follow_redirects=False).headers["location"] == "/login?next=%2Fqueue"


def test_a_saved_cookie_stops_working_at_logout(app):
    client = TestClient(app)
    r = login(client, "zhangmin")
    saved = client.cookies.get(COOKIE_NAME)
    client.post("/logout", data={"csrf_token": csrf_of(r.text)}, follow_redirects=False)
    replay = TestClient(app, cookies={COOKIE_NAME: saved})
    assert replay.get("/queue", follow_redirects=False).status_code == 303  # to the login page


def test_wrong_password_and_rate_limit(app, factory):
    client = TestClient(app)
    for _ in range(5):
        r = login(client, "zhangmin", "wrong-password-1")
        assert r.status_code == 401 and "wrong username or password" in r.text
    r = login(client, "zhangmin")  # right password, but too many failures from this client
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert login(TestClient(app), "liqiang").status_code == 200  # other accounts are not locked
    assert "user.login" not in audit_actions(factory, "zhangmin")


def test_unknown_user_and_open_redirect(app):
    assert login(TestClient(app), "nobody").status_code == 401
    client = TestClient(app)
    page = client.get("/login?next=//evil.example/x")
    assert 'name="next" value=""' in page.text
    r = client.post("/login", data={"username": "zhangmin", "password": PASSWORD, "csrf_token": csrf_of(page.text),
                                    "next": "//evil.example/x"}, follow_redirects=False)
    assert r.headers["location"] == "/queue"


def test_login_returns_to_the_page_asked_for(app, world):
    client = TestClient(app)
    r = client.get(f"/items/{world.t1_item}", follow_redirects=True)
    assert r.url.path == "/login"
    r = client.post("/login", data={"username": "zhangmin", "password": PASSWORD, "csrf_token": csrf_of(r.text),
                                    "next": f"/items/{world.t1_item}"}, follow_redirects=True)
    assert r.url.path == f"/items/{world.t1_item}" and "S06" in r.text


def test_tampered_cookie_is_anonymous(app):
    client = client_for(app, "root")
    value = client.cookies.get(COOKIE_NAME)
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_disabling_a_user_or_changing_the_password_ends_sessions(app, factory):
    inspector, other = client_for(app, "zhangmin"), client_for(app, "liqiang")
    with qadb.write_session(factory) as s:
        users.set_active(s, "root", "zhangmin", False)
        users.set_password(s, "root", "liqiang", "a-brand-new-password")
        s.commit()
    for client in (inspector, other):
        assert client.get("/queue", follow_redirects=False).status_code == 303
    assert login(TestClient(app), "zhangmin").status_code == 401
    assert login(TestClient(app), "liqiang", "a-brand-new-password").status_code == 200


# --- roles and CSRF ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/queue", "/dashboard", "/calibration", "/items/1", "/calls/1/audio",
                                  "/exports", "/admin/users", "/appeals"])
def test_every_page_needs_a_login(app, path):
    r = TestClient(app).get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("username,path,status", [
    ("zhangmin", "/admin/users", 403), ("zhangmin", "/exports", 403), ("zhangmin", "/appeals", 403),
    ("wangfang", "/exports", 403), ("wangfang", "/appeals", 200), ("zhaolei", "/exports", 200),
    ("zhaolei", "/admin/users", 403), ("root", "/admin/users", 200), ("root", "/exports", 200),
])
def test_pages_check_the_role(app, username, path, status):
    r = client_for(app, username).get(path)
    assert r.status_code == status
    if status == 403:
        assert "无权访问" in r.text and username in r.text


def test_auditor_cannot_claim(app, world, factory):
    client = client_for(app, "zhaolei")
    r = client.post("/queue/claim-next", data={"csrf_token": token(client, "/dashboard")})
    assert r.status_code == 403
    with factory() as s:
        assert s.get(ReviewItem, world.t1_item).status == "open"


def test_post_without_or_with_a_wrong_csrf_token_is_rejected(app, world, factory):
    client = client_for(app, "zhangmin")
    for data in ({}, {"csrf_token": "forged"}):
        r = client.post("/queue/claim-next", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    other = client_for(app, "liqiang")  # a valid token of another session does not work either
    r = client.post(f"/items/{world.t1_item}/claim", data={"csrf_token": token(other)}, follow_redirects=False)
    assert r.status_code == 403
    with factory() as s:
        assert s.get(ReviewItem, world.t1_item).status == "open"
    r = client.post("/queue/claim-next", headers={"X-CSRF-Token": token(client)}, follow_redirects=False)
    assert r.status_code == 303  # the header works for scripts


def test_login_form_needs_its_csrf_token(app):
    r = TestClient(app).post("/login", data={"username": "zhangmin", "password": PASSWORD})
    assert r.status_code == 403


# --- the review flow -------------------------------------------------------------------------

def test_claim_decide_close_through_http(app, world, factory):
    client = client_for(app, "zhangmin")
    r = client.post("/queue/claim-next", data={"csrf_token": token(client)}, follow_redirects=True)
    assert r.url.path == f"/items/{world.t1_item}"  # T1 before the overdue T2
    assert "<mark>保本保息</mark>" in r.text and "<mark>稳赚不赔</mark>" in r.text
    assert 'id="utt-2"' in r.text and 'data-seek="11.06"' in r.text
    csrf = csrf_of(r.text)
    first, second = world.t1_findings
    client.post(f"/items/{world.t1_item}/findings/{first}/decide",
                data={"csrf_token": csrf, "decision": "confirmed", "comment": "明确承诺保本"})
    client.post(f"/items/{world.t1_item}/findings/{second}/decide",
                data={"csrf_token": csrf, "decision": "rejected", "comment": ""})
    r = client.post(f"/items/{world.t1_item}/findings",
                    data={"csrf_token": csrf, "category": "disclosure.risk_missing", "start_s": "11", "end_s": "16",
                          "comment": "没有风险提示"}, follow_redirects=True)
    assert "人工补充" in r.text
    r = client.post(f"/items/{world.t1_item}/close", data={"csrf_token": csrf, "verdict": "", "comment": "违规"},
                    follow_redirects=True)
    assert r.url.path == "/queue" and "质检项已完成" in r.text
    assert f'data-item="{world.t1_item}"' not in r.text and f'data-item="{world.t2_item}"' in r.text
    with factory() as s:
        item = s.get(ReviewItem, world.t1_item)
        assert (item.status, item.verdict, item.final_score, item.closed_by) == ("closed", "fail", 0.0, "zhangmin")
        decisions = {d.finding_id: d.decision for d in s.scalars(select(ReviewDecision))}
        assert decisions[first] == "confirmed" and decisions[second] == "rejected"
    assert audit_actions(factory, "zhangmin") == ["user.login", "review.claim", "review.decide", "review.decide",
                                                  "review.add_finding", "review.close"]


def test_closing_with_undecided_findings_is_a_clear_400(app, world):
    client = client_for(app, "zhangmin")
    client.post(f"/items/{world.t1_item}/claim", data={"csrf_token": token(client)})
    r = client.post(f"/items/{world.t1_item}/close", data={"csrf_token": token(client)})
    assert r.status_code == 400 and "before closing" in r.text


def test_someone_elses_claim(app, world):
    first, second = client_for(app, "zhangmin"), client_for(app, "liqiang")
    first.post(f"/items/{world.t1_item}/claim", data={"csrf_token": token(first)})
    r = second.post(f"/items/{world.t1_item}/claim", data={"csrf_token": token(second)})
    assert r.status_code == 400 and "claimed by zhangmin" in r.text
    r = second.post(f"/items/{world.t1_item}/findings/{world.t1_findings[0]}/decide",
                    data={"csrf_token": token(second), "decision": "confirmed"})
    assert r.status_code == 403
    page = second.get(f"/items/{world.t1_item}").text
    assert "/decide" not in page and "处理中" in page  # read-only for everyone else


def test_release_puts_the_item_back(app, world, factory):
    client = client_for(app, "zhangmin")
    client.post(f"/items/{world.t2_item}/claim", data={"csrf_token": token(client)})
    assert "我正在处理" in client.get("/queue").text
    r = client.post(f"/items/{world.t2_item}/release", data={"csrf_token": token(client)}, follow_redirects=True)
    assert "已退回队列" in r.text and "我正在处理" not in r.text
    with factory() as s:
        assert s.get(ReviewItem, world.t2_item).status == "open"
    assert audit_actions(factory, "zhangmin")[-2:] == ["review.claim", "review.release"]


def test_transcript_text_is_escaped(app, world, factory):
    with factory() as s:
        from qa.storage.models import UtteranceRow

        utt = s.scalars(select(UtteranceRow).where(UtteranceRow.call_id == world.t1_call, UtteranceRow.idx == 1)).one()
        utt.text = '<script>alert("x")</script>是我'
        s.commit()
    page = client_for(app, "zhangmin").get(f"/items/{world.t1_item}").text
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


def test_queue_shows_tiers_sla_and_overdue(app, world):
    r = client_for(app, "zhangmin").get("/queue")
    rows = re.findall(r'<tr class="queue-row([^"]*)" data-item="(\d+)"', r.text)
    assert [int(i) for _, i in rows] == [world.t1_item, world.t2_item]
    assert "overdue" not in rows[0][0] and "overdue" in rows[1][0]
    assert "剩 3小时" in r.text and "超时 6小时" in r.text
    t2 = client_for(app, "zhangmin").get("/queue?tier=T2").text
    assert f'data-item="{world.t1_item}"' not in t2 and f'data-item="{world.t2_item}"' in t2


def test_unknown_item_and_bad_ids(app):
    client = client_for(app, "zhangmin")
    r = client.get("/items/99999")
    assert r.status_code == 404 and "review item 99999 does not exist" in r.text
    assert client.get("/items/abc").status_code == 400
    assert client.get("/no/such/page").status_code == 404


# --- audio -----------------------------------------------------------------------------------

def test_audio_full_and_ranges(app, world):
    client = client_for(app, "zhangmin")
    data = world.t1_wav.read_bytes()
    r = client.get(f"/calls/{world.t1_call}/audio")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "audio/wav" and r.headers["accept-ranges"] == "bytes"
    r = client.get(f"/calls/{world.t1_call}/audio", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(data)}"
    r = client.get(f"/calls/{world.t1_call}/audio", headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    r = client.get(f"/calls/{world.t1_call}/audio", headers={"Range": "bytes=-500"})
    assert r.status_code == 206 and r.content == data[-500:]
    r = client.get(f"/calls/{world.t1_call}/audio", headers={"Range": f"bytes={len(data) + 10}-"})
    assert r.status_code == 416


def test_audio_of_failed_unknown_and_unrouted_calls(app, world):
    client = client_for(app, "zhangmin")
    r = client.get(f"/calls/{world.failed_call}/audio")
    assert r.status_code == 404 and "BROKEN1 failed (audio.empty)" in r.text
    r = client.get("/calls/424242/audio")
    assert r.status_code == 404 and "call 424242 does not exist" in r.text
    r = client.get(f"/calls/{world.unrouted_call}/audio")  # not under review: not for inspectors
    assert r.status_code == 403
    assert client_for(app, "zhaolei").get(f"/calls/{world.unrouted_call}/audio").status_code == 200


def test_audio_file_gone_from_storage(app, world, factory, tmp_path):
    with factory() as s:
        from qa.storage.models import Call

        s.get(Call, world.t2_call).file_path = str(tmp_path / "moved-away.wav")
        s.commit()
    r = client_for(app, "zhangmin").get(f"/calls/{world.t2_call}/audio")
    assert r.status_code == 404 and "missing from storage" in r.text


@pytest.mark.parametrize("path", ["/calls/..%2F..%2Fetc%2Fpasswd/audio", "/calls/%2Fetc%2Fpasswd/audio",
                                  "/static/..%2F..%2F..%2Fpyproject.toml", "/exports/..%2F..%2Fqa.db/x",
                                  "/exports/..%2Fweb/qa.db", "/exports/x/..%2F..%2Fqa.db"])
def test_no_path_traversal(app, path):
    r = client_for(app, "root").get(path)
    assert r.status_code in (400, 404)
    assert b"[project]" not in r.content and b"SQLite format" not in r.content


# --- redaction -------------------------------------------------------------------------------

def test_pii_masked_by_default_and_raw_text_is_audited(app, world, factory):
    inspector = client_for(app, "zhangmin")
    page = inspector.get(f"/items/{world.t2_item}").text
    assert PHONE not in page and "我手机是***********" in page
    assert "查看原文" not in page
    assert inspector.post(f"/items/{world.t2_item}/raw", data={"csrf_token": token(inspector)}).status_code == 403
    senior = client_for(app, "wangfang")
    assert "查看原文" in senior.get(f"/items/{world.t2_item}").text
    assert PHONE not in senior.get(f"/items/{world.t2_item}?raw=1").text  # a GET never shows (or audits) raw text
    raw = senior.post(f"/items/{world.t2_item}/raw", data={"csrf_token": token(senior)})
    assert PHONE in raw.text and raw.headers["cache-control"] == "no-store"
    with factory() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "pii.view_raw")).one()
        assert (event.actor, event.object_id) == ("wangfang", "S08")


# --- appeals, calibration, dashboard -----------------------------------------------------------

def _close_t1(app, world, verdict="fail"):
    client = client_for(app, "zhangmin")
    client.post(f"/items/{world.t1_item}/claim", data={"csrf_token": token(client)})
    for fid in world.t1_findings:
        client.post(f"/items/{world.t1_item}/findings/{fid}/decide",
                    data={"csrf_token": token(client), "decision": "confirmed"})
    r = client.post(f"/items/{world.t1_item}/close", data={"csrf_token": token(client), "verdict": verdict})
    assert r.status_code == 200


def test_appeal_opened_and_overturned_by_seniors(app, world, factory):
    _close_t1(app, world)
    senior = client_for(app, "wangfang")
    r = senior.post(f"/items/{world.t1_item}/appeal", data={"csrf_token": token(senior), "reason": "坐席已否认保本"},
                    follow_redirects=True)
    assert "待裁决" in r.text
    assert "S06" in senior.get("/appeals").text
    inspector = client_for(app, "zhangmin")
    assert inspector.post(f"/items/{world.t1_item}/appeal",
                          data={"csrf_token": token(inspector), "reason": "x"}).status_code == 403
    assert 'action="/appeals/' not in r.text  # who filed an appeal does not decide it
    other = client_for(app, "chenjing")
    page = other.get(f"/items/{world.t1_item}").text
    appeal_id = int(re.search(r'action="/appeals/(\d+)/decide"', page).group(1))
    assert senior.post(f"/appeals/{appeal_id}/decide", data={"csrf_token": token(senior), "outcome": "overturned",
                                                             "reason": "x"}).status_code == 403
    r = other.post(f"/appeals/{appeal_id}/decide", data={"csrf_token": token(other), "outcome": "overturned",
                                                         "reason": "复听确认未承诺", "final_score": "85"},
                   follow_redirects=True)
    assert "改判通过" in r.text
    with factory() as s:
        item = s.get(ReviewItem, world.t1_item)
        assert (item.status, item.verdict, item.final_score) == ("appeal_decided", "pass", 85.0)
    assert audit_actions(factory, "wangfang")[-1:] == ["appeal.open"]
    assert audit_actions(factory, "chenjing")[-1:] == ["appeal.decide"]


def test_calibration_session_votes_and_agreement(app, world):
    senior = client_for(app, "wangfang")
    r = senior.post("/calibration", data={"csrf_token": token(senior), "name": "十一月校准", "calls": "S06, S08",
                                          "inspectors": "zhangmin liqiang"}, follow_redirects=True)
    assert r.status_code == 200 and "十一月校准" in r.text
    session_id = int(re.search(r"/calibration/(\d+)/close", r.text).group(1))
    for username, value in (("zhangmin", "fail"), ("liqiang", "fail")):
        client = client_for(app, username)
        r = client.post(f"/calibration/{session_id}/vote",
                        data={"csrf_token": token(client), "call_id": world.t1_call, "item_key": "verdict",
                              "value": value}, follow_redirects=True)
        assert r.status_code == 200
    # blind while open: an inspector of the session sees neither the others' votes nor the agreement
    page = client_for(app, "zhangmin").get("/calibration").text
    assert "十一月校准" in page and "100.0%" not in page
    session_page = client_for(app, "zhangmin").get(f"/calibration/{session_id}").text
    assert "zhangmin: fail" in session_page and "liqiang" not in session_page.split("<table")[1]
    assert "100.0%" in senior.get("/calibration").text  # the senior running it sees them
    r = senior.post(f"/calibration/{session_id}/vote", data={"csrf_token": token(senior), "call_id": world.t1_call,
                                                              "item_key": "verdict", "value": "pass"})
    assert r.status_code == 403  # not one of the session's inspectors
    r = senior.post("/calibration", data={"csrf_token": token(senior), "name": "x", "calls": "NOPE",
                                          "inspectors": "zhangmin liqiang"})
    assert r.status_code == 404 and "NOPE" in r.text


def test_dashboard_counts_categories_and_trend(app, world):
    _close_t1(app, world)
    page = client_for(app, "zhaolei").get("/dashboard").text
    tiles = dict(re.findall(r'data-tier="(T\d)">\s*<div class="tile-head">.*?<b class="today-count">(\d+)</b>', page,
                            re.S))
    assert tiles == {"T1": "1", "T2": "0", "T3": "0"}  # the T2 item entered the queue yesterday
    assert re.search(r'id="closed-today">1<', page)
    assert "promise.guaranteed_return" in page and "<svg" in page and page.count("<rect") == 2
    assert "S08" in page  # overdue list
    # "today" is the call centre's day, named with its zone (not the UTC day)
    from qa.timeutil import local_today, zone

    assert f"今日（{local_today(zone('Asia/Shanghai')).isoformat()}，Asia/Shanghai, UTC+08:00）" in page


# --- exports ---------------------------------------------------------------------------------

def test_auditor_exports_and_downloads_with_manifest(app, world, factory):
    _close_t1(app, world)
    auditor = client_for(app, "zhaolei")
    r = auditor.post("/exports", data={"csrf_token": token(auditor, "/exports"), "format": "jsonl", "tier": "T1"},
                     follow_redirects=True)
    assert r.status_code == 200 and "导出完成" in r.text
    links = re.findall(r'href="(/exports/[^"]+)"', r.text)
    data_link = next(link for link in links if link.endswith(".jsonl"))
    manifest_link = next(link for link in links if link.endswith(".manifest.json"))
    body = auditor.get(data_link)
    assert body.status_code == 200 and "attachment" in body.headers["content-disposition"]
    records = [json.loads(line) for line in body.text.splitlines() if line.strip()]
    assert [rec["call_id"] for rec in records] == ["S06"]
    manifest = auditor.get(manifest_link).json()
    assert manifest["actor"] == "zhaolei" and manifest["redacted"] is True
    assert manifest["files"][0]["sha256"] == hashlib.sha256(body.content).hexdigest()
    assert "export.create" in audit_actions(factory, "zhaolei")
    inspector = client_for(app, "zhangmin")
    assert inspector.get(data_link).status_code == 403
    assert inspector.post("/exports", data={"csrf_token": token(inspector), "format": "jsonl"}).status_code == 403


def test_csv_export_lists_every_file(app):
    auditor = client_for(app, "root")
    r = auditor.post("/exports", data={"csrf_token": token(auditor, "/exports"), "format": "csv",
                                       "category": ["promise.guaranteed_return", "loan.approval_promise"],
                                       "include_transcript": "1"}, follow_redirects=True)
    names = re.findall(r'href="/exports/[^/"]+/([^"]+)"', r.text)
    assert names == ["audit.csv", "audit-calls.csv", "audit-transcript.csv", "audit.csv.manifest.json"]
    link = re.search(r'href="(/exports/[^"]+/audit-calls.csv)"', r.text).group(1)
    calls = auditor.get(link).text
    assert "S06" in calls and "S08" in calls and "S02" not in calls


def test_export_with_bad_filters_is_a_400(app):
    auditor = client_for(app, "zhaolei")
    r = auditor.post("/exports", data={"csrf_token": token(auditor, "/exports"), "format": "jsonl",
                                       "since": "2026-11-05", "until": "2026-11-01"})
    assert r.status_code == 400 and "must be before" in r.text
    assert "还没有导出" in auditor.get("/exports").text  # nothing half-made is left behind


# --- admin and CLI ---------------------------------------------------------------------------

def test_admin_creates_disables_and_resets_users(app, factory):
    admin = client_for(app, "root")
    r = admin.post("/admin/users", data={"csrf_token": token(admin, "/admin/users"), "username": "sunli",
                                         "role": "inspector", "password": "sunli-password-1", "display_name": "孙丽"},
                   follow_redirects=True)
    assert "用户已创建" in r.text and "孙丽" in r.text
    assert login(TestClient(app), "sunli", "sunli-password-1").url.path == "/queue"
    r = admin.post("/admin/users", data={"csrf_token": token(admin, "/admin/users"), "username": "short",
                                         "role": "inspector", "password": "short"})
    assert r.status_code == 400 and "at least 10 characters" in r.text
    admin.post("/admin/users/sunli/active", data={"csrf_token": token(admin, "/admin/users"), "active": "0"})
    assert login(TestClient(app), "sunli", "sunli-password-1").status_code == 401
    r = admin.post("/admin/users/root/active", data={"csrf_token": token(admin, "/admin/users"), "active": "0"})
    assert r.status_code == 403
    assert {"user.create", "user.disable"} <= set(audit_actions(factory, "root"))


def test_users_cli(site, monkeypatch):
    settings, factory, _ = site
    monkeypatch.setenv("QA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("QA_DATA_DIR", settings.data_dir)
    monkeypatch.delenv("QA_CONFIG", raising=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["users", "add", "zhouyu", "--role", "auditor", "--name", "周瑜", "--password-stdin"],
                      input="zhouyu-password-1\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["users", "add", "zhouyu", "--role", "auditor", "--password-stdin"],
                      input="zhouyu-password-1\n")
    assert r.exit_code == 1 and "exists already" in r.output
    r = runner.invoke(cli, ["users", "list"])
    assert re.search(r"zhouyu\s+周瑜\s+auditor\s+active", r.output)
    r = runner.invoke(cli, ["users", "passwd", "zhouyu", "--password-stdin"], input="another-password\n")
    assert r.exit_code == 0
    assert runner.invoke(cli, ["users", "disable", "zhouyu"]).exit_code == 0
    with qadb.write_session(factory) as s:
        user = s.scalars(select(User).where(User.username == "zhouyu")).one()
        assert not user.active
        with pytest.raises(users.LoginError):
            users.authenticate(s, "zhouyu", "another-password")
    assert runner.invoke(cli, ["users", "enable", "zhouyu"]).exit_code == 0
    with qadb.write_session(factory) as s:
        assert users.authenticate(s, "zhouyu", "another-password").role == "auditor"
    r = runner.invoke(cli, ["serve", "--help"])
    assert "--port" in r.output and "--secure-cookies" in r.output


# --- library pieces --------------------------------------------------------------------------

def test_login_limiter_window():
    now = [0.0]
    limiter = users.LoginLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("Zhang", "1.2.3.4") == 0
        limiter.failed("Zhang", "1.2.3.4")
    assert limiter.retry_after("zhang", "1.2.3.4") == 60  # usernames are case-insensitive here
    assert limiter.retry_after("zhang", "5.6.7.8") == 0
    now[0] = 59.5
    assert limiter.retry_after("zhang", "1.2.3.4") == 1
    now[0] = 60.0
    assert limiter.retry_after("zhang", "1.2.3.4") == 0
    limiter.failed("zhang", "1.2.3.4")
    limiter.succeeded("zhang", "1.2.3.4")
    assert limiter.retry_after("zhang", "1.2.3.4") == 0


def test_login_limiter_stays_bounded(monkeypatch):
    now = [0.0]
    limiter = users.LoginLimiter(max_failures=2, window_s=10, clock=lambda: now[0])
    monkeypatch.setattr(users.LoginLimiter, "MAX_KEYS", 50)
    for n in range(50):
        limiter.failed(f"user{n}", "9.9.9.9")
    now[0] = 11.0
    limiter.failed("late", "9.9.9.9")
    limiter.failed("late", "9.9.9.9")
    assert len(limiter) == 2  # the late pair and its client; the 50 aged-out names were forgotten
    assert limiter.retry_after("late", "9.9.9.9") == 10 and limiter.retry_after("user7", "9.9.9.9") == 0


def test_password_spraying_from_one_address_is_throttled():
    now = [0.0]
    limiter = users.LoginLimiter(max_failures=5, max_client_failures=10, window_s=60, clock=lambda: now[0])
    for n in range(10):
        assert limiter.retry_after(f"user{n}", "6.6.6.6") == 0
        limiter.failed(f"user{n}", "6.6.6.6")
    assert limiter.retry_after("user99", "6.6.6.6") == 60  # any name, from that address
    assert limiter.retry_after("user99", "7.7.7.7") == 0


def test_passwords_are_argon2_and_checked(factory):
    with qadb.write_session(factory) as s:
        user = users.get_user(s, "zhangmin")
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        with pytest.raises(ValueError, match="at least 10"):
            users.create_user(s, "test", "x1", "inspector", "short")
        with pytest.raises(ValueError, match="role must be one of"):
            users.create_user(s, "test", "x2", "boss", "long-enough-password")
        with pytest.raises(ValueError, match="username"):
            users.create_user(s, "test", "../etc", "inspector", "long-enough-password")


def test_secret_key_file_is_created_once(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "var"))
    key = resolve_secret_key(settings)
    path = tmp_path / "var" / "web-secret.key"
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert resolve_secret_key(settings) == key
    assert resolve_secret_key(replace(settings, secret_key="from-the-environment-123")) == "from-the-environment-123"


@pytest.mark.postgres
def test_review_flow_on_postgresql(pg_url, tmp_path):
    from web_helpers import build_world

    engine = qadb.make_engine(pg_url)
    factory = qadb.session_factory(engine)
    try:
        world = build_world(factory, tmp_path)
        settings = Settings(data_dir=str(tmp_path / "var"), database_url=pg_url, secret_key=SECRET)
        app = create_app(settings, session_factory=factory)
        client = client_for(app, "zhangmin")
        r = client.post("/queue/claim-next", data={"csrf_token": token(client)}, follow_redirects=True)
        assert r.url.path == f"/items/{world.t1_item}" and "<mark>保本保息</mark>" in r.text
        for fid, decision in zip(world.t1_findings, ("confirmed", "rejected")):
            client.post(f"/items/{world.t1_item}/findings/{fid}/decide",
                        data={"csrf_token": token(client), "decision": decision})
        r = client.post(f"/items/{world.t1_item}/close", data={"csrf_token": token(client)}, follow_redirects=True)
        assert f'data-item="{world.t1_item}"' not in r.text
        r = client.get(f"/calls/{world.t1_call}/audio", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == world.t1_wav.read_bytes()[:10]
        assert re.search(r'id="closed-today">1<', client_for(app, "zhaolei").get("/dashboard").text)
        with factory() as s:
            assert s.get(ReviewItem, world.t1_item).verdict == "fail"
    finally:
        engine.dispose()
