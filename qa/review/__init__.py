"""The review workflow: routing assessed calls into tiered queues (:mod:`.routing`), reading the
queues (:mod:`.listing`), claims and assignment (:mod:`.queue`), decisions and verdicts (:mod:`.decisions`), appeals
(:mod:`.appeals`), calibration (:mod:`.calibration`) and the accounts of the people who do it
(:mod:`.users`). The names below are the workflow's public API (``from qa import review``).

Every function takes the caller's write session and an :class:`~qa.permissions.Actor`; the
caller commits. Each action writes its audit event in the same transaction.
"""

from ..domain import TIERS
from ..permissions import Actor
from .appeals import APPEAL_OUTCOMES, decide_appeal, find_appeal, open_appeal
from .decisions import DECISIONS, VERDICTS, add_finding, close, decide
from .items import FindingView, ItemDetail, categories, get_item, item_findings, load_item
from .listing import (
    FindingBrief,
    QueueCursor,
    QueueEntry,
    QueueFilters,
    QueuePage,
    TierCount,
    filter_choices,
    list_queue,
    queue_counts,
    queue_page,
)
from .queue import ReviewPolicy, assign, assign_round_robin, claim, claim_next, expire_claims, next_open_query, release

__all__ = [
    "APPEAL_OUTCOMES", "DECISIONS", "TIERS", "VERDICTS", "Actor", "FindingBrief", "FindingView", "ItemDetail",
    "QueueCursor", "QueueEntry", "QueueFilters", "QueuePage", "ReviewPolicy", "TierCount", "add_finding", "assign", "assign_round_robin", "categories", "claim", "claim_next",
    "close", "decide", "decide_appeal", "expire_claims", "filter_choices", "find_appeal", "get_item", "item_findings", "list_queue",
    "load_item", "next_open_query", "open_appeal", "queue_counts", "queue_page", "release",
]
