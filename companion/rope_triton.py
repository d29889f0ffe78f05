"""Fused RoPE in Triton (chapter 02, "Scale it").

``apply_rope_triton(x, positions, base=..., interleaved=..., scaling=...)``
returns what :func:`companion.rope.apply_rope` returns, in one kernel: each
program owns ``BLOCK_S`` rows (tokens) of one ``(batch, head)`` slice, loads
their positions and the ``d/2`` frequencies ``θ_i``, computes the angles
``m θ_i`` and their cos/sin in registers (float32), rotates the pairs and
writes the result. No cos/sin table is read from memory: the kernel moves
``x`` in and ``y`` out, ``2 · numel · itemsize`` bytes, plus one position per row.

The eager version launches about ten kernels (angles, cos, sin, the four
products, two sums, the concatenation, the dtype casts), each reading and
writing a full tensor.

Backward: ``y = a R(mθ) x`` is linear in ``x``, so ``dx = a R(mθ)ᵀ dy = a R(-mθ) dy``:
the same kernel with ``sin`` negated. ``positions`` get no gradient.

Shapes: ``x`` is ``(..., seq, dim)`` (leading dimensions are flattened into one
axis ``Z``; ``dim`` any even number, padded to a power of two inside the
kernel); float16, bfloat16 or float32; ``positions`` broadcast to
``(..., seq)``, integer or real.

Triton is optional (``pip install -e '.[gpu]'``): this module always imports,
``HAS_TRITON`` says whether Triton is there, and calling the kernel without it
raises a ``RuntimeError``. The kernel needs CUDA tensors; to test on a CPU set
``TRITON_INTERPRET=1`` in the environment *before this module is imported*.
Under the interpreter, float32 → bfloat16 casts truncate instead of rounding to
nearest (``triton/runtime/interpreter.py``, ``cast_impl``), so bfloat16 outputs
can be one bfloat16 ulp off there; on a GPU they are rounded to nearest.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from companion.rope import Scaling, _check_x, _resolve_positions, attention_factor, inv_freq, resolve_scaling

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
    _TRITON_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # ImportError, or a broken install: the module must still import
    HAS_TRITON = False
    _TRITON_IMPORT_ERROR = exc
    triton = SimpleNamespace(jit=lambda fn: fn, cdiv=lambda a, b: -(-a // b), next_power_of_2=None)
    tl = None

__all__ = ["HAS_TRITON", "INTERPRET", "apply_rope_triton"]

#: Whether Triton's CPU interpreter was switched on when this module was imported.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Triton 3.9 warns on stderr when FMA contraction is left to its default; ask for it explicitly.
_COMPILE_OPTIONS = {"enable_fp_fusion": True}


@triton.jit
def _rope_kernel(
    X, OUT, POS, FREQ,
    stride_xz, stride_xs, stride_oz, stride_os, stride_pz, stride_ps,
    S, n_s_blocks, cos_scale, sin_scale,
    HALF: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr, INTERLEAVED: tl.constexpr,
):
    """Rotate rows [s0, s0 + BLOCK_S) of slice z: y_a = a cos - b sin, y_b = b cos + a sin (times the scales)."""
    pid = tl.program_id(0)
    z = (pid // n_s_blocks).to(tl.int64)
    offs_s = (pid % n_s_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_h = tl.arange(0, BLOCK_H)  # pair index i
    mask_s = offs_s < S
    mask = mask_s[:, None] & (offs_h < HALF)[None, :]

    pos = tl.load(POS + z * stride_pz + offs_s * stride_ps, mask=mask_s, other=0).to(tl.float32)
    freq = tl.load(FREQ + offs_h, mask=offs_h < HALF, other=0.0)
    angle = pos[:, None] * freq[None, :]  # (BLOCK_S, BLOCK_H): m θ_i in float32
    cos = tl.cos(angle) * cos_scale
    sin = tl.sin(angle) * sin_scale

    if INTERLEAVED:  # pair i = (2i, 2i + 1)
        col_a = 2 * offs_h
        col_b = 2 * offs_h + 1
    else:  # pair i = (i, i + d/2)
        col_a = offs_h
        col_b = offs_h + HALF
    rows = offs_s[:, None].to(tl.int64)
    x_row = X + z * stride_xz + rows * stride_xs
    a = tl.load(x_row + col_a[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x_row + col_b[None, :], mask=mask, other=0.0).to(tl.float32)
    o_row = OUT + z * stride_oz + rows * stride_os
    tl.store(o_row + col_a[None, :], (a * cos - b * sin).to(OUT.dtype.element_ty), mask=mask)
    tl.store(o_row + col_b[None, :], (b * cos + a * sin).to(OUT.dtype.element_ty), mask=mask)


def _blocks(half: int, seq: int) -> tuple[int, int, int]:
    """(BLOCK_S, BLOCK_H, num_warps): about 2048 pairs per program on a GPU, 16 rows under the interpreter."""
    block_h = triton.next_power_of_2(half)
    if INTERPRET:
        return min(16, triton.next_power_of_2(seq)), block_h, 1
    block_s = max(1, min(2048 // block_h, triton.next_power_of_2(seq)))
    return block_s, block_h, 4 if block_s * block_h >= 1024 else 1


@functools.lru_cache(maxsize=64)
def _freq(dim: int, base: float, scaling: Scaling | None, device: torch.device) -> torch.Tensor:
    """θ_i in float32 on ``device``, built once per (dim, base, scaling, device): the kernel only reads it."""
    return inv_freq(dim, base, scaling, dtype=torch.float32, device=device).contiguous()


def _on_device(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch(x3: torch.Tensor, pos2: torch.Tensor, freq: torch.Tensor, cos_scale: float, sin_scale: float,
            interleaved: bool) -> torch.Tensor:
    """x3: (Z, S, D) with unit last stride; pos2: (Z, S) (any strides); freq: (D/2,) float32 contiguous."""
    if x3.stride(-1) != 1:
        x3 = x3.contiguous()
    z, s, d = x3.shape
    out = torch.empty((z, s, d), device=x3.device, dtype=x3.dtype)
    block_s, block_h, num_warps = _blocks(d // 2, s)
    n_s_blocks = triton.cdiv(s, block_s)
    with _on_device(x3):
        _rope_kernel[(z * n_s_blocks,)](
            x3, out, pos2, freq,
            x3.stride(0), x3.stride(1), out.stride(0), out.stride(1), pos2.stride(0), pos2.stride(1),
            s, n_s_blocks, cos_scale, sin_scale,
            HALF=d // 2, BLOCK_S=block_s, BLOCK_H=block_h, INTERLEAVED=interleaved,
            num_warps=num_warps, **_COMPILE_OPTIONS,
        )
    return out


class _RopeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x3, pos2, freq, scale, interleaved):
        ctx.save_for_backward(pos2, freq)
        ctx.scale, ctx.interleaved = scale, interleaved
        return _launch(x3, pos2, freq, scale, scale, interleaved)

    @staticmethod
    def backward(ctx, dy):
        pos2, freq = ctx.saved_tensors
        # dx = a R(mθ)^T dy = a R(-mθ) dy: cos unchanged, sin negated
        return _launch(dy, pos2, freq, ctx.scale, -ctx.scale, ctx.interleaved), None, None, None, None


def _check_inputs(x: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError(
            "Triton is not installed: pip install -e '.[gpu]' "
            f"(importing it failed with {type(_TRITON_IMPORT_ERROR).__name__}: {_TRITON_IMPORT_ERROR}). "
            "companion.rope.apply_rope computes the same thing in PyTorch."
        )
    _check_x(x)
    if x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(
            f"apply_rope_triton takes float16, bfloat16 or float32, got {x.dtype}; "
            "use companion.rope.apply_rope for float64"
        )
    if x.device.type != "cuda":
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"apply_rope_triton needs CUDA tensors, got a tensor on {x.device}. "
                "To test on a CPU, run with TRITON_INTERPRET=1 set in the environment before Python starts."
            )
        if not INTERPRET:
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after companion.rope_triton was imported; "
                "Triton chooses between compiling and interpreting when the kernel is defined, "
                "so set it before the import (best: in the environment before Python starts)."
            )


def apply_rope_triton(
    x: torch.Tensor,
    positions: torch.Tensor | Sequence[int] | None = None,
    *,
    base: float = 10000.0,
    interleaved: bool = False,
    scaling: Scaling | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """:func:`companion.rope.apply_rope` as one fused Triton kernel.

    Args:
        x: ``(..., seq, dim)``, ``dim`` even; float16, bfloat16 or float32; CUDA
            (or CPU under ``TRITON_INTERPRET=1``).
        positions: broadcastable to ``(..., seq)``; default ``arange(seq)``.
        base, interleaved, scaling: as in :func:`companion.rope.apply_rope`.

    Returns:
        A new contiguous tensor with the shape and dtype of ``x``, differentiable in ``x``.
        Angles, cos/sin and the rotation are computed in float32.
    """
    _check_inputs(x)
    positions = _resolve_positions(x, positions)
    *lead, s, d = x.shape
    if x.numel() == 0:
        return x.clone()
    z = math.prod(lead)
    if positions.dtype == torch.float64 or positions.dtype.itemsize < 4:
        positions = positions.to(torch.float32 if positions.is_floating_point() else torch.int32)
    pos2 = torch.broadcast_to(positions, (*lead, s)).reshape(z, s)  # a view (stride 0) when it can be
    scaling = resolve_scaling(scaling)
    freq = _freq(d, float(base), scaling, x.device)
    out = _RopeTriton.apply(x.reshape(z, s, d), pos2, freq, attention_factor(scaling), bool(interleaved))
    return out.reshape(x.shape)
