"""Text normalisation and pinyin helpers shared by the matchers.

Rules match on a normalised form of each utterance: full-width forms folded (NFKC), Latin
lower-cased, whitespace and punctuation removed (ASR punctuation is unreliable and a comma
must not hide 保本，保息). ``%`` and ``.`` stay because rates and amounts need them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_normal, to_tone3
from pypinyin.pinyin_dict import pinyin_dict

# Anything that is not a letter, digit, CJK character, ``%`` or ``.``.
_DROP = re.compile(r"[^\w%.]|_")


def normalize(text: str) -> str:
    return _DROP.sub("", unicodedata.normalize("NFKC", text).lower())


# captured, so one split gives the kept pieces and the dropped runs between them
_DROP_RUN = re.compile(r"((?:[^\w%.]|_)+)")


_OPENING_QUOTES = "「『“‘"
_CLOSING_QUOTES = "」』”’"


@dataclass(frozen=True)
class Normalized:
    """An utterance as the text operators read it, with what normalisation removed but the
    guards still need: clause breaks and quoted stretches."""

    text: str
    breaks: frozenset[int]  # offsets where punctuation or spaces were removed (not 、)
    quoted: tuple[tuple[int, int], ...]  # [start, end) of each stretch inside quotation marks


def normalize_with_breaks(text: str) -> Normalized:
    """The normalised text and the offsets in it where punctuation or spaces were removed.
    Matching ignores them, but a clause break separates a negator from what follows
    (没有，保本保息 answers a question and then promises); an enumeration comma (、) is no break.
    Quotation marks (「」, “”, ‘’, a pair of ") delimit words reported, not said."""
    parts = _DROP_RUN.split(unicodedata.normalize("NFKC", text).lower())
    pieces, gaps = parts[0::2], parts[1::2]
    breaks: set[int] = set()
    quoted: list[tuple[int, int]] = []
    opened: int | None = None
    pos = 0
    for part, gap in zip(pieces[:-1], gaps):
        pos += len(part)
        # an enumeration comma joins what one negator covers: 没有保证金、手续费
        if gap.strip() != "、":
            breaks.add(pos)
        for ch in gap:
            if opened is None and (ch in _OPENING_QUOTES or ch == '"'):
                opened = pos
            elif opened is not None and (ch in _CLOSING_QUOTES or ch == '"'):
                if pos > opened:
                    quoted.append((opened, pos))
                opened = None
    return Normalized("".join(pieces), frozenset(breaks), tuple(quoted))


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


# Pinyin tolerance levels, strictest first.
TONE = "tone"  # same syllable and tone
HOMOPHONE = "homophone"  # same syllable, any tone (报本保锡 for 保本保息)
FUZZY = "fuzzy"  # also the usual 模糊音 pairs (zh/z, ch/c, sh/s, n/l, f/h, -ng/-n)
LEVELS = (TONE, HOMOPHONE, FUZZY)

_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("f", "h"))
_FUZZY_FINALS = (("iang", "ian"), ("uang", "uan"), ("ang", "an"), ("eng", "en"), ("ing", "in"))


@lru_cache(maxsize=4096)
def fuzzy_syllable(toneless: str) -> str:
    syl = toneless
    for src, dst in _FUZZY_INITIALS:
        if syl.startswith(src):
            syl = dst + syl[len(src):]
            break
    for src, dst in _FUZZY_FINALS:
        if syl.endswith(src):
            syl = syl[: -len(src)] + dst
            break
    return syl


def _level_form(toned: str, level: str) -> str:
    if level == TONE:
        return to_tone3(toned, v_to_u=False, neutral_tone_with_five=True)
    toneless = to_normal(toned, v_to_u=False)
    return toneless if level == HOMOPHONE else fuzzy_syllable(toneless)


@dataclass(frozen=True)
class SoundTable:
    """Maps every common Chinese character (U+4E00-U+9FFF) to one private-use symbol standing
    for its main reading at a tolerance level, so that a transcript becomes a "sound string"
    with one ``str.translate`` and homophones become equal characters."""

    level: str
    char_symbol: dict[int, str]  # code point -> symbol of its main reading
    syllable_symbol: dict[str, str]  # every reading of any character -> symbol

    def translate(self, text: str) -> str:
        return text.translate(self.char_symbol)

    def term_classes(self, term: str) -> list[str]:
        """One regex class per character of a rule term: its syllable in context (利率 is
        li lǜ) plus the character's own main reading, so a polyphone written exactly as in
        the rule always matches (银行: 行 reads xíng first, háng here). The main reading
        admits only that character itself (:meth:`exact_only`)."""
        out = []
        for syl, ch in zip(term_syllables(term, self.level), term):
            own = self.char_symbol.get(ord(ch), ch)
            syms = {self.syllable_symbol.get(syl, own), own}
            out.append("[" + "".join(sorted(syms)) + "]")
        return out

    def exact_only(self, term: str) -> dict[int, str]:
        """Positions of a term's polyphones read otherwise in context, with the symbol of the
        character's main reading: a transcript character there with that symbol must be the
        term's character itself (未还 reads wèi huán: 还 matches, 海 of the name 韦海涛 does
        not, though both are hai as main readings)."""
        out = {}
        for n, (syl, ch) in enumerate(zip(term_syllables(term, self.level), term)):
            own = self.char_symbol.get(ord(ch))
            if own is not None and self.syllable_symbol.get(syl, own) != own:
                out[n] = own
        return out


@lru_cache(maxsize=None)
def sound_table(level: str) -> SoundTable:
    forms: dict[str, str] = {}  # toned reading -> form at level (readings repeat a lot)
    syllable_symbol: dict[str, str] = {}
    char_symbol: dict[int, str] = {}
    for cp, raw in pinyin_dict.items():
        if not 0x4E00 <= cp <= 0x9FFF:
            continue
        for n, reading in enumerate(raw.split(",")):
            form = forms.get(reading)
            if form is None:
                form = forms[reading] = _level_form(reading, level)
            sym = syllable_symbol.setdefault(form, chr(0xE000 + len(syllable_symbol)))
            if n == 0:
                char_symbol[cp] = sym
    return SoundTable(level, char_symbol, syllable_symbol)


# 还 of repaying (huán): pypinyin reads 还款, 未还, 应还 ... as hái (still), so a term of the
# debt vocabulary would match 海款 and miss 环款, the homophones a recogniser writes.
_REPAY = re.compile(r"还(?=[款钱清贷上完本息])|(?<=[未没不要应欠归偿催代帮替先已待])还")


def term_syllables(term: str, level: str) -> tuple[str, ...]:
    """The syllables of a rule term, using pypinyin's phrase dictionary for polyphones (and
    :data:`_REPAY` where it reads the repaying 还 as hái)."""
    style = Style.TONE3 if level == TONE else Style.NORMAL
    raw = lazy_pinyin(term, style=style, neutral_tone_with_five=True, v_to_u=False, errors="default")
    for m in _REPAY.finditer(term):
        raw[m.start()] = "huan2" if level == TONE else "huan"
    if level == FUZZY:
        return tuple(fuzzy_syllable(s) for s in raw)
    return tuple(raw)
