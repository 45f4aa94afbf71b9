"""Text operators: keyword, pinyin-tolerant keyword and regex, with the filters they share
(role scope, position window, negation guard, jieba word boundaries)."""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field

import re2
from re2 import _re2

from .context import ANY_ROLE, CallContext, Hit
from .match import Match, describe_hits
from .text import sound_table

DEFAULT_NEGATORS = ("不", "没", "没有", "无", "非", "未", "别", "并非", "不能保证", "无法保证", "不保证",
                    "不承诺", "谈不上", "算不上", "不存在", "不是", "不敢说", "不敢讲", "不能说", "不好说", "不敢保证")
DEFAULT_POST_NEGATORS = ("是不可能的", "不可能", "是不存在的", "做不到")
# Denials that reach further, to anywhere in the same clause within CLAUSE_GAP characters:
# 没有任何理财是稳赚不赔的, 不会跟您承诺保本, 不查征信是没法审批的, 一定能批的说法, 稳赚不赔的理财都是骗子
CLAUSE_NEGATORS = ("没有任何", "不存在", "不能承诺", "不会承诺", "不会跟您承诺", "不能跟您承诺", "没法跟您说",
                   "不能跟您说", "没有哪个", "没有哪家", "没有一款", "从来没有", "绝不会", "并不是", "不是指", "不等于",
                   "没办法提前", "没法提前", "不能提前告诉", "没办法告诉", "没法告诉",
                   # the act put in someone else's mouth, as fraud warnings do (任何人让您先交钱都不要信)
                   "如果有人", "要是有人", "要是有谁", "有谁让您", "有人让您", "任何人让您", "谁让您", "有人叫您",
                   "别人让您")
CLAUSE_POST_NEGATORS = ("的说法", "这种说法", "这个说法", "是不对的", "是不规范的", "是违规的", "是诈骗", "不准确",
                        "是骗人的", "是骗子", "是没法", "是不可能的", "是不存在的", "是假的", "不合适", "没办法说", "没法说",
                        "不能这么说")
CLAUSE_GAP = 10
# Phrases containing a negator that do not negate what follows: 没问题，保本保息 is a promise,
# and A-not-A questions (是不是有病) ask rather than deny.
NOT_NEGATIONS = ("没问题", "不错", "不用担心", "别担心", "不用怕", "不少", "不仅", "无论", "不管", "非常",
                 "是不是", "是否", "要不要", "能不能", "会不会", "有没有", "可不可以", "对不对", "好不好")


def _inside_exception(text: str, s: int, neg: str) -> bool:
    for phrase in NOT_NEGATIONS:
        k = phrase.find(neg)
        if k >= 0 and s - k >= 0 and text.startswith(phrase, s - k):
            return True
    return False


_tokenizer = None
_words: set[str] = set()


def word_tokenizer(words: tuple[str, ...] = ()):
    """A private jieba tokenizer (the global one belongs to whoever else imports jieba),
    loaded on first use, with ``words`` in its dictionary so that a rule term is never split."""
    global _tokenizer
    if _tokenizer is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _tokenizer = jieba.Tokenizer()
        _tokenizer.initialize()
    for word in words:
        if word not in _words:
            _tokenizer.add_word(word)
            _words.add(word)
    return _tokenizer


@dataclass(frozen=True)
class Window:
    """Where in the call a text operator looks: the role's first or last N turns, or the
    first or last N seconds of the call. Exactly one field is set."""

    first_turns: int | None = None
    last_turns: int | None = None
    first_s: float | None = None
    last_s: float | None = None

    def allows(self, ctx: CallContext, utt: int) -> bool:
        if self.first_turns is not None:
            return ctx.turn_no[utt] < self.first_turns
        if self.last_turns is not None:
            return ctx.turn_counts[ctx.roles[utt]] - ctx.turn_no[utt] <= self.last_turns
        u = ctx.utterances[utt]
        if self.first_s is not None:
            return u.start_s < self.first_s
        return u.end_s > ctx.duration_s - (self.last_s or 0.0)

    def describe(self) -> str:
        for name in ("first_turns", "last_turns", "first_s", "last_s"):
            value = getattr(self, name)
            if value is not None:
                return f"{name}={value:g}"
        return ""


@dataclass(frozen=True)
class NegationGuard:
    """Drops a hit preceded by a negator (at most ``gap`` characters before it) or followed
    by a post-negator (不保本 / 不能保证保本 / 保本是不可能的 are not promises)."""

    before: tuple[str, ...] = DEFAULT_NEGATORS
    after: tuple[str, ...] = DEFAULT_POST_NEGATORS
    gap: int = 2
    clause_before: tuple[str, ...] = CLAUSE_NEGATORS
    clause_after: tuple[str, ...] = CLAUSE_POST_NEGATORS
    quoted: bool = True  # words in quotation marks are reported, not said (off for a warning read out)

    def negated(self, text: str, breaks: frozenset[int], start: int, end: int) -> bool:
        return self._near(text, breaks, start, end) or self._in_clause(text, breaks, start, end)

    def _in_clause(self, text: str, breaks: frozenset[int], start: int, end: int) -> bool:
        """A clause negator before the hit or a clause post-negator after it, in its clause."""
        lo = max([b for b in breaks if b <= start] + [0, start - CLAUSE_GAP])
        hi = min([b for b in breaks if b >= end] + [len(text), end + CLAUSE_GAP])
        before, after = text[lo:start], text[end:hi]
        return any(neg in before for neg in self.clause_before) or any(post in after for post in self.clause_after)

    def _near(self, text: str, breaks: frozenset[int], start: int, end: int) -> bool:
        for neg in self.before:
            for g in range(self.gap + 1):
                s = start - g - len(neg)
                if (s >= 0 and text.startswith(neg, s) and not _inside_exception(text, s, neg)
                        and not any(s + len(neg) <= b <= start for b in breaks)):
                    return True
        for post in self.after:
            for g in range(self.gap + 1):
                if text.startswith(post, end + g) and not any(end <= b <= end + g for b in breaks):
                    return True
        return False


@dataclass(frozen=True, kw_only=True)
class TextOp:
    """Common part of the text operators. ``role`` is resolved at load time (rule scope
    unless the operator names its own)."""

    role: str
    window: Window | None = None
    negation: NegationGuard | None = None
    word: bool = False
    # How many distinct terms must match: 0 means all of them (keyword and pinyin only).
    at_least: int = 1
    label: str = field(default="", compare=False)

    def candidates(self, ctx: CallContext) -> list[Hit]:
        raise NotImplementedError

    def scope(self, ctx: CallContext) -> str:
        """The role whose utterances are searched: the operator's, or either role while the
        engine checks a required statement on a call whose roles were inferred (a greeting
        the role model gave to the customer was still said)."""
        return ANY_ROLE if ctx.lenient_roles else self.role

    @property
    def term_count(self) -> int:
        return 1

    @property
    def words(self) -> tuple[str, ...]:
        """Terms the word-boundary check must keep whole."""
        return ()

    def find(self, ctx: CallContext) -> tuple[list[Hit], dict[str, int]]:
        """Hits after the filters, and how many candidates each filter dropped (for explain)."""
        dropped = {"window": 0, "negated": 0, "quoted": 0, "word": 0}
        kept: list[Hit] = []
        tokenizer = word_tokenizer(self.words) if self.word else None
        for hit in self.candidates(ctx):
            if self.window is not None and not self.window.allows(ctx, hit.utt):
                dropped["window"] += 1
            elif self.negation is not None and self.negation.negated(ctx.texts[hit.utt], ctx.breaks[hit.utt],
                                                                      hit.start, hit.end):
                dropped["negated"] += 1
            # words in quotation marks are reported (「稳赚不赔」是诈骗话术), which the guard
            # treats like a negation
            elif (self.negation is not None and self.negation.quoted
                  and any(s <= hit.start and hit.end <= e for s, e in ctx.quoted[hit.utt])):
                dropped["quoted"] += 1
            elif tokenizer is not None and not {hit.start, hit.end} <= ctx.word_bounds(hit.utt, tokenizer):
                dropped["word"] += 1
            else:
                kept.append(hit)
        return kept, dropped

    def evaluate(self, ctx: CallContext) -> Match:
        hits, dropped = self.find(ctx)
        need = self.term_count if self.at_least == 0 else self.at_least
        found = {h.term or h.text for h in hits}
        where = f"{self.label} ({self.scope(ctx)}{', ' + self.window.describe() if self.window else ''})"
        notes = ", ".join(f"{n} {k}" for k, n in dropped.items() if n)
        notes = f" [ignored: {notes}]" if notes else ""
        if hits and len(found) >= need:
            return Match(True, tuple(hits), f"{where} matched {describe_hits(hits)}{notes}")
        if hits:
            return Match(False, (), f"{where} matched only {len(found)} of the {need} terms needed{notes}")
        return Match(False, (), f"{where}: no match{notes}")

    def _locate(self, ctx: CallContext, start: int, end: int, text: str, term: str = "") -> Hit:
        utt, off = ctx.role_text(self.scope(ctx)).locate(start)
        return Hit(utt, off, off + (end - start), text, term=term)


@dataclass(frozen=True, kw_only=True)
class KeywordOp(TextOp):
    terms: tuple[str, ...]
    pattern: re.Pattern | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Escaped literals only, so the backtracking engine stays linear here; longest first
        # so that 保本保息 wins over 保本.
        object.__setattr__(self, "pattern", re.compile(
            "|".join(re.escape(t) for t in sorted(self.terms, key=len, reverse=True))))

    @property
    def term_count(self) -> int:
        return len(self.terms)

    @property
    def words(self) -> tuple[str, ...]:
        return self.terms

    def candidates(self, ctx: CallContext) -> list[Hit]:
        rt = ctx.role_text(self.scope(ctx))
        return [self._locate(ctx, m.start(), m.end(), m.group()) for m in self.pattern.finditer(rt.text)]


@dataclass(frozen=True, kw_only=True)
class PinyinOp(TextOp):
    """Matches terms by sound: the transcript and the terms are compared as sound strings
    (one symbol per syllable at the tolerance level), so 报本保锡 matches 保本保息 with one
    scan per call. Terms of ``min_len_for_errors`` syllables or more may also have up to
    ``max_errors`` wrong syllables (never the first or last). A hit records its term."""

    terms: tuple[str, ...]
    level: str
    max_errors: int = 0
    min_len_for_errors: int = 4
    compiled: object = field(default=None, init=False, compare=False, repr=False)
    # sound string -> term, for telling which term a hit sounded like
    owners: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)
    # term -> {position: main-reading symbol} where only the term's own character may stand
    exact: dict[str, dict[int, str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        table = sound_table(self.level)
        alternatives = []
        # Longest first: leftmost-first alternation then prefers 保本保息 over 保本.
        for term in sorted(self.terms, key=len, reverse=True):
            classes = table.term_classes(term)
            alternatives.append("".join(classes))
            if exact := table.exact_only(term):
                self.exact[term] = exact
            for combo in itertools.product(*(c[1:-1] for c in classes)):
                self.owners.setdefault("".join(combo), term)
            if self.max_errors and len(classes) >= self.min_len_for_errors:
                alternatives += ["".join(classes[:j] + ["[^\\n]"] + classes[j + 1:])
                                 for j in range(1, len(classes) - 1)]
        # No capture groups: RE2 then reports a match without the submatch pass.
        object.__setattr__(self, "compiled", compile_regex("|".join(alternatives)))

    @property
    def term_count(self) -> int:
        return len(self.terms)

    def _owner(self, sound: str) -> str:
        term = self.owners.get(sound)
        if term is None:  # a match with one wrong syllable: the closest term of that length
            term = max((t for t in self.terms if len(t) == len(sound)),
                       key=lambda t: sum(a in b for a, b in zip(sound, self._classes(t))))
        return term

    def _classes(self, term: str) -> list[str]:
        return sound_table(self.level).term_classes(term)

    def candidates(self, ctx: CallContext) -> list[Hit]:
        if not ctx.may_match(self):
            return []
        rt = ctx.role_text(self.scope(ctx))
        sounds = ctx.sound_text(self.scope(ctx), self.level)
        hits = []
        for bs, be in self.compiled.spans(sounds):
            utt, s, e = rt.locate_bytes(bs, be)
            text = ctx.texts[utt]
            sound = sounds[bs:be].decode()
            term = self._owner(sound)
            exact = self.exact.get(term)
            if exact and len(term) == e - s and any(
                    sound[n] == sym and text[s + n] != term[n] for n, sym in exact.items()):
                continue
            hits.append(Hit(utt, s, e, text[s:e], term=term))
        return hits


# Constructs RE2 rejects; naming them gives the rule author a better message than RE2's own.
_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookahead/lookbehind assertions ((?=...), (?!...), (?<=...), (?<!...))"),
    (re.compile(r"\\[1-9]|\(\?P=|\\k<"), "backreferences (\\1, (?P=name))"),
    (re.compile(r"\(\?>"), "atomic groups ((?>...))"),
)


class Regex:
    """A pattern compiled on RE2 (linear time, no catastrophic backtracking on long calls),
    scanned over UTF-8 bytes: the ``re2`` module's own ``finditer`` converts every match's
    offsets to characters in Python, which cost more than the matching on a call's text."""

    __slots__ = ("pattern", "_program")

    def __init__(self, pattern: str, options: re2.Options) -> None:
        self.pattern = pattern
        self._program = _re2.RE2(pattern.encode(), options)
        if not self._program.ok():
            raise re2.error(self._program.error())

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """Byte spans of the leftmost non-overlapping matches (empty matches skipped)."""
        out, pos, end = [], 0, len(data)
        while pos <= end:
            s, e = self._program.Match(_UNANCHORED, data, pos, end)[0]
            if s < 0:
                break
            if e > s:
                out.append((s, e))
                pos = e
            else:  # an empty match: step over one character
                pos = s + 1
                while pos < end and data[pos] & 0xC0 == 0x80:
                    pos += 1
        return out


_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_nl = True  # never match across the utterance separator
    return options


def compile_regex(pattern: str) -> Regex:
    """Compile on RE2. Raises ValueError naming the unsupported construct."""
    for probe, what in _UNSUPPORTED:
        if probe.search(pattern):
            raise ValueError(f"regex {pattern!r} uses {what}, which the linear-time engine (RE2) does not support")
    try:
        return Regex(pattern, _options())
    except re2.error as e:
        detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"regex {pattern!r} is not valid for RE2: {detail}") from e


class Prefilter:
    """The patterns of a pack's pinyin operators as one RE2 set per tolerance level: one
    pass over the whole call's sound string tells which operators can match anywhere in it,
    and the others (about 60 % of them on the benchmark's calls) skip their own scan. A match
    never crosses an utterance, so one that no role's text holds is not in the joined text
    of both either. (The hand-written regexes stay out: as one set their automaton outgrows
    RE2's memory budget and the pass costs what the scans it saves do.)"""

    def __init__(self, ops) -> None:
        groups: dict[str, list[PinyinOp]] = {}
        for op in ops:
            if isinstance(op, PinyinOp):
                groups.setdefault(op.level, []).append(op)
        self._sets: dict[str, object] = {}
        self._slot: dict[int, tuple[str, int]] = {}
        for key, members in groups.items():
            patterns = list(dict.fromkeys(op.compiled.pattern for op in members))
            index = {p: n for n, p in enumerate(patterns)}
            program = _re2.Set(_UNANCHORED, _options())
            for p in patterns:
                program.Add(p.encode())
            if not program.Compile():  # over RE2's memory budget: every operator scans itself
                continue
            self._sets[key] = program
            for op in members:
                self._slot[id(op)] = (key, index[op.compiled.pattern])

    def matched(self, ctx: CallContext, level: str) -> frozenset[int]:
        return frozenset(self._sets[level].Match(ctx.sound_text(ANY_ROLE, level)))

    def allows(self, ctx: CallContext, op) -> bool:
        slot = self._slot.get(id(op))
        if slot is None:
            return True
        key, n = slot
        return n in ctx.cached(("prefilter", key), lambda: self.matched(ctx, key))


@dataclass(frozen=True, kw_only=True)
class RegexOp(TextOp):
    pattern: str
    compiled: object = field(compare=False, repr=False)

    def candidates(self, ctx: CallContext) -> list[Hit]:
        rt = ctx.role_text(self.scope(ctx))
        hits = []
        for bs, be in self.compiled.spans(rt.data):
            utt, s, e = rt.locate_bytes(bs, be)
            hits.append(Hit(utt, s, e, ctx.texts[utt][s:e]))
        return hits
