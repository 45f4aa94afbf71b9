"""Calibration: are inspectors consistent with each other, and what does automation miss?

- **Calibration sessions**: several inspectors judge the same calls (the call verdict and each
  finding); agreement is reported per item and overall as Cohen's kappa (two inspectors) and
  Fleiss' kappa (two or more).
- **Miss rate**: review items drawn from the random calibration sample of unflagged calls
  (``ReviewItem.reason == 'calibration'``); the share that inspectors found faulty estimates
  what the rules miss, with a Wilson 95 % interval, overall and per category.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit
from ..errors import NotFound, PermissionDenied, ReviewError
from ..permissions import Actor, can
from ..storage.models import (
    Assessment,
    CalibrationSession,
    CalibrationVote,
    Call,
    Finding,
    ReviewDecision,
    ReviewItem,
    User,
)
from ..timeutil import utc_or_now
from .decisions import DECISIONS, VERDICTS
from .items import REVIEWED

log = logging.getLogger(__name__)

Z95 = 1.959963984540054


# --- statistics ------------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there is no observation."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave a speck.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; ``None`` when chance agreement
    is total (both raters always used one and the same label: kappa is undefined)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[c] * right[c] for c in left) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def pair_agreement(labels: Sequence[str]) -> float:
    """Share of rater pairs that agree on one item (Fleiss' P_i)."""
    n = len(labels)
    if n < 2:
        raise ValueError("agreement needs at least two ratings")
    return (sum(c * c for c in Counter(labels).values()) - n) / (n * (n - 1))


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa for items that each got the same number (>= 2) of ratings; ``None`` when
    undefined (no items, or every rating the same label)."""
    items = [list(i) for i in items]
    if not items:
        return None
    n = len(items[0])
    if n < 2 or any(len(i) != n for i in items):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per item")
    p_bar = sum(pair_agreement(i) for i in items) / len(items)
    totals = Counter(label for i in items for label in i)
    expected = sum((c / (len(items) * n)) ** 2 for c in totals.values())
    if expected >= 1.0:
        return None
    return (p_bar - expected) / (1 - expected)


# --- sessions and votes ----------------------------------------------------------------------

def start_session(session: Session, actor: Actor, name: str, call_ids: Sequence[int], inspectors: Sequence[str],
                  now: datetime | None = None) -> CalibrationSession:
    """A senior (or admin) sets the calls (``calls.id``) and the inspectors who judge them."""
    actor.require("calibration.manage", "start calibration sessions")
    inspectors = sorted(set(inspectors))
    call_ids = sorted(set(int(c) for c in call_ids))
    if len(inspectors) < 2:
        raise ValueError("a calibration session needs at least two inspectors")
    if not call_ids or not name.strip():
        raise ValueError("a calibration session needs a name and at least one call")
    now = utc_or_now(now)
    known = set(session.scalars(select(Call.id).where(Call.id.in_(call_ids))))
    if missing := [c for c in call_ids if c not in known]:
        raise NotFound(f"calls {missing} do not exist")
    users = {u.username: u for u in session.scalars(select(User).where(User.username.in_(inspectors)))}
    # Inspectors not in the users table are allowed (CLI use before logins exist), inactive ones not.
    if inactive := [u for u in inspectors if u in users and (not users[u].active or not can(users[u].role, "calibration.vote"))]:
        raise ReviewError(f"not active inspectors: {', '.join(inactive)}", code="calibration.inspector")
    if session.scalar(select(CalibrationSession.id).where(CalibrationSession.name == name)) is not None:
        raise ReviewError(f"calibration session {name!r} exists already", code="calibration.exists")
    cs = CalibrationSession(name=name.strip(), created_by=actor.username, inspectors=inspectors,
                            call_ids=call_ids, status="open", created_at=now)
    session.add(cs)
    session.flush()
    audit.append(session, actor.username, "calibration.start", "calibration_session", cs.id, None,
                 {"name": cs.name, "inspectors": inspectors, "call_ids": call_ids}, now=now)
    log.info("calibration session %s started by %s: %d calls, %d inspectors", cs.name, actor.username,
             len(call_ids), len(inspectors))
    return cs


def _load_session(session: Session, session_id: int) -> CalibrationSession:
    cs = session.get(CalibrationSession, session_id)
    if cs is None:
        raise NotFound(f"calibration session {session_id} does not exist")
    return cs


def allowed_values(item_key: str) -> tuple[str, ...]:
    """The values a vote on ``item_key`` may take."""
    if item_key == "verdict":
        return VERDICTS
    if item_key.startswith("finding:") and item_key[8:].isdigit():
        return DECISIONS
    raise ValueError(f"item must be 'verdict' or 'finding:<id>', got {item_key!r}")


def vote(session: Session, actor: Actor, session_id: int, call_id: int, item_key: str, value: str,
         now: datetime | None = None) -> CalibrationVote:
    """One inspector's judgement of one item (``verdict``: pass/fail; ``finding:<id>``:
    confirmed/rejected). Voting again replaces the earlier vote."""
    actor.validate()
    if value not in allowed_values(item_key):
        raise ValueError(f"{item_key} takes {' or '.join(allowed_values(item_key))}, got {value!r}")
    now = utc_or_now(now)
    cs = _load_session(session, session_id)
    if cs.status != "open":
        raise ReviewError(f"calibration session {cs.name} is {cs.status}", code="calibration.closed")
    if actor.username not in cs.inspectors:
        raise PermissionDenied(f"{actor.username} is not an inspector of calibration session {cs.name}")
    if call_id not in cs.call_ids:
        raise NotFound(f"call {call_id} is not part of calibration session {cs.name}")
    if item_key.startswith("finding:"):
        finding = session.get(Finding, int(item_key[8:]))
        if finding is None or finding.call_id != call_id:
            raise NotFound(f"{item_key} is not a finding of call {call_id}")
    row = session.scalars(select(CalibrationVote).where(
        CalibrationVote.session_id == cs.id, CalibrationVote.call_id == call_id,
        CalibrationVote.inspector == actor.username, CalibrationVote.item_key == item_key)).first()
    before = None if row is None else {"value": row.value}
    if row is None:
        row = CalibrationVote(session_id=cs.id, call_id=call_id, inspector=actor.username, item_key=item_key,
                              value=value, created_at=now)
        session.add(row)
    else:
        row.value, row.created_at = value, now
    session.flush()
    audit.append(session, actor.username, "calibration.vote", "calibration_session", cs.id, before,
                 {"call_id": call_id, "item": item_key, "value": value}, now=now)
    return row


def close_session(session: Session, actor: Actor, session_id: int, now: datetime | None = None) -> CalibrationSession:
    actor.require("calibration.manage", "close calibration sessions")
    now = utc_or_now(now)
    cs = _load_session(session, session_id)
    if cs.status != "open":
        raise ReviewError(f"calibration session {cs.name} is {cs.status}", code="calibration.closed")
    cs.status = "closed"
    session.flush()
    audit.append(session, actor.username, "calibration.close", "calibration_session", cs.id, {"status": "open"},
                 {"status": "closed"}, now=now)
    return cs


@dataclass(frozen=True)
class ItemAgreement:
    call_id: int
    item_key: str
    votes: dict[str, str]  # inspector -> value
    agreement: float | None  # share of agreeing pairs; None with fewer than two votes
    majority: str | None  # the most common value; None on a tie


@dataclass(frozen=True)
class CalibrationReport:
    session_id: int
    name: str
    inspectors: tuple[str, ...]
    items: tuple[ItemAgreement, ...]
    complete_items: int  # items every inspector voted on (the kappa is computed over these)
    mean_agreement: float | None
    fleiss_kappa: float | None
    cohen_kappa: float | None  # only with exactly two inspectors
    inspector_vs_majority: dict[str, float] = field(default_factory=dict)
    blind: bool = False  # the viewer's own votes only (an inspector of an open session)


def report(session: Session, session_id: int, viewer: Actor | None = None) -> CalibrationReport:
    """Agreement per item and overall. Calibration is blind: while the session is open, an
    inspector of it (``viewer``) sees only their own votes and no agreement figures, so that
    nobody judges with the others' answers in view. ``viewer=None``: everything."""
    cs = _load_session(session, session_id)
    if viewer is not None and cs.status == "open" and viewer.username in cs.inspectors:
        return _blind(session, cs, viewer.username)
    inspectors = tuple(cs.inspectors)
    grouped: dict[tuple[int, str], dict[str, str]] = {}
    for v in session.scalars(select(CalibrationVote).where(CalibrationVote.session_id == cs.id)
                             .order_by(CalibrationVote.call_id, CalibrationVote.item_key, CalibrationVote.inspector)):
        grouped.setdefault((v.call_id, v.item_key), {})[v.inspector] = v.value
    items = []
    for (call_id, key), votes in grouped.items():
        top = Counter(votes.values()).most_common(2)
        majority = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None
        items.append(ItemAgreement(call_id, key, votes, pair_agreement(list(votes.values())) if len(votes) >= 2
                                   else None, majority))
    complete = [i for i in items if set(i.votes) == set(inspectors)]
    rated = [i.agreement for i in items if i.agreement is not None]
    cohen = None
    if len(inspectors) == 2 and complete:
        a, b = inspectors
        cohen = cohen_kappa([(i.votes[a], i.votes[b]) for i in complete])
    vs_majority = {}
    for name in inspectors:
        judged = [i for i in items if name in i.votes and i.majority is not None and len(i.votes) >= 3]
        if judged:
            vs_majority[name] = sum(i.votes[name] == i.majority for i in judged) / len(judged)
    return CalibrationReport(
        session_id=cs.id, name=cs.name, inspectors=inspectors, items=tuple(items), complete_items=len(complete),
        mean_agreement=sum(rated) / len(rated) if rated else None,
        fleiss_kappa=fleiss_kappa([[i.votes[n] for n in inspectors] for i in complete]) if complete else None,
        cohen_kappa=cohen, inspector_vs_majority=vs_majority,
    )


def _blind(session: Session, cs: CalibrationSession, username: str) -> CalibrationReport:
    own = session.scalars(select(CalibrationVote).where(CalibrationVote.session_id == cs.id,
                                                        CalibrationVote.inspector == username))
    items = tuple(ItemAgreement(v.call_id, v.item_key, {username: v.value}, None, None) for v in own)
    return CalibrationReport(session_id=cs.id, name=cs.name, inspectors=tuple(cs.inspectors), items=items,
                             complete_items=0, mean_agreement=None, fleiss_kappa=None, cohen_kappa=None,
                             blind=True)


# --- miss rate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proportion:
    label: str
    faulty: int
    reviewed: int
    low: float
    high: float

    @property
    def rate(self) -> float | None:
        return self.faulty / self.reviewed if self.reviewed else None


@dataclass(frozen=True)
class MissRateReport:
    overall: Proportion
    by_category: tuple[Proportion, ...]
    unflagged_calls: int  # current assessments without a tier: what the estimate applies to

    @property
    def estimated_missed(self) -> tuple[float, float, float] | None:
        """(estimate, low, high) number of faulty calls among the unflagged ones."""
        if self.overall.rate is None:
            return None
        n = self.unflagged_calls
        return self.overall.rate * n, self.overall.low * n, self.overall.high * n


def miss_rate(session: Session, *, since: datetime | None = None, until: datetime | None = None) -> MissRateReport:
    """Of the reviewed calibration-sample items (closed, by ``closed_at`` in [since, until)),
    the share an inspector found faulty: a fail verdict or a finding the inspector added.
    Per category: the share with an added finding of that category."""
    stmt = select(ReviewItem).where(ReviewItem.reason == "calibration", ReviewItem.status.in_(REVIEWED))
    if since is not None:
        stmt = stmt.where(ReviewItem.closed_at >= since)
    if until is not None:
        stmt = stmt.where(ReviewItem.closed_at < until)
    items = list(session.scalars(stmt))
    added: dict[int, set[str]] = {}
    if items:
        rows = session.execute(
            select(ReviewDecision.review_item_id, Finding.category)
            .join(Finding, Finding.id == ReviewDecision.finding_id)
            .where(ReviewDecision.decision == "added", ReviewDecision.review_item_id.in_([i.id for i in items])))
        for item_id, category in rows:
            added.setdefault(item_id, set()).add(category)
    n = len(items)
    faulty = sum(1 for i in items if i.verdict == "fail" or i.id in added)
    per_cat = Counter(c for cats in added.values() for c in cats)
    unflagged = session.scalar(select(func.count()).select_from(Assessment).where(
        Assessment.is_current.is_(True), Assessment.tier.is_(None))) or 0
    return MissRateReport(
        overall=Proportion("all", faulty, n, *wilson_interval(faulty, n)),
        by_category=tuple(Proportion(c, k, n, *wilson_interval(k, n)) for c, k in sorted(per_cat.items())),
        unflagged_calls=unflagged,
    )


def sessions(session: Session) -> list[CalibrationSession]:
    """Every calibration session, oldest first."""
    return list(session.scalars(select(CalibrationSession).order_by(CalibrationSession.id)))
