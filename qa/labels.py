"""Chinese display names of the system's ids, for people: the web UI, the report and the
command line show these; exports and the database keep the ids."""

from __future__ import annotations

CALL_STATUS_LABELS = {"registered": "已登记", "transcribed": "已转写", "no_speech": "无语音", "analyzed": "已分析",
                      "scored": "已评分", "routed": "已完成", "failed": "失败"}
# How the reviews of a period ended (the report's review-outcome chart and table)
REVIEW_OUTCOMES = {"pending": "待复核", "passed": "复核合格", "failed": "复核不合格", "appealed": "申诉中"}


def category_label(category: str) -> str:
    """The Chinese name of a finding category (the id when the taxonomy does not know it)."""
    from .rules.taxonomy import load_taxonomy

    cat = load_taxonomy().get(category)
    return cat.zh if cat else category
