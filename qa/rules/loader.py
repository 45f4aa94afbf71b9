"""Load and validate rule packs: ``pack.yaml`` plus one rule per ``*.yaml`` file. Every
problem is reported as ``file:line: what is wrong``."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..domain import SEVERITIES, SPEAKER_ROLES, PriorContact
from .. import timeutil
from ..errors import ClassifierError, RuleError
from . import conditions as c
from .context import ANY_ROLE, HoursWindow
from .crosscall import Contacts, OwnFinding, PriorFinding
from .match import shorten
from .matchers import (
    DEFAULT_NEGATORS,
    DEFAULT_POST_NEGATORS,
    KeywordOp,
    NegationGuard,
    PinyinOp,
    RegexOp,
    Window,
    compile_regex,
)
from .detect import DetectorOp, pack_detector
from .similar import DEFAULT_THRESHOLD, SimilarOp
from .schema import ABSENT, EXPECTS, PRESENT, Basis, Rule, RulePack, RuleTest, TestTurn
from .scorecard import Scorecard
from .taxonomy import load_taxonomy
from .text import HOMOPHONE, LEVELS, is_cjk, normalize
from .yamlsrc import YList, YMap, load_yaml

log = logging.getLogger(__name__)

PACK_FILE = "pack.yaml"
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
SCOPES = SPEAKER_ROLES + (ANY_ROLE,)
TEXT_OPS = ("keyword", "pinyin", "regex", "similar", "detector")
CROSS_CALL_OPS = ("contacts", "prior_finding", "finding")  # evaluated after the call's own rules
OPERATORS = ("all", "any", "not") + TEXT_OPS + (
    "near", "order", "count", "silence", "overlap", "speech_rate", "duration", "meta") + CROSS_CALL_OPS
RULE_KEYS = ("id", "title", "category", "severity", "role", "fire_when", "when", "condition", "description",
             "points", "basis", "tests")
BASIS_KEYS = ("document", "article", "effective", "url", "note")
MAX_HISTORY_DAYS = 366
TURN_ROLES = {"A": "agent", "C": "customer", "agent": "agent", "customer": "customer", "坐席": "agent", "客户": "customer"}


class _File:
    """Parses one YAML document, raising RuleError at the offending line."""

    def __init__(self, path: Path):
        self.path = path
        self.category = ""  # the rule's category (the detector operator's default)
        self.cross_call = False  # a cross-call operator was parsed
        self.history_days = 0.0  # how far back those operators look

    def fail(self, line: int, message: str) -> RuleError:
        return RuleError(f"{self.path}:{line}: {message}", path=str(self.path))

    def mapping(self, value: Any, line: int, what: str) -> YMap:
        if not isinstance(value, YMap):
            raise self.fail(getattr(value, "line", line), f"{what} must be a mapping, got {_kind(value)}")
        return value

    def keys(self, doc: YMap, allowed: tuple[str, ...], what: str, required: tuple[str, ...] = ()) -> None:
        for key in doc:
            if key not in allowed:
                raise self.fail(doc.line_of(key), f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in doc:
                raise self.fail(doc.line, f"{what} needs {key!r}")

    def text(self, doc: YMap, key: str, what: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(doc.line_of(key), f"{what} {key!r} must be non-empty text, got {_kind(value)}")
        return value.strip()

    def number(self, doc: YMap, key: str, *, minimum: float = 0.0, integer: bool = False, default=None):
        if key not in doc:
            return default
        value = doc[key]
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or value < minimum:
            kind = "an integer" if integer else "a number"
            raise self.fail(doc.line_of(key), f"{key!r} must be {kind} >= {minimum:g}, got {value!r}")
        return value

    def flag(self, doc: YMap, key: str, default: bool = False) -> bool:
        value = doc.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(doc.line_of(key), f"{key!r} must be true or false, got {value!r}")
        return value

    def strings(self, value: Any, line: int, what: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(line, f"{what} must be a non-empty list of text")
        lines = getattr(items, "item_lines", [line] * len(items))
        for item, item_line in zip(items, lines):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(item_line, f"{what} must contain only non-empty text, got {_kind(item)}")
        return tuple(i.strip() for i in items)

    # --- conditions ------------------------------------------------------------------
    def condition(self, value: Any, line: int, role: str) -> c.Condition:
        doc = self.mapping(value, line, "a condition")
        if len(doc) != 1:
            raise self.fail(doc.line, f"a condition has exactly one operator, got {', '.join(doc) or 'none'} "
                                      f"(combine several with all/any)")
        op, arg = next(iter(doc.items()))
        op_line = doc.line_of(op)
        if op not in OPERATORS:
            raise self.fail(op_line, f"unknown operator {op!r} (known: {', '.join(OPERATORS)})")
        return getattr(self, f"_op_{op}")(arg, op_line, role)

    def _children(self, arg: Any, line: int, role: str, op: str) -> tuple[c.Condition, ...]:
        if not isinstance(arg, YList) or not arg:
            raise self.fail(line, f"{op!r} takes a non-empty list of conditions")
        return tuple(self.condition(item, il, role) for item, il in zip(arg, arg.item_lines))

    def _op_all(self, arg, line, role):
        return c.AllOf(self._children(arg, line, role, "all"))

    def _op_any(self, arg, line, role):
        return c.AnyOf(self._children(arg, line, role, "any"))

    def _op_not(self, arg, line, role):
        return c.NotOf(self.condition(arg, line, role))

    def _text_common(self, doc: YMap, role: str) -> dict[str, Any]:
        scope = doc.get("role", role)
        if scope not in SCOPES:
            raise self.fail(doc.line_of("role"), f"role must be one of {', '.join(SCOPES)}, got {scope!r}")
        out: dict[str, Any] = {"role": scope, "word": self.flag(doc, "word")}
        if "window" in doc:
            out["window"] = self._window(doc["window"], doc.line_of("window"))
        if "negation" in doc:
            out["negation"] = self._negation(doc["negation"], doc.line_of("negation"))
        return out

    def _window(self, value: Any, line: int) -> Window:
        doc = self.mapping(value, line, "window")
        names = ("first_turns", "last_turns", "first_s", "last_s")
        self.keys(doc, names, "window")
        if len(doc) != 1:
            raise self.fail(doc.line, f"window takes exactly one of {', '.join(names)}")
        key = next(iter(doc))
        number = self.number(doc, key, minimum=1, integer=key.endswith("turns"))
        return Window(**{key: number})

    def _negation(self, value: Any, line: int) -> NegationGuard | None:
        if isinstance(value, bool):
            return NegationGuard() if value else None
        doc = self.mapping(value, line, "negation")
        self.keys(doc, ("before", "after", "gap", "quoted"), "negation")
        before = self.strings(doc["before"], doc.line_of("before"), "negation before") if "before" in doc else DEFAULT_NEGATORS
        after = self.strings(doc["after"], doc.line_of("after"), "negation after") if "after" in doc else DEFAULT_POST_NEGATORS
        return NegationGuard(tuple(normalize(b) for b in before), tuple(normalize(a) for a in after),
                             self.number(doc, "gap", integer=True, default=2), quoted=self.flag(doc, "quoted", default=True))

    def _terms_op(self, arg: Any, line: int, op: str, extra: tuple[str, ...]) -> tuple[YMap, tuple[str, ...], int]:
        doc = arg if isinstance(arg, YMap) else YMap(terms=arg)
        if not isinstance(arg, YMap):
            doc.line, doc.key_lines = line, {"terms": line}
        self.keys(doc, ("terms", "role", "window", "negation", "word", "at_least", "all") + extra, op, ("terms",))
        terms = tuple(normalize(t) for t in self.strings(doc["terms"], doc.line_of("terms"), f"{op} terms"))
        for term, raw_line in zip(terms, getattr(doc["terms"], "item_lines", [doc.line_of("terms")] * len(terms))):
            if not term:
                raise self.fail(raw_line, f"{op} term is empty once punctuation and spaces are removed")
        if "all" in doc and "at_least" in doc:
            raise self.fail(doc.line_of("all"), "use either 'all' or 'at_least', not both")
        at_least = 0 if self.flag(doc, "all") else self.number(doc, "at_least", minimum=1, integer=True, default=1)
        if at_least > len(set(terms)):
            raise self.fail(doc.line_of("at_least"), f"at_least {at_least} exceeds the {len(set(terms))} distinct terms")
        return doc, terms, at_least

    def _op_keyword(self, arg, line, role):
        doc, terms, at_least = self._terms_op(arg, line, "keyword", ())
        common = self._text_common(doc, role)
        return KeywordOp(terms=terms, at_least=at_least, label=f"keyword[{shorten(terms)}]", **common)

    def _op_pinyin(self, arg, line, role):
        doc, terms, at_least = self._terms_op(arg, line, "pinyin", ("tolerance", "max_errors"))
        for term in terms:
            if not all(is_cjk(ch) for ch in term):
                raise self.fail(doc.line_of("terms"), f"pinyin term {term!r} must be Chinese characters only")
        level = doc.get("tolerance", HOMOPHONE)
        if level not in LEVELS:
            raise self.fail(doc.line_of("tolerance"), f"tolerance must be one of {', '.join(LEVELS)}, got {level!r}")
        max_errors = self.number(doc, "max_errors", integer=True, default=0)
        if max_errors > 1:
            raise self.fail(doc.line_of("max_errors"), f"max_errors may be 0 or 1, got {max_errors}")
        common = self._text_common(doc, role)
        return PinyinOp(terms=terms, level=level, max_errors=max_errors, at_least=at_least,
                        label=f"pinyin[{shorten(terms)}~{level}]", **common)

    def _op_similar(self, arg, line, role):
        doc = self.mapping(arg, line, "similar")
        self.keys(doc, ("examples", "counter_examples", "threshold", "role", "window", "negation"), "similar",
                  ("examples",))
        examples = self.strings(doc["examples"], doc.line_of("examples"), "similar examples")
        counters = (self.strings(doc["counter_examples"], doc.line_of("counter_examples"), "similar counter_examples")
                    if "counter_examples" in doc else ())
        for text in (*examples, *counters):
            if len(normalize(text)) < 3:
                raise self.fail(doc.line_of("examples"), f"similar example {text!r} is too short (3+ characters)")
        threshold = self.number(doc, "threshold", minimum=0.3, default=DEFAULT_THRESHOLD)
        if threshold > 1.0:
            raise self.fail(doc.line_of("threshold"), f"threshold is between 0.3 and 1.0, got {threshold}")
        common = self._text_common(doc, role)
        op = SimilarOp(examples=examples, counter_examples=counters, threshold=float(threshold),
                       label=f"similar[{shorten(list(examples))}]", **common)
        conflicts = op.conflicts()
        if conflicts:
            example, counter, score = conflicts[0]
            raise self.fail(doc.line_of("counter_examples"), f"example {example!r} fires on its own counter-example "
                                                             f"{counter!r} ({score:.2f} >= {threshold}); reword or raise "
                                                             f"the threshold")
        return op

    def _op_detector(self, arg, line, role):
        doc = self.mapping(arg, line, "detector")
        self.keys(doc, ("min_prob", "category", "role", "window"), "detector")
        category = str(doc.get("category", self.category))
        pack_dir = next((p for p in self.path.resolve().parents if (p / PACK_FILE).is_file()), self.path.parent)
        try:
            detector = pack_detector(pack_dir)
        except ClassifierError as e:
            raise self.fail(line, f"detector: {e}") from e
        if category not in detector.index:
            raise self.fail(doc.line_of("category") if "category" in doc else line,
                            f"the pack's detector has no category {category!r} (it has {', '.join(detector.index)})")
        default = detector.thresholds.get(category, 1.0)
        min_prob = float(self.number(doc, "min_prob", minimum=0.01, default=default))
        if min_prob > 1.0:
            raise self.fail(doc.line_of("min_prob"), f"min_prob is a probability (at most 1), got {min_prob}")
        common = self._text_common(doc, role)
        return DetectorOp(category=category, min_prob=min_prob, detector=detector,
                          label=f"detector[{category} >= {min_prob:.2f}]", **common)

    def _op_regex(self, arg, line, role):
        doc = arg if isinstance(arg, YMap) else YMap(pattern=arg)
        if not isinstance(arg, YMap):
            doc.line, doc.key_lines = line, {"pattern": line}
        self.keys(doc, ("pattern", "role", "window", "negation", "word"), "regex", ("pattern",))
        pattern = doc["pattern"]
        if not isinstance(pattern, str) or not pattern:
            raise self.fail(doc.line_of("pattern"), f"regex pattern must be non-empty text, got {_kind(pattern)}")
        try:
            compiled = compile_regex(pattern)
        except ValueError as e:
            raise self.fail(doc.line_of("pattern"), str(e)) from e
        common = self._text_common(doc, role)
        return RegexOp(pattern=pattern, compiled=compiled, label=f"regex[{pattern}]", **common)

    def _op_near(self, arg, line, role):
        doc = self.mapping(arg, line, "near")
        self.keys(doc, ("a", "b", "chars", "turns"), "near", ("a", "b"))
        if ("chars" in doc) == ("turns" in doc):
            raise self.fail(doc.line, "near takes exactly one of 'chars' or 'turns'")
        return c.Near(self.condition(doc["a"], doc.line_of("a"), role), self.condition(doc["b"], doc.line_of("b"), role),
                      chars=self.number(doc, "chars", integer=True), turns=self.number(doc, "turns", integer=True))

    def _op_order(self, arg, line, role):
        doc = arg if isinstance(arg, YMap) else YMap(steps=arg)
        if not isinstance(arg, YMap):
            doc.line, doc.key_lines = line, {"steps": line}
        self.keys(doc, ("steps", "first", "within_turns"), "order", ("steps",))
        steps = self._children(doc["steps"], doc.line_of("steps"), role, "order steps")
        if len(steps) < 2:
            raise self.fail(doc.line_of("steps"), "order needs at least two steps")
        return c.Order(steps, first=self.flag(doc, "first"),
                       within_turns=self.number(doc, "within_turns", minimum=1, integer=True))

    def _op_count(self, arg, line, role):
        doc = self.mapping(arg, line, "count")
        self.keys(doc, ("of", "min", "max", "turns"), "count", ("of",))
        lo = self.number(doc, "min", integer=True, default=1)
        hi = self.number(doc, "max", integer=True)
        if hi is not None and hi < lo:
            raise self.fail(doc.line_of("max"), f"count max {hi} is below min {lo}")
        return c.Count(self.condition(doc["of"], doc.line_of("of"), role), lo, hi, self.flag(doc, "turns"))

    def _op_silence(self, arg, line, role):
        doc = self.mapping(arg, line, "silence")
        self.keys(doc, ("min_s", "announced_by", "lookback_s"), "silence", ("min_s",))
        announced = (self.condition(doc["announced_by"], doc.line_of("announced_by"), role)
                     if "announced_by" in doc else None)
        return c.Silence(self.number(doc, "min_s", minimum=0.1), announced, self.number(doc, "lookback_s", default=10.0))

    def _op_overlap(self, arg, line, role):
        doc = self.mapping(arg, line, "overlap")
        self.keys(doc, ("interrupter", "min_s", "min_count"), "overlap")
        who = doc.get("interrupter", role)
        if who not in SCOPES:
            raise self.fail(doc.line_of("interrupter"), f"interrupter must be one of {', '.join(SCOPES)}, got {who!r}")
        return c.Overlaps(who, self.number(doc, "min_s", default=1.0),
                          self.number(doc, "min_count", minimum=1, integer=True, default=1))

    def _op_speech_rate(self, arg, line, role):
        doc = self.mapping(arg, line, "speech_rate")
        self.keys(doc, ("role", "min_cpm", "min_utterances", "min_chars"), "speech_rate", ("min_cpm",))
        who = doc.get("role", role)
        if who not in SPEAKER_ROLES:
            raise self.fail(doc.line_of("role"), f"speech_rate role must be one of {', '.join(SPEAKER_ROLES)}, got {who!r}")
        return c.SpeechRate(who, self.number(doc, "min_cpm", minimum=1),
                            self.number(doc, "min_utterances", minimum=1, integer=True, default=3),
                            self.number(doc, "min_chars", integer=True, default=10))

    def _op_duration(self, arg, line, role):
        doc = self.mapping(arg, line, "duration")
        self.keys(doc, ("min_s", "max_s"), "duration")
        if not doc:
            raise self.fail(doc.line, "duration needs min_s or max_s")
        return c.Duration(self.number(doc, "min_s"), self.number(doc, "max_s"))

    def _op_meta(self, arg, line, role):
        doc = self.mapping(arg, line, "meta")
        self.keys(doc, ("direction", "business_line", "outside_hours", "hours", "timezone", "customer"), "meta")
        if not doc:
            raise self.fail(doc.line, "meta needs at least one of direction, business_line, outside_hours, customer")
        hours = None
        if "hours" in doc:
            hours = self.text(doc, "hours", "meta")
            try:
                HoursWindow.parse(hours)
            except ValueError as e:
                raise self.fail(doc.line_of("hours"), str(e)) from e
        direction = self.strings(doc["direction"], doc.line_of("direction"), "direction") if "direction" in doc else ()
        lines = self.strings(doc["business_line"], doc.line_of("business_line"), "business_line") if "business_line" in doc else ()
        outside = self.flag(doc, "outside_hours") if "outside_hours" in doc else None
        zone = None
        if "timezone" in doc:
            name = self.text(doc, "timezone", "meta")
            try:
                zone = timeutil.zone(name)
            except ValueError as e:
                raise self.fail(doc.line_of("timezone"), f"unknown time zone {name!r} (an IANA name such as "
                                                         f"Asia/Shanghai)") from e
        customer = self.flag(doc, "customer") if "customer" in doc else None
        return c.Meta(direction, lines, outside, hours, zone, customer)

    # --- cross-call conditions ------------------------------------------------------------
    def _looks_back(self, days: float) -> float:
        """Note that the rule reads the customer's calls of the last ``days`` days."""
        self.cross_call = True
        self.history_days = max(self.history_days, days)
        return days

    def _days(self, doc: YMap, key: str) -> float:
        days = self.number(doc, key, minimum=0.01)
        if days > MAX_HISTORY_DAYS:
            raise self.fail(doc.line_of(key), f"{key!r} is at most {MAX_HISTORY_DAYS} days, got {days!r}")
        return self._looks_back(float(days))

    def _kinds(self, doc: YMap) -> tuple[tuple[str, ...], tuple[str, ...]]:
        direction = self.strings(doc["direction"], doc.line_of("direction"), "direction") if "direction" in doc else ()
        lines = (self.strings(doc["business_line"], doc.line_of("business_line"), "business_line")
                 if "business_line" in doc else ())
        return direction, lines

    def _category(self, doc: YMap, what: str) -> str:
        category = self.text(doc, "category", what)
        if category not in load_taxonomy():
            raise self.fail(doc.line_of("category"), f"unknown category {category!r} in {what}")
        return category

    def _op_contacts(self, arg, line, role):
        doc = self.mapping(arg, line, "contacts")
        self.keys(doc, ("per", "within_days", "max", "direction", "business_line", "effective_only"), "contacts",
                  ("max",))
        if ("per" in doc) == ("within_days" in doc):
            raise self.fail(doc.line, "contacts needs either per: day or within_days: N")
        if "per" in doc and doc["per"] != "day":
            raise self.fail(doc.line_of("per"), f"per must be 'day', got {doc['per']!r}")
        days = self._days(doc, "within_days") if "within_days" in doc else self._looks_back(1.0)
        direction, lines = self._kinds(doc)
        return Contacts(max=self.number(doc, "max", minimum=1, integer=True), per_day="per" in doc, days=days,
                        direction=direction, business_line=lines,
                        effective_only=self.flag(doc, "effective_only", True))

    def _op_prior_finding(self, arg, line, role):
        doc = self.mapping(arg, line, "prior_finding")
        self.keys(doc, ("category", "within_days", "direction", "business_line"), "prior_finding",
                  ("category", "within_days"))
        direction, lines = self._kinds(doc)
        return PriorFinding(self._category(doc, "prior_finding"), self._days(doc, "within_days"),
                            direction, lines)

    def _op_finding(self, arg, line, role):
        doc = self.mapping(arg, line, "finding")
        self.keys(doc, ("category",), "finding", ("category",))
        self.cross_call = True
        return OwnFinding(self._category(doc, "finding"))

    # --- regulation citations --------------------------------------------------------------
    def basis(self, value: Any, line: int) -> tuple[Basis, ...]:
        items = value if isinstance(value, YList) else None
        if not items:
            raise self.fail(line, "basis must be a non-empty list of {document, article, effective}")
        out = []
        for item, item_line in zip(items, items.item_lines):
            doc = self.mapping(item, item_line, "a basis")
            self.keys(doc, BASIS_KEYS, "a basis", ("document",))
            effective = None
            if "effective" in doc:
                raw = doc["effective"]
                try:
                    effective = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
                except ValueError as e:
                    raise self.fail(doc.line_of("effective"), f"effective must be a date (YYYY-MM-DD), got {raw!r}") from e
            url = str(doc.get("url", "")).strip()
            if url and not url.startswith(("https://", "http://")):
                raise self.fail(doc.line_of("url"), f"url must start with https://, got {url!r}")
            out.append(Basis(self.text(doc, "document", "basis"),
                             self.text(doc, "article", "basis") if "article" in doc else "",
                             effective, url, str(doc.get("note", "")).strip()))
        return tuple(out)

    # --- tests ---------------------------------------------------------------------------
    def tests(self, value: Any, line: int) -> tuple[RuleTest, ...]:
        if not isinstance(value, YList):
            raise self.fail(line, "tests must be a list")
        return tuple(self._test(item, il) for item, il in zip(value, value.item_lines))

    def _test(self, value: Any, line: int) -> RuleTest:
        doc = self.mapping(value, line, "a test")
        self.keys(doc, ("name", "expect", "dialogue", "started_at", "direction", "business_line", "customer_ref",
                        "history"), "a test", ("expect", "dialogue"))
        expect = doc["expect"]
        if expect not in EXPECTS:
            raise self.fail(doc.line_of("expect"), f"expect must be one of {', '.join(EXPECTS)}, got {expect!r}")
        dialogue = doc["dialogue"]
        if not isinstance(dialogue, YList) or not dialogue:
            raise self.fail(doc.line_of("dialogue"), "dialogue must be a non-empty list of turns")
        turns = tuple(self._turn(t, tl) for t, tl in zip(dialogue, dialogue.item_lines))
        started = self._when(doc) if "started_at" in doc else None
        history = ()
        if "history" in doc:
            items = doc["history"]
            if not isinstance(items, YList):
                raise self.fail(doc.line_of("history"), "history must be a list of the customer's earlier calls")
            history = tuple(self._prior(item, il, n) for n, (item, il) in enumerate(zip(items, items.item_lines)))
        customer = doc.get("customer_ref", "customer-1" if history else None)
        return RuleTest(expect, turns, doc.line, str(doc.get("name", "")), started,
                        doc.get("direction"), doc.get("business_line"),
                        None if customer is None else str(customer), history)

    def _when(self, doc: YMap) -> datetime:
        raw = doc["started_at"]
        try:
            return raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
        except ValueError as e:
            raise self.fail(doc.line_of("started_at"), f"started_at must be an ISO date-time, got {raw!r}") from e

    def _prior(self, value: Any, line: int, n: int) -> PriorContact:
        doc = self.mapping(value, line, "an earlier call")
        self.keys(doc, ("call_id", "started_at", "direction", "business_line", "categories", "effective"),
                  "an earlier call", ("started_at",))
        categories = (self.strings(doc["categories"], doc.line_of("categories"), "categories")
                      if "categories" in doc else ())
        unknown = [k for k in categories if k not in load_taxonomy()]
        if unknown:
            raise self.fail(doc.line_of("categories"), f"unknown category {unknown[0]!r}")
        return PriorContact(call_id=str(doc.get("call_id", f"earlier-{n + 1}")), started_at=self._when(doc),
                            direction=doc.get("direction"), business_line=doc.get("business_line"),
                            effective=self.flag(doc, "effective", True), categories=frozenset(categories))

    def _turn(self, value: Any, line: int) -> TestTurn:
        if isinstance(value, str):
            who, sep, text = value.partition(":")
            if not sep or who.strip() not in TURN_ROLES:
                raise self.fail(line, f"a turn looks like 'A: text' (agent) or 'C: text' (customer), got {value!r}")
            return TestTurn(TURN_ROLES[who.strip()], text.strip())
        doc = self.mapping(value, line, "a turn")
        if "pause" in doc:
            self.keys(doc, ("pause",), "a pause turn")
            return TestTurn(None, pause_s=self.number(doc, "pause", minimum=0.1))
        self.keys(doc, tuple(TURN_ROLES) + ("cpm", "overlap"), "a turn")
        said = [k for k in doc if k in TURN_ROLES]
        if len(said) != 1:
            raise self.fail(doc.line, "a turn names exactly one speaker (A or C)")
        return TestTurn(TURN_ROLES[said[0]], self.text(doc, said[0], "turn"),
                        cpm=self.number(doc, "cpm", minimum=1, default=270.0),
                        overlap_s=self.number(doc, "overlap", default=0.0))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, YMap):
        return "a mapping"
    if isinstance(value, YList):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def parse_rule(path: Path) -> Rule:
    """Load one rule file; RuleError names the file and line of the first problem."""
    f = _File(path)
    doc = load_yaml(path)
    doc = f.mapping(doc, 1, "a rule file")
    f.keys(doc, RULE_KEYS, "a rule", ("id", "title", "category", "condition"))
    rule_id = f.text(doc, "id", "rule")
    if not RULE_ID.match(rule_id):
        raise f.fail(doc.line_of("id"), f"rule id {rule_id!r} must be lower-case letters, digits, '.', '_' or '-'")
    taxonomy = load_taxonomy()
    category = f.text(doc, "category", "rule")
    if category not in taxonomy:
        close = [k for k in taxonomy if k.split(".")[0] == category.split(".")[0]] or list(taxonomy)[:5]
        raise f.fail(doc.line_of("category"), f"unknown category {category!r} (e.g. {', '.join(close)})")
    cat = taxonomy[category]
    severity = doc.get("severity", cat.severity)
    if severity not in SEVERITIES:
        raise f.fail(doc.line_of("severity"), f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    role = doc.get("role", cat.role)
    if role not in SCOPES:
        raise f.fail(doc.line_of("role"), f"role must be one of {', '.join(SCOPES)}, got {role!r}")
    fire_when = doc.get("fire_when", ABSENT if cat.kind == "must_say" else PRESENT)
    if fire_when not in (PRESENT, ABSENT):
        raise f.fail(doc.line_of("fire_when"), f"fire_when must be {PRESENT} or {ABSENT}, got {fire_when!r}")
    f.category = category
    condition = f.condition(doc["condition"], doc.line_of("condition"), role)
    when = f.condition(doc["when"], doc.line_of("when"), role) if "when" in doc else None
    return Rule(
        id=rule_id, title=f.text(doc, "title", "rule"), category=category, kind=cat.kind, severity=severity,
        role=role, fire_when=fire_when, condition=condition, when=when,
        description=str(doc.get("description", "")).strip(), points=f.number(doc, "points"),
        source=str(path), tests=f.tests(doc["tests"], doc.line_of("tests")) if "tests" in doc else (),
        basis=f.basis(doc["basis"], doc.line_of("basis")) if "basis" in doc else (),
        cross_call=f.cross_call, history_days=f.history_days,
    )


def pack_files(pack_dir: Path) -> list[Path]:
    """Every file of the pack that counts towards its sha256, in sorted order."""
    return sorted(p for p in pack_dir.rglob("*") if p.is_file() and not any(
        part.startswith(".") or part == "__pycache__" for part in p.relative_to(pack_dir).parts))


def pack_sha256(pack_dir: Path) -> str:
    h = hashlib.sha256()
    for p in pack_files(pack_dir):
        h.update(p.relative_to(pack_dir).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def _pack_header(path: Path) -> tuple[str, str, str, Scorecard]:
    f = _File(path)
    doc = f.mapping(load_yaml(path), 1, "pack.yaml")
    f.keys(doc, ("name", "version", "description", "scorecard"), "pack.yaml", ("name", "version"))
    name = f.text(doc, "name", "pack")
    version = str(doc["version"]).strip()
    card = Scorecard()
    if "scorecard" in doc:
        sc = f.mapping(doc["scorecard"], doc.line_of("scorecard"), "scorecard")
        f.keys(sc, ("base", "severity_points", "rule_points", "fatal_fails"), "scorecard")
        points = {}
        for key in ("severity_points", "rule_points"):
            if key in sc:
                table = f.mapping(sc[key], sc.line_of(key), key)
                points[key] = {k: f.number(table, k) for k in table}
        card = Scorecard(base=f.number(sc, "base", default=100.0),
                         severity_points={**card.severity_points, **points.get("severity_points", {})},
                         rule_points=points.get("rule_points", {}),
                         fatal_fails=f.flag(sc, "fatal_fails", True))
        try:
            card.validate()
        except ValueError as e:
            raise f.fail(sc.line, str(e)) from e
    return name, version, str(doc.get("description", "")).strip(), card


@dataclass
class LintReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pack: RulePack | None = None


def lint_pack(pack_dir: str | Path, min_tests: int = 3) -> LintReport:
    """Validate every file of a pack, collecting one error per broken file; warns about rules
    with fewer than ``min_tests`` positive or negative tests."""
    pack_dir = Path(pack_dir)
    report = LintReport()
    header = pack_dir / PACK_FILE
    if not header.is_file():
        report.errors.append(f"{pack_dir}: not a rule pack (no {PACK_FILE})")
        return report
    try:
        name, version, description, card = _pack_header(header)
    except RuleError as e:
        report.errors.append(str(e))
        return report
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in pack_files(pack_dir):
        if path.suffix not in (".yaml", ".yml") or path.name == PACK_FILE:
            continue
        try:
            rule = parse_rule(path)
        except RuleError as e:
            report.errors.append(str(e))
            continue
        if rule.id in seen:
            report.errors.append(f"{path}:1: duplicate rule id {rule.id!r} (also in {seen[rule.id]})")
            continue
        seen[rule.id] = str(path)
        rules.append(rule)
        pos = sum(t.expect == "fire" for t in rule.tests)
        neg = len(rule.tests) - pos
        if pos < min_tests or neg < min_tests:
            report.warnings.append(f"{path}: rule {rule.id} has {pos} positive and {neg} negative tests "
                                   f"(want at least {min_tests} of each)")
    for rid in card.rule_points:
        if rid not in seen:
            report.errors.append(f"{header}: scorecard rule_points names unknown rule {rid!r}")
    if not rules and not report.errors:
        report.errors.append(f"{pack_dir}: the pack has no rules")
    if not report.errors:
        report.pack = RulePack(name, version, pack_dir.resolve(), pack_sha256(pack_dir), tuple(rules), card, description)
    return report


def load_pack(pack_dir: str | Path) -> RulePack:
    """Load a pack, raising RuleError listing every broken file."""
    report = lint_pack(pack_dir)
    if report.errors:
        raise RuleError("invalid rule pack:\n" + "\n".join(report.errors), path=str(pack_dir))
    log.info("loaded rule pack %s %s (%d rules, sha256 %s)", report.pack.name, report.pack.version,
             len(report.pack.rules), report.pack.sha256[:12])
    return report.pack
