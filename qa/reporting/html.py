"""HTML of the management report (:mod:`qa.report`): one file, inline CSS, charts as data
URIs, every database value escaped."""

from __future__ import annotations

from datetime import datetime, timedelta

from .charts import Chart

_CSS = """
body{font-family:"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","PingFang SC","Microsoft YaHei",sans-serif;
 margin:0;background:#f4f6f9;color:#1f2933}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;border-left:4px solid #2f6fb0;padding-left:8px;margin:28px 0 12px}
.meta{color:#52606d;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:12px;margin-top:18px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card b{display:block;font-size:24px;margin-top:4px} .card span{color:#52606d;font-size:13px}
.card.warn b{color:#c94c4c}
section{background:#fff;border-radius:8px;padding:4px 18px 16px;margin-top:16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0;min-width:50%}
th,td{border-bottom:1px solid #e4e7eb;padding:5px 10px;text-align:left} th{background:#f0f4f8}
.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#52606d;font-size:12.5px}
code{font-size:12px;color:#3e4c59}
"""


def _e(value) -> str:
    from .report import esc

    return esc(value)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    if not rows:
        return '<p class="note">无数据</p>'
    head = "".join(f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(charts: dict[str, Chart], key: str) -> str:
    chart = charts.get(key)
    if chart is None:
        return ""
    return f'<img alt="{_e(chart.title)}" src="{chart.data_uri}">'


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render_html(options, data, charts: tuple[Chart, ...], *, generated_at: datetime, version: str,
                font: str | None, settings=None) -> str:
    from .report import REVIEW_OUTCOMES, STATUS_LABELS, category_label

    by_key = {c.key: c for c in charts}
    last_day = (options.until - timedelta(seconds=1)).date()
    overdue = sum(r.open_overdue for r in data.sla)
    flagged = sum(data.tiers.get(t, 0) for t in ("T1", "T2", "T3"))
    reviewed = sum(r.reviewed for r in data.rules)
    confirmed = sum(r.confirmed for r in data.rules)
    miss = data.miss
    has_miss = bool(miss and miss.rate is not None)
    miss_text = (f"{100 * miss.rate:.1f}%（95% 区间 {100 * miss.low:.1f}%–{100 * miss.high:.1f}%）"
                 if has_miss else "样本不足")

    cards = [
        ("通话总数", data.calls_total, False), ("处理失败", f"{data.calls_failed}（{_pct(data.calls_failed, data.calls_total)}）",
                                            data.calls_failed > 0),
        ("需复核（T1/T2/T3）", flagged, False), ("T1 致命", data.tiers.get("T1", 0), data.tiers.get("T1", 0) > 0),
        ("复核超时未处理", overdue, overdue > 0), ("规则整体精确率", _pct(confirmed, reviewed), False),
        # The sample size beside the rate: 100 % of one call is not 100 % of three hundred.
        ("漏检率估计", f"{100 * miss.rate:.1f}%（n={miss.reviewed}）" if has_miss else "样本不足", False),
    ]
    cards_html = "".join(f'<div class="card{" warn" if warn else ""}"><span>{_e(label)}</span><b>{_e(value)}</b></div>'
                         for label, value, warn in cards)

    sla_hours = ""
    if settings is not None:
        sla_hours = (f"SLA：T1 {settings.tier1_sla_hours:g} 小时，T2 {settings.tier2_sla_hours:g} 小时，"
                     f"T3 {settings.tier3_sla_hours:g} 小时。")
    font_note = f"图表字体：{font}" if font else "未找到中文字体，图表中的中文可能无法显示"

    sections = [
        ("1. 通话处理量", _img(by_key, "daily")
         + _table(["状态", "代码", "通话数"], [[STATUS_LABELS.get(s, s), s, n]
                                              for s, n in sorted(data.calls_by_status.items())], {2})
         + "<h3>失败原因</h3>" + _table(["错误代码", "通话数"], [[c, n] for c, n in data.failures_by_code], {1})),
        ("2. 分级与复核时效", _img(by_key, "sla")
         + _table(["分级", "通话数"], [[t if t != "none" else "未标记", data.tiers.get(t, 0)]
                                     for t in ("T1", "T2", "T3", "none") if t in data.tiers], {1})
         + _table(["队列", "按时完成", "超时完成", "待处理（未超时）", "待处理（已超时）", "合计"],
                  [[r.tier, r.closed_on_time, r.closed_late, r.open_in_time, r.open_overdue, r.total]
                   for r in data.sla], {1, 2, 3, 4, 5})
         + f'<p class="note">{_e(sla_hours)}T3 队列含未标记通话的校准抽样。“已超时”按报告生成时间计算。</p>'),
        ("3. 主要问题类别", _img(by_key, "categories")
         + _table(["类别", "代码", "命中次数"], [[category_label(c), c, n] for c, n in data.categories], {2})),
        ("4. 坐席与团队得分", _img(by_key, "agents") + _img(by_key, "team_trend") + _img(by_key, "agent_trend")
         + _table(["团队", "通话数", "平均得分"], [[t, n, f"{m:.1f}"] for t, n, m in data.teams], {1, 2})
         + _table(["坐席", "团队", "通话数", "平均得分"], [[a, t, n, f"{m:.1f}"] for a, t, n, m in data.agents],
                  {2, 3})),
        ("5. 复核结果与规则精确率", _img(by_key, "reviews")
         + _table(["队列", *REVIEW_OUTCOMES.values(), "合计"],
                  [[r.tier, *(getattr(r, k) for k in REVIEW_OUTCOMES), r.total] for r in data.reviews], {1, 2, 3, 4, 5})
         + _img(by_key, "rule_precision")
         + _table(["规则", "类别", "确认", "驳回（误报）", "精确率"],
                  [[r.rule_id, category_label(r.category), r.confirmed, r.rejected,
                    "-" if r.precision is None else f"{100 * r.precision:.1f}%"] for r in data.rules], {2, 3, 4})),
        ("6. 漏检率估计（校准抽样）",
         _img(by_key, "miss_rate") + f"<p>在随机抽取的未标记通话中，人工复核认定存在问题的比例为 <b>{_e(miss_text)}</b>"
         + (f"，复核样本 {miss.reviewed} 通，其中问题通话 {miss.faulty} 通；按当前 {miss.unflagged_calls} 通未标记通话推算，"
            f"约 {miss.rate * miss.unflagged_calls:.0f} 通（{miss.low * miss.unflagged_calls:.0f}–"
            f"{miss.high * miss.unflagged_calls:.0f}）可能被漏检。" if has_miss else "。")
         + '</p><p class="note">Wilson 95% 置信区间；样本为报告期内通话的校准抽样中已完成复核的部分（不论何时复核）。</p>'),
        ("7. 模型与规则版本",
         _table(["ASR 模型", "sha256", "通话数"], [list(r) for r in data.versions.get("asr", [])], {2})
         + _table(["规则包", "版本", "sha256", "通话数"], [list(r) for r in data.versions.get("rule_pack", [])], {3})
         + _table(["分类模型", "版本", "sha256", "通话数"], [list(r) for r in data.versions.get("classifier", [])], {3})),
    ]
    body = "".join(f"<section><h2>{_e(title)}</h2>{content}</section>" for title, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(options.title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(options.title)}</h1>"
        f'<p class="meta">统计区间：{_e(options.since.date())} 至 {_e(last_day)}（UTC，按通话开始时间）· '
        f"生成时间：{_e(generated_at.strftime('%Y-%m-%d %H:%M UTC'))} · qa-speech {_e(version)} · {_e(font_note)}</p>"
        f'<div class="cards">{cards_html}</div>{body}</main></body></html>\n'
    )
