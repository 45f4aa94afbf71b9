"""Conditions over a customer's other calls. The rule engine stays storage-free: the analyze
stage hands each call the customer's earlier-known calls (:class:`~qa.domain.PriorContact`,
in ``CallTranscript.history``), and these conditions count and look through them.

"Earlier-known" means registered before this call: a call is judged against the calls that
had arrived when it did, so re-analysing it later gives the same result, and a call that
arrives late can only raise a finding on itself, never change one already reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from ..domain import PriorContact
from .context import CallContext, Hit
from .match import Match, shorten

MAX_CITED = 10  # other calls named in a finding's evidence


def _local(ts: datetime, tz: tzinfo) -> datetime:
    return ts.astimezone(tz) if ts.tzinfo is not None else ts  # a rule test's naive time is local already


def _same_kind(contact: PriorContact, directions: tuple[str, ...], lines: tuple[str, ...]) -> bool:
    return ((not directions or contact.direction in directions)
            and (not lines or contact.business_line in lines))


def _cite(contacts: list[PriorContact], tz: tzinfo) -> str:
    shown = [f"{c.call_id}（{_local(c.started_at, tz):%m-%d %H:%M}）" if c.started_at else c.call_id
             for c in contacts[:MAX_CITED]]
    return "、".join(shown) + (f" 等 {len(contacts)} 通" if len(contacts) > MAX_CITED else "")


@dataclass(frozen=True)
class Contacts:
    """This call is more than the ``max``-th contact with its customer in one local day
    (``per_day``) or within ``days`` days before it: it counts the customer's earlier-known
    calls of the given directions and business lines (only ``effective`` ones, i.e. connected
    with speech, unless told otherwise) and matches when they and this call exceed ``max``."""

    max: int
    per_day: bool = True
    days: float = 1.0
    direction: tuple[str, ...] = ()
    business_line: tuple[str, ...] = ()
    effective_only: bool = True
    timezone: tzinfo | None = None

    def evaluate(self, ctx: CallContext) -> Match:
        meta = ctx.transcript.meta
        if meta.started_at is None:
            return Match(False, (), "contacts: start time unknown")
        tz = self.timezone or ctx.options.tz
        start = _local(meta.started_at, tz)
        if self.per_day:
            def counted(c: PriorContact) -> bool:
                return c.started_at is not None and _local(c.started_at, tz).date() == start.date()
            span = f"on {start:%Y-%m-%d}"
        else:
            earliest = start - timedelta(days=self.days)

            def counted(c: PriorContact) -> bool:
                return c.started_at is not None and earliest <= _local(c.started_at, tz) <= start
            span = f"in the {self.days:g} days before"
        others = sorted((c for c in ctx.transcript.history if counted(c)
                         and _same_kind(c, self.direction, self.business_line)
                         and (c.effective or not self.effective_only)), key=lambda c: (c.started_at, c.call_id))
        total = len(others) + 1
        if total <= self.max:
            return Match(False, (), f"contacts: contact {total} of at most {self.max} {span}")
        text = f"第{total}次联系（上限 {self.max} 次），此前：{_cite(others, tz)}"
        hit = Hit(None, text=text, start_s=0.0, end_s=0.0, calls=tuple(c.call_id for c in others))
        return Match(True, (hit,), f"contacts: contact {total} {span}, more than {self.max} "
                                   f"(earlier: {shorten([c.call_id for c in others])})")


@dataclass(frozen=True)
class PriorFinding:
    """One of the customer's earlier-known calls that started within ``days`` days before this
    one has a finding of ``category`` (a do-not-call request, a complaint)."""

    category: str
    days: float
    direction: tuple[str, ...] = ()
    business_line: tuple[str, ...] = ()

    def evaluate(self, ctx: CallContext) -> Match:
        meta = ctx.transcript.meta
        if meta.started_at is None:
            return Match(False, (), "prior_finding: start time unknown")
        tz = ctx.options.tz
        start = _local(meta.started_at, tz)
        earliest = start - timedelta(days=self.days)
        found = sorted((c for c in ctx.transcript.history
                        if self.category in c.categories and c.started_at is not None
                        and earliest <= _local(c.started_at, tz) < start
                        and _same_kind(c, self.direction, self.business_line)),
                       key=lambda c: (c.started_at, c.call_id))
        if not found:
            return Match(False, (), f"prior_finding: no {self.category} in the customer's calls of the "
                                    f"{self.days:g} days before")
        hit = Hit(None, text=f"此前通话 {_cite(found, tz)} 已有「{self.category}」", start_s=0.0, end_s=0.0,
                  calls=tuple(c.call_id for c in found))
        return Match(True, (hit,), f"prior_finding: {self.category} in {shorten([c.call_id for c in found])} "
                                   f"within {self.days:g} days before")


@dataclass(frozen=True)
class OwnFinding:
    """This call's own rules found ``category`` (evaluated before any rule that looks at
    other calls): e.g. a complaint now, for a rule about repeat complaints."""

    category: str

    def evaluate(self, ctx: CallContext) -> Match:
        if self.category in ctx.own_categories:
            return Match(True, (), f"finding: this call has {self.category}")
        return Match(False, (), f"finding: this call has no {self.category}")
