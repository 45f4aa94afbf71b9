"""PII masking for transcripts, evidence and comments (used by exports, reports and the UI).

What is masked:

- written numbers (ASCII or full-width digits) that *validate*: 18-digit resident ID numbers
  (GB 11643 checksum, last character may be X), bank card numbers of 16-19 digits (Luhn),
  mobile numbers (1[3-9] + 9 digits, optionally behind +86) and landlines (0 + area code +
  local number, 10-12 digits). Validation is what keeps amounts, order numbers and dates
  readable: they rarely pass a checksum and never the mobile/landline shapes. Without
  validation are masked: written numbers of 12-19 digits (a card or ID number that ASR wrote
  with a digit dropped or misheard: seen on the bundled sample S15), and numbers of 7+ digits
  right after 电话/手机/卡号/账号/身份证...;
- numbers spoken digit by digit in Chinese numerals (零〇一二三四五六七八九, and the phone
  readings 幺=1, 两=2, 洞=0, 拐=7, 勾=9), alone or mixed with digits, with spaces, commas or
  pauses (…, 嗯, 呃) between groups, of phone/ID/card length (7 or more digits). ASR errors
  make checksums meaningless for these, so length decides. Ordinary spoken numbers are not
  read digit by digit: amounts, dates and times carry 十/百/千/万/年/月/点/分 between their
  digits, which ends a run;
- e-mail addresses.

Masking replaces each masked character with ``*`` and keeps separators, so the redacted text
has the same length as the original and every span is valid in both.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

ID_CARD = "id_card"
BANK_CARD = "bank_card"
MOBILE = "mobile"
LANDLINE = "landline"
EMAIL = "email"
DIGITS = "digits"  # a long spoken digit sequence whose length fits no single kind
KINDS = (ID_CARD, BANK_CARD, MOBILE, LANDLINE, EMAIL, DIGITS)

# Shortest digit sequence that is masked: a local landline number without area code.
MIN_DIGITS = 7

_SPOKEN_DIGITS = {
    "零": "0", "〇": "0", "洞": "0",
    "一": "1", "幺": "1",
    "二": "2", "两": "2", "兩": "2",
    "三": "3", "四": "4", "五": "5", "六": "6",
    "七": "7", "拐": "7",
    "八": "8",
    "九": "9", "勾": "9",
}
_FULLWIDTH = {chr(0xFF10 + i): str(i) for i in range(10)}
_DIGIT_VALUE = {**{str(i): str(i) for i in range(10)}, **_FULLWIDTH, **_SPOKEN_DIGITS}
_ID_X = {"X": "X", "x": "X", "叉": "X"}

_D = "0-9" + "".join(_FULLWIDTH) + "".join(_SPOKEN_DIGITS)
# Between groups of one number: spaces, punctuation people write between digit groups, and
# the fillers ASR keeps for a pause. At most three in a row, so two numbers a sentence apart
# do not fuse.
_SEP_PLAIN = " \t\r\n\u3000,，、.。-–—…~·:：()（）嗯呃额啊"
_SEP_CHARS = re.escape(_SEP_PLAIN)
_RUN_RE = re.compile(rf"[{_D}](?:[{_SEP_CHARS}]{{0,3}}[{_D}])*(?:[{_SEP_CHARS}]{{0,2}}[Xx叉])?")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# A number directly followed by a unit, or preceded by a currency sign, is an amount.
_AMOUNT_AFTER = set("元块万亿%％")
_AMOUNT_BEFORE = set("¥￥$")
_PREFILTER = re.compile(rf"[{_D}@]")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_SHAPE = re.compile(r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dX]")
_MOBILE = re.compile(r"(?:86)?1[3-9]\d{9}")
_LANDLINE = re.compile(r"0[1-9]\d{8,10}")
# Written numbers of ID/card length are masked even when they fail validation (ASR slips);
# longer ones are reference numbers, not PII.
MIN_UNVALIDATED_DIGITS = 12
MAX_UNVALIDATED_DIGITS = 19
# Words that announce a number: a written number of 7+ digits right after one is masked even
# when it validates as nothing.
_CONTEXT_RE = re.compile(r"(?:电话|座机|号码|手机|手机号|联系方式|卡号|账号|帐号|身份证|身份证号|证件号)[是为：:\s]{0,3}$")
# Written numbers longer than any kind are not worth splitting further.
_MAX_CANDIDATE_DIGITS = 21


@dataclass(frozen=True)
class Span:
    kind: str
    start: int  # character offsets, end exclusive; the same in the original and redacted text
    end: int


@dataclass(frozen=True)
class Redaction:
    text: str
    spans: tuple[Span, ...]

    @property
    def changed(self) -> bool:
        return bool(self.spans)


def id_checksum_ok(digits: str) -> bool:
    """GB 11643-1999 check character of an 18-character resident ID number."""
    if not _ID_SHAPE.fullmatch(digits):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == digits[17]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def classify_written(digits: str) -> str | None:
    """The PII kind of a written digit string, or None when it validates as none."""
    n = len(digits)
    if n == 18 and id_checksum_ok(digits):
        return ID_CARD
    if "X" in digits:
        return None
    if _MOBILE.fullmatch(digits):
        return MOBILE
    if 16 <= n <= 19 and luhn_ok(digits):
        return BANK_CARD
    if _LANDLINE.fullmatch(digits):
        return LANDLINE
    return None


def classify_by_length(digits: str) -> str:
    """The likely kind of an unvalidated sequence, from its length and first digits."""
    n = len(digits)
    if n == 11 and digits[0] == "1":
        return MOBILE
    if n in (15, 18):
        return ID_CARD
    if 16 <= n <= 19:
        return BANK_CARD
    if (digits[0] == "0" and 10 <= n <= 12) or n in (7, 8):
        return LANDLINE
    return DIGITS


def _groups(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Digit groups of a run: (start, end, digits) with separators between groups."""
    groups: list[tuple[int, int, str]] = []
    g_start, buf = -1, []
    for i in range(start, end):
        ch = text[i]
        value = _DIGIT_VALUE.get(ch) or (_ID_X.get(ch) if i == end - 1 else None)
        if value is None:
            if buf:
                groups.append((g_start, i, "".join(buf)))
                buf = []
            continue
        if not buf:
            g_start = i
        buf.append(value)
    if buf:
        groups.append((g_start, end, "".join(buf)))
    return groups


def _is_amount(text: str, start: int, end: int) -> bool:
    after = text[end:end + 2].lstrip()
    return bool(after and after[0] in _AMOUNT_AFTER) or (start > 0 and text[start - 1] in _AMOUNT_BEFORE)


def _written_spans(groups: list[tuple[int, int, str]], text: str) -> list[Span]:
    """Consecutive groups that validate as a kind; longest first, without overlaps."""
    candidates: list[tuple[int, int, int, str]] = []  # (-digits, start, end, kind)
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j][2]
            if len(digits) > _MAX_CANDIDATE_DIGITS:
                break
            # An X only ends an ID number; as a middle group it is not part of one.
            if "X" in digits[:-1]:
                break
            kind = classify_written(digits)
            # a validated ID or card number stays one when 元 follows: no amount has 16+ digits
            if kind and (kind in (ID_CARD, BANK_CARD) or not _is_amount(text, groups[i][0], groups[j][1])):
                candidates.append((-len(digits), groups[i][0], groups[j][1], kind))
    chosen: list[Span] = []
    for _, start, end, kind in sorted(candidates):
        if all(end <= s.start or start >= s.end for s in chosen):
            chosen.append(Span(kind, start, end))
    return chosen


def find_spans(text: str) -> list[Span]:
    """PII spans in ``text``, sorted by position."""
    if not text or not _PREFILTER.search(text):
        return []
    spans = [Span(EMAIL, m.start(), m.end()) for m in _EMAIL_RE.finditer(text)] if "@" in text else []
    for m in _RUN_RE.finditer(text):
        start, end = m.start(), m.end()
        if any(start < s.end and end > s.start for s in spans):
            continue  # digits inside an e-mail address
        run = m.group()
        if run[-1] in _ID_X and sum(ch in _DIGIT_VALUE for ch in run) != 17:
            # An X that cannot end an ID number is a letter (or 打叉), not part of the number.
            end = start + len(run[:-1].rstrip(_SEP_PLAIN))
        groups = _groups(text, start, end)
        digits = "".join(g[2] for g in groups)
        announced = bool(_CONTEXT_RE.search(text, max(0, start - 10), start))
        if len(digits) < MIN_DIGITS:
            # the first group of a number read with words between its groups ("手机幺三八 然后是
            # 一二三四 ..."): announced as a number, it is one
            if announced and len(digits) >= 3 and any(ch in _SPOKEN_DIGITS for ch in run):
                spans.append(Span(classify_by_length(digits), start, end))
            continue
        if any(ch in _SPOKEN_DIGITS for ch in run):
            if not _is_amount(text, start, end):
                spans.append(Span(classify_by_length(digits), start, end))
        else:
            found = _written_spans(groups, text)
            if not found and (announced or not _is_amount(text, start, end)) and (
                    (MIN_UNVALIDATED_DIGITS <= len(digits) <= MAX_UNVALIDATED_DIGITS
                     and all(text[a:b].isspace() for (_, a, _), (b, _, _) in zip(groups, groups[1:])))
                    or announced):
                # ASR writes a spoken card or ID number as digits and slips a digit now and
                # then, which breaks the checksum; ordinary numbers are never this long. Only
                # for one number (digits, or groups split by spaces): punctuation between
                # groups may join separate numbers ("热线400-820-8820，95555"). Right after
                # "电话/卡号/身份证..." any 7+ digit number is one too (local numbers have no
                # shape to validate).
                found = [Span(classify_by_length(digits), start, end)]
            spans.extend(found)
    spans.sort(key=lambda s: s.start)
    return spans


_KEEP = set(_SEP_PLAIN) | {"@"}


def redact(text: str | None, *, mask: str = "*") -> Redaction:
    """Mask every PII span of ``text`` (None is treated as empty)."""
    if len(mask) != 1:
        raise ValueError(f"mask must be one character (spans keep their offsets), got {mask!r}")
    if not text:
        return Redaction(text or "", ())
    spans = find_spans(text)
    if not spans:
        return Redaction(text, ())
    chars = list(text)
    for span in spans:
        for i in range(span.start, span.end):
            if chars[i] not in _KEEP:
                chars[i] = mask
    return Redaction("".join(chars), tuple(spans))


def redact_text(text: str | None) -> str | None:
    """The redacted text alone; None stays None (for optional columns)."""
    if text is None:
        return None
    return redact(text).text
