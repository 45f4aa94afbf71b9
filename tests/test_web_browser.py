"""The web UI in a real browser: Debian's Chromium (/usr/bin/chromium) driven headless by
Playwright against uvicorn on a free local port. Set QA_SCREENSHOT_DIR to keep screenshots
of the pages the tests visit."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from web_helpers import FAST_HASHER, PASSWORD, world_database

from qa import storage as qadb
from qa.config import Settings
from qa.review import users
from qa.storage.models import ReviewItem
from qa.timeutil import zone
from qa.web import create_app

SHANGHAI = zone("Asia/Shanghai")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """uvicorn serving a fresh copy of the test world; yields (base URL, world, session factory)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "PASSWORD_HASHER", FAST_HASHER)
        var = tmp_path_factory.mktemp("browser") / "var"
        url, world = world_database(tmp_path_factory.mktemp("browser-world"), var)
        settings = Settings(data_dir=str(var), database_url=url, secret_key="browser-test-secret-0123456789")
        engine = qadb.make_engine(url)
        factory = qadb.session_factory(engine)
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(create_app(settings, session_factory=factory), host="127.0.0.1",
                                            port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not srv.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", world, factory
        srv.should_exit = True
        thread.join(10)
        engine.dispose()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def make():
        ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True, locale="zh-CN")
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def shot(page, name: str) -> None:
    folder = os.environ.get("QA_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#whoami")


def wait_until(page, expression: str, timeout_s: float = 10.0) -> None:
    """Poll ``expression`` (page.wait_for_function evaluates strings with eval, which the
    pages' Content-Security-Policy forbids, and the tests keep that policy on)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def audio_time(page) -> float:
    return page.evaluate("document.getElementById('player').currentTime")


def item_status(factory, item_id: int) -> str:
    with factory() as s:
        return s.get(ReviewItem, item_id).status


def test_inspector_reviews_a_t1_call(server, new_page):
    base, world, factory = server
    page = new_page()
    log_in(page, base, "zhangmin")
    assert page.url == f"{base}/queue"
    assert page.locator(f'tr.queue-row[data-item="{world.t2_item}"]').get_attribute("class").endswith("overdue")
    shot(page, "queue")

    page.select_option("#claim-tier", "T1")
    page.click("#claim-next")
    page.wait_for_url(f"{base}/items/{world.t1_item}")
    assert page.inner_text("#item-tier") == "T1" and page.inner_text("#call-id") == "S06"
    assert page.locator("#utt-2 mark").all_inner_texts() == ["保本保息", "稳赚不赔"]

    # The recording loads through range requests; clicking a sentence seeks to it and plays.
    wait_until(page, "document.getElementById('player').readyState >= 1")
    assert page.evaluate("document.getElementById('player').duration") == pytest.approx(34.78, abs=0.1)
    page.click("#utt-4 p")
    assert 19.6 <= audio_time(page) < 21.5
    wait_until(page, "document.getElementById('player').currentTime > 19.9")  # it is playing
    first, second = world.t1_findings
    page.click(f"#finding-{first} .time-link")
    assert 11.0 <= audio_time(page) < 12.5
    page.evaluate("document.getElementById('player').pause()")
    shot(page, "item")

    page.fill(f"#finding-{first} input[name=comment]", "明确承诺保本保息")
    page.click(f"#finding-{first} button.confirm")
    page.wait_for_selector(f"#finding-{first} .decision-confirmed")
    page.click(f"#finding-{second} button.reject")
    page.wait_for_selector(f"#finding-{second} .decision-rejected")
    assert "明确承诺保本保息" in page.inner_text(f"#finding-{first}")

    page.select_option("#verdict-select", "fail")
    page.click("#close-item")
    page.wait_for_url(f"{base}/queue?msg=closed")
    assert page.locator(f'tr.queue-row[data-item="{world.t1_item}"]').count() == 0
    assert page.locator(f'tr.queue-row[data-item="{world.t2_item}"]').count() == 1
    assert item_status(factory, world.t1_item) == "closed"


def test_auditor_downloads_an_export(server, new_page):
    base, world, _ = server
    page = new_page()
    log_in(page, base, "zhaolei")
    page.goto(f"{base}/exports")
    page.select_option("#export-format", "jsonl")
    page.click("#run-export")
    page.wait_for_selector("#flash")
    shot(page, "exports")
    row = page.locator("#exports-table tbody tr").first
    with page.expect_download() as download:
        row.locator("a.export-file").click()
    data = Path(download.value.path()).read_bytes()
    records = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    assert {r["call_id"] for r in records} >= {"S06", "S08"}
    with page.expect_download() as download:
        row.locator("a.manifest").click()
    manifest = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert manifest["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["actor"] == "zhaolei"


def test_inspector_is_refused_admin_and_export_pages(server, new_page):
    base, _, _ = server
    page = new_page()
    log_in(page, base, "liqiang")
    assert page.locator("nav a[href='/exports'], nav a[href='/admin/users']").count() == 0
    for path in ("/admin/users", "/exports"):
        response = page.goto(f"{base}{path}")
        assert response.status == 403
        assert "无权访问" in page.inner_text("h1")


def test_forged_form_without_csrf_token_is_rejected(server, new_page):
    base, world, factory = server
    page = new_page()
    log_in(page, base, "liqiang")
    before = item_status(factory, world.t2_item)
    with page.expect_navigation() as nav:
        page.evaluate("""() => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = '/queue/claim-next';
            const tier = document.createElement('input');
            tier.name = 'tier'; tier.value = 'T2';
            form.appendChild(tier);
            document.body.appendChild(form);
            form.submit();
        }""")
    assert nav.value.status == 403
    assert "CSRF" in page.inner_text("h1")
    assert item_status(factory, world.t2_item) == before == "open"


def test_queue_filters_say_why_and_times_are_the_call_centres(server, new_page):
    base, world, factory = server
    page = new_page()
    log_in(page, base, "liqiang")
    row = page.locator(f'tr.queue-row[data-item="{world.t2_item}"]')
    # what the item is about, before opening it: the finding in Chinese with its severity colour
    badge = row.locator(".top-findings .badge").first
    assert badge.inner_text() == "承诺放款" and "sev-major" in badge.get_attribute("class")
    assert "A3002" in row.inner_text() and "消费贷组" in row.inner_text() and "消费贷款" in row.inner_text()
    # times on the call centre's clock (the timezone setting), named at the foot of the page
    with factory() as s:
        due = s.get(ReviewItem, world.t2_item).due_at
    assert row.locator("time").first.inner_text() == due.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    assert "Asia/Shanghai, UTC+08:00" in page.inner_text("#clock-zone")

    def shown() -> set[int]:
        return {int(i) for i in page.locator("tr.queue-row").evaluate_all("rows => rows.map(r => r.dataset.item)")}

    page.select_option("#filter-category", "loan.approval_promise")
    page.click("#apply-filters")
    page.wait_for_url("**category=loan.approval_promise**")
    assert shown() == {world.t2_item}
    page.select_option("#filter-category", "conduct.insult")
    page.click("#apply-filters")
    page.wait_for_url("**category=conduct.insult**")
    assert shown() == set() and "没有符合筛选条件" in page.inner_text("#queue-table")
    page.click("#clear-filters")
    page.wait_for_url(f"{base}/queue")

    page.select_option("#filter-team", "消费贷组")
    page.fill("#filter-day", "2026-11-06")  # S08 started 11:45 Beijing time that day
    page.click("#apply-filters")
    page.wait_for_url("**team=**")
    assert world.t2_item in shown()
    page.fill("#filter-day", "2026-11-05")
    page.click("#apply-filters")
    page.wait_for_url("**day=2026-11-05**")
    assert world.t2_item not in shown()
    page.goto(f"{base}/queue?call=08")
    assert world.t2_item in shown() and page.input_value("#filter-call") == "08"
    shot(page, "queue-filters")
    response = page.goto(f"{base}/queue?after=not-a-position")
    assert response.status == 400

    page.goto(f"{base}/items/{world.t2_item}")
    meta = page.inner_text("dl.meta")
    assert "消费贷款" in meta and "呼出" in meta and "2026-11-06 11:45" in meta
