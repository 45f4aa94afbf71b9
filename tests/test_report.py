"""The HTML report: figures from real rows, every chart embedded with data, Chinese font,
escaping, and a look at the rendered page with headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from qa.cli import cli
from qa.report import ReportOptions, build_report, collect, write_report
from qa.report_charts import cjk_font

from factories import DAY0, add_analysis, add_assessment, add_review, add_transcript, make_call, seed_calls

SINCE = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNTIL = datetime(2026, 11, 8, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 5, 12, tzinfo=timezone.utc)
CHART_KEYS = ("daily", "sla", "categories", "agents", "team_trend", "rule_precision")


@pytest.fixture
def seeded(session):
    result = seed_calls(session, 400, days=5)
    session.commit()
    return result


def test_collect_figures_match_rows(session, seeded) -> None:
    data = collect(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    assert data.calls_total == 400 and data.calls_failed == seeded.failed
    assert sum(data.daily_processed) + sum(data.daily_failed) == 400 and len(data.days) == 5
    assert sum(r.reviewed for r in data.rules) == seeded.reviewed_findings
    assert sum(r.confirmed for r in data.rules) == seeded.confirmed
    assert sum(data.tiers.values()) == 400 - seeded.failed
    assert data.sla and all(r.total > 0 for r in data.sla)
    assert data.miss is not None and data.miss.reviewed > 0 and 0 <= data.miss.low <= data.miss.high <= 1
    assert data.versions["rule_pack"][0][:2] == ("finance-zh", "1.2.0")
    # Outside the period: nothing.
    empty = collect(session, ReportOptions(since=UNTIL, until=UNTIL + timedelta(days=1)), now=NOW)
    assert empty.calls_total == 0 and not empty.days


def _png_payloads(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_html_has_every_chart_with_data(session, seeded, tmp_path: Path) -> None:
    report = build_report(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    assert tuple(c.key for c in report.charts) == CHART_KEYS
    pngs = _png_payloads(report.html)
    assert len(pngs) == len(CHART_KEYS)
    for png in pngs:
        assert png.startswith(b"\x89PNG")
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        # A chart with data has plenty of non-white, non-grey (bar/line colour) pixels.
        colours = int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())
        assert colours > 500, "chart without data"
    page = report.html
    assert "<h1>语音质检报告</h1>" in page and "<b>400</b>" in page
    assert "承诺保本保息" in page and "R-PROMISE-01" in page and "finance-zh" in page
    assert "漏检率估计" in page and "Wilson" in page
    out = tmp_path / "r.html"
    write_report(report, out)
    assert out.read_text(encoding="utf-8") == page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_cjk_font_found() -> None:
    font = cjk_font()
    assert font is not None and ("CJK" in font or "SC" in font or "WenQuanYi" in font)


def test_values_are_escaped(session, tmp_path: Path) -> None:
    call = make_call(session, "X1", agent_id="<script>alert(1)</script>", team="团队&<b>", started_at=DAY0)
    tr = add_transcript(session, call, [("agent", 0, 1, "您好")])
    an = add_analysis(session, call, tr, [dict(rule_id="R<1>", category="cat\"x", severity="major", role="agent")])
    asm = add_assessment(session, call, an, score=80.0, tier="T2")
    add_review(session, call, asm, decisions={an.findings[0].id: "confirmed"})
    session.commit()
    page = build_report(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW).html
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "团队&amp;&lt;b&gt;" in page and "R&lt;1&gt;" in page and "<b>&" not in page


def test_empty_period_renders(session) -> None:
    report = build_report(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    assert report.charts == () and "无数据" in report.html and "样本不足" in report.html


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="before"):
        ReportOptions(since=UNTIL, until=SINCE).validate()


def test_cli_report(cli_env, session, seeded, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", "--since", "2026-11-01", "--until", "2026-11-07", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "400 calls, 6 charts" in r.output and len(_png_payloads(out.read_text(encoding="utf-8"))) == 6


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs /usr/bin/chromium")
def test_report_renders_in_chromium(session, seeded, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report(build_report(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW), out)
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}",
                    "--window-size=1280,2400", out.as_uri()], check=True, capture_output=True, timeout=120)
    img = Image.open(shot)
    assert img.size == (1280, 2400)
    rgb = np.asarray(img.convert("RGB").resize((128, 240))).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # a page, not a blank


def test_export_and_report_on_each_backend(db_url: str, tmp_path: Path) -> None:
    """Date grouping, CASE sums and keyset paging behave the same on SQLite and PostgreSQL."""
    from qa import db as qadb
    from qa.export import ExportFilters, ExportOptions, export_calls

    engine = qadb.make_engine(db_url)
    try:
        with qadb.session_factory(engine)() as s:
            seeded = seed_calls(s, 120, days=3)
            s.commit()
            result = export_calls(s, tmp_path / "a.jsonl", ExportFilters(since=SINCE), ExportOptions(chunk_size=50),
                                  actor="t")
            s.commit()
            assert result.calls == 120 and result.findings == seeded.findings
            data = collect(s, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
            assert data.days == ["2026-11-02", "2026-11-03", "2026-11-04"]
            assert data.calls_total == 120 and data.calls_failed == seeded.failed
            assert sum(r.reviewed for r in data.rules) == seeded.reviewed_findings
            assert all(v is not None for series in data.team_daily.values() for v in series)
    finally:
        engine.dispose()


def test_big_center_charts_stay_readable(session, seeded, monkeypatch) -> None:
    import dataclasses

    from qa import report as report_mod
    from qa.report import MAX_AGENT_BARS, MAX_TEAM_LINES, draw_charts

    drawn = {}
    real_lines = report_mod.lines

    def spy(key, title, x_labels, series, **kw):
        drawn[key] = list(series)
        return real_lines(key, title, x_labels, series, **kw)

    monkeypatch.setattr(report_mod, "lines", spy)

    data = collect(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    many_agents = [(f"A{i:03d}", "理财一组", 10, 50.0 + i / 10) for i in range(60)]
    many_teams = [(f"团队{i}", 100 - i, 70.0) for i in range(12)]
    data = dataclasses.replace(data, agents=many_agents, teams=many_teams,
                               team_daily={t: [70.0] * len(data.days) for t, _, _ in many_teams})
    charts = {c.key: c for c in draw_charts(data)}
    assert charts["agents"].title == f"平均得分最低的 {MAX_AGENT_BARS} 名坐席"
    assert drawn["team_trend"] == [f"团队{i}" for i in range(MAX_TEAM_LINES)]  # the busiest teams
    assert charts["team_trend"].png.startswith(b"\x89PNG")
