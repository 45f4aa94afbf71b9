"""Cross-attention of the one-token decode step over keys/values stored in 8 bits.

Each decode step re-reads every row's cross-attention keys and values (1500 audio positions per
layer and head); on a large batch that read is most of the step's memory traffic. Stored in one
byte per value it is half as many bytes as fp16, and the batch that fits in memory doubles.

Two 8-bit formats, the same bytes moved: FP8 e4m3 (3 mantissa bits at any magnitude: a relative
error up to 1/16, robust to outlier positions) and int8 (uniform steps of 1/127 of the channel's
largest magnitude: on Gaussian-like values about a third of e4m3's error, worse for small values
next to an outlier position). Quantisation (:func:`quantize_kv`, once per window when it enters
a slot) keeps one fp32 scale per row, head and channel: the channel's largest magnitude over the
1500 positions maps to the format's largest value. Per-channel scales cost nothing at decode
time: the key scales fold into the query (q·(s∘k) = (q∘s)·k) and the value scales into the
output (Σ p_t s∘v_t = s∘Σ p_t v_t), and they follow the few large-magnitude channels that a
per-head scale would let crush the rest.

The kernel (:func:`cross_attention`) runs one program per (row, head) and split of the audio
positions, streams the 8-bit tile through an online softmax in fp32 and writes the model's dtype.
Splitting the positions (flash-decoding) only pays when there are too few (row, head) programs
to fill the GPU: small batches, or the compacted tail of a run. It launches no host
synchronisation and allocates only through torch, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

FORMATS = ("fp8", "int8")
_MAX = {"fp8": 448.0, "int8": 127.0}  # largest finite float8_e4m3fn; symmetric int8
_LOG2E = 1.4426950408889634
_MIN_SPLIT = 256  # positions per split at least; also a multiple of every BLOCK_T below
_PROGRAMS_PER_SM = 8  # enough resident programs per multiprocessor to keep loads in flight


def check_device(fmt: str, device: torch.device, head_dim: int) -> None:
    """Raise ValueError unless the 8-bit path ``fmt`` can run on the CUDA ``device`` for this
    head size."""
    if fmt == "fp8" and torch.cuda.get_device_capability(device) < (8, 9):
        raise ValueError("cross_kv_dtype='fp8' needs a GPU with FP8 support (compute capability 8.9 or newer)")
    if head_dim & (head_dim - 1):
        raise ValueError(f"cross_kv_dtype={fmt!r} needs a power-of-two head size, not {head_dim}")


def quantize_kv(x: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, H, T, D] keys or values -> (8-bit codes as uint8 [R, H, T, D], fp32 scales [R, H, D])."""
    top = _MAX[fmt]
    xf = x.float()
    # a channel that is zero everywhere gets a harmless scale instead of a division by zero
    scale = xf.abs().amax(dim=2).clamp(min=1e-12) / top
    # the clamp guards rounding at the top: torch turns e4m3 overflow into NaN, not 448
    y = (xf / scale.unsqueeze(2)).clamp(-top, top)
    q = y.to(torch.float8_e4m3fn) if fmt == "fp8" else y.round().to(torch.int8)
    # stored as bytes: indexed writes and index_select are implemented for uint8 everywhere
    return q.view(torch.uint8), scale


@triton.jit
def _decode_bytes(x, INT8: tl.constexpr):
    if INT8:
        # the code c (two's complement byte b) as a float without the conversion unit, which
        # is too slow to keep up with memory here: b ^ 0x80 = c + 128 as the low mantissa bits
        # of 2^23, then subtract 2^23 + 128
        y = ((x.to(tl.uint32) ^ 0x80) | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0
    else:
        y = x.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    return y


@triton.autotune(
    configs=[
        triton.Config({"BLOCK_T": 64}, num_warps=2, num_stages=3),
        triton.Config({"BLOCK_T": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_T": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_T": 128}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_T": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_T": 256}, num_warps=8, num_stages=2),
    ],
    key=["n_rows", "n_splits", "T", "INT8"],
)
@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, out_ptr, m_ptr, l_ptr, acc_ptr,
    n_rows, T, split_len, n_splits, qk_scale,
    D: tl.constexpr, INT8: tl.constexpr, BLOCK_T: tl.constexpr, SPLIT: tl.constexpr,
):
    row = tl.program_id(0)  # row * heads + head
    split = tl.program_id(1)
    c = tl.arange(0, D)
    t_off = tl.arange(0, BLOCK_T)
    # exp2 instead of exp: log2(e) and the softmax scale ride on the query, with the key scales
    q = tl.load(q_ptr + row * D + c).to(tl.float32) * tl.load(ks_ptr + row * D + c) * qk_scale
    base = row.to(tl.int64) * T * D
    start = split * split_len
    end = tl.minimum(start + split_len, T)
    m = tl.full([], float("-inf"), tl.float32)
    l = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + t_off
        valid = t < end
        offs = base + t[:, None] * D + c[None, :]
        k = _decode_bytes(tl.load(k_ptr + offs, mask=valid[:, None], other=0), INT8)
        s = tl.where(valid, tl.sum(k * q[None, :], axis=1), float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new)
        v = _decode_bytes(tl.load(v_ptr + offs, mask=valid[:, None], other=0), INT8)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l = l * alpha + tl.sum(p, axis=0)
        m = m_new
    if SPLIT:
        part = row * n_splits + split
        tl.store(m_ptr + part, m)
        tl.store(l_ptr + part, l)
        tl.store(acc_ptr + part * D + c, acc)
    else:
        out = acc / l * tl.load(vs_ptr + row * D + c)
        tl.store(out_ptr + row * D + c, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _combine_kernel(m_ptr, l_ptr, acc_ptr, vs_ptr, out_ptr, n_splits, D: tl.constexpr, S: tl.constexpr):
    row = tl.program_id(0)
    s = tl.arange(0, S)
    c = tl.arange(0, D)
    valid = s < n_splits
    part = row * n_splits + s
    m = tl.load(m_ptr + part, mask=valid, other=float("-inf"))
    l = tl.load(l_ptr + part, mask=valid, other=0.0)
    acc = tl.load(acc_ptr + part[:, None] * D + c[None, :], mask=valid[:, None], other=0.0)
    w = tl.exp2(m - tl.max(m, axis=0))  # the splits' maxima are in log2 units already
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(l * w, axis=0) * tl.load(vs_ptr + row * D + c)
    tl.store(out_ptr + row * D + c, out.to(out_ptr.dtype.element_ty))


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _splits(programs: int, T: int, device: torch.device) -> int:
    """One split (the whole window) unless too few (row, head) programs would run."""
    sms = _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
    return min(max(1, T // _MIN_SPLIT), math.ceil(_PROGRAMS_PER_SM * sms / programs))


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    fmt: str,
    *,
    splits: int | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ/√D)·v for one query row per (row, head).

    q [B, H, D] in the model's dtype; k, v [B, H, T, D] codes and k_scale, v_scale [B, H, D]
    from :func:`quantize_kv` in format ``fmt``. Returns [B, H, D] in q's dtype. ``splits``: how many
    parts the positions are cut into (None: chosen from the batch and the GPU's size)."""
    B, H, T, D = k.shape
    q = q.contiguous()
    out = torch.empty_like(q)
    rows = B * H
    wanted = splits if splits is not None else _splits(rows, T, q.device)
    # splits start at multiples of _MIN_SPLIT (a multiple of every BLOCK_T) and none is empty
    split_len = _MIN_SPLIT * math.ceil(T / max(1, wanted) / _MIN_SPLIT)
    n_splits = math.ceil(T / split_len)
    int8 = fmt == "int8"
    qk_scale = _LOG2E / math.sqrt(D)
    if n_splits == 1:
        _decode_kernel[(rows, 1)](
            q, k, v, k_scale, v_scale, out, out, out, out, rows, T, T, 1, qk_scale, D=D, INT8=int8, SPLIT=False
        )
        return out
    m = torch.empty(rows * n_splits, device=q.device, dtype=torch.float32)
    l = torch.empty_like(m)
    acc = torch.empty(rows * n_splits, D, device=q.device, dtype=torch.float32)
    _decode_kernel[(rows, n_splits)](
        q, k, v, k_scale, v_scale, out, m, l, acc, rows, T, split_len, n_splits, qk_scale, D=D, INT8=int8, SPLIT=True
    )
    _combine_kernel[(rows,)](m, l, acc, v_scale, out, n_splits, D=D, S=triton.next_power_of_2(n_splits))
    return out
