"""Analyzers (text -> features) shared by every classifier pipeline.

Documents are utterances joined by newlines, and n-grams never span two utterances. Both
analyzers work line by line and cache each line's n-grams: one call's customer document
feeds two models and the whole-call document of the topic model re-uses the lines of the
customer and agent documents, so each utterance is cut by jieba once per call. Agents'
scripted lines also repeat across calls.

Words are cut by jieba-rs (``rjieba``), a Rust port of jieba with its dictionary: without
HMM it cuts exactly as jieba does (the same words on every utterance of ``data/eval`` and on
noisy variants of them; ``test_classifiers`` checks samples) at about a tenth of the cost,
which is most of a classifier's time on a call whose lines it has not seen. It runs as a
private instance, so words that other modules add to a global dictionary cannot change what
a trained model sees.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache


# Bump when the analyzers change what they emit: it is part of every model's version.
FEATURES_VERSION = 3
CHAR_NGRAMS = (1, 3)
WORD_NGRAMS = (1, 2)

_tokenizer = None
_lock = threading.Lock()


def _jieba():
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                import rjieba

                _tokenizer = rjieba.Jieba()
    return _tokenizer


# Punctuation and spaces carry no signal as words; letters and digits (any script) do.
_is_word = re.compile(r"[^\W_]").search


@lru_cache(maxsize=32768)
def _line_words(line: str) -> tuple[str, ...]:
    # No HMM: it only guesses unknown words, which the character n-grams cover, at 1.5x the cost.
    tokens = [t for t in _jieba().cut(line, False) if _is_word(t)]
    lo, hi = WORD_NGRAMS
    grams = [] if lo > 1 else list(tokens)
    for n in range(max(lo, 2), hi + 1):
        grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return tuple(grams)


@lru_cache(maxsize=32768)
def _line_chars(line: str) -> tuple[str, ...]:
    # ASR spacing between CJK characters means nothing. The ^ and $ marks make n-grams at
    # the start and end of an utterance distinct (想…, 请…, …吗): who speaks often shows there.
    core = "".join(line.split()).replace("^", "").replace("$", "")
    text = "^" + core + "$"
    lo, hi = CHAR_NGRAMS
    grams = list(core) if lo == 1 else []  # the marks alone are not features
    for n in range(max(lo, 2), hi + 1):
        grams.extend([text[i:i + n] for i in range(len(text) - n + 1)])
    return tuple(grams)


def word_ngrams(text: str) -> list[str]:
    """jieba word uni- and bigrams of every line of ``text`` (a pipeline analyzer)."""
    out: list[str] = []
    for line in text.split("\n"):
        if line:
            out.extend(_line_words(line))
    return out


def char_ngrams(text: str) -> list[str]:
    """Character 1- to 3-grams of every line of ``text`` (a pipeline analyzer)."""
    out: list[str] = []
    for line in text.split("\n"):
        if line:
            out.extend(_line_chars(line))
    return out


@lru_cache(maxsize=1)
def _homophones():
    from ..rules.text import HOMOPHONE, sound_table

    return sound_table(HOMOPHONE)


_NOT_SPOKEN = re.compile(r"[\W_]+")


@lru_cache(maxsize=32768)
def _line_sounds(line: str) -> tuple[str, ...]:
    # one symbol per syllable, tone ignored: 立财 and 理财 give the same n-grams
    sound = _homophones().translate(_NOT_SPOKEN.sub("", line))
    return tuple(sound[i:i + n] for n in (2, 3) for i in range(len(sound) - n + 1))


def sound_ngrams(text: str) -> list[str]:
    """Syllable 2- and 3-grams (homophones equal) of every line of ``text`` (a pipeline
    analyzer): what ASR writes with the wrong character still sounds the same."""
    out: list[str] = []
    for line in text.split("\n"):
        if line:
            out.extend(_line_sounds(line))
    return out


# A learned detector reads an utterance with the one before it (who asked what, what was
# complained of): "text" CONTEXT_MARK "previous" in one input, split again by its analyzers.
CONTEXT_MARK = "\x1e"


def with_context(text: str, previous: str) -> str:
    # an empty utterance stays empty: the context alone must never score
    return f"{text}{CONTEXT_MARK}{previous}" if text and previous else text


def own_char_ngrams(doc: str) -> list[str]:
    """:func:`char_ngrams` of the utterance itself (a pipeline analyzer)."""
    return char_ngrams(doc.partition(CONTEXT_MARK)[0])


def own_sound_ngrams(doc: str) -> list[str]:
    """:func:`sound_ngrams` of the utterance itself (a pipeline analyzer)."""
    return sound_ngrams(doc.partition(CONTEXT_MARK)[0])


def context_sound_ngrams(doc: str) -> list[str]:
    """Syllable n-grams of the utterance before, marked apart from the utterance's own (a
    pipeline analyzer)."""
    previous = doc.partition(CONTEXT_MARK)[2]
    out: list[str] = []
    for line in previous.split("\n"):
        if line:
            out.extend(_line_context_sounds(line))
    return out


@lru_cache(maxsize=32768)
def _line_context_sounds(line: str) -> tuple[str, ...]:
    # each utterance is the context of the next: computed once per line, like its own n-grams
    return tuple("<" + g for g in _line_sounds(line))


# A sentence-final particle or mark makes a question (请问…吗？ from agents, 多少呢 from customers).
_QUESTION_END = re.compile(r"(?:[吗呢么][？?！!。]?|[？?])$")
_NON_WORD = re.compile(r"[\W_]+")


@lru_cache(maxsize=32768)
def _line_cues(line: str) -> tuple[str, ...]:
    core = "".join(line.split())
    size = len(_NON_WORD.sub("", core))
    length = "len:s" if size <= 6 else "len:m" if size <= 14 else "len:l" if size <= 24 else "len:xl"
    cues = [length, f"clauses:{min(4, 1 + sum(core.count(p) for p in '，。？！'))}"]
    if _QUESTION_END.search(core):
        cues.append("question")
    # Politeness and person, as one feature each whatever words they come in.
    cues.extend(name for mark, name in (("您", "you:polite"), ("你", "you:plain"), ("我", "I")) if mark in core)
    return tuple(cues)


def utterance_cues(text: str) -> list[str]:
    """Length bucket, clause count, question ending and pronouns of every line of ``text``:
    who speaks an utterance shows in its shape as well as its words (a pipeline analyzer)."""
    out: list[str] = []
    for line in text.split("\n"):
        if line:
            out.extend(_line_cues(line))
    return out


def join_utterances(texts) -> str:
    """One document from utterance texts, in the form the models were trained on."""
    return "\n".join(" ".join(t.split()) for t in texts if t and t.strip())
