"""The business line of a call whose manifest names none, inferred from the topic classifier.

Some rules belong to one kind of call: the loan-rate disclosure to an offer, not to a
collection call; the collection contact hours to a call that collects. The manifest's
``business_line`` says which; when it is missing, the topic classifier's verdict stands in
for it if it is confident enough, and every rule that reads it says so in its *why* (the line,
the probability and the model version), so an inspector can see the call type was a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from ..domain import CallMeta

TOPIC_MODEL = "topic"
# topic labels (qa.classifiers.specs.TOPIC_LABELS) -> the manifest's business-line codes;
# 其他 names no line and infers nothing
TOPIC_BUSINESS_LINES = {"信用卡": "credit_card", "贷款": "loan", "理财": "wealth", "还款与催收": "collection",
                        "支付与扣费": "payment", "账户安全": "account"}


class TopicVerdict(Protocol):
    """A classifier prediction or its stored score: both carry these."""

    model_name: str
    model_version: str
    label: str
    probability: float


@dataclass(frozen=True)
class InferredLine:
    business_line: str
    probability: float
    model_version: str

    @property
    def note(self) -> str:
        return f"inferred by the topic classifier {self.model_version}, p={self.probability:.2f}"

    def to_json(self) -> dict:
        return {"business_line": self.business_line, "probability": round(self.probability, 4),
                "model_version": self.model_version}


def infer_business_line(meta: CallMeta, predictions: Iterable[TopicVerdict],
                        min_prob: float | None) -> InferredLine | None:
    """The topic classifier's business line for a call without one in its manifest, when its
    probability reaches ``min_prob`` (``None``: never infer)."""
    if meta.business_line or min_prob is None:
        return None
    for p in predictions:
        if p.model_name == TOPIC_MODEL:
            line = TOPIC_BUSINESS_LINES.get(p.label)
            if line is not None and p.probability >= min_prob:
                return InferredLine(line, float(p.probability), p.model_version)
    return None
