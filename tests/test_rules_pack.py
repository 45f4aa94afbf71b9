"""The default pack rules/finance-zh: its own tests, its coverage, and the labelled samples."""

from __future__ import annotations

import pytest

from qa.config import Settings
from qa.rules.context import EngineOptions
from qa.rules.engine import RuleEngine
from qa.rules.evaluate import evaluate, read_samples
from qa.rules.loader import lint_pack, load_pack
from qa.rules.taxonomy import KINDS, load_taxonomy
from qa.rules.testing import run_rule_tests

PACK_DIR = Settings().rules_pack
PACK = load_pack(PACK_DIR)
ENGINE = RuleEngine(PACK, EngineOptions())
CASES = [(rule, n) for rule in PACK.rules for n in range(len(rule.tests))]


@pytest.mark.parametrize("rule, n", CASES, ids=[f"{r.id}:{r.tests[n].line}" for r, n in CASES])
def test_rule_snippet(rule, n):
    result = run_rule_tests(ENGINE, (rule,))[n]
    assert result.ok, f"{result.where} {result.name}: expected {result.expect}, got {result.got} ({result.why})"


def test_pack_lints_clean_and_covers_the_taxonomy():
    report = lint_pack(PACK_DIR)
    assert report.errors == [] and report.warnings == []
    categories = {r.category for r in PACK.rules}
    assert len(categories) >= 24
    assert categories <= set(load_taxonomy())
    for rule in PACK.rules:
        positives = sum(t.expect == "fire" for t in rule.tests)
        assert positives >= 3 and len(rule.tests) - positives >= 3, rule.id


def test_project_taxonomy_is_complete():
    taxonomy = load_taxonomy()
    assert len(taxonomy) == 28
    assert {c.kind for c in taxonomy.values()} == set(KINDS)
    assert taxonomy["promise.guaranteed_return"].severity == "fatal"
    assert taxonomy["complaint.escalation_threat"].role == "customer"


def test_reference_transcripts_of_the_samples(samples_dir):
    """Text-only check on the sidecar turns: every expected category fires, nothing that
    must not fire does (the end-to-end figures on ASR output are in BENCHMARKS.md)."""
    report = evaluate(ENGINE, read_samples(samples_dir))
    problems = {c.call_id: (sorted(c.missed), sorted(c.false_alarms), c.why)
                for c in report.calls if c.missed or c.false_alarms}
    assert problems == {}
    assert report.totals().tp == sum(len(c.expected) for c in report.calls)


def test_homophone_noise_keeps_the_sound(samples_dir):
    import random

    from qa.rules.evaluate import with_homophone_noise
    from qa.rules.text import HOMOPHONE, sound_table

    reference = read_samples(samples_dir)[0].reference
    assert with_homophone_noise(reference, 0.0, random.Random(1)) == reference
    noisy = with_homophone_noise(reference, 1.0, random.Random(1))
    table = sound_table(HOMOPHONE)
    before = "".join(u.text for u in reference.utterances)
    after = "".join(u.text for u in noisy.utterances)
    assert before != after and table.translate(before) == table.translate(after)
