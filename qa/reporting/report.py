"""Management report: one self-contained HTML file (charts embedded as PNG data URIs) for the
calls started in a period.

:func:`collect` runs aggregate queries only (GROUP BY in the database), so the report costs
the same memory for a thousand calls or a million. :func:`build_report` draws the charts
(:mod:`qa.reporting.charts`) and renders ``templates/report.html`` with Jinja2, autoescaped.
Days are the call centre's days (the ``timezone`` setting) of the call start time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from .. import __version__
from ..domain import TIERS
from ..errors import ExportError
from ..labels import CALL_STATUS_LABELS, REVIEW_OUTCOMES, category_label
from ..storage.models import (Analysis, Assessment, Call, ClassifierScore, Finding, ReviewDecision, ReviewItem,
                              Transcript)
from ..storage.days import local_date
from ..timeutil import as_utc, local_day, local_text, zone, zone_label
from .charts import BAD, GOOD, LATE, NEUTRAL, WAITING, Chart, cjk_font, heatmap, interval_bars, stacked_bars, value_bars
from .writers import basis_text

log = logging.getLogger(__name__)

MAX_AGENT_BARS = 25
# Rows of the daily grids and bars of the precision chart; the tables list every one.
MAX_HEATMAP_TEAMS = 20
MAX_HEATMAP_AGENTS = 20
MAX_HEATMAP_DAYS = 31
MAX_RULE_BARS = 20
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ReportOptions:
    since: datetime
    until: datetime  # exclusive
    title: str = "语音质检报告"
    top_n: int = 10
    timezone: str = "Asia/Shanghai"  # whose days the daily figures count, and whose clock is printed

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def validate(self) -> None:
        self.tz  # noqa: B018 - raises on an unknown zone
        if as_utc(self.since) >= as_utc(self.until):
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        if not 1 <= self.top_n <= 50:
            raise ValueError(f"top_n must be between 1 and 50, got {self.top_n}")


@dataclass(frozen=True)
class SlaRow:
    tier: str
    closed_on_time: int
    closed_late: int
    open_in_time: int
    open_overdue: int

    @property
    def total(self) -> int:
        return self.closed_on_time + self.closed_late + self.open_in_time + self.open_overdue


@dataclass(frozen=True)
class RulePrecision:
    rule_id: str
    category: str
    confirmed: int
    rejected: int

    @property
    def reviewed(self) -> int:
        return self.confirmed + self.rejected

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.reviewed if self.reviewed else None


@dataclass(frozen=True)
class ReviewOutcome:
    """Review items of one queue tier by where they stand."""

    tier: str
    pending: int  # open or claimed
    passed: int  # closed (or appeal decided) with verdict pass
    failed: int
    appealed: int  # appeal open

    @property
    def total(self) -> int:
        return self.pending + self.passed + self.failed + self.appealed


@dataclass(frozen=True)
class MissRate:
    reviewed: int
    faulty: int
    low: float
    high: float
    unflagged_calls: int
    # (category, calls with a finding of it added by the inspector, Wilson low, high)
    by_category: tuple[tuple[str, int, float, float], ...] = ()

    @property
    def rate(self) -> float | None:
        return self.faulty / self.reviewed if self.reviewed else None


@dataclass(frozen=True)
class ReportData:
    calls_total: int
    calls_by_status: dict[str, int]
    failures_by_code: list[tuple[str, int]]
    days: list[str]
    daily_processed: list[int]
    daily_failed: list[int]
    tiers: dict[str, int]  # T1/T2/T3 and "none" (not flagged)
    sla: list[SlaRow]
    categories: list[tuple[str, int]]
    agents: list[tuple[str, str, int, float]]  # agent, team, calls, mean score
    teams: list[tuple[str, int, float]]
    team_daily: dict[str, list[float | None]]
    agent_daily: dict[str, list[float | None]]
    reviews: list[ReviewOutcome]
    rules: list[RulePrecision]
    miss: MissRate | None
    versions: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    # per rule that fired in the period: (rule_id, category, findings, its basis as stored with them)
    bases: list[tuple[str, str, int, list[dict]]] = field(default_factory=list)

    @property
    def calls_failed(self) -> int:
        return self.calls_by_status.get("failed", 0)


@dataclass(frozen=True)
class Report:
    options: ReportOptions
    data: ReportData
    charts: tuple[Chart, ...]
    html: str
    generated_at: datetime




def collect(session: Session, options: ReportOptions, *, now: datetime | None = None) -> ReportData:
    """Aggregate the figures of the report for calls started in [since, until)."""
    options.validate()
    now = now or datetime.now(timezone.utc)
    window = and_(Call.started_at >= options.since, Call.started_at < options.until)
    in_window = select(Call.id).where(window)
    current_analysis = or_(Finding.analysis_id.is_(None),
                           Finding.analysis_id.in_(select(Analysis.id).where(Analysis.is_current.is_(True))))

    by_status = dict(session.execute(select(Call.status, func.count()).where(window).group_by(Call.status)).all())
    failures = session.execute(
        select(func.coalesce(Call.error_code, "unknown"), func.count()).where(window, Call.status == "failed")
        .group_by(Call.error_code).order_by(func.count().desc())).all()
    day = local_date(session, Call.started_at, options.tz, options.since, options.until)
    daily = session.execute(
        select(day, func.count(), func.sum(case((Call.status == "failed", 1), else_=0)))
        .where(window).group_by(day).order_by(day)).all()
    days = [d for d, _, _ in daily]

    current = and_(Assessment.call_id == Call.id, Assessment.is_current.is_(True))
    tiers = {(t or "none"): n for t, n in session.execute(
        select(Assessment.tier, func.count()).join(Call, current).where(window).group_by(Assessment.tier))}

    closed = ReviewItem.closed_at.is_not(None)
    sla_rows = session.execute(
        select(ReviewItem.tier,
               func.sum(case((and_(closed, ReviewItem.closed_at <= ReviewItem.due_at), 1), else_=0)),
               func.sum(case((and_(closed, ReviewItem.closed_at > ReviewItem.due_at), 1), else_=0)),
               func.sum(case((and_(~closed, ReviewItem.due_at >= now), 1), else_=0)),
               func.sum(case((and_(~closed, ReviewItem.due_at < now), 1), else_=0)))
        .where(ReviewItem.call_id.in_(in_window)).group_by(ReviewItem.tier).order_by(ReviewItem.tier)).all()

    categories = session.execute(
        select(Finding.category, func.count()).where(Finding.call_id.in_(in_window), current_analysis)
        .group_by(Finding.category).order_by(func.count().desc(), Finding.category).limit(options.top_n)).all()

    agents = session.execute(
        select(func.coalesce(Call.agent_id, "-"), func.coalesce(Call.team, "-"), func.count(), func.avg(Assessment.score))
        .join(Assessment, current).where(window).group_by(Call.agent_id, Call.team)
        .order_by(func.avg(Assessment.score))).all()
    teams = session.execute(
        select(func.coalesce(Call.team, "-"), func.count(), func.avg(Assessment.score))
        .join(Assessment, current).where(window).group_by(Call.team).order_by(Call.team)).all()
    team_daily: dict[str, list[float | None]] = {t: [None] * len(days) for t, _, _ in teams}
    day_index = {d: i for i, d in enumerate(days)}
    for team, d, mean in session.execute(
            select(func.coalesce(Call.team, "-"), day, func.avg(Assessment.score))
            .join(Assessment, current).where(window).group_by(Call.team, day)):
        if d in day_index:
            team_daily[team][day_index[d]] = round(float(mean), 1)

    agent_daily: dict[str, list[float | None]] = {}
    for agent, d, mean in session.execute(
            select(func.coalesce(Call.agent_id, "-"), day, func.avg(Assessment.score))
            .join(Assessment, current).where(window).group_by(Call.agent_id, day)):
        if d in day_index:
            agent_daily.setdefault(agent, [None] * len(days))[day_index[d]] = round(float(mean), 1)

    outcomes: dict[str, dict[str, int]] = {}
    for tier, status, verdict, n in session.execute(
            select(ReviewItem.tier, ReviewItem.status, ReviewItem.verdict, func.count())
            .where(ReviewItem.call_id.in_(in_window)).group_by(ReviewItem.tier, ReviewItem.status, ReviewItem.verdict)):
        if status in ("open", "claimed"):
            key = "pending"
        elif status == "appealed":
            key = "appealed"
        else:
            key = "failed" if verdict == "fail" else "passed"
        counts = outcomes.setdefault(tier, dict.fromkeys(REVIEW_OUTCOMES, 0))
        counts[key] += n
    precision: dict[tuple[str, str], dict[str, int]] = {}
    for rule_id, category, decision, n in session.execute(
            select(Finding.rule_id, Finding.category, ReviewDecision.decision, func.count())
            .join(Finding, Finding.id == ReviewDecision.finding_id)
            .where(Finding.call_id.in_(in_window), ReviewDecision.decision.in_(("confirmed", "rejected")))
            .group_by(Finding.rule_id, Finding.category, ReviewDecision.decision)):
        precision.setdefault((rule_id, category), {})[decision] = n
    rules = sorted((RulePrecision(r, c, d.get("confirmed", 0), d.get("rejected", 0)) for (r, c), d in precision.items()),
                   key=lambda p: (p.precision, -p.reviewed, p.rule_id))
    fired = session.execute(
        select(Finding.rule_id, Finding.category, func.count(), func.max(Finding.id))
        .where(Finding.call_id.in_(in_window), Finding.source == "rule", current_analysis)
        .group_by(Finding.rule_id, Finding.category).order_by(func.count().desc(), Finding.rule_id)).all()
    details = dict(session.execute(select(Finding.id, Finding.details).where(
        Finding.id.in_([last for *_, last in fired]))).all()) if fired else {}
    bases = [(rule, category, int(n), (details.get(last) or {}).get("basis", [])) for rule, category, n, last in fired]

    return ReportData(
        calls_total=sum(by_status.values()), calls_by_status=by_status,
        failures_by_code=[(c, n) for c, n in failures], days=days,
        daily_processed=[int(n - (f or 0)) for _, n, f in daily], daily_failed=[int(f or 0) for _, _, f in daily],
        tiers=tiers, sla=[SlaRow(t, *(int(v or 0) for v in rest)) for t, *rest in sla_rows], bases=bases,
        categories=[(c, n) for c, n in categories],
        agents=[(a, t, n, round(float(m), 1)) for a, t, n, m in agents],
        teams=[(t, n, round(float(m), 1)) for t, n, m in teams], team_daily=team_daily, agent_daily=agent_daily,
        reviews=[ReviewOutcome(t, **outcomes[t]) for t in sorted(outcomes)], rules=rules,
        miss=_miss_rate(session, in_window, tiers.get("none", 0)),
        versions=_versions(session, in_window))


def _miss_rate(session: Session, in_window, unflagged_calls: int) -> MissRate | None:
    """The share of reviewed calibration-sample calls (random unflagged calls, see
    :mod:`qa.review.calibration`) that an inspector found faulty: a fail verdict or an added finding.
    Counted over the calls started in the period, like every other figure of the report,
    whenever they were reviewed: a day's sample is mostly reviewed on the days after."""
    from ..review.calibration import wilson_interval
    from ..review.items import REVIEWED

    sample = and_(ReviewItem.reason == "calibration", ReviewItem.status.in_(REVIEWED),
                  ReviewItem.call_id.in_(in_window))
    reviewed = session.scalar(select(func.count()).select_from(ReviewItem).where(sample))
    if not reviewed:
        return None
    added = and_(ReviewDecision.review_item_id == ReviewItem.id, ReviewDecision.decision == "added")
    faulty = session.scalar(select(func.count()).select_from(ReviewItem).where(
        sample, or_(ReviewItem.verdict == "fail", exists().where(added))))
    by_category = session.execute(
        select(Finding.category, func.count(func.distinct(ReviewItem.id))).select_from(ReviewItem)
        .join(ReviewDecision, added).join(Finding, Finding.id == ReviewDecision.finding_id)
        .where(sample).group_by(Finding.category).order_by(func.count(func.distinct(ReviewItem.id)).desc(),
                                                            Finding.category)).all()
    low, high = wilson_interval(faulty, reviewed)
    return MissRate(reviewed=reviewed, faulty=faulty, low=low, high=high, unflagged_calls=unflagged_calls,
                    by_category=tuple((c, k, *wilson_interval(k, reviewed)) for c, k in by_category))


def _versions(session: Session, in_window) -> dict[str, list[tuple[str, ...]]]:
    asr = session.execute(
        select(Transcript.asr_model, Transcript.asr_sha256, func.count())
        .where(Transcript.call_id.in_(in_window), Transcript.is_current.is_(True))
        .group_by(Transcript.asr_model, Transcript.asr_sha256)).all()
    packs = session.execute(
        select(Analysis.rule_pack_name, Analysis.rule_pack_version, Analysis.rule_pack_sha256, func.count())
        .where(Analysis.call_id.in_(in_window), Analysis.is_current.is_(True))
        .group_by(Analysis.rule_pack_name, Analysis.rule_pack_version, Analysis.rule_pack_sha256)).all()
    models = session.execute(
        select(ClassifierScore.model_name, ClassifierScore.model_version, ClassifierScore.model_sha256, func.count())
        .join(Analysis, Analysis.id == ClassifierScore.analysis_id)
        .where(ClassifierScore.call_id.in_(in_window), Analysis.is_current.is_(True))
        .group_by(ClassifierScore.model_name, ClassifierScore.model_version, ClassifierScore.model_sha256)).all()
    return {
        "asr": [(m, s[:12], str(n)) for m, s, n in asr],
        "rule_pack": [(name, v, s[:12], str(n)) for name, v, s, n in packs],
        "classifier": [(name, v, s[:12], str(n)) for name, v, s, n in models],
    }


def draw_charts(data: ReportData) -> tuple[Chart, ...]:
    """Charts for the sections that have data (an empty period yields none)."""
    charts = []
    if data.days:
        charts.append(stacked_bars("daily", "每日通话处理量", [d[5:] for d in data.days],
                                   {"已处理": data.daily_processed, "失败": data.daily_failed}, colors=(NEUTRAL, BAD)))
    if data.sla:
        charts.append(stacked_bars("sla", "各级复核队列 SLA 状态", [r.tier for r in data.sla], {
            "按时完成": [r.closed_on_time for r in data.sla], "超时完成": [r.closed_late for r in data.sla],
            "待处理（未超时）": [r.open_in_time for r in data.sla], "待处理（已超时）": [r.open_overdue for r in data.sla]},
            width=7.0, colors=(GOOD, LATE, WAITING, BAD)))
    if data.categories:
        labels = [category_label(c) for c, _ in data.categories]
        charts.append(value_bars("categories", "问题类别 Top", labels, [n for _, n in data.categories], counts=True))
    if data.agents:
        # Lowest scores first; a big center gets the ones to look at, the table has them all.
        shown = data.agents[:MAX_AGENT_BARS]
        title = "坐席平均质检得分" if len(shown) == len(data.agents) else f"平均得分最低的 {len(shown)} 名坐席"
        charts.append(value_bars("agents", title, [f"{a}（{t}）" for a, t, _, _ in shown],
                                 [m for _, _, _, m in shown], xlim=(0, 110),
                                 colors=[BAD if m < 60 else LATE if m < 80 else NEUTRAL for _, _, _, m in shown]))
    # Daily trends as grids (a row per team or agent, a cell per day, the mean written in it):
    # unlike lines they stay readable with many rows and with days on which a team or agent
    # took no call, where a line would join distant days as if it knew what lay between.
    days = data.days[-MAX_HEATMAP_DAYS:]
    if days and data.team_daily:
        busiest = [t for t, _, _ in sorted(data.teams, key=lambda t: -t[1])][:MAX_HEATMAP_TEAMS]
        title = "各团队每日平均得分" if len(busiest) == len(data.teams) else f"各团队每日平均得分（通话最多的 {len(busiest)} 个）"
        charts.append(heatmap("team_trend", title, [d[5:] for d in days], busiest,
                              [data.team_daily[t][-len(days):] for t in busiest]))
    if days and data.agent_daily:
        # The same agents as the bar chart: lowest mean first.
        shown = [a for a, _, _, _ in data.agents if a in data.agent_daily][:MAX_HEATMAP_AGENTS]
        title = "坐席每日平均得分" if len(shown) == len(data.agent_daily) else f"坐席每日平均得分（最低 {len(shown)} 名）"
        if shown:
            charts.append(heatmap("agent_trend", title, [d[5:] for d in days], shown,
                                  [data.agent_daily[a][-len(days):] for a in shown]))
    if data.reviews:
        charts.append(stacked_bars("reviews", "复核结果（按队列）", [r.tier for r in data.reviews], {
            label: [getattr(r, key) for r in data.reviews] for key, label in REVIEW_OUTCOMES.items()},
            horizontal=True, width=7.0, height=max(1.8, 0.5 * len(data.reviews) + 1.1),
            colors=(WAITING, GOOD, BAD, LATE)))
    reviewed = [r for r in data.rules if r.reviewed][:MAX_RULE_BARS]  # lowest precision first
    if reviewed:
        title = ("规则精确率（确认 / 已复核）" if len(reviewed) == len([r for r in data.rules if r.reviewed])
                 else f"精确率最低的 {len(reviewed)} 条规则（确认 / 已复核）")
        charts.append(value_bars("rule_precision", title,
                                 [f"{r.rule_id}（{category_label(r.category)}）" for r in reviewed],
                                 [round(100 * (r.precision or 0), 1) for r in reviewed], xlim=(0, 115),
                                 annotations=[f"{100 * (r.precision or 0):.0f}%（{r.confirmed}/{r.reviewed}）"
                                              for r in reviewed]))
    if data.miss is not None:
        miss = data.miss
        rows = [("全部问题", miss.faulty, miss.low, miss.high)] + [
            (category_label(c), k, low, high) for c, k, low, high in miss.by_category]
        charts.append(interval_bars("miss_rate", f"漏检率估计（校准抽样 {miss.reviewed} 通，95% 区间）",
                                    [label for label, _, _, _ in rows],
                                    [100 * k / miss.reviewed for _, k, _, _ in rows],
                                    [(100 * low, 100 * high) for _, _, low, high in rows], unit="%"))
    return tuple(charts)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render_html(options: ReportOptions, data: ReportData, charts: tuple[Chart, ...], *, generated_at: datetime,
                version: str, font: str | None, settings=None) -> str:
    """The report page (``templates/report.html``, autoescaped)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    overdue = sum(r.open_overdue for r in data.sla)
    flagged = sum(data.tiers.get(t, 0) for t in TIERS)
    reviewed = sum(r.reviewed for r in data.rules)
    confirmed = sum(r.confirmed for r in data.rules)
    miss = data.miss
    has_miss = bool(miss and miss.rate is not None)
    cards = [
        ("通话总数", data.calls_total, False),
        ("处理失败", f"{data.calls_failed}（{_pct(data.calls_failed, data.calls_total)}）", data.calls_failed > 0),
        ("需复核（T1/T2/T3）", flagged, False), ("T1 致命", data.tiers.get("T1", 0), data.tiers.get("T1", 0) > 0),
        ("复核超时未处理", overdue, overdue > 0), ("规则整体精确率", _pct(confirmed, reviewed), False),
        # The sample size beside the rate: 100 % of one call is not 100 % of three hundred.
        ("漏检率估计", f"{100 * miss.rate:.1f}%（n={miss.reviewed}）" if has_miss else "样本不足", False),
    ]
    miss_detail = None
    if has_miss:
        n = miss.unflagged_calls
        miss_detail = {"reviewed": miss.reviewed, "faulty": miss.faulty, "unflagged": n,
                       "estimate": f"{miss.rate * n:.0f}", "low": f"{miss.low * n:.0f}", "high": f"{miss.high * n:.0f}"}
    return env.get_template("report.html").render(
        options=options, data=data, charts={c.key: c for c in charts}, cards=cards, generated_at=generated_at,
        version=version, first_day=local_day(options.since, options.tz),
        last_day=local_day(options.until - timedelta(seconds=1), options.tz),
        zone=zone_label(options.tz, options.since), generated_text=local_text(generated_at, options.tz),
        font_note=f"图表字体：{font}" if font else "未找到中文字体，图表中的中文可能无法显示",
        sla_hours="" if settings is None else (f"SLA：T1 {settings.tier1_sla_hours:g} 小时，"
                                               f"T2 {settings.tier2_sla_hours:g} 小时，T3 {settings.tier3_sla_hours:g} 小时。"),
        status_rows=[[CALL_STATUS_LABELS.get(st, st), st, n] for st, n in sorted(data.calls_by_status.items())],
        tier_rows=[[t if t != "none" else "未标记", data.tiers.get(t, 0)] for t in (*TIERS, "none") if t in data.tiers],
        sla_rows=[[r.tier, r.closed_on_time, r.closed_late, r.open_in_time, r.open_overdue, r.total] for r in data.sla],
        category_rows=[[category_label(c), c, n] for c, n in data.categories],
        team_rows=[[t, n, f"{m:.1f}"] for t, n, m in data.teams],
        agent_rows=[[a, t, n, f"{m:.1f}"] for a, t, n, m in data.agents],
        review_outcomes=list(REVIEW_OUTCOMES.values()),
        review_rows=[[r.tier, *(getattr(r, k) for k in REVIEW_OUTCOMES), r.total] for r in data.reviews],
        rule_rows=[[r.rule_id, category_label(r.category), r.confirmed, r.rejected,
                    "-" if r.precision is None else f"{100 * r.precision:.1f}%"] for r in data.rules],
        miss_text=(f"{100 * miss.rate:.1f}%（95% 区间 {100 * miss.low:.1f}%–{100 * miss.high:.1f}%）"
                   if has_miss else "样本不足"),
        miss_detail=miss_detail, versions=data.versions,
        basis_rows=[[rule, category_label(category), n, basis_text(basis) or "—"]
                    for rule, category, n, basis in data.bases],
    )


def build_report(session: Session, options: ReportOptions, *, settings=None, now: datetime | None = None) -> Report:
    """Collect, draw and render. ``settings`` is accepted for the SLA hours shown in the text."""
    now = now or datetime.now(timezone.utc)
    data = collect(session, options, now=now)
    charts = draw_charts(data)
    page = render_html(options, data, charts, generated_at=now, version=__version__, font=cjk_font(),
                       settings=settings)
    log.info("report %s..%s: %d calls, %d charts", options.since.date(), options.until.date(), data.calls_total,
             len(charts))
    return Report(options=options, data=data, charts=charts, html=page, generated_at=now)


def write_report(report: Report, path: Path) -> None:
    try:
        Path(path).write_text(report.html, encoding="utf-8")
    except OSError as e:
        raise ExportError(f"cannot write report: {e}", path=str(path)) from e
