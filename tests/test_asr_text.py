"""Normalisation of recognised text, guards against non-speech output, CER."""

from __future__ import annotations

import pytest

from qa.asr.text import TextGuard, char_error_rate, collapse_repeats, is_hallucination, normalize_text, strip_for_match


@pytest.mark.parametrize("raw, expected", [
    ("這個產品保本保息嗎", "这个产品保本保息吗"),  # Traditional -> Simplified
    ("您好, 請問有什麼可以幫您?", "您好，请问有什么可以帮您？"),  # punctuation next to Chinese is full-width
    ("年化利率 是 3.5%. 好的", "年化利率是3.5%。好的"),  # spaces between Chinese removed; decimal kept
    ("工號１００１", "工号1001"),  # full-width digits -> ASCII
    ("好的好的好的好的好的", "好的"),  # decoding loop collapsed
    ("OK, 我知道了!!", "OK，我知道了！"),
    ("  ，嗯  ", "嗯"),
    ("I am fine. Thanks", "I am fine. Thanks"),  # Latin text keeps its own punctuation
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_collapse_repeats_keeps_ordinary_doubling():
    assert collapse_repeats("谢谢谢谢") == "谢谢谢谢"  # 4 characters = the unit 谢谢 twice: a normal thanks
    assert collapse_repeats("对对对对对对对对") == "对"
    assert collapse_repeats("额度100000元，卡号8888888812345678") == "额度100000元，卡号8888888812345678"
    assert collapse_repeats("二十万零零零零零") == "二十万零零零零零"
    assert collapse_repeats("0" * 40) == "0"  # a digit loop


@pytest.mark.parametrize("text, hallucinated", [
    ("字幕by索兰娅", True),
    ("请不吝点赞 订阅 转发 打赏支持明镜与点点栏目", True),
    ("谢谢观看！", True),
    ("。。。", True),
    ("谢谢您的来电，再见", False),
    ("我想订阅你们的理财周报", False),
])
def test_hallucinations(text, hallucinated):
    assert is_hallucination(normalize_text(text)) is hallucinated


def test_guard_drops_silence_loops_and_stock_phrases():
    guard = TextGuard()
    ok = dict(avg_logprob=-0.3, no_speech_prob=0.05, compression_ratio=1.2)
    assert guard.keep("您好，请问有什么可以帮您？", **ok)
    assert not guard.keep("嗯", avg_logprob=-1.5, no_speech_prob=0.9, compression_ratio=1.0)
    assert guard.keep("嗯", avg_logprob=-0.5, no_speech_prob=0.9, compression_ratio=1.0)  # confident speech stays
    assert not guard.keep("好的" * 30, avg_logprob=-0.2, no_speech_prob=0.0, compression_ratio=9.0)
    assert not guard.keep("谢谢观看", **ok)
    with pytest.raises(ValueError):
        TextGuard(no_speech_threshold=0.0).validate()


def test_char_error_rate():
    assert char_error_rate("保本保息，年化利率。", "报本保锡 年化力力") == (4, 8)
    assert char_error_rate("您好", "您好！") == (0, 2)
    assert char_error_rate("", "多余") == (2, 0)
    assert strip_for_match("Ａ B，c。") == "abc"


def test_a_short_or_unsure_echo_of_the_prompt_is_dropped():
    from qa.asr.text import TextGuard, is_prompt_echo

    prompt = tuple("客服 工号 录音 理财 保本保息 风险".split())
    guard = TextGuard()
    # what the red-team clip gave: 0.29 s of "您" came out as a hotword of the prompt
    assert not guard.keep("理财", avg_logprob=-1.13, no_speech_prob=0.43, compression_ratio=1.0, duration_s=0.29,
                          prompt_words=prompt)
    assert not guard.keep("理财。风险", avg_logprob=-0.2, no_speech_prob=0.05, compression_ratio=1.0, duration_s=0.6,
                          prompt_words=prompt)
    # said, clearly and long enough: kept; other text is not judged by the prompt at all
    assert guard.keep("理财", avg_logprob=-0.3, no_speech_prob=0.05, compression_ratio=1.0, duration_s=1.4,
                      prompt_words=prompt)
    assert guard.keep("您好", avg_logprob=-1.13, no_speech_prob=0.43, compression_ratio=1.0, duration_s=0.29,
                      prompt_words=prompt)
    assert is_prompt_echo("录音，工号", prompt) and not is_prompt_echo("理财产品", prompt)


@pytest.mark.parametrize("text, numbers", [
    ("卡号六二二五 八八一二 三四五六", ["622588123456"]),  # read in groups: one number
    ("6225 8812 3456 7890", ["6225881234567890"]),
    ("幺三八零零一三八零零零", ["13800138000"]),  # 幺 is the spoken 1
    ("还款八千六百元，另有二十万", ["8600", "200000"]),  # amounts with units
    ("利率七点二，或者说 7.2", ["7.2", "7.2"]),
    ("二十四小时内，或者说 24 小时", ["24", "24"]),
    ("6225-8812-3456-7890", ["6225881234567890"]),
    ("稍等一下子，十分钟", []),  # number characters inside words are no numbers
])
def test_numbers_read_aloud_have_one_canonical_form(text, numbers):
    from qa.asr.numbers import numbers_in

    assert numbers_in(text) == numbers
