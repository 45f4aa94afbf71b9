"""Timing and loudness features on constructed calls with known silences and overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from qa.asr.features import FeatureOptions, call_features, loudness_db, speech_rate_cpm
from qa.domain import CallFeatures, Overlap, SilenceGap, Utterance


def U(role, start, end, text="", loud=None):
    return Utterance(role, start, end, text, loudness_db=loud)


UTTS = [
    U("agent", 0.5, 5.0, "您好，嘉禾银行，请问有什么可以帮您？", -20.0),  # 15 characters
    U("customer", 6.0, 9.0, "我想查一下账单。", -26.0),  # 7
    U("agent", 8.5, 12.0, "好的，请稍等。", -22.0),  # starts 0.5 s before the customer stops
    U("customer", 25.0, 27.0, "还在吗？"),  # 13 s of silence before it
    U("agent", 26.9, 30.0, "在的。"),  # 0.1 s overlap: under the threshold
    U("customer", 28.0, 29.0, "好。"),  # starts while the agent talks: the customer interrupts
]


def test_silences_overlaps_and_talk_time():
    f = call_features(UTTS, 40.0, FeatureOptions(min_silence_s=1.0, min_overlap_s=0.3))
    assert f.duration_s == 40.0
    assert f.silences == (SilenceGap(5.0, 1.0), SilenceGap(12.0, 13.0))
    assert f.max_silence_s == 13.0
    assert f.overlaps == (Overlap(8.5, 0.5, "agent"), Overlap(28.0, 1.0, "customer"))
    agent, customer = f.roles["agent"], f.roles["customer"]
    assert agent.talk_time_s == pytest.approx(4.5 + 3.5 + 3.1)
    assert customer.talk_time_s == pytest.approx(3.0 + 2.0 + 1.0)
    assert (agent.utterances, agent.chars, customer.chars) == (3, 15 + 5 + 2, 7 + 3 + 1)
    assert agent.speech_rate_cpm == pytest.approx(round(60 * 22 / 11.1, 1))
    assert agent.mean_loudness_db == pytest.approx(-21.0)
    assert customer.mean_loudness_db == -26.0


def test_no_utterances():
    f = call_features([], 12.0)
    assert (f.roles, f.silences, f.overlaps) == ({}, (), ())


def test_speech_rate_and_loudness_on_constructed_audio():
    assert speech_rate_cpm("您好，请问有什么可以帮您？", 3.0) == 220.0  # 11 characters in 3 s
    assert speech_rate_cpm("嗯", 0.0) == 0.0
    t = np.arange(16000 * 4) / 16000
    audio = np.zeros_like(t, dtype=np.float32)
    audio[16000:32000] = 0.1 * np.sin(2 * np.pi * 440 * t[16000:32000])  # RMS 0.0707 -> -23.0 dBFS
    assert loudness_db(audio, 1.0, 2.0) == pytest.approx(-23.01, abs=0.02)
    assert loudness_db(audio, 2.5, 3.5) == -100.0
    assert loudness_db(audio, 5.0, 6.0) is None


def test_json_round_trip():
    f = call_features(UTTS, 40.0)
    doc = f.to_json()
    assert doc["overlaps"][1] == {"start_s": 28.0, "duration_s": 1.0, "interrupter": "customer"}
    assert CallFeatures.from_json(doc) == f
    import json

    assert CallFeatures.from_json(json.loads(json.dumps(doc))) == f
