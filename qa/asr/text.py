"""Normalise Whisper's Mandarin output before rules see it, and drop what is not speech.

Whisper writes Traditional characters for much Mandarin speech, mixes half- and full-width
punctuation, puts spaces between clauses and, on silence or noise, produces stock phrases from
its training subtitles. Rules match Simplified text with full-width punctuation, so everything
is brought to that form here.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

# Subtitle credits and video outros Whisper emits on silence, music or noise. Data, not code:
# extend the tuple when a new one shows up; matching is on normalised, punctuation-free text.
HALLUCINATIONS: tuple[str, ...] = (
    "字幕by",
    "字幕由",
    "字幕提供",
    "字幕志愿者",
    "中文字幕",
    "请不吝点赞",
    "点赞订阅转发打赏",
    "订阅转发",
    "订阅我的频道",
    "打赏支持明镜与点点栏目",
    "明镜与点点",
    "谢谢观看",
    "感谢观看",
    "谢谢大家观看",
    "下期再见",
    "我们下期再见",
    "请订阅",
    "amaraorg",
    "索兰娅",
    "优优独播剧场",
)

_PUNCT_MAP = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；", "(": "（", ")": "）"})
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_PUNCT = "，。？！：；、（）“”‘’《》…—"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}{_CJK_PUNCT}])\s+|\s+(?=[{_CJK}{_CJK_PUNCT}])")
_HALF_PUNCT_NEAR_CJK = re.compile(
    rf"(?<=[{_CJK}{_CJK_PUNCT}])\s*[,.?!:;]+|[,.?!:;]+\s*(?=[{_CJK}])|(?<=[{_CJK}])\s*[,.?!:;]+\s*$"
)
_DECIMAL_POINT = re.compile(r"(?<=\d)。(?=\d)")
_REPEAT = re.compile(r"(.{1,12}?)\1{4,}")  # a unit said 5+ times in a row: a decoding loop
# numbers repeat digits for real (100000元, 8888 8888): only a run longer than any number is a loop
_DIGITS = frozenset("0123456789零〇一二三四五六七八九幺")
DIGIT_LOOP_REPEATS = 20
_REPEAT_PUNCT = re.compile(rf"([{_CJK_PUNCT}])\1+")
_STRIP_FOR_MATCH = re.compile(rf"[\s{re.escape(_CJK_PUNCT)}\W_]+")

_converter = None
_converter_lock = threading.Lock()


def _t2s(text: str) -> str:
    global _converter
    with _converter_lock:
        if _converter is None:
            import opencc

            _converter = opencc.OpenCC("t2s")
        return _converter.convert(text)


def collapse_repeats(text: str) -> str:
    """``好的好的好的好的好的`` -> ``好的``: runs of one unit said five or more times (four
    can be ordinary speech: 谢谢谢谢). A unit of digits is kept unless it repeats
    :data:`DIGIT_LOOP_REPEATS` times."""

    def collapse(m: re.Match) -> str:
        unit = m.group(1)
        if set(unit) <= _DIGITS and len(m.group(0)) < DIGIT_LOOP_REPEATS * len(unit):
            return m.group(0)
        return unit

    return _REPEAT.sub(collapse, text)


def normalize_text(text: str) -> str:
    """Simplified Chinese, full-width punctuation next to Chinese, ASCII digits and letters,
    no spaces between Chinese characters, loops collapsed."""
    # NFKC turns full-width digits/letters (１２３, ＡＢＣ) into ASCII; it also turns full-width
    # punctuation into ASCII, which the next steps map back consistently
    text = unicodedata.normalize("NFKC", text)
    text = _t2s(text)
    text = _HALF_PUNCT_NEAR_CJK.sub(lambda m: m.group(0).strip().translate(_PUNCT_MAP), text)
    text = _DECIMAL_POINT.sub(".", text)
    text = _SPACE_BETWEEN_CJK.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = collapse_repeats(text)
    text = _REPEAT_PUNCT.sub(r"\1", text)
    return text.strip(" ，、；：")


def strip_for_match(text: str) -> str:
    """Characters only (no punctuation, no spaces), lower-case: for CER and phrase lookups."""
    return _STRIP_FOR_MATCH.sub("", unicodedata.normalize("NFKC", text)).lower()


def is_hallucination(text: str) -> bool:
    """True when, once the known stock phrases are removed, nothing is left."""
    bare = strip_for_match(text)
    if not bare:
        return True
    for phrase in HALLUCINATIONS:
        bare = bare.replace(phrase, "")
    return not bare


@dataclass(frozen=True)
class TextGuard:
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    max_compression_ratio: float = 2.4
    # A segment whose whole text is words of the decoder's prompt is the prompt echoed into
    # audio that did not say it, unless the decoder was sure and the segment long enough to
    # hold the words: such an echo would let a must-say rule pass, or raise a finding, on
    # nothing.
    echo_min_s: float = 1.0
    echo_min_logprob: float = -0.7
    echo_max_no_speech: float = 0.3

    def validate(self) -> None:
        if not 0.0 < self.no_speech_threshold <= 1.0:
            raise ValueError(f"no_speech_threshold must be in (0, 1], got {self.no_speech_threshold}")
        if self.max_compression_ratio <= 1.0:
            raise ValueError(f"max_compression_ratio must exceed 1, got {self.max_compression_ratio}")

    def keep(self, text: str, *, avg_logprob: float, no_speech_prob: float, compression_ratio: float,
             duration_s: float | None = None, prompt_words: tuple[str, ...] = ()) -> bool:
        """Whether a decoded (normalised) segment is speech worth storing."""
        if no_speech_prob > self.no_speech_threshold and avg_logprob < self.logprob_threshold:
            return False  # whisper's own silence rule
        if compression_ratio > self.max_compression_ratio:
            return False  # still a loop after every temperature
        if prompt_words and is_prompt_echo(text, prompt_words):
            sure = avg_logprob >= self.echo_min_logprob and no_speech_prob <= self.echo_max_no_speech
            if not sure or (duration_s is not None and duration_s < self.echo_min_s):
                return False
        return not is_hallucination(text)


def is_prompt_echo(text: str, words: tuple[str, ...]) -> bool:
    """The text is nothing but words of the prompt (one or several, in any order)."""
    rest = strip_for_match(text)
    if not rest:
        return False
    for word in sorted({strip_for_match(w) for w in words if w.strip()}, key=len, reverse=True):
        if word:
            rest = rest.replace(word, "")
    return not rest


def char_error_rate(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance, reference length) over characters of the stripped texts."""
    ref, hyp = strip_for_match(reference), strip_for_match(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hc in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1], len(ref)
