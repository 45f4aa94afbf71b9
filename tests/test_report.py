"""The HTML report: figures from real rows, every chart embedded with data, Chinese font,
escaping, and a look at the rendered page with headless Chromium."""

from __future__ import annotations

import base64
import io
import logging
import re
import shutil
import subprocess
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from builders import DAY0, add_analysis, add_assessment, add_review, add_transcript, make_call, seed_calls
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import func, select

from qa.cli import cli
from qa.reporting import charts as report_charts
from qa.reporting.charts import cjk_font
from qa.reporting.report import ReportOptions, build_report, collect, draw_charts, write_report
from qa.review.calibration import miss_rate
from qa.storage.models import ReviewItem

SINCE = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNTIL = datetime(2026, 11, 8, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 5, 12, tzinfo=timezone.utc)
CHART_KEYS = ("daily", "sla", "categories", "agents", "team_trend", "agent_trend", "reviews", "rule_precision",
              "miss_rate")


@pytest.fixture
def seeded(session):
    result = seed_calls(session, 400, days=5)
    session.commit()
    return result


def test_collect_figures_match_rows(session, seeded) -> None:
    data = collect(session, ReportOptions(since=SINCE, until=UNTIL, timezone="UTC"), now=NOW)
    assert data.calls_total == 400 and data.calls_failed == seeded.failed
    assert sum(data.daily_processed) + sum(data.daily_failed) == 400 and len(data.days) == 5
    assert sum(r.reviewed for r in data.rules) == seeded.reviewed_findings
    assert sum(r.confirmed for r in data.rules) == seeded.confirmed
    assert sum(data.tiers.values()) == 400 - seeded.failed
    assert data.sla and all(r.total > 0 for r in data.sla)
    assert data.miss is not None and data.miss.reviewed > 0 and 0 <= data.miss.low <= data.miss.high <= 1
    assert data.miss.by_category and sum(k for _, k, _, _ in data.miss.by_category) == data.miss.faulty
    overall = miss_rate(session).overall  # every seeded call is in the period
    assert (data.miss.reviewed, data.miss.faulty) == (overall.reviewed, overall.faulty) and overall.faulty > 0
    assert data.miss.unflagged_calls == data.tiers["none"]
    review_items = session.scalar(select(func.count()).select_from(ReviewItem))
    assert sum(r.total for r in data.reviews) == review_items and {r.tier for r in data.reviews} == {"T1", "T2", "T3"}
    assert sum(r.failed for r in data.reviews) > 0 and sum(r.pending for r in data.reviews) > 0
    # Per-agent daily means: every agent, every day (the seed spreads each agent over all days).
    assert set(data.agent_daily) == {a for a, _, _, _ in data.agents}
    assert all(len(v) == 5 and None not in v for v in data.agent_daily.values())
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
    for title in ("每日通话处理量", "各级复核队列 SLA 状态", "问题类别 Top", "坐席平均质检得分", "各团队每日平均得分",
                  "复核结果（按队列）", "规则精确率（确认 / 已复核）"):
        assert f'alt="{title}"' in page
    assert "复核不合格" in page and "已完成" in page and "理财一组" in page
    assert "承诺保本保息" in page and "R-PROMISE-01" in page and "finance-zh" in page
    assert "漏检率估计" in page and "Wilson" in page
    out = tmp_path / "r.html"
    write_report(report, out)
    assert out.read_text(encoding="utf-8") == page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_cjk_font_found() -> None:
    font = cjk_font()
    assert font is not None and ("CJK" in font or "SC" in font or "WenQuanYi" in font)


def _missing_glyph_warnings(data) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw_charts(data)
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_chinese_labels_render_without_missing_glyphs(session, seeded, monkeypatch) -> None:
    """matplotlib warns for every glyph its fonts lack (drawn as a box): with the CJK font
    there is none, and the check does catch boxes when the font is taken away."""
    data = collect(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    assert _missing_glyph_warnings(data) == []
    monkeypatch.setattr(report_charts, "cjk_font", lambda: None)
    assert _missing_glyph_warnings(data)


@pytest.mark.filterwarnings("ignore:Glyph:UserWarning")  # the boxes this test expects
def test_system_font_fallback(monkeypatch, caplog) -> None:
    """Without the packaged font a system CJK font is used (Debian: fonts-noto-cjk, whose .ttc
    holds a face per language: the Simplified Chinese one is chosen); without either, charts
    still render and a warning says why Chinese will not."""
    monkeypatch.setattr(report_charts, "_packaged_font", lambda: None)
    report_charts.cjk_font.cache_clear()
    try:
        if report_charts._system_fonts():
            assert report_charts.cjk_font() in ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
                                                "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei")
        report_charts.cjk_font.cache_clear()
        monkeypatch.setattr(report_charts, "_system_fonts", lambda: [])
        with caplog.at_level(logging.WARNING, logger="qa.reporting"):
            assert report_charts.cjk_font() is None
        assert "no CJK font found" in caplog.text
        assert report_charts.value_bars("x", "标题", ["a"], [1.0]).png.startswith(b"\x89PNG")
    finally:
        report_charts.cjk_font.cache_clear()


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
    assert "400 calls, 9 charts" in r.output and len(_png_payloads(out.read_text(encoding="utf-8"))) == 9


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
    from qa import storage as qadb
    from qa.reporting.export import ExportFilters, ExportOptions, export_calls

    engine = qadb.make_engine(db_url)
    try:
        with qadb.write_session(qadb.session_factory(engine)) as s:
            seeded = seed_calls(s, 120, days=3)
            s.commit()
            result = export_calls(s, tmp_path / "a.jsonl", ExportFilters(since=SINCE), ExportOptions(chunk_size=50),
                                  actor="t")
            s.commit()
            assert result.calls == 120 and result.findings == seeded.findings
            data = collect(s, ReportOptions(since=SINCE, until=UNTIL, timezone="UTC"), now=NOW)
            assert data.days == ["2026-11-02", "2026-11-03", "2026-11-04"]
            assert data.calls_total == 120 and data.calls_failed == seeded.failed
            assert sum(r.reviewed for r in data.rules) == seeded.reviewed_findings
            assert all(v is not None for series in data.team_daily.values() for v in series)
    finally:
        engine.dispose()


def test_big_center_charts_stay_readable(session, seeded, monkeypatch) -> None:
    import dataclasses

    from qa.reporting import report as report_mod
    from qa.reporting.report import MAX_AGENT_BARS, MAX_HEATMAP_AGENTS, MAX_HEATMAP_TEAMS

    drawn = {}
    real_heatmap = report_mod.heatmap

    def spy(key, title, x_labels, y_labels, values, **kw):
        drawn[key] = (list(y_labels), values)
        return real_heatmap(key, title, x_labels, y_labels, values, **kw)

    monkeypatch.setattr(report_mod, "heatmap", spy)

    data = collect(session, ReportOptions(since=SINCE, until=UNTIL), now=NOW)
    many_agents = [(f"A{i:03d}", "理财一组", 10, 50.0 + i / 10) for i in range(60)]
    many_teams = [(f"团队{i}", 100 - i, 70.0) for i in range(30)]
    # A sparse grid: most teams and agents take calls on some days only.
    data = dataclasses.replace(
        data, agents=many_agents, teams=many_teams,
        team_daily={t: [70.0 if (i + d) % 3 else None for d in range(len(data.days))]
                    for i, (t, _, _) in enumerate(many_teams)},
        agent_daily={a: [m if (i + d) % 2 else None for d in range(len(data.days))]
                     for i, (a, _, _, m) in enumerate(many_agents)})
    charts = {c.key: c for c in draw_charts(data)}
    assert charts["agents"].title == f"平均得分最低的 {MAX_AGENT_BARS} 名坐席"
    teams, grid = drawn["team_trend"]
    assert teams == [f"团队{i}" for i in range(MAX_HEATMAP_TEAMS)]  # the busiest teams
    assert grid[0][0] is None and grid[0][1] == 70.0  # empty days stay empty
    assert drawn["agent_trend"][0] == [f"A{i:03d}" for i in range(MAX_HEATMAP_AGENTS)]  # the lowest means
    assert charts["team_trend"].title == f"各团队每日平均得分（通话最多的 {MAX_HEATMAP_TEAMS} 个）"
    assert charts["team_trend"].png.startswith(b"\x89PNG")
