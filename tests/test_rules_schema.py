"""Rule-pack loading and lint: broken files are rejected with file:line: message."""

from __future__ import annotations

import pytest
from rules_helpers import write_pack

from qa.errors import RuleError
from qa.rules.loader import lint_pack, load_pack, pack_sha256

GOOD = """\
id: good
title: 承诺保本
category: promise.guaranteed_return
condition:
  keyword: [保本保息]
tests:
  - expect: fire
    dialogue: ["A: 保本保息"]
"""

# (file text, line the error must name, words the message must contain)
BROKEN = {
    "unknown_category": ("id: x\ntitle: t\ncategory: promise.guaranteed\ncondition:\n  keyword: [a]\n", 3,
                         "unknown category 'promise.guaranteed'"),
    "unknown_operator": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  any:\n    - kw: [a]\n", 6,
                         "unknown operator 'kw'"),
    "lookahead": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  regex: 'a(?=b)'\n", 5,
                  "lookahead/lookbehind"),
    "backreference": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  regex:\n    pattern: '(a)\\1'\n", 6,
                      "backreferences"),
    "bad_regex": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  regex: '[ab'\n", 5,
                  "not valid for RE2: missing ]"),
    "yaml_syntax": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [a, b\n", 6, "invalid YAML"),
    "missing_condition": ("id: x\ntitle: t\ncategory: conduct.insult\n", 1, "a rule needs 'condition'"),
    "typo_key": ("id: x\ntitle: t\ncategory: conduct.insult\ncondtion:\n  keyword: [a]\n", 4,
                 "unknown key 'condtion' in a rule"),
    "bad_severity": ("id: x\ntitle: t\ncategory: conduct.insult\nseverity: critical\ncondition:\n  keyword: [a]\n", 4,
                     "severity must be one of fatal, major, minor"),
    "two_operators": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [a]\n  regex: b\n", 5,
                      "exactly one operator"),
    "window_two_keys": ("id: x\ntitle: t\ncategory: greeting.missing\ncondition:\n  keyword:\n    terms: [您好]\n"
                        "    window: {first_turns: 2, last_s: 3}\n", 7, "window takes exactly one"),
    "pinyin_latin": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  pinyin:\n    terms: [ok吧]\n", 6,
                     "must be Chinese characters only"),
    "at_least_too_big": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword:\n    terms: [a, b]\n"
                         "    at_least: 3\n", 7, "exceeds the 2 distinct terms"),
    "bad_expect": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [a]\ntests:\n"
                   "  - expect: fired\n    dialogue: ['A: a']\n", 7, "expect must be one of fire, pass, na"),
    "bad_turn": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [a]\ntests:\n"
                 "  - expect: fire\n    dialogue:\n      - 'X: a'\n", 9, "a turn looks like 'A: text'"),
    "duplicate_key": ("id: x\ntitle: t\ntitle: u\ncategory: conduct.insult\ncondition:\n  keyword: [a]\n", 3,
                      "duplicate key 'title' (first on line 2)"),
    "near_without_distance": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  near:\n"
                              "    a: {keyword: [a]}\n    b: {keyword: [b]}\n", 6, "exactly one of 'chars' or 'turns'"),
    "bad_hours": ("id: x\ntitle: t\ncategory: collection.contact_hours\ncondition:\n  meta:\n"
                  "    outside_hours: true\n    hours: '25:00-21:00'\n", 7, "time must look like 08:00"),
    "bad_timezone": ("id: x\ntitle: t\ncategory: collection.contact_hours\ncondition:\n  meta:\n"
                     "    outside_hours: true\n    timezone: Mars/Base\n", 7, "unknown time zone 'Mars/Base'"),
    "bad_rule_id": ("id: Bad Id\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: [a]\n", 1,
                    "must be lower-case letters"),
    "negative_number": ("id: x\ntitle: t\ncategory: service.long_silence\ncondition:\n  silence: {min_s: -3}\n", 5,
                        "'min_s' must be a number >= 0.1"),
    "empty_terms": ("id: x\ntitle: t\ncategory: conduct.insult\ncondition:\n  keyword: []\n", 5,
                    "keyword terms must be a non-empty list"),
    "basis_not_a_list": ("id: x\ntitle: t\ncategory: conduct.insult\nbasis: PIPL\ncondition:\n  keyword: [a]\n", 4,
                         "basis must be a non-empty list"),
    "basis_without_document": ("id: x\ntitle: t\ncategory: conduct.insult\nbasis:\n  - article: 第十条\n"
                               "condition:\n  keyword: [a]\n", 5, "a basis needs 'document'"),
    "basis_bad_date": ("id: x\ntitle: t\ncategory: conduct.insult\nbasis:\n  - document: 个人信息保护法\n"
                       "    effective: 2021-13-01\ncondition:\n  keyword: [a]\n", 6, "'2021-13-01' is not a valid value"),
    "basis_bad_quoted_date": ("id: x\ntitle: t\ncategory: conduct.insult\nbasis:\n  - document: 个人信息保护法\n"
                              "    effective: '2021-11'\ncondition:\n  keyword: [a]\n", 6, "effective must be a date"),
    "basis_typo": ("id: x\ntitle: t\ncategory: conduct.insult\nbasis:\n  - document: 个人信息保护法\n"
                   "    artcle: 第十条\ncondition:\n  keyword: [a]\n", 6, "unknown key 'artcle' in a basis"),
    "history_bad_category": ("id: x\ntitle: t\ncategory: customer.do_not_call\ncondition:\n"
                             "  prior_finding: {category: customer.do_not_call, within_days: 30}\ntests:\n"
                             "  - expect: fire\n    started_at: '2026-11-20T10:00:00'\n    history:\n"
                             "      - {started_at: '2026-11-19T10:00:00', categories: [no.such]}\n"
                             "    dialogue: ['A: 您好']\n", 10, "unknown category 'no.such'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_rule_file_names_file_line_and_problem(tmp_path, case):
    text, line, words = BROKEN[case]
    pack = write_pack(tmp_path / "pack", {"good.yaml": GOOD, f"{case}.yaml": text})
    report = lint_pack(pack)
    assert report.pack is None
    assert len(report.errors) == 1, report.errors
    assert report.errors[0].startswith(f"{pack / (case + '.yaml')}:{line}: "), report.errors[0]
    assert words in report.errors[0]


def test_load_pack_lists_every_broken_file(tmp_path):
    pack = write_pack(tmp_path / "pack", {"a.yaml": BROKEN["lookahead"][0], "b.yaml": BROKEN["typo_key"][0],
                                          "good.yaml": GOOD})
    with pytest.raises(RuleError) as e:
        load_pack(pack)
    assert "a.yaml:5:" in str(e.value) and "b.yaml:4:" in str(e.value)
    assert e.value.path == str(pack)


def test_duplicate_rule_ids_across_files(tmp_path):
    pack = write_pack(tmp_path / "pack", {"a.yaml": GOOD, "b.yaml": GOOD})
    report = lint_pack(pack)
    assert report.errors == [f"{pack / 'b.yaml'}:1: duplicate rule id 'good' (also in {pack / 'a.yaml'})"]


def test_pack_header_errors(tmp_path):
    assert "no pack.yaml" in lint_pack(tmp_path).errors[0]
    pack = write_pack(tmp_path / "p", {"good.yaml": GOOD},
                      pack_yaml="name: p\nversion: 1\nscorecard:\n  severity_points: {fatal: 100, huge: 3}\n")
    assert lint_pack(pack).errors == [f"{pack / 'pack.yaml'}:4: scorecard severity_points has unknown severities ['huge']"]
    pack = write_pack(tmp_path / "q", {"good.yaml": GOOD},
                      pack_yaml="name: p\nversion: 1\nscorecard:\n  rule_points: {nope: 3}\n")
    assert "names unknown rule 'nope'" in lint_pack(pack).errors[0]


def test_defaults_come_from_the_taxonomy_and_tests_are_counted(tmp_path):
    pack = load_pack(write_pack(tmp_path / "pack", {"good.yaml": GOOD}))
    rule = pack.rules[0]
    assert (rule.severity, rule.role, rule.kind, rule.fire_when) == ("fatal", "agent", "must_not_say", "present")
    must_say = GOOD.replace("promise.guaranteed_return", "disclosure.risk_missing")
    rule = load_pack(write_pack(tmp_path / "p2", {"r.yaml": must_say})).rules[0]
    assert (rule.fire_when, rule.severity) == ("absent", "fatal")
    report = lint_pack(tmp_path / "pack")
    assert report.warnings == [f"{tmp_path / 'pack' / 'good.yaml'}: rule good has 1 positive and 0 negative tests "
                               "(want at least 3 of each)"]


def test_pack_sha256_covers_every_file_in_sorted_order(tmp_path):
    pack = write_pack(tmp_path / "pack", {"good.yaml": GOOD})
    first = pack_sha256(pack)
    assert load_pack(pack).sha256 == first
    (pack / "README.md").write_text("notes", encoding="utf-8")
    second = pack_sha256(pack)
    assert second != first
    (pack / "good.yaml").write_text(GOOD + "\n", encoding="utf-8")
    assert pack_sha256(pack) not in (first, second)
    copy = write_pack(tmp_path / "copy", {"good.yaml": GOOD + "\n"})
    (copy / "README.md").write_text("notes", encoding="utf-8")
    assert pack_sha256(copy) == pack_sha256(pack)


def test_alias_bombs_and_deep_nesting_are_refused_quickly(tmp_path):
    import time

    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\nid: r\ntitle: t\ncategory: promise.guaranteed_return\ncondition: {keyword: *a8}\n"
    deep = ("id: r\ntitle: t\ncategory: promise.guaranteed_return\ncondition: " + "{not: " * 3000 + "{keyword: x}"
            + "}" * 3000 + "\n")
    for name, body, message in (("bomb", bomb, "expands into more than"), ("deep", deep, "nested deeper than")):
        pack = write_pack(tmp_path / name, {"r.yaml": body})
        started = time.perf_counter()
        report = lint_pack(pack)
        assert time.perf_counter() - started < 5
        assert any("r.yaml" in e and message in e for e in report.errors), report.errors


def test_a_basis_is_loaded_with_its_rule(tmp_path):
    rule = GOOD.replace("condition:", "basis:\n  - document: 关于规范金融机构资产管理业务的指导意见\n    article: 第十九条\n"
                                      "    effective: 2018-04-27\ncondition:")
    pack = load_pack(write_pack(tmp_path / "pack", {"good.yaml": rule}))
    (basis,) = pack.rule("good").basis
    assert (basis.document, basis.article, basis.effective.isoformat()) == ("关于规范金融机构资产管理业务的指导意见",
                                                                          "第十九条", "2018-04-27")
    assert str(basis) == "关于规范金融机构资产管理业务的指导意见 第十九条（2018-04-27 起施行）"
