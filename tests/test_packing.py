"""Packing speech segments into shared windows and splitting the decoded text back: window
limits, call times surviving the round trip, token assignment on constructed alignments, and
the packed path on a real sample call with the real base weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import whisper.tokenizer

from qa.asr.engine import DecodeOptions, WindowResult
from qa.asr.packing import (
    FRAME_S,
    AligningDecoder,
    PackOptions,
    Piece,
    Placement,
    dtw_path,
    median_filter,
    nearest_placement,
    pack,
    split_tokens,
    token_spans,
)
from qa.asr.stage import AsrOptions, PreparedCall, PreparedChannel, plan_packed, unpack_results
from qa.asr.text import char_error_rate, normalize_text
from qa.asr.vad import SpeechSegment, cut
from qa.config import FINANCE_HOTWORDS, Settings

RATE = 16000


def tone(seconds: float, value: float) -> np.ndarray:
    return np.full(int(round(seconds * RATE)), value, dtype=np.float32)


def test_pack_respects_limit_groups_and_gaps():
    pieces = [Piece(tone(5, 0.1)), Piece(tone(10, 0.2)), Piece(tone(14, 0.3)), Piece(tone(3, 0.4)),
              Piece(tone(2, 0.5), group=1), Piece(tone(29, 0.6), group=1)]
    windows = pack(pieces, PackOptions(max_window_s=30, gap_s=0.5))
    assert [[p.piece for p in w.placements] for w in windows] == [[0, 1, 2], [3], [4], [5]]
    first = windows[0]
    assert len(first.audio) == RATE * (5 + 0.5 + 10 + 0.5 + 14)
    assert [(p.start_s, p.end_s) for p in first.placements] == [(0.0, 5.0), (5.5, 15.5), (16.0, 30.0)]
    for p in first.placements:  # each piece lies where its placement says, digital silence between
        chunk = first.audio[round(p.start_s * RATE) : round(p.end_s * RATE)]
        assert np.all(chunk == pieces[p.piece].audio[0])
    assert np.all(first.audio[5 * RATE : int(5.5 * RATE)] == 0)
    assert all(len(w.audio) <= 30 * RATE for w in windows)


def test_piece_longer_than_the_limit_gets_its_own_window():
    windows = pack([Piece(tone(2, 0.1)), Piece(tone(12, 0.2)), Piece(tone(2, 0.3))], PackOptions(max_window_s=10))
    assert [[p.piece for p in w.placements] for w in windows] == [[0], [1], [2]]


def test_pack_options_validate():
    PackOptions(max_window_s=0).validate()
    for bad in (PackOptions(max_window_s=31), PackOptions(max_window_s=0.5), PackOptions(gap_s=-0.1)):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(ValueError):
        Settings(asr_pack_s=40).validate()


def test_pack_setting_is_recorded_with_the_transcript_options():
    on, off = AsrOptions.from_settings(Settings()), AsrOptions.from_settings(Settings(asr_pack_s=0))
    assert on.as_dict()["pack"]["max_window_s"] == 30.0 and off.as_dict()["pack"]["max_window_s"] == 0
    assert on.sha256 != off.sha256 and on.pack.enabled and not off.pack.enabled


def prepared_call(pk: int, segments_per_channel: list[list[tuple[float, float]]]) -> PreparedCall:
    rng = np.random.default_rng(pk)
    channels = tuple(
        PreparedChannel(i, "agent" if i == 0 else "customer", rng.standard_normal(RATE * 60).astype(np.float32),
                        tuple(SpeechSegment(a, b) for a, b in segs), None)
        for i, segs in enumerate(segments_per_channel))
    return PreparedCall(pk, f"C{pk}", 60.0, "wav", 8000, len(channels), channels)


@pytest.mark.parametrize("across", [False, True])
def test_call_times_survive_packing_and_unpacking(across):
    calls = [prepared_call(1, [[(0.5, 4.0), (6.0, 13.5), (15.0, 27.0), (30.0, 34.5)], [(4.5, 5.8)]]),
             prepared_call(2, [[(1.0, 3.0)], [(3.5, 9.0), (40.0, 59.5)]])]
    options = PackOptions(max_window_s=30, gap_s=0.4, across_channels=across)
    refs, windows = plan_packed(calls, 0.2, options)
    assert sum(len(w.placements) for w in windows) == len(refs) == 8
    for w in windows:
        assert len(w.audio) <= 30 * RATE
        owners = {(refs[p.piece].call, refs[p.piece].channel) for p in w.placements}
        assert across or len(owners) == 1
        for p in w.placements:  # the window holds exactly the segment's padded cut
            ref = refs[p.piece]
            expected = cut(calls[ref.call].channels[ref.channel].audio, ref.segment, 0.2)
            np.testing.assert_array_equal(w.audio[round(p.start_s * RATE) : round(p.end_s * RATE)], expected)
    assert len(windows) == (3 if across else 5)  # 30.3 s of channel 0 of C1 need two
    results = [WindowResult((i,), f"t{i}", -0.1, 0.01, 1.0, 0.0) for i in range(len(refs))]
    decoded = unpack_results(calls, refs, results)
    for call, dec in zip(calls, decoded):
        got = sorted((s.channel, s.segment.start_s, s.segment.end_s) for s in dec.segments)
        want = sorted((ch.index, s.start_s, s.end_s) for ch in call.channels for s in ch.segments)
        assert got == want


def test_nearest_placement_on_spans_and_gaps():
    places = [Placement(0, 0.0, 4.0), Placement(1, 4.4, 9.0), Placement(2, 9.4, 12.0)]
    assert [nearest_placement(t, places) for t in (-1.0, 2.0, 4.1, 4.3, 8.9, 9.25, 30.0)] == [0, 0, 0, 1, 1, 2, 2]


def test_split_tokens_by_time_keeps_characters_whole():
    tok = whisper.tokenizer.get_tokenizer(True, language="zh", task="transcribe")
    first, second = tok.encode("您好，请讲。"), tok.encode("我想查账单。")
    places = [Placement(0, 0.0, 3.0), Placement(1, 3.4, 7.0)]
    # the first sentence's tokens in 0-3 s, the second's in 3.4-7 s; the last token of the
    # first sentence runs far into the gap (the alignment gives the silence to the character
    # before it, as on real audio), but it starts in the first span
    spans = np.array([[0.3 * i, 0.3 * i + 0.3] for i in range(len(first) - 1)] + [[2.6, 3.95]]
                     + [[3.5 + 0.3 * i, 3.7 + 0.3 * i] for i in range(len(second))])
    parts = split_tokens(first + second, spans, places, tok.decode)
    assert [tok.decode(p) for p in parts] == ["您好，请讲。", "我想查账单。"]
    # 账 is two byte-level tokens; here they straddle the gap and stay together on the side
    # where the character starts
    assert [tok.decode([t]) for t in second[2:4]] == ["\ufffd", "\ufffd"]
    spans = np.array([[0.0, 0.4], [0.4, 0.8], [0.8, 1.0], [1.4, 1.5], [1.6, 2.0], [2.0, 2.2]])
    parts = split_tokens(second, spans, [Placement(0, 0.0, 1.0), Placement(1, 1.4, 3.0)], tok.decode)
    assert [tok.decode(p) for p in parts] == ["我想查账", "单。"]
    with pytest.raises(ValueError):
        split_tokens(second, spans[:-1], places, tok.decode)


def test_dtw_path_follows_the_cheap_cells():
    cost = np.ones((3, 9))
    for t, (a, b) in enumerate([(0, 3), (3, 5), (5, 9)]):
        cost[t, a:b] = 0.0
    rows, cols = dtw_path(cost)
    assert (rows[0], cols[0]) == (0, 0) and (rows[-1], cols[-1]) == (2, 8)
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
    assert [sorted(set(cols[rows == t])) for t in range(3)] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]


def test_token_spans_from_constructed_attention():
    frames, n = 300, 4
    att = np.full((2, n + 1, frames), 0.01)
    edges = [0, 40, 100, 170, 250, 300]  # token t attends to frames edges[t]:edges[t+1]
    for t in range(n + 1):
        att[:, t, edges[t] : edges[t + 1]] = 1.0
    spans = token_spans(att, n)
    for t in range(n):
        assert abs(spans[t, 0] - edges[t] * FRAME_S) <= 4 * FRAME_S
        assert abs(spans[t, 1] - edges[t + 1] * FRAME_S) <= 4 * FRAME_S


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    import torch

    from qa.asr.weights import build_model, load_checkpoint, registry_checkpoint, to_inference

    path, _ = registry_checkpoint(tmp_path_factory.mktemp("asr-cache"))
    return to_inference(build_model(load_checkpoint(path)), "cpu", torch.float32)


def test_packed_decoding_gives_each_sample_turn_its_text(base_model, samples_dir):
    """One window holds all six turns of S04 (both channels): every segment gets the text of its
    own turn back, also the turns after the point where this prompt makes Whisper end the window
    early (they are decoded again alone). (Silent and noise-only calls: test_transcribe.)"""
    from qa.asr.vad import Vad
    from qa.ingest.audio import decode_file

    reference = json.loads((samples_dir / "calls" / "S04.json").read_text(encoding="utf-8"))["turns"]
    audio = decode_file(samples_dir / "calls" / "S04.wav").channels
    vad = Vad()
    segments = [(ch, seg) for ch, samples in enumerate(audio) for seg in vad.segments(samples)]
    assert len(segments) == len(reference)
    windows = pack([Piece(cut(audio[ch], seg, 0.2)) for ch, seg in segments], PackOptions(max_window_s=30, gap_s=0.4))
    assert len(windows) == 1
    decoder = AligningDecoder(base_model, replace(DecodeOptions(), prompt=FINANCE_HOTWORDS, batch_size=4))
    results = decoder.decode_packed(windows)
    total_errors = total_chars = 0
    for (ch, seg), res in zip(segments, results[0]):
        turn = min(reference, key=lambda t: abs(t["start_s"] - seg.start_s))
        assert turn["role"] == ("agent" if ch == 0 else "customer")
        text = normalize_text(res.text)
        errors, n = char_error_rate(turn["text"], text)
        # a short turn on its own is noisy with base; text from a neighbouring turn would be worse
        assert text and errors / n < 0.8, (turn["text"], text)
        assert res.avg_logprob < 0 and 0 <= res.no_speech_prob <= 1
        total_errors, total_chars = total_errors + errors, total_chars + n
    assert total_errors / total_chars < 0.35


def test_median_filter_is_the_sliding_median_with_reflected_edges():
    x = np.random.default_rng(3).normal(size=(2, 5, 40))
    padded = np.pad(x, [(0, 0), (0, 0), (3, 3)], mode="reflect")
    want = np.array([[[np.median(padded[h, t, j : j + 7]) for j in range(40)] for t in range(5)] for h in range(2)])
    assert np.array_equal(median_filter(x, 7), want)
    assert median_filter(x, 1) is x
    with pytest.raises(ValueError, match="odd"):
        median_filter(x, 6)
