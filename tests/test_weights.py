"""The CTranslate2 -> openai-whisper converter, the checkpoint cache and model resolution."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
import torch

from qa.asr import weights as w
from qa.config import Settings
from qa.errors import ModelError

TINY = dict(n_mels=80, n_audio_state=64, n_audio_head=4, n_audio_layer=2, n_vocab=51865, n_text_state=64,
            n_text_head=4, n_text_layer=2)


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """Write a CTranslate2 model.bin (version 6) as documented in qa.asr.weights."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        out += [_string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<B", ids[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def to_ct2(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inverse mapping, written independently of the converter: fuse q/k/v the CTranslate2 way."""
    sd = {k: v.numpy().astype(np.float16) for k, v in model.state_dict().items()}
    zeros = lambda n: np.zeros(n, dtype=np.float16)  # noqa: E731
    v: dict[str, np.ndarray] = {}

    def attn(src: str, dst: str, cross: bool) -> None:
        q, k, val = (f"{src}.{n}" for n in ("query", "key", "value"))
        kb = zeros(sd[f"{k}.weight"].shape[0])
        if cross:
            v[f"{dst}/linear_0/weight"], v[f"{dst}/linear_0/bias"] = sd[f"{q}.weight"], sd[f"{q}.bias"]
            v[f"{dst}/linear_1/weight"] = np.concatenate([sd[f"{k}.weight"], sd[f"{val}.weight"]])
            v[f"{dst}/linear_1/bias"] = np.concatenate([kb, sd[f"{val}.bias"]])
            out = "linear_2"
        else:
            v[f"{dst}/linear_0/weight"] = np.concatenate([sd[f"{q}.weight"], sd[f"{k}.weight"], sd[f"{val}.weight"]])
            v[f"{dst}/linear_0/bias"] = np.concatenate([sd[f"{q}.bias"], kb, sd[f"{val}.bias"]])
            out = "linear_1"
        v[f"{dst}/{out}/weight"], v[f"{dst}/{out}/bias"] = sd[f"{src}.out.weight"], sd[f"{src}.out.bias"]

    def ln(src: str, dst: str) -> None:
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def block(src: str, dst: str, cross: bool) -> None:
        ln(f"{src}.attn_ln", f"{dst}/self_attention/layer_norm")
        attn(f"{src}.attn", f"{dst}/self_attention", False)
        if cross:
            ln(f"{src}.cross_attn_ln", f"{dst}/attention/layer_norm")
            attn(f"{src}.cross_attn", f"{dst}/attention", True)
        ln(f"{src}.mlp_ln", f"{dst}/ffn/layer_norm")
        for i, j in ((0, 0), (1, 2)):
            v[f"{dst}/ffn/linear_{i}/weight"], v[f"{dst}/ffn/linear_{i}/bias"] = sd[f"{src}.mlp.{j}.weight"], sd[f"{src}.mlp.{j}.bias"]

    for n in (1, 2):
        v[f"encoder/conv{n}/weight"], v[f"encoder/conv{n}/bias"] = sd[f"encoder.conv{n}.weight"], sd[f"encoder.conv{n}.bias"]
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    v["encoder/num_heads"] = np.array(model.dims.n_audio_head, dtype=np.int16)
    v["decoder/num_heads"] = np.array(model.dims.n_text_head, dtype=np.int16)
    for i in range(model.dims.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", False)
    ln("encoder.ln_post", "encoder/layer_norm")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(model.dims.n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", True)
    ln("decoder.ln", "decoder/layer_norm")
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    path, sha = w.registry_checkpoint(cache)
    return cache, path, sha


def test_parse_and_convert_round_trip_key_for_key():
    model = w.random_model(TINY, seed=5)
    variables, aliases = to_ct2(model)
    ct2 = w.parse_ct2(ct2_bytes(variables, aliases))
    assert ct2.spec == "WhisperSpec" and ct2.revision == 3
    assert ct2.get("decoder/projection/weight") is ct2.get("decoder/embeddings/weight")
    checkpoint = w.convert_ct2(ct2, {"alignment_heads": [[1, 0], [1, 3]]})
    expected = model.state_dict()
    got = checkpoint["model_state_dict"]
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].shape == tensor.shape, key
        # the fused q/k/v and k/v splits land every row back where it came from
        assert torch.equal(got[key].float(), tensor.half().float()), key
    rebuilt = w.build_model(checkpoint)
    assert rebuilt.alignment_heads.to_dense().nonzero().tolist() == [[1, 0], [1, 3]]


def test_parse_rejects_truncated_and_quantized_files():
    variables, aliases = to_ct2(w.random_model(TINY))
    data = ct2_bytes(variables, aliases)
    with pytest.raises(ModelError, match="truncated"):
        w.parse_ct2(data[: len(data) // 2])
    with pytest.raises(ModelError, match="trailing"):
        w.parse_ct2(data + b"\0\0")
    bad = dict(variables)
    bad["encoder/conv1/weight"] = variables["encoder/conv1/weight"].astype(np.int8)
    ct2 = w.parse_ct2(ct2_bytes(bad, aliases))
    assert ct2.get("encoder/conv1/weight").dtype == np.int8  # parsed; shape checks happen on load


def test_nonzero_key_bias_is_refused():
    variables, aliases = to_ct2(w.random_model(TINY))
    name = "encoder/layer_0/self_attention/linear_0/bias"
    bias = variables[name].copy()
    bias[64:128] = 1.0
    variables[name] = bias
    with pytest.raises(ModelError, match="key projection"):
        w.convert_ct2(w.parse_ct2(ct2_bytes(variables, aliases)), {})


def test_registry_base_converts_to_whisper_base(base_cache):
    from whisper.model import ModelDimensions, Whisper, sinusoids

    cache, path, sha = base_cache
    checkpoint = w.load_checkpoint(path)
    assert checkpoint["dims"] == dict(n_audio_ctx=1500, n_text_ctx=448, **w.ARCHITECTURES["base"])
    reference = Whisper(ModelDimensions(**checkpoint["dims"])).state_dict()
    assert {k: tuple(v.shape) for k, v in checkpoint["model_state_dict"].items()} == {
        k: tuple(v.shape) for k, v in reference.items()}
    model = w.build_model(checkpoint)
    # a known property of the real weights: the encoder positions are Whisper's fixed sinusoids
    assert torch.allclose(model.encoder.positional_embedding.float(), sinusoids(1500, 512), atol=1e-3)
    heads = model.alignment_heads.to_dense().nonzero().tolist()
    assert heads == [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
    assert w.file_sha256(path) == sha
    assert (path.with_name(path.name + ".sha256")).read_text().split()[0] == sha


def test_corrupt_cache_is_converted_again(base_cache):
    cache, path, sha = base_cache
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"garbage")
    again, sha2 = w.registry_checkpoint(cache)
    assert again == path and sha2 == sha  # the conversion is deterministic
    assert w.file_sha256(path) == sha


def test_resolve_model(base_cache, tmp_path):
    cache, path, sha = base_cache
    settings = Settings(cache_dir=str(cache), asr_device="cpu")
    loaded = w.resolve_model(settings)
    assert (loaded.name, loaded.sha256, loaded.device, loaded.dtype) == ("base", sha, "cpu", torch.float32)
    assert loaded.source.startswith("registry:")
    by_path = w.resolve_model(replace(settings, asr_model=str(path)))
    assert by_path.sha256 == sha and by_path.source == f"file:{path}"
    with pytest.raises(ModelError, match="does not exist"):
        w.resolve_model(replace(settings, asr_model=str(tmp_path / "missing.pt")))
    with pytest.raises(ModelError, match="unknown ASR model"):
        w.resolve_model(replace(settings, asr_model="no-such-model"))


def test_to_inference_keeps_layer_norms_in_float32():
    model = w.to_inference(w.random_model(TINY), "cpu", torch.float16)
    assert model.decoder.blocks[0].attn.query.weight.dtype == torch.float16
    assert model.decoder.ln.weight.dtype == torch.float32
