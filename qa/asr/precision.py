"""bfloat16 matrix products for the CPU path.

On CPUs that multiply bfloat16 natively (AVX512-BF16, AMX), oneDNN's bfloat16 GEMMs run 3-4x
faster than float32 ones on 2 cores: the encoder's MLP, the decoder's projections and the
51,865-wide output projection are all such products (measured on an AMD EPYC with AVX512-BF16:
logits for 16 rows 31 ms -> 8 ms, an encoder fc1 57 ms -> 20 ms). Weights are stored in
bfloat16 and products accumulate in float32. Layer norms compute in float32 and hand bfloat16
to the products they feed; the MLP stays in bfloat16 between its two products; the residual
stream, the encoder's self-attention (torch's float32 kernel is the fastest there), softmax
and the logits' log-probabilities stay float32. A decode step is bound by reading every row's
cross-attention keys and values, so those are stored in bfloat16 too (half the bytes).

On the 19 sample calls the CER stayed within 0.3 points of float32 (see BENCHMARKS.md).
int8 weights with FBGEMM's dynamic activations were tried and dropped: one activation scale
for the whole batch cost up to 9 points of CER on the customer channel.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class Bf16Linear(torch.nn.Module):
    """``y = x @ W.T + b`` in bfloat16 (float32 accumulation inside the kernel), returned as
    ``out_dtype``; an input already in bfloat16 is used as it is."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("weight", weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, bfloat16"


class Bf16OutLayerNorm(torch.nn.LayerNorm):
    """Whisper's float32 layer norm whose output, which only feeds bfloat16 products, is
    rounded to bfloat16 once instead of once per product (query, key and value read the same
    normalised input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(torch.bfloat16)


def _bf16_block(block: torch.nn.Module) -> None:
    """Rewire one residual attention block: its layer norms hand bfloat16 to the products and
    the MLP stays in bfloat16 between its two products (GELU included)."""
    for name in ("attn_ln", "cross_attn_ln", "mlp_ln"):
        ln = getattr(block, name, None)
        if ln is not None:
            low = Bf16OutLayerNorm(ln.normalized_shape, eps=ln.eps)
            low.load_state_dict(ln.state_dict())
            setattr(block, name, low)
    fc1, gelu, fc2 = block.mlp
    block.mlp = torch.nn.Sequential(Bf16Linear(fc1.weight, fc1.bias, torch.bfloat16), gelu,
                                    Bf16Linear(fc2.weight, fc2.bias))


LINEARS = {"bfloat16": Bf16Linear}


class OutputProjection(torch.nn.Module):
    """The decoder's logits: hidden states times the transposed token embedding."""

    def __init__(self, decoder: torch.nn.Module, compute_type: str = "model"):
        super().__init__()
        self._decoder = [decoder]  # a list, so the embedding is not registered twice
        kind = LINEARS.get(compute_type)
        self._low = None if kind is None else kind(decoder.token_embedding.weight, None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._low is not None:
            return self._low(hidden.float())
        weight = self._decoder[0].token_embedding.weight
        return hidden @ weight.to(hidden.dtype).T


def cross_attention_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over cross-attention keys and values stored in bfloat16.
    A decode step reads every row's keys and values once, so it is bound by their bytes; in
    bfloat16 it reads half. The softmax runs in float32; the result is float32."""
    scale = q.shape[-1] ** -0.5
    weights = torch.matmul((q * scale).to(torch.bfloat16), k.transpose(-1, -2)).float().softmax(dim=-1)
    return torch.matmul(weights.to(torch.bfloat16), v).float()


def bf16_supported() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it and it is slower than float32."""
    if not torch.backends.mkldnn.is_available():
        return False
    # torch's own CPU feature probes; private, so a torch without them means float32
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def lower_precision(model: torch.nn.Module, compute_type: str) -> torch.nn.Module:
    """A copy of a float32 CPU Whisper model whose Linear layers compute in ``compute_type``
    ("bfloat16"); attention, norms and the residual stream stay float32."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise ValueError(f"{compute_type} needs the float32 model on the CPU, not {param.dtype} on {param.device.type}")
    kind = LINEARS[compute_type]
    out = copy.deepcopy(model)
    for block in [m for m in out.modules() if hasattr(m, "mlp_ln")]:
        _bf16_block(block)
    count = 0
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, kind(child.weight, child.bias))
                count += 1
    log.debug("%s: %d Linear layers replaced", compute_type, count)
    return out.eval()
