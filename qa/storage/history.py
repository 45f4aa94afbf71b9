"""A customer's earlier-known calls, for the rules that look across calls.

"Earlier-known" is by arrival: the calls with the same ``customer_ref`` registered before this
one (a lower id), whose start lies in the window the rules read. A call is so judged against
what had arrived when it did: re-analysing it gives the same result whatever arrived since,
and a late call can raise findings on itself only.

Each earlier call brings the categories of what its own words showed under the same rule
pack: its stored findings by that pack's single-call rules when it has such an analysis,
else what those rules find in its transcript now (``categories_of``), so that two calls of
one customer analysed side by side in a batch see each other the same way whichever
finishes first. Findings of the cross-call rules themselves are left out: a call made after
a do-not-call request is not a request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Callable, Collection, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain import CallStatus, CallTranscript, PriorContact
from .models import Analysis, Call, Finding
from .transcripts import current_transcript

MAX_HISTORY = 500  # earlier calls read per call: a dialler gone wild must not make analysis quadratic
SPOKEN = (CallStatus.TRANSCRIBED, CallStatus.ANALYZED, CallStatus.SCORED, CallStatus.ROUTED)


class HistoryEngine(Protocol):
    """What :func:`with_customer_history` needs of a rule engine (:class:`qa.rules.engine.RuleEngine`)."""

    pack: Any

    def categories(self, transcript: CallTranscript) -> frozenset[str]: ...


@dataclass(frozen=True)
class History:
    contacts: tuple[PriorContact, ...]
    pending: tuple[str, ...] = ()  # earlier calls not transcribed yet: what they hold is unknown


def customer_history(session: Session, call: Call, *, days: float, pack_sha256: str,
                     categories_of: Callable[[CallTranscript], frozenset[str]],
                     cross_call_rules: Collection[str] = ()) -> History:
    """The earlier-known calls of ``call``'s customer that started from ``days`` days before it
    to the end of its day (empty without a customer_ref or a start time)."""
    if not call.customer_ref or call.started_at is None or days <= 0:
        return History(())
    rows = session.execute(
        select(Call).where(Call.customer_ref == call.customer_ref, Call.id < call.id, Call.purged_at.is_(None),
                           Call.started_at >= call.started_at - timedelta(days=days),
                           Call.started_at <= call.started_at + timedelta(days=1))
        .order_by(Call.started_at.desc(), Call.id.desc()).limit(MAX_HISTORY)).scalars().all()
    contacts, pending = [], []
    for prior in rows:
        if prior.status == CallStatus.REGISTERED:
            pending.append(prior.call_id)
        contacts.append(PriorContact(
            call_id=prior.call_id, started_at=prior.started_at, direction=prior.direction,
            business_line=prior.business_line, effective=prior.status in SPOKEN,
            categories=_categories(session, prior, pack_sha256, categories_of, cross_call_rules)
            if prior.status in SPOKEN else frozenset()))
    return History(tuple(reversed(contacts)), tuple(pending))


def with_customer_history(session: Session, call: Call, transcript: CallTranscript,
                          engine: HistoryEngine) -> tuple[CallTranscript, History]:
    """``transcript`` with the customer's earlier-known calls the engine's cross-call rules
    read (unchanged when the pack has none or the call no customer_ref): what analysis,
    ``qa rules explain`` and backtests evaluate, so the three agree."""
    pack = engine.pack
    if not pack.history_days or not call.customer_ref:
        return transcript, History(())
    history = customer_history(session, call, days=pack.history_days, pack_sha256=pack.sha256,
                               categories_of=engine.categories,
                               cross_call_rules=[r.id for r in pack.rules if r.cross_call])
    return replace(transcript, history=history.contacts), history


def _categories(session: Session, prior: Call, pack_sha256: str,
                categories_of: Callable[[CallTranscript], frozenset[str]],
                cross_call_rules: Collection[str]) -> frozenset[str]:
    analysis_id = session.scalar(select(Analysis.id).where(
        Analysis.call_id == prior.id, Analysis.is_current.is_(True), Analysis.rule_pack_sha256 == pack_sha256))
    if analysis_id is not None:
        return frozenset(session.scalars(select(Finding.category).distinct().where(
            Finding.analysis_id == analysis_id, Finding.source == "rule",
            Finding.rule_id.not_in(list(cross_call_rules)))))
    loaded = current_transcript(session, prior)
    return categories_of(loaded[1]) if loaded is not None else frozenset()
