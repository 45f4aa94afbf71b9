"""PII redaction: unit cases, and a generated corpus with the position of every PII number and
every ordinary number, to measure recall and false redaction."""

from __future__ import annotations

import random
import time

import pytest

from qa.redact import (
    BANK_CARD,
    EMAIL,
    ID_CARD,
    LANDLINE,
    MOBILE,
    classify_written,
    id_checksum_ok,
    luhn_ok,
    redact,
    redact_text,
)

CORPUS_SIZE = 3000
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
SPOKEN = {"0": ["零", "洞", "〇"], "1": ["一", "幺"], "2": ["二", "两"], "3": ["三"], "4": ["四"],
          "5": ["五"], "6": ["六"], "7": ["七"], "8": ["八"], "9": ["九"]}
PAUSES = [" ", "，", "、", "…", "嗯，", " 呃 ", "-", ""]


# --- generators of valid numbers --------------------------------------------------------------

def make_id(rng: random.Random) -> str:
    body = (f"{rng.choice(['110105', '310104', '440305', '510107', '330106'])}"
            f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}")
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


def make_card(rng: random.Random) -> str:
    length = rng.choice([16, 16, 19, 17, 18])
    body = rng.choice(["622202", "621700", "436742", "625967", "403391"])
    body += "".join(rng.choice("0123456789") for _ in range(length - len(body) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def make_mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def make_landline(rng: random.Random) -> tuple[str, str]:
    area = rng.choice(["010", "021", "0755", "0571", "028"])
    local = rng.choice("2345678") + "".join(rng.choice("0123456789") for _ in range(7 if len(area) == 3 else 6))
    return area, local


def group(digits: str, sizes: list[int]) -> list[str]:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i:i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    return [g for g in out if g]


def written_form(rng: random.Random, kind: str) -> str:
    if kind == ID_CARD:
        digits = make_id(rng)
        return rng.choice([digits, digits.replace("X", "x"), " ".join(group(digits, [6, 8, 4]))])
    if kind == BANK_CARD:
        digits = make_card(rng)
        slip = rng.randrange(len(digits))  # ASR dropped one digit
        return rng.choice([digits, " ".join(group(digits, [4, 4, 4, 4])), "-".join(group(digits, [4, 4, 4, 4])),
                           digits[:slip] + digits[slip + 1:]])
    if kind == MOBILE:
        digits = make_mobile(rng)
        return rng.choice([digits, "-".join(group(digits, [3, 4, 4])), " ".join(group(digits, [3, 4, 4])),
                           "+86 " + digits, " ".join(digits),  # ASR spacing every digit
                           digits.translate(FULLWIDTH)])
    area, local = make_landline(rng)
    return rng.choice([f"{area}-{local}", f"{area}{local}", f"({area}){local}", f"{area} {local}",
                       f"（{area}）{local}"])


def spoken_form(rng: random.Random, digits: str) -> str:
    """Digits read aloud: Chinese numerals (幺/两/洞 variants), sometimes a group left as
    ASCII digits, groups joined by pauses."""
    sizes = rng.choice([[3, 4, 4], [4, 4, 4, 4], [6, 8, 4], [3, 3, 3, 3, 3, 3], [len(digits)]])
    parts = []
    for g in group(digits, sizes):
        if rng.random() < 0.15:
            parts.append(g)  # ASR wrote this group with digits
        else:
            parts.append("".join("叉" if d == "X" else rng.choice(SPOKEN[d]) for d in g))
    out = parts[0]
    for p in parts[1:]:
        out += rng.choice(PAUSES) + p
    return out


def pii_item(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.05:
        # A local number read without its area code.
        return spoken_form(rng, make_landline(rng)[1])
    if r < 0.45:
        return written_form(rng, rng.choice([ID_CARD, BANK_CARD, MOBILE, LANDLINE]))
    if r < 0.9:
        kind = rng.choice([ID_CARD, BANK_CARD, MOBILE, LANDLINE])
        digits = {ID_CARD: make_id, BANK_CARD: make_card, MOBILE: make_mobile}.get(kind, lambda g: "".join(make_landline(g)))(rng)
        return spoken_form(rng, digits)
    user = rng.choice(["zhangsan", "li.si88", "wang_wu", "13812345678", "cs-team", "Zhang.Wei"])
    return f"{user}@{rng.choice(['qq.com', '163.com', 'example.com.cn', 'bank.cn'])}"


SPOKEN_CHARS = frozenset("".join(sum(SPOKEN.values(), [])))
CN = "零一二三四五六七八九"


def cn_number(n: int) -> str:
    """A spoken amount such as 五千三百 (positional reading, not digit by digit)."""
    units = [(10000, "万"), (1000, "千"), (100, "百"), (10, "十")]
    out, zero = "", False
    for value, unit in units:
        q, n = divmod(n, value)
        if q:
            out += ("零" if zero and out else "") + ("" if value == 10 and q == 1 and not out else CN[q]) + unit
            zero = False
        elif out:
            zero = True
    if n:
        out += ("零" if zero and out else "") + CN[n]
    return out or "零"


def ordinary_item(rng: random.Random) -> str:
    choices = [
        lambda: f"{rng.choice([500, 5000, 20000, 100000, 1500000, 30000000])}元",
        lambda: f"{rng.randint(1, 999)}块",
        lambda: f"{cn_number(rng.randint(100, 99999))}元",
        lambda: f"{rng.randint(1, 50)}万",
        lambda: f"¥{rng.randint(1000, 99999999)}",
        lambda: f"{rng.randint(2020, 2030)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
        lambda: f"二零二六年十一月{cn_number(rng.randint(1, 28))}日",
        lambda: f"{rng.randint(2020, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"{rng.randint(0, 23)}点{rng.randint(0, 59)}分",
        lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        lambda: f"{cn_number(rng.randint(1, 12))}点半",
        lambda: f"{rng.randint(1, 9)}.{rng.randint(0, 99)}%",
        lambda: f"百分之{cn_number(rng.randint(1, 20))}点{CN[rng.randint(1, 9)]}",
        lambda: f"工号{rng.randint(1000, 9999)}",
        lambda: f"尾号{rng.randint(1000, 9999)}",
        lambda: f"{rng.randint(1, 36)}期",
        lambda: f"第{rng.randint(1, 99)}笔",
        lambda: f"{rng.choice(['一下', '一起', '一样', '两个', '三五天', '七八个', '一两次'])}",
        lambda: f"验证码{rng.randint(100000, 999999)}",
        lambda: f"{rng.randint(10, 99)}岁",
        lambda: f"400-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"{rng.randint(1, 99)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d}元",
        lambda: f"{rng.randint(8, 11)}:{rng.choice(['00', '30'])}-{rng.randint(12, 18)}:{rng.choice(['00', '30'])}",
        lambda: f"2026-11-{rng.randint(1, 9):02d}至2026-12-{rng.randint(10, 28):02d}",
        lambda: f"第{rng.randint(1000, 99999)}号",
        lambda: f"{rng.randint(1, 9)}/{rng.randint(10, 99)}",
        lambda: f"{cn_number(rng.randint(10000, 99999))}元",
    ]
    return rng.choice(choices)()


# Every filler holds a word: two numbers with only a pause between them read as one number
# (see test_adjacent_numbers_fuse).
FILLERS = ["您好，", "请问", "我的", "好的，", "麻烦您核对一下，", "这边登记的是", "嗯，对，", "那个", "是",
           "，谢谢。", "对吧？", "您稍等。", "客户说", "没问题，"]


Corpus = list[tuple[str, list[tuple[int, int]], list[tuple[int, int]]]]


def make_corpus(seed: int, size: int) -> Corpus:
    """Sentences of filler text, PII items and ordinary numbers; returns each sentence with
    the (start, end) of its PII items and of its ordinary numbers."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(size):
        text, pii, ordinary = "", [], []
        for _ in range(rng.randint(2, 5)):
            text += rng.choice(FILLERS)
            is_pii = rng.random() < 0.5
            item = pii_item(rng) if is_pii else ordinary_item(rng)
            (pii if is_pii else ordinary).append((len(text), len(text) + len(item)))
            text += item
        text += rng.choice(FILLERS)
        corpus.append((text, pii, ordinary))
    return corpus


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus(20261123, CORPUS_SIZE)


def masked(text: str, start: int, end: int) -> bool:
    """No digit, letter or spoken numeral of the item is left (separators and pauses stay)."""
    return not any((ch.isascii() and ch.isalnum()) or ch in SPOKEN_CHARS or ch == "叉"
                   for ch in text[start:end])


def test_corpus_recall_and_no_false_redaction(corpus: Corpus) -> None:
    found = total = 0
    false_redactions = []
    ordinary_total = 0
    for text, pii, ordinary in corpus:
        out = redact(text).text
        assert len(out) == len(text)
        for start, end in pii:
            total += 1
            found += masked(out, start, end)
        for start, end in ordinary:
            ordinary_total += 1
            if out[start:end] != text[start:end]:
                false_redactions.append((text[start:end], text, out))
        # Nothing outside the PII items is masked either.
        outside = [i for i, (a, b) in enumerate(zip(text, out)) if a != b
                   and not any(s <= i < e for s, e in pii)]
        assert not outside, (text, out)
    recall = found / total
    print(f"redaction recall {recall:.4f} ({found}/{total}); "
          f"false redactions {len(false_redactions)}/{ordinary_total} ordinary numbers")
    assert total > 3000 and ordinary_total > 3000
    assert recall >= 0.99
    assert not false_redactions, false_redactions[:5]


def test_corpus_redaction_is_fast(corpus: Corpus) -> None:
    texts = [t for t, _, _ in corpus]
    t0 = time.perf_counter()
    for text in texts:
        redact(text)
    per_text_us = (time.perf_counter() - t0) / len(texts) * 1e6
    assert per_text_us < 500, f"{per_text_us:.0f} µs per utterance"
    t0 = time.perf_counter()
    plain = "好的，您这边办理的是我们的理财产品，预期年化收益率百分之三点五，期限十二个月。" * 2
    for _ in range(5000):
        redact(plain)
    assert (time.perf_counter() - t0) / 5000 * 1e6 < 100


@pytest.mark.parametrize("text, expected, kinds", [
    ("我的手机是13812345678谢谢", "我的手机是***********谢谢", (MOBILE,)),
    ("电话幺三八 幺二三四 五六七八", "电话*** **** ****", (MOBILE,)),
    ("身份证号11010519491231002X", "身份证号******************", (ID_CARD,)),
    ("身份证幺幺零幺零五幺九四九幺二三幺零零二叉", "身份证******************", (ID_CARD,)),
    ("卡号6222 0212 3456 7890 128，对", "卡号**** **** **** **** ***，对", (BANK_CARD,)),
    ("座机010-62345678", "座机***-********", (LANDLINE,)),
    ("座机洞幺洞，六二三四，五六七八", "座机***，****，****", (LANDLINE,)),
    ("发到zhang.san88@qq.com吧", "发到*****.*****@**.***吧", (EMAIL,)),
    ("+86 138 1234 5678", "+** *** **** ****", (MOBILE,)),
    ("幺三八嗯，幺二三四…五六七八", "***嗯，****…****", (MOBILE,)),
    ("一三八12345678", "***********", (MOBILE,)),
    ("座机号码是62345678", "座机号码是********", (LANDLINE,)),
    ("卡号是6222021234567890120", "卡号是*******************", (BANK_CARD,)),  # fails Luhn: an ASR slip
    # Sample S15: "六二二五，八八一二，三四五六，七八九零" as Whisper base wrote it (17 digits).
    ("62528812235627802", "*****************", (BANK_CARD,)),
    ("订单号110105194912310021", "订单号******************", (ID_CARD,)),  # 18 digits, wrong check digit
])
def test_examples(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    result = redact(text)
    assert result.text == expected
    assert tuple(s.kind for s in result.spans) == kinds
    assert all(result.text[s.start:s.end].strip("*") == "" or "*" in result.text[s.start:s.end]
               for s in result.spans)


@pytest.mark.parametrize("text", [
    "本金5000元，2026年11月2日10点30分到账，年化3.5%，我的工号1234。",
    "二零二六年十一月二日下午三点半，一共两万五千元，分十二期。",
    "流水号2026110210300012345678",  # 22 digits: a reference number, longer than any PII
    "订单号12345678",  # 8 digits, no phone word before it, validates as nothing
    "金额13812345678元",  # an amount, however odd
    "客服热线400-820-8820，95555",
    "打叉了1234567x",
    "一下一起一样两个三五天七八个一两次",
])
def test_ordinary_numbers_stay(text: str) -> None:
    assert redact(text).text == text


def test_validators() -> None:
    assert id_checksum_ok("11010519491231002X")
    assert not id_checksum_ok("110105194912310021")
    assert not id_checksum_ok("11010519491331002X")  # month 13
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert classify_written("13812345678") == MOBILE
    assert classify_written("12812345678") is None
    assert classify_written("01062345678") == LANDLINE
    assert classify_written("4111111111111111") == BANK_CARD


def test_empty_and_none() -> None:
    assert redact("").text == "" and redact(None).spans == ()
    assert redact_text(None) is None
    assert redact_text("没有号码") == "没有号码"


def test_adjacent_numbers_fuse() -> None:
    # Digits with only a pause between them cannot be told apart from one number read in
    # groups; erring on the side of masking is the safe direction for PII.
    text = "幺三八幺二三四五六七八，嗯，4008208820"
    assert redact(text).text == "***********，嗯，**********"


def test_a_card_number_followed_by_yuan_is_still_a_card_number():
    from qa.redact import redact

    assert redact("卡号6222021234567894元").text == "卡号****************元"
    assert redact("请转6222021234567894元到这个卡").text.count("*") == 16
    assert redact("一共3800元").text == "一共3800元"  # an amount stays readable


def test_the_first_group_of_a_number_split_by_words_is_masked_when_announced():
    from qa.redact import redact

    assert redact("手机幺三八 然后是 一二三四 五六七八").text == "手机*** 然后是 **** ****"
    assert redact("我住三八号楼").text == "我住三八号楼"
