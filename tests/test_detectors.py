"""Learned detectors: the shipped artifact, the ``detector`` rule operator, threshold choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.classifiers.detectors import (CATEGORIES, DetectorOptions, Line, SnippetScores, _refine, choose_thresholds,
                                      detector_inputs, load_detector)
from qa.classifiers.text import (CONTEXT_MARK, char_ngrams, context_sound_ngrams, own_char_ngrams, own_sound_ngrams,
                                 sound_ngrams)
from qa.errors import RuleError
from qa.rules.context import EngineOptions
from qa.rules.engine import RuleEngine
from qa.rules.loader import load_pack
from rules_helpers import call, write_pack

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "rules" / "finance-zh" / "models"

INSULT_RULE = """
id: insult
title: t
category: conduct.insult
condition:
  detector: {min_prob: MIN}
"""


def _pack(tmp_path: Path, rule: str = INSULT_RULE, min_prob: str = "0.2") -> Path:
    pack = write_pack(tmp_path / "pack", {"r.yaml": rule.replace("MIN", min_prob)})
    shutil.copytree(SHIPPED, pack / "models")
    return pack


def test_shipped_detector_matches_its_card():
    detector = load_detector(SHIPPED)
    assert list(detector.index) == list(CATEGORIES)
    assert set(detector.thresholds) == set(CATEGORIES)
    card = json.loads((SHIPPED / "detectors.card.json").read_text(encoding="utf-8"))
    assert card["training"]["files"][0] == "data/eval/train/snippets.jsonl"
    assert {"dev", "test", "thresholds"} <= set(card["heldout_metrics"])
    scores = detector.scores(["你是不是脑子有问题啊，这都听不懂", "好的，请问还有什么可以帮您"])
    col = detector.index["conduct.insult"]
    assert scores.shape == (2, len(CATEGORIES)) and scores[0, col] > scores[1, col]
    texts = ["您放心，本金肯定亏不了", "你再不还我就去你单位找你", "好的，请问还有什么可以帮您"]
    assert np.allclose(detector.scores(texts), detector.pipeline.predict_proba(texts), atol=1e-5)


def test_a_rule_fires_by_detector_and_says_with_what_probability(tmp_path):
    engine = RuleEngine(load_pack(_pack(tmp_path)), EngineOptions())
    result = engine.evaluate(call(("C", "我还是不明白怎么操作。"), ("A", "你是不是脑子有问题啊，这都听不懂，真是笨死了")))
    assert [f.category for f in result.findings] == ["conduct.insult"]
    assert "detector[conduct.insult >= 0.20]" in result.findings[0].details["why"]
    assert "p=" in result.findings[0].details["why"]
    polite = engine.evaluate(call(("C", "我还是不明白怎么操作。"), ("A", "没关系，我再给您慢慢讲一遍。")))
    assert polite.findings == ()


def test_the_detector_reads_only_the_rules_role(tmp_path):
    engine = RuleEngine(load_pack(_pack(tmp_path)), EngineOptions())
    said_by_customer = engine.evaluate(call(("C", "你是不是脑子有问题啊，这都听不懂，真是笨死了"), ("A", "您先别生气。")))
    assert said_by_customer.findings == ()


def test_a_pack_without_its_detector_is_refused_with_the_file(tmp_path):
    pack = write_pack(tmp_path / "pack", {"r.yaml": INSULT_RULE.replace("MIN", "0.5")})
    with pytest.raises(RuleError, match=r"r\.yaml:5: detector: .*detectors\.card\.json"):
        load_pack(pack)


def test_an_altered_detector_is_refused(tmp_path):
    pack = _pack(tmp_path)
    artifact = pack / "models" / "detectors.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    from qa.rules import detect

    detect._loaded.clear()  # the process-wide cache would otherwise hand back the good copy
    with pytest.raises(RuleError, match="does not match its model card"):
        load_pack(pack)
    detect._loaded.clear()


def test_a_category_the_detector_does_not_know_is_refused(tmp_path):
    rule = INSULT_RULE.replace("category: conduct.insult", "category: service.long_silence")
    with pytest.raises(RuleError, match="has no category 'service.long_silence'"):
        load_pack(_pack(tmp_path, rule))


def test_thresholds_are_the_lowest_that_reach_the_precision_target():
    k = CATEGORIES.index("conduct.insult")
    best = np.zeros((7, len(CATEGORIES)), dtype=np.float32)
    truth = np.zeros_like(best, dtype=bool)
    best[:, k] = [0.9, 0.7, 0.6, 0.5, 0.4, 0.2, 0.55]
    truth[:, k] = [True, True, False, True, False, False, False]
    known = np.ones_like(best, dtype=bool)
    # the last snippet is another category's positive: whether it is an insult too nobody said
    known[6, k] = False
    options = DetectorOptions(precision_target=0.75, min_threshold=0.1)
    chosen = choose_thresholds(SnippetScores(best, truth, known), options)
    assert chosen["conduct.insult"] == 0.5  # 3 of 4 at 0.5; at 0.4, 3 of 5
    assert chosen["conduct.threat"] == 1.0  # nothing to go on: the detector stays silent
    known[6, k] = True  # were it a known negative, 0.5 would be 3 of 5
    assert choose_thresholds(SnippetScores(best, truth, known), options)["conduct.insult"] == 0.7
    # never below the floor, however precise (3 of 6 at 0.4 would do for 50 %)
    assert choose_thresholds(SnippetScores(best, truth, known), DetectorOptions(precision_target=0.5,
                                                                                  min_threshold=0.45)
                             )["conduct.insult"] == 0.45


def test_refine_keeps_the_lines_that_carry_the_act():
    lines = [Line("s1", "conduct.insult", True, "agent", t) for t in ("您好工号三零零一", "你真是个废物")]
    y = np.zeros((2, len(CATEGORIES)), dtype=np.int8)
    k = CATEGORIES.index("conduct.insult")
    y[:, k] = 1
    scores = np.zeros((2, len(CATEGORIES)))
    scores[:, k] = [0.1, 0.8]
    assert _refine(lines, y, scores, 0.5)[:, k].tolist() == [0, 1]


def test_an_utterance_is_read_with_the_one_before_it():
    docs = detector_inputs(["您好，请问有什么可以帮您？", "  ", "我要投诉你们", "投诉也没用"])
    assert docs[0] == "您好，请问有什么可以帮您？"  # the first has no context
    assert docs[1] == ""  # an empty utterance stays empty: the context alone never scores
    assert docs[3] == "投诉也没用" + CONTEXT_MARK + "我要投诉你们"
    # the utterance's own blocks never see the context; the context block is marked apart
    assert own_char_ngrams(docs[3]) == char_ngrams("投诉也没用")
    assert own_sound_ngrams(docs[3]) == sound_ngrams("投诉也没用")
    context = context_sound_ngrams(docs[3])
    assert context and all(g.startswith("<") for g in context)
    assert context_sound_ngrams(docs[0]) == []


def test_an_artifact_without_the_context_block_reads_utterances_alone():
    detector = load_detector(SHIPPED)
    assert detector.reads_context
    texts = ["我要投诉你们", "投诉也没用"]
    with_context = detector.call_scores(texts)
    assert np.allclose(with_context, detector.scores(detector_inputs(texts)))
    detector.reads_context = False  # what an older artifact is: no context block
    assert np.allclose(detector.call_scores(texts), detector.scores(texts))


def test_a_calls_scores_from_cached_line_parts_equal_the_pipelines():
    detector = load_detector(SHIPPED)
    first = ["您好，请问有什么可以帮您？", "我要投诉你们", "", "投诉也没用", "好的", "我要投诉你们", "好的"]
    second = ["好的", "投诉也没用", "你再不还我就去你单位找你", "好的"]  # mostly lines already seen
    for texts in (first, second, first):
        want = detector.pipeline.predict_proba(detector_inputs(texts))
        assert np.allclose(detector.call_scores(texts), want, atol=1e-5)
    assert detector.call_scores([]).shape == (0, len(CATEGORIES))
