"""Conditions other than the text matchers: all/any/not, proximity, order, count, the
acoustic operators on CallFeatures and call metadata. Every condition has
``evaluate(ctx) -> Match``."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from datetime import tzinfo
from typing import Iterator, Protocol

from .context import CallContext, Hit, HoursWindow
from .match import Match, describe_hits


class Condition(Protocol):
    def evaluate(self, ctx: CallContext) -> Match: ...


def leaves(condition) -> Iterator:
    """Every operator under a condition (the nodes with no condition below them), depth first."""
    below = []
    if is_dataclass(condition):
        for f in fields(condition):
            value = getattr(condition, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if hasattr(item, "evaluate"):
                    below.append(item)
    if not below:
        yield condition
    for child in below:
        yield from leaves(child)


def _dedupe(hits: list[Hit]) -> tuple[Hit, ...]:
    return tuple(dict.fromkeys(hits))


@dataclass(frozen=True)
class AllOf:
    children: tuple[Condition, ...]

    def evaluate(self, ctx: CallContext) -> Match:
        hits: list[Hit] = []
        whys: list[str] = []
        for child in self.children:
            out = child.evaluate(ctx)
            if not out.matched:
                return Match(False, (), f"all: {out.why}")
            hits.extend(out.hits)
            whys.append(out.why)
        return Match(True, _dedupe(hits), "all: " + "; ".join(whys))


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Condition, ...]

    def evaluate(self, ctx: CallContext) -> Match:
        outs = [child.evaluate(ctx) for child in self.children]
        matched = [o for o in outs if o.matched]
        if matched:
            hits = [h for o in matched for h in o.hits]
            return Match(True, _dedupe(hits), "any: " + "; ".join(o.why for o in matched))
        return Match(False, (), "any: none of [" + "; ".join(o.why for o in outs) + "]")


@dataclass(frozen=True)
class NotOf:
    child: Condition

    def evaluate(self, ctx: CallContext) -> Match:
        out = self.child.evaluate(ctx)
        return Match(not out.matched, (), f"not ({out.why})")


def _span(ctx: CallContext, hit: Hit) -> tuple[int, int]:
    start = ctx.global_pos(hit)
    return start, start + (hit.end - hit.start)


@dataclass(frozen=True)
class Near:
    """A and B within ``chars`` characters (anywhere in the call text) or ``turns`` turns."""

    a: Condition
    b: Condition
    chars: int | None = None
    turns: int | None = None

    def evaluate(self, ctx: CallContext) -> Match:
        oa, ob = self.a.evaluate(ctx), self.b.evaluate(ctx)
        if not (oa.matched and ob.matched):
            missing = oa if not oa.matched else ob
            return Match(False, (), f"near: {missing.why}")
        pairs: list[Hit] = []
        for ha in oa.hits:
            for hb in ob.hits:
                if ha.utt is None or hb.utt is None:
                    continue
                if self.turns is not None:
                    close = abs(ha.utt - hb.utt) <= self.turns
                else:
                    (sa, ea), (sb, eb) = _span(ctx, ha), _span(ctx, hb)
                    close = max(sa - eb, sb - ea, 0) <= self.chars
                if close:
                    pairs += [ha, hb]
        limit = f"{self.turns} turns" if self.turns is not None else f"{self.chars} chars"
        if pairs:
            return Match(True, _dedupe(pairs), f"near (within {limit}): {describe_hits(pairs)}")
        return Match(False, (), f"near: both found but never within {limit} ({oa.why}; {ob.why})")


@dataclass(frozen=True)
class Order:
    """Steps in this order. ``first`` compares each step's first hit (A before any B, e.g.
    verification before the first account detail); otherwise some A precedes some B, and
    with ``within_turns`` each step's hit comes at most that many turns after the previous
    one's (a denial of being the debtor, then debt details within 3 turns)."""

    steps: tuple[Condition, ...]
    first: bool = False
    within_turns: int | None = None

    def evaluate(self, ctx: CallContext) -> Match:
        found: list[list[Hit]] = []
        for n, step in enumerate(self.steps, 1):
            out = step.evaluate(ctx)
            if not out.matched:
                return Match(False, (), f"order: step {n} absent ({out.why})")
            text_hits = sorted((h for h in out.hits if h.utt is not None), key=ctx.global_pos)
            if not text_hits:
                return Match(False, (), f"order: step {n} has no place in the transcript ({out.why})")
            found.append(text_hits[:1] if self.first else text_hits)
        chain = self._chain(ctx, found, 0, None)
        if chain is None:
            limit = f" within {self.within_turns} turns" if self.within_turns is not None else ""
            return Match(False, (), f"order: the steps are found but not in this order{limit}")
        return Match(True, tuple(chain), f"order: {describe_hits(chain)}")

    def _chain(self, ctx: CallContext, found: list[list[Hit]], n: int, prev: Hit | None) -> list[Hit] | None:
        """The first run of hits, one per step, in order (and close enough): a search, since
        the earliest hit of a step is not always the one the next step follows closely."""
        if n == len(found):
            return []
        for hit in found[n]:
            if prev is not None:
                if ctx.global_pos(hit) <= ctx.global_pos(prev):
                    continue
                if self.within_turns is not None and hit.utt - prev.utt > self.within_turns:
                    break  # hits are in call order: the later ones are farther still
            rest = self._chain(ctx, found, n + 1, hit)
            if rest is not None:
                return [hit, *rest]
            if self.first:
                break
        return None


@dataclass(frozen=True)
class Count:
    """How many hits (or distinct turns) a condition has, between ``min`` and ``max``."""

    of: Condition
    min: int = 1
    max: int | None = None
    turns: bool = False

    def evaluate(self, ctx: CallContext) -> Match:
        out = self.of.evaluate(ctx)
        hits = out.hits if out.matched else ()
        n = len({h.utt for h in hits}) if self.turns else len(hits)
        ok = n >= self.min and (self.max is None or n <= self.max)
        unit = "turns" if self.turns else "hits"
        bound = f">= {self.min}" + (f" and <= {self.max}" if self.max is not None else "")
        return Match(ok, hits if ok else (), f"count: {n} {unit} (need {bound}): {out.why}")


@dataclass(frozen=True)
class Silence:
    """Silence gaps of at least ``min_s``, unless ``announced_by`` matched in an utterance that
    ended at most ``lookback_s`` before the gap (请稍等 announces a hold)."""

    min_s: float
    announced_by: Condition | None = None
    lookback_s: float = 10.0

    def evaluate(self, ctx: CallContext) -> Match:
        gaps = [g for g in ctx.features.silences if g.duration_s >= self.min_s]
        announce_ends: list[float] = []
        if self.announced_by is not None and gaps:
            out = self.announced_by.evaluate(ctx)
            announce_ends = [ctx.utterances[h.utt].end_s for h in out.hits if out.matched and h.utt is not None]
        hits = [Hit(None, text=f"silence {g.duration_s:.1f}s at {g.start_s:.1f}s", start_s=g.start_s,
                    end_s=g.start_s + g.duration_s)
                for g in gaps
                if not any(-1.0 <= g.start_s - end <= self.lookback_s for end in announce_ends)]
        if hits:
            return Match(True, tuple(hits), f"silence >= {self.min_s:g}s: {describe_hits(hits)}")
        note = f" ({len(gaps)} announced)" if gaps else ""
        longest = ctx.features.max_silence_s
        return Match(False, (), f"silence: no unannounced gap >= {self.min_s:g}s (longest {longest:.1f}s){note}")


@dataclass(frozen=True)
class Overlaps:
    """At least ``min_count`` overlaps of ``min_s`` or more started by ``interrupter``."""

    interrupter: str
    min_s: float = 1.0
    min_count: int = 1

    def evaluate(self, ctx: CallContext) -> Match:
        found = [o for o in ctx.features.overlaps
                 if o.duration_s >= self.min_s and (self.interrupter == "any" or o.interrupter == self.interrupter)]
        hits = tuple(Hit(None, text=f"{o.interrupter} overlap {o.duration_s:.1f}s at {o.start_s:.1f}s",
                         start_s=o.start_s, end_s=o.start_s + o.duration_s) for o in found)
        why = f"overlap: {len(found)} by {self.interrupter} >= {self.min_s:g}s (need {self.min_count})"
        return Match(len(found) >= self.min_count, hits if len(found) >= self.min_count else (), why)


@dataclass(frozen=True)
class SpeechRate:
    """At least ``min_utterances`` utterances of ``role`` (each with ``min_chars`` or more)
    spoken faster than ``min_cpm`` characters per minute."""

    role: str
    min_cpm: float
    min_utterances: int = 3
    min_chars: int = 10

    def evaluate(self, ctx: CallContext) -> Match:
        fast: list[Hit] = []
        for i, (role, text) in enumerate(zip(ctx.roles, ctx.texts)):
            dur = ctx.utterances[i].duration_s
            if role == self.role and len(text) >= self.min_chars and dur > 0:
                cpm = len(text) / dur * 60
                if cpm > self.min_cpm:
                    fast.append(Hit(i, 0, len(text), f"{cpm:.0f} chars/min"))
        ok = len(fast) >= self.min_utterances
        why = f"speech rate: {len(fast)} {self.role} utterances above {self.min_cpm:g} chars/min (need {self.min_utterances})"
        return Match(ok, tuple(fast) if ok else (), why)


@dataclass(frozen=True)
class Duration:
    min_s: float | None = None
    max_s: float | None = None

    def evaluate(self, ctx: CallContext) -> Match:
        d = ctx.duration_s
        ok = (self.min_s is None or d >= self.min_s) and (self.max_s is None or d <= self.max_s)
        return Match(ok, (), f"duration {d:.1f}s (min {self.min_s}, max {self.max_s})")


@dataclass(frozen=True)
class Meta:
    """Call metadata: direction, business line, and whether the call started outside the
    contact hours (the rule's own ``hours`` or the engine's ``contact_hours`` setting).
    Stored start times are UTC instants, read on the call centre's clock: the rule's own
    ``timezone``, else the engine's (the ``timezone`` setting), so a call dialled at 22:30 in
    Shanghai is 22:30 whatever the database kept. A naive time (a rule test's) is taken as that
    clock already."""

    direction: tuple[str, ...] = ()
    business_line: tuple[str, ...] = ()
    outside_hours: bool | None = None
    hours: str | None = None
    timezone: tzinfo | None = None
    customer: bool | None = None  # the call names its customer (a customer_ref), so other calls can be seen

    def evaluate(self, ctx: CallContext) -> Match:
        meta = ctx.transcript.meta
        if self.customer is not None and bool(meta.customer_ref) != self.customer:
            return Match(False, (), "meta: the customer is " + ("not known" if self.customer else "known"))
        if self.direction and meta.direction not in self.direction:
            return Match(False, (), f"meta: direction {meta.direction!r} not in {list(self.direction)}")
        line, how = meta.business_line, ""
        if line is None and ctx.inferred_line is not None:
            line, how = ctx.inferred_line.business_line, f" ({ctx.inferred_line.note})"
        if self.business_line and line not in self.business_line:
            return Match(False, (), f"meta: business line {line!r}{how} not in {list(self.business_line)}")
        if self.outside_hours is not None:
            if meta.started_at is None:
                return Match(False, (), "meta: start time unknown")
            window = HoursWindow.parse(self.hours or ctx.options.contact_hours)
            started = meta.started_at
            if started.tzinfo is not None:
                started = started.astimezone(self.timezone or ctx.options.tz)
            outside = not window.contains(started.time())
            if outside != self.outside_hours:
                where = "outside" if outside else "inside"
                return Match(False, (), f"meta: started {started:%H:%M}, {where} "
                                          f"{window.start:%H:%M}-{window.end:%H:%M}")
            hit = Hit(None, text=f"started at {started:%H:%M}", start_s=0.0, end_s=0.0)
            return Match(True, (hit,), f"meta: started at {started:%H:%M} "
                                         f"({'outside' if outside else 'inside'} {window.start:%H:%M}-{window.end:%H:%M})")
        return Match(True, (), f"meta: business line {line!r}{how}" if self.business_line else "meta: matches")
