"""The batched decode loop against openai-whisper's own greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

from qa.asr.engine import BatchedDecoder, DecodeOptions, WindowResult, best_attempt, find_loop, log_mel_batch
from qa.asr.weights import random_model, to_inference

TINY = dict(n_mels=80, n_audio_state=64, n_audio_head=4, n_audio_layer=2, n_vocab=51865, n_text_state=64,
            n_text_head=4, n_text_layer=2)
EOT = 50257
DURATIONS = (3, 7.5, 12, 30, 1, 20)


def tiny_model(device="cpu", dtype=torch.float32):
    """A random model whose end-of-text embedding copies a frequent token's, so windows end
    after different numbers of steps (random weights otherwise never stop)."""
    model = random_model(TINY, seed=3, std=0.2)
    with torch.no_grad():
        model.decoder.token_embedding.weight[EOT] = model.decoder.token_embedding.weight[6454] * 1.05
    return to_inference(model, device, dtype)


def windows(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(16000 * d)).astype(np.float32) * 0.1 for d in DURATIONS]


def stock(model, wins, **options):
    mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(w)), model.dims.n_mels)
                        for w in wins]).to(next(model.parameters()).device)
    opts = whisper.DecodingOptions(language="zh", without_timestamps=True,
                                   fp16=next(model.parameters()).dtype == torch.float16, **options)
    return whisper.decode(model, mels, opts)


def ours(model, wins, **options):
    return BatchedDecoder(model, DecodeOptions(temperatures=(0.0,), loop_min_span=0, **options)).decode(wins)


def assert_same(ref, got):
    assert [r.tokens for r in ref] == [list(g.tokens) for g in got]
    assert [r.text for r in ref] == [g.text for g in got]
    assert np.allclose([r.avg_logprob for r in ref], [g.avg_logprob for g in got], atol=1e-4)
    assert np.allclose([r.no_speech_prob for r in ref], [g.no_speech_prob for g in got], atol=1e-5)


def test_mel_matches_whisper_per_window():
    wins = windows()[:3]
    padded = torch.stack([whisper.pad_or_trim(torch.from_numpy(w)) for w in wins])
    expected = torch.stack([whisper.log_mel_spectrogram(p) for p in padded])
    assert torch.allclose(log_mel_batch(padded, 80), expected, atol=1e-6)


@pytest.mark.parametrize("batch_size, sync_every", [(6, 1), (2, 5)])
def test_greedy_tokens_equal_stock_decode(batch_size, sync_every):
    """Rows finish at different steps; small batches refill freed slots and compact at the end."""
    model, wins = tiny_model(), windows()
    ref = stock(model, wins, sample_len=24)
    assert len({len(r.tokens) for r in ref}) > 3  # the windows really end at different steps
    got = ours(model, wins, max_new_tokens=24, batch_size=batch_size, sync_every=sync_every, encoder_batch=3)
    assert_same(ref, got)


def test_prompt_matches_stock_decode():
    model, wins = tiny_model(), windows(1)[:3]
    prompt = "以下是金融客服电话。理财，保本保息，年化利率"
    assert_same(stock(model, wins, sample_len=20, prompt=prompt),
                ours(model, wins, max_new_tokens=20, batch_size=2, prompt=prompt))


def test_fixed_length_decoding_for_benchmarks():
    model, wins = tiny_model(), windows()[:2]
    got = ours(model, wins, max_new_tokens=25, min_new_tokens=25, batch_size=2)
    assert [len(g.tokens) for g in got] == [25] * 2
    assert all(EOT not in g.tokens for g in got)


def test_fallback_only_for_failing_windows():
    model = tiny_model()
    wins = windows()[:3]
    dec = BatchedDecoder(model, DecodeOptions(max_new_tokens=10, batch_size=4, temperatures=(0.0, 1.0),
                                              logprob_threshold=-1.0, no_speech_threshold=1.0, loop_min_span=0))
    greedy = ours(model, wins, max_new_tokens=10, batch_size=4)
    got = dec.decode(wins)
    for g, r in zip(greedy, got):
        if dec.needs_fallback(g):  # random weights: low log-probs, so these go to higher temperatures
            # the sample is kept, or, when it failed too, whichever of the two is likelier
            assert r.temperature > 0.0 or r == g
        else:
            assert r == g


def result(avg_logprob: float, *, ratio: float = 1.5, looped: bool = False, temperature: float = 0.0):
    return WindowResult((1,), "x", avg_logprob, 0.0, ratio, temperature, looped)


def test_a_window_failing_every_temperature_keeps_its_likeliest_sane_attempt():
    greedy, warm, hot = result(-1.4), result(-1.2, temperature=0.4), result(-2.5, temperature=1.0)
    assert best_attempt([greedy, warm, hot], 2.4) is warm  # not the last, hottest sample
    looped = result(-0.2, looped=True)
    repetitive = result(-0.3, ratio=3.0, temperature=0.2)
    assert best_attempt([looped, repetitive, hot], 2.4) is hot  # the only one that is sane
    assert best_attempt([looped, repetitive], 2.4) is looped  # none sane: the likeliest of all
    assert best_attempt([repetitive, hot], None) is repetitive  # no compression check configured


def test_find_loop():
    assert find_loop([1, 2, 3] + [7, 8] * 15, min_span=24) == 5
    assert find_loop([5] * 30, min_span=24) == 1
    assert find_loop(list(range(40)), min_span=24) is None
    assert find_loop([1, 2] * 5, min_span=24) is None
    assert find_loop([1, 2] * 20, min_span=0) is None


def test_loop_guard_stops_looping_rows():
    model, wins = tiny_model(), windows()[:3]
    ref = stock(model, wins, sample_len=40)
    got = BatchedDecoder(model, DecodeOptions(max_new_tokens=40, temperatures=(0.0,), loop_min_span=6,
                                              sync_every=2)).decode(wins)
    # window 0 alternates 1069, 30644 from its first token: stopped and cut to one repeat
    assert ref[0].tokens[:6] == [1069, 30644] * 3
    assert (got[0].tokens, got[0].looped) == ((1069, 30644), True)
    assert BatchedDecoder(model, DecodeOptions()).needs_fallback(got[0])
    for r, g in zip(ref[1:], got[1:]):  # short repeats under the span are left alone
        assert (list(g.tokens), g.looped) == (r.tokens, False)


def test_options_validate():
    for bad in (dict(beam_size=0), dict(beam_size=2, patience=0.0), dict(length_penalty=2.0)):
        with pytest.raises(ValueError):
            DecodeOptions(**bad).validate()
    with pytest.raises(ValueError):
        DecodeOptions(min_new_tokens=300).validate()
    with pytest.raises(ValueError):
        DecodeOptions(temperatures=()).validate()


@pytest.mark.slow
def test_real_base_weights_equal_stock_on_sample_speech(samples_dir, tmp_path):
    from qa.asr.text import normalize_text
    from qa.asr.vad import Vad, cut
    from qa.asr.weights import build_model, load_checkpoint, registry_checkpoint
    from qa.ingest.audio import decode_file

    path, _ = registry_checkpoint(tmp_path)
    model = to_inference(build_model(load_checkpoint(path)), "cpu", torch.float32)
    audio = decode_file(samples_dir / "calls" / "S01.wav").channels[0]
    wins = [cut(audio, s, 0.2) for s in Vad().segments(audio)[:3]]
    ref = stock(model, wins)
    got = ours(model, wins, batch_size=2, sync_every=4)
    assert_same(ref, got)
    assert "录音" in normalize_text(got[0].text)  # the greeting's 本次通话全程录音


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_greedy_tokens_equal_stock_decode(dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model, wins = tiny_model("cuda", dtype), windows()
    assert_same(stock(model, wins, sample_len=30), ours(model, wins, max_new_tokens=30, batch_size=4))


def test_cross_kv_dtype_is_checked():
    with pytest.raises(ValueError, match="cross_kv_dtype"):
        DecodeOptions(cross_kv_dtype="fp16").validate()
    DecodeOptions(cross_kv_dtype="fp8").validate()
    # 8-bit cross-attention storage runs only through the CUDA kernel
    for fmt in ("fp8", "int8"):
        with pytest.raises(ValueError, match="needs a CUDA device"):
            BatchedDecoder(tiny_model(), DecodeOptions(cross_kv_dtype=fmt))


def stock_beam(model, wins, **options):
    """whisper.decode with beam search, one window at a time: openai-whisper 20250625 fails on a
    batch of several windows with beam_size > 1 (its audio features are not repeated per beam,
    openai/whisper#2197), and one window alone is what its beam search was written for."""
    return [stock(model, [w], **options)[0] for w in wins]


@pytest.mark.parametrize("beam_size, batch_size", [(2, 12), (3, 3), (5, 10)])
def test_beam_search_tokens_equal_stock_decode(beam_size, batch_size):
    """Groups of beams refill freed slots (batch_size 3 holds one window's beams at a time)
    and compact at the end; every window's tokens and log-prob equal whisper's beam search."""
    model, wins = tiny_model(), windows()
    ref = stock_beam(model, wins, sample_len=24, beam_size=beam_size)
    got = ours(model, wins, max_new_tokens=24, batch_size=batch_size, encoder_batch=3, beam_size=beam_size)
    assert_same(ref, got)
    greedy = stock(model, wins, sample_len=24)
    if beam_size == 5:  # the search changes the result, or the test would prove nothing
        assert [g.tokens for g in greedy] != [r.tokens for r in ref]


@pytest.mark.parametrize("options", [dict(length_penalty=0.6), dict(patience=2.0), dict(prompt="理财 年化利率 风险")])
def test_beam_search_options_follow_stock_decode(options):
    model, wins = tiny_model(), windows(2)[:4]
    ref = stock_beam(model, wins, sample_len=20, beam_size=3, **options)
    assert_same(ref, ours(model, wins, max_new_tokens=20, batch_size=6, beam_size=3, **options))


def test_beam_search_falls_back_to_sampling():
    """A window failing the checks is decoded again at the next temperature (sampled, as
    whisper does without best_of), and its beam result stays among the attempts."""
    model, wins = tiny_model(), windows()[:3]
    dec = BatchedDecoder(model, DecodeOptions(temperatures=(0.0, 0.5), loop_min_span=0, max_new_tokens=20,
                                              batch_size=6, beam_size=3, logprob_threshold=0.0))
    got = dec.decode(wins)
    assert len(got) == 3 and all(r.temperature in (0.0, 0.5) for r in got)


def test_hotword_trie_follows_and_leaves_words():
    from qa.asr.biasing import HotwordTrie

    trie = HotwordTrie([[5, 6, 7], [5, 8]], pad_token=0, device=torch.device("cpu"))
    node = torch.tensor([0, 0, 0])
    node, left = trie.step(node, torch.tensor([5, 9, 5]))  # two rows begin a word, one does not
    assert node.tolist()[1] == 0 and node[0] == node[2] != 0 and not left.any()
    assert sorted(trie.bonus_tokens(node)[0].tolist()) == [6, 8]  # both continuations earn the bonus
    assert set(trie.bonus_tokens(torch.tensor([0]))[0].tolist()) == {0}  # none at the root
    node, left = trie.step(node, torch.tensor([6, 9, 8]))
    assert left.tolist() == [False, False, False]
    assert node[2] == 0  # 5 8 is a whole word with nothing after it: back to the root
    node, left = trie.step(node, torch.tensor([9, 9, 9]))
    assert left.tolist() == [True, False, False]  # row 0 left 5 6 before its 7


def test_hotword_bias_finishes_words_the_model_began_and_records_its_own_logprobs():
    model, wins = tiny_model(), windows()
    plain = ours(model, wins, max_new_tokens=12, min_new_tokens=12, batch_size=6)
    first, target = plain[0].tokens[0], 2750  # a token the model did not choose after it
    assert plain[0].tokens[1] != target
    from qa.asr.biasing import HotwordTrie

    dec = BatchedDecoder(model, DecodeOptions(temperatures=(0.0,), loop_min_span=0, max_new_tokens=12,
                                              min_new_tokens=12, batch_size=6, hotwords=("保本",),
                                              hotword_bonus=9.0))
    dec._trie = HotwordTrie([[first, target]], pad_token=dec.tokenizer.sot, device=torch.device("cpu"))
    biased = dec.decode(wins)
    for p, b in zip(plain, biased):
        if p.tokens[0] == first:  # the word was begun: the bonus finished it
            assert b.tokens[:2] == (first, target) and b.avg_logprob < p.avg_logprob  # the model's own log-probs
        else:  # never begun: untouched (no bonus for starting a word)
            assert b.tokens == p.tokens and b.avg_logprob == p.avg_logprob


def test_hotword_bias_in_beam_search():
    model, wins = tiny_model(), windows()
    plain = ours(model, wins, max_new_tokens=12, min_new_tokens=12, batch_size=9, beam_size=3)
    tiny = ours(model, wins, max_new_tokens=12, min_new_tokens=12, batch_size=9, beam_size=3,
                hotwords=("保本保息",), hotword_bonus=1e-6)
    assert [p.tokens for p in plain] == [t.tokens for t in tiny]
    assert np.allclose([p.avg_logprob for p in plain], [t.avg_logprob for t in tiny], atol=1e-5)
    from qa.asr.biasing import HotwordTrie

    first, target = plain[0].tokens[0], 2750
    dec = BatchedDecoder(model, DecodeOptions(temperatures=(0.0,), loop_min_span=0, max_new_tokens=12,
                                              min_new_tokens=12, batch_size=9, beam_size=3, hotwords=("保本",),
                                              hotword_bonus=9.0))
    dec._trie = HotwordTrie([[first, target, target]], pad_token=dec.tokenizer.sot, device=torch.device("cpu"))
    biased = dec.decode(wins)
    assert biased[0].tokens[:3] == (first, target, target)  # the whole word, bonus and all
    assert biased[0].avg_logprob < plain[0].avg_logprob  # reported: the model's own log-probs
