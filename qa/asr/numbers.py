"""Numbers said in a call, in one canonical form, so that a number read aloud can be compared
with what recognition wrote: 幺三八 and 138 are "138", 八千六百 and 8,600 are "8600",
七点二 and 7.2 are "7.2".

Digit strings (card, phone and ID numbers, job numbers) are read one digit at a time; amounts
and rates with units (十 百 千 万 亿). Both forms occur in either script in the transcripts.
"""

from __future__ import annotations

import re

DIGIT_OF = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
            "七": 7, "八": 8, "九": 9}
UNIT_OF = {"十": 10, "百": 100, "千": 1000}
BIG_OF = {"万": 10_000, "亿": 100_000_000}
_CHARS = "0-9" + "".join(DIGIT_OF) + "".join(UNIT_OF) + "".join(BIG_OF) + "点."
# a number read in groups (6225 8812 …, 六二二五，八八一二) is one number: separators join runs
_RUN = re.compile(f"[{_CHARS}](?:[{_CHARS}, ，、-]*[{_CHARS}])?")
_SEPARATORS = str.maketrans("", "", ", ，、-")
# shorter runs of number characters (一下, 十分) are mostly words; written digits (24) are not
MIN_CHINESE_LENGTH = 3
MIN_DIGITS = 2


def _value(text: str) -> int | None:
    """A Chinese number with units (二十万, 八千六百, 三百二十) as an integer."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch.isdigit():
            digit = (digit or 0) * 10 + int(ch)
        elif ch in DIGIT_OF:
            digit = DIGIT_OF[ch]
        elif ch in UNIT_OF:
            section += (1 if digit is None else digit) * UNIT_OF[ch]
            digit = None
        elif ch in BIG_OF:
            total += (section + (digit or 0)) * BIG_OF[ch]
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


def canonical(run: str) -> str | None:
    """One number's canonical form, or None when the run is no number."""
    run = run.translate(_SEPARATORS)
    whole, dot, frac = run.replace("点", ".").partition(".")
    frac_digits = "".join(str(DIGIT_OF.get(c, c)) for c in frac)
    if dot and not frac_digits.isdigit():
        return None
    if any(c in UNIT_OF or c in BIG_OF for c in whole):
        value = _value(whole)
        if value is None:
            return None
        head = str(value)
    else:
        head = "".join(c if c.isdigit() else str(DIGIT_OF[c]) for c in whole if c.isdigit() or c in DIGIT_OF)
        if len(head) != len(whole):
            return None
    return head + ("." + frac_digits if dot else "")


def numbers_in(text: str) -> list[str]:
    """The numbers of ``text``, canonical: runs of at least :data:`MIN_CHINESE_LENGTH` number
    characters, or of :data:`MIN_DIGITS` written digits."""
    out = []
    for m in _RUN.finditer(text):
        run = m.group().translate(_SEPARATORS)
        written = run.replace(".", "").isdigit()
        if len(run) >= (MIN_DIGITS if written else MIN_CHINESE_LENGTH):
            form = canonical(m.group())
            if form is not None:
                out.append(form)
    return out
