"""Reading the review queues: a page of items in work order with what each is about (its top
findings, agent, team), filters, keyset paging, and the counts per tier.

Work order is tier, then due time, then id. Pages are keyset pages: the next page starts
after the last item of this one (:class:`QueueCursor`), so page 500 costs what page 1
costs, and an item claimed or closed meanwhile shifts nothing. Each status is read on its
own, in the order of the ``(status, tier, due_at, id)`` index, and the few rows merged: a
single query over several statuses would have the database sort every waiting item for
each page.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from typing import Sequence

from sqlalchemy import and_, exists, func, select, tuple_
from sqlalchemy.orm import Session

from ..domain import REVIEW_STATUSES, SEVERITIES, TIERS
from ..storage.models import Assessment, Call, Finding, ReviewItem
from ..timeutil import as_utc, day_span, utc_or_now
from .items import WAITING

MAX_PAGE = 200
TOP_FINDINGS = 3
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # fatal first


@dataclass(frozen=True)
class QueueFilters:
    """Which items a queue page shows. ``None`` / empty: no restriction. ``day`` is a local
    day of the call's start (on the clock given to :func:`queue_page`); ``call_search``
    matches any part of the call id."""

    tier: str | None = None
    statuses: tuple[str, ...] = tuple(WAITING)
    overdue_only: bool = False
    assigned_to: str | None = None
    category: str | None = None
    agent: str | None = None
    team: str | None = None
    day: date | None = None
    call_search: str | None = None
    claimed_by: str | None = None

    def validate(self) -> None:
        if self.tier is not None and self.tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {self.tier!r}")
        bad = [s for s in self.statuses if s not in REVIEW_STATUSES]
        if bad or not self.statuses:
            raise ValueError(f"statuses must be some of {', '.join(REVIEW_STATUSES)}, got {', '.join(bad) or 'none'}")
        if self.call_search is not None and not 1 <= len(self.call_search.strip()) <= 128:
            raise ValueError("call_search must be 1 to 128 characters")

    @property
    def active(self) -> dict[str, str]:
        """The restrictions in force, by name (what a page says it is showing)."""
        shown = {"tier": self.tier, "category": self.category, "agent": self.agent, "team": self.team,
                 "day": self.day.isoformat() if self.day else None, "call": self.call_search,
                 "assigned_to": self.assigned_to}
        return {k: v for k, v in shown.items() if v}


@dataclass(frozen=True)
class QueueCursor:
    """Where the next page starts: after the item (tier, due_at, item_id)."""

    tier: str
    due_at: datetime
    item_id: int

    def encode(self) -> str:
        raw = f"{self.tier}|{as_utc(self.due_at).isoformat()}|{self.item_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> QueueCursor:
        """The cursor of a page link; ``ValueError`` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            tier, due, item_id = raw.split("|")
            cursor = cls(tier, datetime.fromisoformat(due), int(item_id))
        except (binascii.Error, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"not a queue position: {token[:40]!r}") from e
        if cursor.tier not in TIERS or cursor.due_at.tzinfo is None:
            raise ValueError(f"not a queue position: {token[:40]!r}")
        return cursor


@dataclass(frozen=True)
class FindingBrief:
    """One finding as the queue shows it: enough to tell what the item is about."""

    category: str
    severity: str
    rule_id: str


@dataclass(frozen=True)
class QueueEntry:
    item_id: int
    call_id: str
    agent_id: str | None
    team: str | None
    business_line: str | None
    started_at: datetime | None
    tier: str
    reason: str
    status: str
    due_at: datetime
    overdue: bool
    score: float | None
    assigned_to: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    top_findings: tuple[FindingBrief, ...] = ()  # most severe first, at most TOP_FINDINGS
    findings_total: int = 0


@dataclass(frozen=True)
class QueuePage:
    entries: tuple[QueueEntry, ...]
    next_cursor: QueueCursor | None  # None on the last page

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class TierCount:
    tier: str
    open: int
    claimed: int
    overdue: int


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# A call-id search matching more calls than this is applied row by row instead of by id.
MAX_SEARCH_IDS = 1000


def _conditions(session: Session, filters: QueueFilters, now: datetime, tz: tzinfo) -> list:
    conds = []
    if filters.tier is not None:
        conds.append(ReviewItem.tier == filters.tier)
    if filters.overdue_only:
        conds.append(ReviewItem.due_at < now)
    if filters.assigned_to is not None:
        conds.append(ReviewItem.assigned_to == filters.assigned_to)
    if filters.claimed_by is not None:
        conds.append(ReviewItem.claimed_by == filters.claimed_by)
    if filters.agent:
        conds.append(Call.agent_id == filters.agent)
    if filters.team:
        conds.append(Call.team == filters.team)
    if filters.day is not None:
        start, end = day_span(filters.day, tz=tz)
        conds.append(and_(Call.started_at >= start, Call.started_at < end))
    if filters.call_search:
        # Found in the calls' id index first: a rare match must not be looked for row by row
        # along the whole queue.
        matches = Call.call_id.like(f"%{_like_escape(filters.call_search.strip())}%", escape="\\")
        ids = list(session.scalars(select(Call.id).where(matches).limit(MAX_SEARCH_IDS + 1)))
        conds.append(ReviewItem.call_id.in_(ids) if len(ids) <= MAX_SEARCH_IDS else matches)
    if filters.category:
        conds.append(exists().where(Finding.analysis_id == Assessment.analysis_id,
                                    Finding.category == filters.category))
    return conds


def queue_page(session: Session, filters: QueueFilters = QueueFilters(), *, after: QueueCursor | None = None,
               limit: int = 50, now: datetime | None = None, tz: tzinfo = timezone.utc) -> QueuePage:
    """One page of items in work order (tier, due time, id), starting after ``after``.
    ``tz`` is the clock of ``filters.day`` (the ``timezone`` setting)."""
    filters.validate()
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    now = utc_or_now(now)
    order = (ReviewItem.tier, ReviewItem.due_at, ReviewItem.id)
    conds = _conditions(session, filters, now, tz)
    if after is not None:
        conds.append(tuple_(*order) > tuple_(after.tier, as_utc(after.due_at), after.item_id))
    rows = []
    for status in dict.fromkeys(filters.statuses):
        rows += session.execute(
            select(ReviewItem, Call.call_id, Call.agent_id, Call.team, Call.business_line, Call.started_at,
                   Assessment.score, Assessment.analysis_id)
            .join(Call, Call.id == ReviewItem.call_id)
            .join(Assessment, Assessment.id == ReviewItem.assessment_id)
            .where(ReviewItem.status == status, *conds)
            .order_by(*order).limit(limit + 1)).all()
    rows.sort(key=lambda r: (r[0].tier, r[0].due_at, r[0].id))
    more = len(rows) > limit
    rows = rows[:limit]
    briefs, totals = _top_findings(session, [r.analysis_id for r in rows])
    entries = tuple(
        QueueEntry(item_id=item.id, call_id=call_id, agent_id=agent_id, team=team, business_line=line,
                   started_at=started, tier=item.tier, reason=item.reason, status=item.status, due_at=item.due_at,
                   overdue=item.status in WAITING and item.due_at < now, score=score,
                   assigned_to=item.assigned_to, claimed_by=item.claimed_by,
                   claim_expires_at=item.claim_expires_at, top_findings=briefs.get(analysis_id, ()),
                   findings_total=totals.get(analysis_id, 0))
        for item, call_id, agent_id, team, line, started, score, analysis_id in rows)
    last = entries[-1] if entries else None
    return QueuePage(entries, QueueCursor(last.tier, last.due_at, last.item_id) if more and last else None)


def list_queue(session: Session, filters: QueueFilters = QueueFilters(), *, limit: int = 100,
               now: datetime | None = None, tz: tzinfo = timezone.utc) -> list[QueueEntry]:
    """The first ``limit`` items in work order."""
    return list(queue_page(session, filters, limit=limit, now=now, tz=tz).entries)


def _top_findings(session: Session, analysis_ids: Sequence[int]
                  ) -> tuple[dict[int, tuple[FindingBrief, ...]], dict[int, int]]:
    """The rule findings of each analysis, most severe first (one query for the page)."""
    found: dict[int, list[FindingBrief]] = defaultdict(list)
    if analysis_ids:
        for analysis_id, category, severity, rule_id in session.execute(
                select(Finding.analysis_id, Finding.category, Finding.severity, Finding.rule_id)
                .where(Finding.analysis_id.in_(set(analysis_ids)), Finding.source == "rule")
                .order_by(Finding.id)):
            found[analysis_id].append(FindingBrief(category, severity, rule_id))
    briefs, totals = {}, {}
    for analysis_id, items in found.items():
        # one line per category: three "insult" findings say less than insult + disclosure
        distinct: dict[str, FindingBrief] = {}
        for brief in sorted(items, key=lambda b: SEVERITY_RANK.get(b.severity, len(SEVERITY_RANK))):
            distinct.setdefault(brief.category, brief)
        briefs[analysis_id] = tuple(distinct.values())[:TOP_FINDINGS]
        totals[analysis_id] = len(items)
    return briefs, totals


def queue_counts(session: Session, now: datetime | None = None) -> list[TierCount]:
    """Open, claimed and overdue items per tier."""
    now = utc_or_now(now)
    counts = {t: {"open": 0, "claimed": 0, "overdue": 0} for t in TIERS}
    base = select(ReviewItem.tier, ReviewItem.status, func.count()).where(ReviewItem.status.in_(WAITING))
    for tier, status, n in session.execute(base.group_by(ReviewItem.tier, ReviewItem.status)):
        counts.setdefault(tier, {"open": 0, "claimed": 0, "overdue": 0})[status] = n
    overdue = base.where(ReviewItem.due_at < now).group_by(ReviewItem.tier, ReviewItem.status)
    for tier, _status, n in session.execute(overdue):
        counts[tier]["overdue"] += n
    return [TierCount(t, c["open"], c["claimed"], c["overdue"]) for t, c in sorted(counts.items())]


def filter_choices(session: Session, limit: int = 500) -> dict[str, list[str]]:
    """The agents and teams of the calls (their indexes, read in order), for the queue's
    filter lists."""
    return {name: list(session.scalars(select(column).distinct().where(column.isnot(None)).order_by(column)
                                       .limit(limit)))
            for name, column in (("agents", Call.agent_id), ("teams", Call.team))}


__all__ = ["FindingBrief", "QueueCursor", "QueueEntry", "QueueFilters", "QueuePage", "TierCount", "filter_choices",
           "list_queue", "queue_counts", "queue_page"]
