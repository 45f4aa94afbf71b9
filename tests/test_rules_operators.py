"""Each operator of the rule language on small calls."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from rules_helpers import call, one_rule, status


def hits(engine, transcript):
    finding = engine.evaluate(transcript).outcomes[0].finding
    return finding.matched_text if finding else None


def test_keyword_any_all_at_least(tmp_path):
    any_ = one_rule(tmp_path / "a", "keyword: [稳赚不赔, 保本保息]")
    assert status(any_, call(("A", "这个产品稳赚不赔。"))) == "fired"
    assert status(any_, call(("A", "这个产品收益不错。"))) == "passed"
    all_ = one_rule(tmp_path / "b", "keyword: {terms: [保本, 保息], all: true}")
    assert status(all_, call(("A", "保本的。"), ("A", "而且保息。"))) == "fired"
    assert status(all_, call(("A", "保本的。"))) == "passed"
    two = one_rule(tmp_path / "c", "keyword: {terms: [零风险, 保本, 稳赚], at_least: 2}")
    assert status(two, call(("A", "零风险，稳赚。"))) == "fired"
    assert status(two, call(("A", "零风险，零风险。"))) == "passed"


def test_keyword_ignores_punctuation_spaces_and_width(tmp_path):
    engine = one_rule(tmp_path, "keyword: [保本保息, 年化3.6%]")
    assert hits(engine, call(("A", "我们这个保本，保息！"))) == "保本保息"
    assert hits(engine, call(("A", "年化３.６％"))) == "年化3.6%"


def test_keyword_word_boundaries_with_jieba(tmp_path):
    engine = one_rule(tmp_path, "keyword: {terms: [上门], word: true}", category="conduct.threat")
    assert status(engine, call(("A", "明天我们就派人上门。"))) == "fired"
    outcome = engine.evaluate(call(("A", "您可以马上门店办理。"))).outcomes[0]
    assert outcome.status == "passed" and "1 word" in outcome.why


def test_role_scope_defaults_to_the_category_and_can_be_overridden(tmp_path):
    engine = one_rule(tmp_path / "a", "keyword: [保本保息]")
    assert status(engine, call(("C", "这个保本保息吗？"))) == "passed"
    customer = one_rule(tmp_path / "b", "keyword: {terms: [保本保息], role: customer}")
    assert status(customer, call(("C", "这个保本保息吗？"))) == "fired"
    both = one_rule(tmp_path / "c", "keyword: {terms: [保本保息], role: any}")
    assert status(both, call(("C", "这个保本保息吗？"))) == "fired"


@pytest.mark.parametrize("said, fires", [
    ("报本保锡的，您放心。", True),  # Whisper's homophone error
    ("保本保息的，您放心。", True),
    ("宝本宝西。", True),
    ("保持保息。", False),
])
def test_pinyin_homophones(tmp_path, said, fires):
    engine = one_rule(tmp_path, "pinyin: {terms: [保本保息]}")
    assert status(engine, call(("A", said))) == ("fired" if fires else "passed")


def test_pinyin_reports_the_term_it_sounded_like(tmp_path):
    engine = one_rule(tmp_path, "pinyin: {terms: [保本保息, 理财], all: true}")
    outcome = engine.evaluate(call(("A", "这款立财报本保锡。"))).outcomes[0]
    assert outcome.status == "fired"
    assert outcome.finding.matched_text == "立财；报本保锡"


def test_pinyin_tolerance_levels(tmp_path):
    tone = one_rule(tmp_path / "t", "pinyin: {terms: [理财], tolerance: tone}")
    assert status(tone, call(("A", "立财"))) == "passed"  # lì vs lǐ
    assert status(tone, call(("A", "里财"))) == "fired"  # lǐ
    homophone = one_rule(tmp_path / "h", "pinyin: {terms: [理财]}")
    assert status(homophone, call(("A", "立财"))) == "fired"
    assert status(homophone, call(("A", "理菜"))) == "fired"  # cài: only the tone differs
    assert status(homophone, call(("A", "理想"))) == "passed"
    fuzzy = one_rule(tmp_path / "f", "pinyin: {terms: [年化], tolerance: fuzzy}")
    assert status(fuzzy, call(("A", "连化"))) == "fired"  # n/l and -n/-ng confusions
    assert status(homophone, call(("A", "连化"))) == "passed"


def test_pinyin_polyphones_match_in_either_reading(tmp_path):
    engine = one_rule(tmp_path, "pinyin: {terms: [利率, 银行]}")
    assert status(engine, call(("A", "利率是多少"))) == "fired"  # 率 read lǜ, its main reading is shuài
    assert status(engine, call(("A", "银行"))) == "fired"  # 行 háng, main reading xíng


def test_pinyin_polyphones_main_reading_admits_only_the_character(tmp_path):
    engine = one_rule(tmp_path, "pinyin: {terms: [银行, 未还]}")
    assert status(engine, call(("A", "银星"))) == "passed"  # xíng is 行's main reading, not 星's
    assert status(engine, call(("A", "请问是韦海涛先生吗"))) == "passed"  # 海 is not 还
    assert status(engine, call(("A", "这笔钱一直未还"))) == "fired"
    assert status(engine, call(("A", "这笔钱一直未环"))) == "fired"  # the repaying 还 is huán


def test_pinyin_max_errors_only_for_long_terms(tmp_path):
    engine = one_rule(tmp_path, "pinyin: {terms: [投资须谨慎, 保本], max_errors: 1}")
    assert status(engine, call(("A", "投资需紧慎"))) == "fired"
    assert status(engine, call(("A", "投资有谨慎"))) == "fired"  # one wrong syllable in the middle
    assert status(engine, call(("A", "头发须知慎"))) == "passed"  # two wrong
    assert status(engine, call(("A", "保险"))) == "passed"  # short terms stay exact


def test_regex_runs_on_re2(tmp_path):
    engine = one_rule(tmp_path, r"regex: '\d{16,19}'", category="pii.sensitive_number_spoken")
    assert hits(engine, call(("A", "卡号6222 0212 3456 7890"))) == "6222021234567890"
    assert status(engine, call(("A", "尾号7890"))) == "passed"


def test_regex_never_spans_two_utterances(tmp_path):
    engine = one_rule(tmp_path, "regex: '保本[^。]*保息'")
    assert status(engine, call(("A", "保本"), ("A", "保息"))) == "passed"
    assert status(engine, call(("A", "保本而且保息"))) == "fired"


def test_regex_matches_in_characters_after_multibyte_text(tmp_path):
    # RE2 scans UTF-8 bytes; a hit after CJK text and digits must land on the right characters
    engine = one_rule(tmp_path, r"regex: '[0-9]{4}'", category="pii.sensitive_number_spoken")
    assert hits(engine, call(("A", "您好，工号是"), ("C", "嗯"), ("A", "尾号是一二，后面是7890吗"))) == "7890"


def test_the_prefilter_only_skips_operators_that_cannot_match():
    from pathlib import Path

    from qa.rules.corpus import read_split
    from qa.rules.engine import RuleEngine
    from qa.rules.loader import load_pack

    engine = RuleEngine(load_pack(Path(__file__).resolve().parent.parent / "rules" / "finance-zh"))
    snippets, dialogues = read_split(Path(__file__).resolve().parent.parent / "data" / "eval", "dev")
    skipped = 0
    for item in (snippets + dialogues)[::4]:
        with_filter = engine.evaluate(item.sample.reference)
        ctx = engine.context(item.sample.reference)
        skipped += sum(not engine.prefilter.allows(ctx, op) for op in engine.operators)
        engine.prefilter, kept = None, engine.prefilter
        try:
            without = engine.evaluate(item.sample.reference)
        finally:
            engine.prefilter = kept
        assert [(o.rule_id, o.status, o.why) for o in with_filter.outcomes] == \
            [(o.rule_id, o.status, o.why) for o in without.outcomes]
    assert skipped  # it does skip


@pytest.mark.parametrize("said, fires", [
    ("这个产品不保本。", False),
    ("我们不能保证保本。", False),
    ("保本是不可能的。", False),
    ("没问题，保本。", True),  # 没问题 does not negate
    ("没有，保本的。", True),  # a clause break separates the answer from the promise
    ("是不是保本？当然保本。", True),  # A-not-A questions do not negate; the second one fires anyway
    ("不要担心，这个绝对保本。", True),
    ("我不敢说是保本的。", False),
    ("有人说「这个保本」，那是骗人的。", False),  # reported in quotation marks
    ("他说“保本”，我跟您说确实保本。", True),  # the second one is said
    ("“稳健”系列，保本。", True),  # quotation marks elsewhere in the utterance
    ("没有任何理财是保本的。", False),  # a denial that reaches across the clause
    ("现在不会跟您承诺保本。", False),
    ("买了就一定保本是骗人的。", False),  # a post-negator later in the clause
    ("没有任何手续费，这款保本。", True),  # the clause break ends the denial
    ("没有任何手续费而且这个产品绝对是保本的", True),  # nor does it reach past ten characters
])
def test_negation_guard(tmp_path, said, fires):
    engine = one_rule(tmp_path, "keyword: {terms: [保本], negation: true}")
    assert status(engine, call(("A", said))) == ("fired" if fires else "passed")


def test_an_enumeration_comma_keeps_the_negation(tmp_path):
    engine = one_rule(tmp_path, "keyword: {terms: [解冻费], negation: {before: [没有], gap: 8}}",
                      category="fraud.upfront_fee")
    assert status(engine, call(("A", "没有保证金、手续费、解冻费这些。"))) == "passed"
    assert status(engine, call(("A", "没有，先交一笔解冻费。"))) == "fired"  # a clause break still cuts it


def test_negation_guard_custom_negators(tmp_path):
    engine = one_rule(tmp_path, "keyword: {terms: [欠款], negation: {before: [不方便透露], gap: 3}}",
                      category="collection.third_party_disclosure")
    assert status(engine, call(("A", "不方便透露他的欠款。"))) == "passed"
    assert status(engine, call(("A", "他不在？他的欠款三万。"))) == "fired"


def test_windows_first_last_turns_and_seconds(tmp_path):
    first = one_rule(tmp_path / "a", "keyword: {terms: [您好], window: {first_turns: 1}}", category="greeting.missing")
    assert status(first, call(("C", "喂"), ("A", "您好"))) == "passed"  # the agent's first turn
    assert status(first, call(("A", "喂"), ("A", "您好"))) == "fired"  # must_say: absent in the window
    last = one_rule(tmp_path / "b", "keyword: {terms: [再见], window: {last_turns: 1}}", category="closing.missing")
    assert status(last, call(("A", "再见"), ("A", "好的"))) == "fired"
    assert status(last, call(("A", "好的"), ("A", "再见"), ("C", "嗯"))) == "passed"
    secs = one_rule(tmp_path / "c", "keyword: {terms: [录音], window: {first_s: 5}}",
                    category="disclosure.recording_missing")
    assert status(secs, call(("A", "本次通话录音", 0, 3))) == "passed"
    assert status(secs, call(("A", "您好", 0, 3), ("A", "本次通话录音", 6, 8))) == "fired"
    tail = one_rule(tmp_path / "d", "keyword: {terms: [谢谢], window: {last_s: 5}}", category="closing.missing")
    assert status(tail, call(("A", "谢谢", 0, 2), ("C", "嗯", 10, 20))) == "fired"
    assert status(tail, call(("C", "嗯", 0, 10), ("A", "谢谢", 16, 20))) == "passed"


def test_near_in_characters_and_turns(tmp_path):
    chars = one_rule(tmp_path / "a", """
        near:
          chars: 4
          a: {keyword: [告诉我]}
          b: {keyword: [验证码]}
        """, category="pii.credential_request")
    assert status(chars, call(("A", "把验证码告诉我"))) == "fired"
    assert status(chars, call(("A", "告诉我您的姓名和地址，不用验证码"))) == "passed"
    turns = one_rule(tmp_path / "b", """
        near:
          turns: 1
          a: {keyword: {terms: [手续费], role: customer}}
          b: {keyword: [先交]}
        """, category="fraud.upfront_fee")
    assert status(turns, call(("C", "手续费多少"), ("A", "您得先交"))) == "fired"
    assert status(turns, call(("C", "手续费多少"), ("C", "嗯"), ("C", "好"), ("A", "您得先交"))) == "passed"


def test_order_any_and_first(tmp_path):
    any_ = one_rule(tmp_path / "a", """
        order:
          - keyword: {terms: [我不是他本人], role: customer}
          - keyword: [欠款]
        """, category="collection.third_party_disclosure")
    assert status(any_, call(("A", "欠款"), ("C", "我不是他本人"), ("A", "他的欠款"))) == "fired"
    assert status(any_, call(("A", "他的欠款"), ("C", "我不是他本人"))) == "passed"
    first = one_rule(tmp_path / "b", """
        order:
          first: true
          steps:
            - keyword: [本人]
            - keyword: [欠款]
        """, category="identity.verification_missing")
    assert status(first, call(("A", "您是本人吗"), ("A", "您的欠款"))) == "passed"
    assert status(first, call(("A", "您的欠款"), ("A", "您是本人吗"), ("A", "欠款三千"))) == "fired"


def test_count_hits_and_turns(tmp_path):
    engine = one_rule(tmp_path / "a", "count: {of: {keyword: [稍等]}, min: 3}", category="service.impatience")
    assert status(engine, call(("A", "稍等稍等"), ("A", "稍等"))) == "fired"
    turns = one_rule(tmp_path / "b", "count: {of: {keyword: [稍等]}, min: 3, turns: true}",
                     category="service.impatience")
    assert status(turns, call(("A", "稍等稍等"), ("A", "稍等"))) == "passed"
    most = one_rule(tmp_path / "c", "count: {of: {keyword: [稍等]}, min: 0, max: 1}", category="service.impatience")
    assert status(most, call(("A", "稍等"))) == "fired"


def test_silence_unless_announced(tmp_path):
    engine = one_rule(tmp_path, """
        silence:
          min_s: 15
          lookback_s: 5
          announced_by: {keyword: [请稍等]}
        """, category="service.long_silence")
    quiet = engine.evaluate(call(("A", "我看一下", 0, 2), ("A", "好了", 20, 22))).outcomes[0]
    assert quiet.status == "fired"
    assert (quiet.finding.start_s, quiet.finding.end_s) == (2, 20)
    assert quiet.finding.matched_text == "silence 18.0s at 2.0s"
    assert status(engine, call(("A", "请稍等", 0, 2), ("A", "好了", 20, 22))) == "passed"
    assert status(engine, call(("A", "我看一下", 0, 2), ("A", "好了", 10, 12))) == "passed"


def test_overlap_counts_who_interrupts(tmp_path):
    engine = one_rule(tmp_path, "overlap: {interrupter: agent, min_s: 1.0, min_count: 2}",
                      category="service.interruption")
    agent_cuts_in = call(("C", "我想问", 0, 5), ("A", "您听我说", 3.5, 7), ("C", "可是", 8, 12), ("A", "不行", 10, 13))
    assert status(engine, agent_cuts_in) == "fired"
    customer_cuts_in = call(("A", "我想说", 0, 5), ("C", "您听我说", 3.5, 7), ("A", "可是", 8, 12), ("C", "不行", 10, 13))
    assert status(engine, customer_cuts_in) == "passed"
    short = call(("C", "我想问", 0, 5), ("A", "嗯", 4.5, 5.5), ("C", "可是", 8, 12), ("A", "对", 11.5, 12.5))
    assert status(engine, short) == "passed"


def test_speech_rate_per_utterance(tmp_path):
    engine = one_rule(tmp_path, "speech_rate: {min_cpm: 350, min_utterances: 2, min_chars: 10}",
                      category="service.speech_rate")
    fast = "您好这里是信用卡中心请问有什么可以帮您"  # 19 characters
    assert status(engine, call(("A", fast, 0, 3), ("A", fast, 4, 7))) == "fired"  # 380 per minute
    assert status(engine, call(("A", fast, 0, 3), ("A", fast, 4, 9))) == "passed"
    assert status(engine, call(("C", fast, 0, 3), ("C", fast, 4, 7))) == "passed"


def test_duration(tmp_path):
    engine = one_rule(tmp_path, "duration: {max_s: 10}", category="service.long_silence")
    assert status(engine, call(("A", "好", 0, 5))) == "fired"
    assert status(engine, call(("A", "好", 0, 5), duration_s=30)) == "passed"


def test_metadata_contact_hours_direction_and_line(tmp_path):
    engine = one_rule(tmp_path, "meta: {outside_hours: true}", category="collection.contact_hours",
                      extra="when:\n  meta: {direction: outbound, business_line: [collection]}\n")
    cst = timezone(timedelta(hours=8))
    late = dict(direction="outbound", business_line="collection", started_at=datetime(2026, 11, 5, 22, 30, tzinfo=cst))
    assert status(engine, call(("A", "还款"), **late)) == "fired"
    assert status(engine, call(("A", "还款"), **{**late, "started_at": datetime(2026, 11, 5, 9, 0)})) == "passed"
    assert status(engine, call(("A", "还款"), **{**late, "direction": "inbound"})) == "na"
    assert status(engine, call(("A", "还款"), **{**late, "started_at": None})) == "passed"
    shanghai = one_rule(tmp_path / "z", "meta: {outside_hours: true, timezone: Asia/Shanghai}",
                        category="collection.contact_hours")
    utc = datetime(2026, 11, 5, 14, 30, tzinfo=timezone.utc)  # 22:30 in Shanghai
    assert status(shanghai, call(("A", "还款"), started_at=utc)) == "fired"
    # without a zone of its own the rule reads the instant on the engine's clock (the timezone
    # setting): the same 22:30 in Shanghai whether it was given as +08:00 or as UTC
    assert status(engine, call(("A", "还款"), **{**late, "started_at": utc})) == "fired"
    on_utc = one_rule(tmp_path / "u", "meta: {outside_hours: true}", category="collection.contact_hours",
                      timezone="UTC")
    assert status(on_utc, call(("A", "还款"), started_at=utc)) == "passed"  # 14:30 on a UTC clock
    assert status(shanghai, call(("A", "还款"), started_at=datetime(2026, 11, 5, 22, 30))) == "fired"  # naive
    night = one_rule(tmp_path / "n", "meta: {outside_hours: true}", category="collection.contact_hours",
                     contact_hours="20:00-06:00")  # a window across midnight
    assert status(night, call(("A", "还款"), started_at=datetime(2026, 11, 5, 23, 0))) == "passed"
    assert status(night, call(("A", "还款"), started_at=datetime(2026, 11, 5, 12, 0))) == "fired"


def test_all_any_not(tmp_path):
    engine = one_rule(tmp_path, """
        all:
          - any:
              - keyword: [理财]
              - keyword: [基金]
          - not: {keyword: [风险]}
        """, category="disclosure.risk_missing", extra="fire_when: present\n")
    assert status(engine, call(("A", "买点基金吧"))) == "fired"
    assert status(engine, call(("A", "买点基金吧，有风险"))) == "passed"
    assert status(engine, call(("A", "存定期吧"))) == "passed"


def test_must_say_is_na_when_not_applicable_and_fires_when_absent(tmp_path):
    engine = one_rule(tmp_path, "keyword: [投资须谨慎]", category="disclosure.risk_missing",
                      extra="when:\n  keyword: [理财]\n")
    na = engine.evaluate(call(("A", "您的卡已激活"))).outcomes[0]
    assert na.status == "na" and na.why.startswith("not applicable")
    fired = engine.evaluate(call(("C", "你好"), ("A", "推荐一款理财"))).outcomes[0]
    assert fired.status == "fired"
    # The evidence of a missing statement is what made the rule applicable.
    assert fired.finding.utterance_idx == (1,) and fired.finding.matched_text is None
    assert fired.finding.evidence == "[1] agent: 推荐一款理财"
    assert (fired.finding.start_s, fired.finding.end_s) == (3.0, 5.5)
    assert status(engine, call(("A", "推荐一款理财"), ("A", "投资须谨慎"))) == "passed"


def test_finding_evidence(tmp_path):
    engine = one_rule(tmp_path, "keyword: [保本保息]")
    f = engine.evaluate(call(("C", "有风险吗"), ("A", "没有，保本保息的", 3, 6))).outcomes[0].finding
    assert (f.rule_id, f.category, f.severity, f.role) == ("r", "promise.guaranteed_return", "fatal", "agent")
    assert (f.utterance_idx, f.matched_text, f.start_s, f.end_s) == ((1,), "保本保息", 3, 6)
    assert f.evidence == "[1] agent: 没有，保本保息的"
    assert "matched '保本保息' in #1" in f.details["why"]
