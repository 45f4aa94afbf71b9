"""bfloat16 Linear layers for the CPU path (qa.asr.precision) and the compute_type option."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_engine import tiny_model, windows

from qa.asr.engine import BatchedDecoder, DecodeOptions
from qa.asr.precision import Bf16Linear, OutputProjection, bf16_supported, cross_attention_bf16, lower_precision
from qa.asr.stage import AsrOptions, compute_type
from qa.config import Settings
from qa.errors import ConfigError


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_bf16_linear_is_close_to_float_and_returns_float():
    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 384)
    low = Bf16Linear(layer.weight, layer.bias)
    x = torch.randn(3, 7, 512)
    got, want = low(x), layer(x)
    assert got.shape == (3, 7, 384) and got.dtype == torch.float32
    assert 0 < relative_error(got, want) < 0.01  # rounded, but only to bfloat16's 8 bits
    assert low.weight.dtype == torch.bfloat16


def test_output_projection_in_bf16_keeps_the_argmax():
    model = tiny_model()
    hidden = torch.randn(16, model.dims.n_text_state)
    exact = OutputProjection(model.decoder)(hidden)
    assert torch.equal(exact, hidden @ model.decoder.token_embedding.weight.T)
    approx = OutputProjection(model.decoder, "bfloat16")(hidden)
    assert relative_error(approx, exact) < 0.01
    assert (approx.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.9


def test_cross_attention_over_bf16_keys_and_values_matches_sdpa():
    torch.manual_seed(1)
    q, k, v = torch.randn(4, 8, 1, 64), torch.randn(4, 8, 1500, 64), torch.randn(4, 8, 1500, 64)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = cross_attention_bf16(q, k.bfloat16(), v.bfloat16())
    assert got.shape == want.shape and got.dtype == torch.float32
    assert relative_error(got, want) < 0.02


def test_bf16_decoder_stores_cross_attention_in_bf16():
    decoder = BatchedDecoder(tiny_model(), DecodeOptions(compute_type="bfloat16", batch_size=2))
    state = decoder._alloc(2, graph=False)
    assert state.cross_k[0].dtype == torch.bfloat16 and state.self_k[0].dtype == torch.float32


def test_lower_precision_replaces_every_linear_and_leaves_the_original():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    low = lower_precision(model, "bfloat16")
    assert not any(isinstance(m, torch.nn.Linear) for m in low.modules())
    assert sum(isinstance(m, Bf16Linear) for m in low.modules()) == sum(
        isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for n, p in low.named_parameters())  # norms, convs, embeddings


def test_lower_precision_refuses_a_half_precision_model():
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        lower_precision(tiny_model(dtype=torch.float16), "bfloat16")


def test_bf16_decoding_follows_float_decoding():
    model, wins = tiny_model(), windows()
    opts = dict(temperatures=(0.0,), loop_min_span=0, max_new_tokens=40, batch_size=4)
    exact = BatchedDecoder(model, DecodeOptions(**opts)).decode(wins)
    low = BatchedDecoder(model, DecodeOptions(compute_type="bfloat16", **opts)).decode(wins)
    assert len(low) == len(exact)
    # random weights make near-ties common; the rounded model must still follow most tokens
    pairs = [(a, b) for e, i in zip(exact, low) for a, b in zip(e.tokens, i.tokens)]
    assert sum(a == b for a, b in pairs) / len(pairs) >= 0.7
    assert all(np.isfinite(r.avg_logprob) and 0.0 <= r.no_speech_prob <= 1.0 for r in low)


def test_compute_type_option_and_setting():
    with pytest.raises(ValueError, match="compute_type"):
        DecodeOptions(compute_type="int4").validate()
    with pytest.raises(ValueError, match="asr_compute_type"):
        Settings(asr_compute_type="fp8").validate()
    cpu = Settings(asr_device="cpu")
    assert compute_type(cpu) == ("bfloat16" if bf16_supported() else "model")
    assert compute_type(dataclasses.replace(cpu, asr_compute_type="model")) == "model"
    assert compute_type(dataclasses.replace(cpu, asr_compute_type="bfloat16")) == "bfloat16"
    options = AsrOptions.from_settings(dataclasses.replace(cpu, asr_compute_type="bfloat16"))
    assert options.decode.compute_type == "bfloat16"
    assert options.as_dict()["compute_type"] == "bfloat16"  # stored with every transcript
    assert options.sha256 != AsrOptions.from_settings(dataclasses.replace(cpu, asr_compute_type="model")).sha256


def test_bf16_asked_for_on_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="for the CPU"):
        compute_type(Settings(asr_device="cuda", asr_compute_type="bfloat16"))
    assert compute_type(Settings(asr_device="cuda")) == "model"


def test_bf16_needs_a_cpu_that_multiplies_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert bf16_supported() is False
    assert compute_type(Settings(asr_device="cpu")) == "model"  # auto falls back to float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert bf16_supported() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert bf16_supported() is False
