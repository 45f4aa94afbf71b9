"""Chinese display names of the system's ids, for people: the web UI, the report and the
command line show these; exports and the database keep the ids."""

from __future__ import annotations

CALL_STATUS_LABELS = {"registered": "已登记", "transcribed": "已转写", "no_speech": "无语音", "analyzed": "已分析",
                      "scored": "已评分", "routed": "已完成", "failed": "失败"}
REVIEW_STATUS_LABELS = {"open": "待领取", "claimed": "处理中", "closed": "已完成", "appealed": "申诉中",
                        "appeal_decided": "申诉已裁决"}
APPEAL_STATUS_LABELS = {"open": "待裁决", "upheld": "维持原结论", "overturned": "改判通过"}
# How the reviews of a period ended (the report's review-outcome chart and table)
REVIEW_OUTCOMES = {"pending": "待复核", "passed": "复核合格", "failed": "复核不合格", "appealed": "申诉中"}
SEVERITY_LABELS = {"fatal": "致命", "major": "严重", "minor": "一般"}
ROLE_NAMES = {"agent": "坐席", "customer": "客户"}
DIRECTION_LABELS = {"inbound": "呼入", "outbound": "呼出"}
# The business lines of the manifests (``business_line``) and of the rule packs' ``meta``
BUSINESS_LINE_LABELS = {"credit_card": "信用卡", "loan": "消费贷款", "wealth": "财富管理", "insurance": "保险",
                        "collection": "催收", "payment": "支付", "account": "账户安全"}
REASON_LABELS = {"flagged": "系统标记", "calibration": "抽样校准"}
CLASSIFIER_LABELS = {"complaint_risk": "投诉风险", "dissatisfaction": "不满情绪", "agent_conduct": "坐席态度",
                     "topic": "业务主题", "role": "说话人角色"}
CLASSIFIER_VALUE_LABELS = {"complaint": "有投诉倾向", "normal": "正常", "dissatisfied": "不满", "neutral": "平稳",
                           "misconduct": "态度不当", "proper": "得体", "agent": "坐席", "customer": "客户"}

KINDS = {"call_status": CALL_STATUS_LABELS, "review_status": REVIEW_STATUS_LABELS,
         "appeal_status": APPEAL_STATUS_LABELS, "severity": SEVERITY_LABELS, "role": ROLE_NAMES,
         "direction": DIRECTION_LABELS, "business_line": BUSINESS_LINE_LABELS, "reason": REASON_LABELS,
         "classifier": CLASSIFIER_LABELS, "classifier_value": CLASSIFIER_VALUE_LABELS}


def label(value: str | None, kind: str) -> str:
    """The Chinese name of ``value`` among the ids of ``kind`` (``business_line``, ...); an
    id the table does not know is shown as it is, and a missing value as a dash."""
    if value is None or value == "":
        return "–"
    if kind == "category":
        return category_label(value)
    return KINDS[kind].get(value, value)


def category_label(category: str) -> str:
    """The Chinese name of a finding category (the id when the taxonomy does not know it)."""
    from .rules.taxonomy import load_taxonomy

    cat = load_taxonomy().get(category)
    return cat.zh if cat else category
