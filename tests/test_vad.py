"""Speech segments: merging and splitting, cutting with padding, and the map from decoder rows
back to calls, channels and call time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qa.asr.engine import WindowResult
from qa.asr.stage import PreparedCall, PreparedChannel, plan_windows, unpack_results
from qa.asr.vad import SpeechSegment, Vad, VadOptions, cut, merge_segments, split_long
from qa.ingest.audio import decode_file

S = SpeechSegment


def test_merge_short_pauses_but_not_long_ones():
    segs = [S(0.0, 1.0), S(1.3, 2.0), S(3.0, 4.0), S(4.2, 5.0)]
    assert merge_segments(segs, gap_s=0.5, max_s=30) == [S(0.0, 2.0), S(3.0, 5.0)]
    assert merge_segments(segs, gap_s=0.5, max_s=1.5) == [S(0.0, 1.0), S(1.3, 2.0), S(3.0, 4.0), S(4.2, 5.0)]


def test_split_long_keeps_every_part_in_one_window():
    parts = split_long([S(10.0, 75.0), S(80.0, 81.0)], 28.0)
    assert [round(p.duration_s, 3) for p in parts] == [21.667, 21.667, 21.667, 1.0]
    assert parts[0].start_s == 10.0 and abs(parts[2].end_s - 75.0) < 1e-9
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(parts[:2], parts[1:3]))


def test_cut_pads_and_clips():
    audio = np.arange(16000 * 3, dtype=np.float32)
    piece = cut(audio, S(1.0, 2.0), 0.25)
    assert piece[0] == 16000 * 0.75 and len(piece) == 16000 * 1.5
    assert len(cut(audio, S(0.1, 2.95), 0.25)) == 16000 * 3  # clipped at both ends


def test_options_validate():
    with pytest.raises(ValueError):
        VadOptions(max_segment_s=31).validate()
    with pytest.raises(ValueError):
        VadOptions(threshold=1.5).validate()


def _call(pk: int, channels: list[tuple[str | None, list[SpeechSegment]]]) -> PreparedCall:
    chans = tuple(PreparedChannel(i, role, np.full(16000 * 60, i + 1, dtype=np.float32), tuple(segs), None)
                  for i, (role, segs) in enumerate(channels))
    return PreparedCall(pk, f"C{pk}", 60.0, "wav/pcm_16", 8000, len(chans), chans)


def test_rows_map_back_to_call_channel_and_time():
    calls = [_call(7, [("agent", [S(0.5, 3.0), S(10.0, 12.0)]), ("customer", [S(4.0, 6.5)])]),
             _call(9, []),
             _call(11, [(None, [S(1.0, 2.0)])])]
    refs, audio = plan_windows(calls, pad_s=0.2)
    assert [(r.call, r.channel, r.segment) for r in refs] == [
        (0, 0, S(0.5, 3.0)), (0, 0, S(10.0, 12.0)), (0, 1, S(4.0, 6.5)), (2, 0, S(1.0, 2.0))]
    assert len(audio[0]) == round(16000 * 2.9) and audio[2][0] == 2.0  # channel 1 audio
    results = [WindowResult((i,), f"t{i}", -0.1, 0.0, 1.0, 0.0) for i in range(len(refs))]
    decoded = unpack_results(calls, refs, results)
    assert [d.call_pk for d in decoded] == [7, 9, 11]
    assert [(s.channel, s.segment.start_s, s.result.text) for s in decoded[0].segments] == [
        (0, 0.5, "t0"), (0, 10.0, "t1"), (1, 4.0, "t2")]
    assert decoded[1].segments == () and decoded[2].segments[0].result.text == "t3"


def test_silero_finds_the_turns_of_a_sample_call(samples_dir):
    audio = decode_file(samples_dir / "calls" / "S01.wav")
    turns = json.loads((samples_dir / "calls" / "S01.json").read_text(encoding="utf-8"))["turns"]
    vad = Vad()
    for channel, role in ((0, "agent"), (1, "customer")):
        found = vad.segments(audio.channels[channel])
        expected = [t for t in turns if t["role"] == role]
        assert len(found) == len(expected)
        for seg, turn in zip(found, expected):
            assert abs(seg.start_s - turn["start_s"]) < 0.3 and abs(seg.end_s - turn["end_s"]) < 0.3
    assert vad.segments(np.zeros(16000 * 5, dtype=np.float32)) == []


def test_channels_side_by_side_match_silero_one_at_a_time(samples_dir):
    from silero_vad import get_speech_timestamps, load_silero_vad

    channels = [c for name in ("S01", "S03", "S05") for c in decode_file(samples_dir / "calls" / f"{name}.wav").channels]
    channels.append(np.zeros(800, dtype=np.float32))  # too short to hold speech
    vad = Vad(VadOptions(merge_gap_s=0.0))  # silero's segments as they come
    model = load_silero_vad(onnx=False)
    want = []
    for audio in channels[:-1]:
        raw = get_speech_timestamps(torch.from_numpy(audio), model, threshold=0.5, min_speech_duration_ms=250,
                                    min_silence_duration_ms=300, max_speech_duration_s=28.0)
        want.append([(r["start"] / 16000, r["end"] / 16000) for r in raw])
    got = vad.segments_many(channels)
    assert [[(s.start_s, s.end_s) for s in segs] for segs in got[:-1]] == want
    assert got[-1] == [] and sum(map(len, want)) > 20
    assert vad.segments_many(channels[:1], merge=[False]) == [vad.segments(channels[0], merge=False)]
    with pytest.raises(ValueError, match="merge flags"):
        vad.segments_many(channels, merge=[True])


def test_loading_silero_keeps_torchs_thread_count():
    # silero_vad sets torch to one thread when imported; Whisper then ran at half speed
    code = ("import torch; torch.set_num_threads(2); from qa.asr.vad import Vad; Vad(); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
