"""FlashAttention-2 in Triton: forward and backward kernels (chapter 01).

``triton_flash_attention(q, k, v, causal=False, scale=None)`` computes exactly
what ``torch.nn.functional.scaled_dot_product_attention(q, k, v,
is_causal=causal, scale=scale)`` computes, without ever materialising the
``n_q x n_k`` score matrix:

* **forward** — one program per (block of ``BLOCK_M`` queries, batch·head).
  It walks over key blocks of ``BLOCK_N`` keys and keeps an *online softmax*:
  a running row maximum ``m_i``, a running denominator ``l_i`` and an
  unnormalised output ``acc``. When a new block raises the maximum from
  ``m_old`` to ``m_new``, everything accumulated so far is rescaled by
  ``alpha = exp(m_old - m_new)``. At the end ``O = acc / l_i`` and the
  row logsumexp ``L = m_i + log(l_i)`` is saved for the backward pass.
* **backward** — FlashAttention-2 style. A preprocessing kernel computes
  ``D_i = sum_d dO_id * O_id``; a dK/dV kernel owns a block of keys and loops
  over query blocks; a dQ kernel owns a block of queries and loops over key
  blocks. Both rebuild ``P = exp(S - L)`` from the saved logsumexp, so no
  ``n x n`` tensor is ever stored.

Exponentials use base 2 (``exp2`` is the native instruction): scores are
multiplied by ``scale * log2(e)`` so that ``exp(x * scale) = exp2(x * scale *
log2 e)``, and the saved logsumexp is in base-2 units as well.

Shapes: ``(..., n, d)`` — leading dimensions (batch, heads, ...) are flattened
into one axis ``Z``; ``q`` may have a different length ``n_q`` from ``k``/``v``
(``n_k``). ``d`` must be 16, 32, 64 or 128. ``causal=True`` follows PyTorch's
``is_causal=True`` convention (top-left aligned: query ``i`` sees keys
``j <= i``), also when ``n_q != n_k``. Inputs may be float16, bfloat16 or
float32; every reduction accumulates in float32.

Triton is optional (``pip install -e '.[gpu]'``): this module always imports,
``HAS_TRITON`` says whether Triton is there, and calling the kernel without it
raises a ``RuntimeError``. The kernels need CUDA tensors; for testing on a CPU
set ``TRITON_INTERPRET=1`` in the environment *before this module is imported*
(Triton decides between compiling and interpreting when a kernel is defined).
"""

from __future__ import annotations

import contextlib
import math
import os
from types import SimpleNamespace

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
    _TRITON_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # ImportError, or a broken install: the module must still import
    HAS_TRITON = False
    _TRITON_IMPORT_ERROR = exc
    # Stand-ins so the decorators below still run; every entry point checks HAS_TRITON first.
    # (``from __future__ import annotations`` keeps the ``tl.constexpr`` annotations unevaluated.)
    triton = SimpleNamespace(
        jit=lambda fn: fn,
        autotune=lambda *args, **kwargs: (lambda fn: fn),
        Config=lambda *args, **kwargs: None,
    )
    tl = None

__all__ = ["HAS_TRITON", "INTERPRET", "SUPPORTED_HEAD_DIMS", "triton_flash_attention"]

#: Whether Triton's CPU interpreter was switched on when this module was imported.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * log2(e))

# Under the interpreter every program runs one after the other in NumPy: one small
# block size, no autotuning (benchmarking a dozen configs there would take minutes).
_INTERPRET_BLOCK = 16
# Triton 3.9 warns on stderr when FMA contraction is left to its default; ask for it explicitly.
_COMPILE_OPTIONS = {"enable_fp_fusion": True}


def _fwd_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": _INTERPRET_BLOCK, "BLOCK_N": _INTERPRET_BLOCK}, num_warps=1, num_stages=1)]
    # Chosen for H100 (sm_90); configs that do not fit (e.g. float32, d=128) are skipped by the autotuner.
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm in (64, 128)
        for bn in (64, 128)
        for w in (4, 8)
        for s in (3, 4)
        if not (bm == 64 and w == 8)
    ]


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------


@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q,  # running state of the online softmax, and this program's queries
    K, V, stride_kn, stride_vn,
    start_m, lo, hi, N_K, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Fold the key blocks starting at lo, lo + BLOCK_N, ... (< hi) into (acc, l_i, m_i).

    MASKED=False is the fast path for blocks that lie entirely inside the sequence and
    (when causal) entirely below the diagonal; MASKED=True handles the ragged last block
    and the blocks that straddle the diagonal.
    """
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :]
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        # S_ij = (q_i . k_j) * scale, kept in log2 units: exp(S) == exp2(S * log2 e)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        if MASKED:
            keep = offs_n[None, :] < N_K
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])  # query i sees keys j <= i
            s = tl.where(keep, s, float("-inf"))
        # online softmax: m_new = max(m_old, max_j S_ij), alpha = exp(m_old - m_new)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])  # P_ij = exp(S_ij - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)  # l_new = alpha * l_old + sum_j P_ij
        acc = acc * alpha[:, None]  # acc_new = alpha * acc_old + P @ V
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_fwd_configs(), key=["N_Q", "N_K", "HEAD_DIM", "CAUSAL", "DOT_PRECISION"])
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, qk_scale,
    stride_qz, stride_qm, stride_kz, stride_kn, stride_vz, stride_vn, stride_oz, stride_om,
    N_Q, N_K,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0)  # which block of BLOCK_M queries
    off_z = tl.program_id(1).to(tl.int64)  # which (batch, head)
    Q += off_z * stride_qz
    K += off_z * stride_kz
    V += off_z * stride_vz
    O += off_z * stride_oz
    LSE += off_z * N_Q

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=offs_m[:, None] < N_Q, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # running unnormalised output

    # Keys this block needs: all N_K, or (causal) only j < (start_m + 1) * BLOCK_M —
    # key blocks above the diagonal are fully masked and skipped entirely.
    if CAUSAL:
        hi = tl.minimum(N_K, (start_m + 1) * BLOCK_M)
        full_end = tl.minimum(start_m * BLOCK_M, N_K) // BLOCK_N * BLOCK_N  # below the diagonal
    else:
        hi = N_K
        full_end = N_K // BLOCK_N * BLOCK_N  # all but the ragged last block
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, K, V, stride_kn, stride_vn, start_m, 0, full_end, N_K, qk_scale,
        BLOCK_M, BLOCK_N, HEAD_DIM, False, CAUSAL, DOT_PRECISION,
    )
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, K, V, stride_kn, stride_vn, start_m, full_end, hi, N_K, qk_scale,
        BLOCK_M, BLOCK_N, HEAD_DIM, True, CAUSAL, DOT_PRECISION,
    )
    # Every row sees key 0, so l_i > 0. O = acc / l, L = m + log2(l) (base-2 logsumexp).
    acc = acc / l_i[:, None]
    tl.store(LSE + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < N_Q)
    tl.store(O + offs_m[:, None] * stride_om + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=offs_m[:, None] < N_Q)


# ----------------------------------------------------------------------------------------
# Backward (FlashAttention-2). With P_ij = exp(S_ij - L_i), dP = dO V^T:
#   dV = P^T dO,   dS_ij = P_ij (dP_ij - D_i)  with  D_i = sum_j P_ij dP_ij = dO_i . O_i,
#   dQ = scale * dS K,   dK = scale * dS^T Q.
# ----------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_preprocess(O, DO, Delta, N_Q, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """D_i = rowsum(dO_i * O_i), in float32."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_z = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    ptrs = off_z * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]  # contiguous (Z, N_Q, d)
    o = tl.load(O + ptrs, mask=offs_m[:, None] < N_Q, other=0.0).to(tl.float32)
    do = tl.load(DO + ptrs, mask=offs_m[:, None] < N_Q, other=0.0).to(tl.float32)
    tl.store(Delta + off_z * N_Q + offs_m, tl.sum(o * do, axis=1), mask=offs_m < N_Q)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, Delta, sm_scale, qk_scale, N_Q, N_K,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program owns BLOCK_N keys; it loops over the query blocks that can see them."""
    start_n = tl.program_id(0) * BLOCK_N
    off_z = tl.program_id(1).to(tl.int64)
    Q += off_z * N_Q * HEAD_DIM
    DO += off_z * N_Q * HEAD_DIM
    K += off_z * N_K * HEAD_DIM
    V += off_z * N_K * HEAD_DIM
    DK += off_z * N_K * HEAD_DIM
    DV += off_z * N_K * HEAD_DIM
    LSE += off_z * N_Q
    Delta += off_z * N_Q

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_ptrs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    k = tl.load(K + kv_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
    v = tl.load(V + kv_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # causal: key j is seen only by queries i >= j, so earlier query blocks are skipped
    lo = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
    for start_m in range(lo, N_Q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
        q = tl.load(Q + q_ptrs, mask=offs_m[:, None] < N_Q, other=0.0)
        do = tl.load(DO + q_ptrs, mask=offs_m[:, None] < N_Q, other=0.0)
        lse = tl.load(LSE + offs_m, mask=offs_m < N_Q, other=0.0)
        delta = tl.load(Delta + offs_m, mask=offs_m < N_Q, other=0.0)
        # work with the transposed block (keys x queries): P^T_ji = exp2(S_ij - L_i)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
        keep = (offs_m[None, :] < N_Q) & (offs_n[:, None] < N_K)
        if CAUSAL:
            keep = keep & (offs_n[:, None] <= offs_m[None, :])
        p_t = tl.math.exp2(tl.where(keep, s_t - lse[None, :], float("-inf")))  # masked: exp2(-inf) = 0
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)  # dV += P^T dO
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # dP^T = V dO^T
        ds_t = p_t * (dp_t - delta[None, :])  # dS^T = P^T * (dP^T - D)
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)  # dK += dS^T Q
    dk = dk * sm_scale
    tl.store(DK + kv_ptrs, dk.to(DK.dtype.element_ty), mask=offs_n[:, None] < N_K)
    tl.store(DV + kv_ptrs, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < N_K)


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, Delta, sm_scale, qk_scale, N_Q, N_K,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program owns BLOCK_M queries; it loops over the key blocks they can see."""
    start_m = tl.program_id(0) * BLOCK_M
    off_z = tl.program_id(1).to(tl.int64)
    Q += off_z * N_Q * HEAD_DIM
    DO += off_z * N_Q * HEAD_DIM
    DQ += off_z * N_Q * HEAD_DIM
    K += off_z * N_K * HEAD_DIM
    V += off_z * N_K * HEAD_DIM
    LSE += off_z * N_Q
    Delta += off_z * N_Q

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    q = tl.load(Q + q_ptrs, mask=offs_m[:, None] < N_Q, other=0.0)
    do = tl.load(DO + q_ptrs, mask=offs_m[:, None] < N_Q, other=0.0)
    lse = tl.load(LSE + offs_m, mask=offs_m < N_Q, other=0.0)
    delta = tl.load(Delta + offs_m, mask=offs_m < N_Q, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    hi = tl.minimum(N_K, start_m + BLOCK_M) if CAUSAL else N_K  # causal: skip keys above the diagonal
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ptrs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
        k = tl.load(K + kv_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
        v = tl.load(V + kv_ptrs, mask=offs_n[:, None] < N_K, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        keep = (offs_m[:, None] < N_Q) & (offs_n[None, :] < N_K)
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        p = tl.math.exp2(tl.where(keep, s - lse[:, None], float("-inf")))  # P = exp(S - L); masked: 0
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # dP = dO V^T
        ds = p * (dp - delta[:, None])  # dS = P * (dP - D)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)  # dQ += dS K
    dq = dq * sm_scale
    tl.store(DQ + q_ptrs, dq.to(DQ.dtype.element_ty), mask=offs_m[:, None] < N_Q)


# ----------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs: full-precision products (the default would be TF32 on tensor cores)
    return "ieee" if dtype == torch.float32 else "tf32"


def _bwd_blocks(dtype: torch.dtype, head_dim: int) -> dict:
    """Fixed block sizes for the backward kernels: (dK/dV: keys x queries, dQ: queries x keys)."""
    if INTERPRET:
        b = _INTERPRET_BLOCK
        return dict(dkdv=(b, b), dq=(b, b), num_warps=1, num_stages=1)
    if dtype == torch.float32 or head_dim == 128:
        return dict(dkdv=(64, 32), dq=(64, 32), num_warps=4, num_stages=2)
    return dict(dkdv=(128, 32), dq=(128, 32), num_warps=8 if head_dim == 128 else 4, num_stages=3)


def _on_device(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _FlashAttention(torch.autograd.Function):
    """q, k, v: contiguous (Z, n, d) tensors."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        z, n_q, d = q.shape
        n_k = k.shape[1]
        o = torch.empty_like(q)
        lse = torch.empty((z, n_q), device=q.device, dtype=torch.float32)
        grid = lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), z)  # noqa: E731
        with _on_device(q):
            _attn_fwd[grid](
                q, k, v, o, lse, sm_scale * _LOG2E,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                v.stride(0), v.stride(1), o.stride(0), o.stride(1),
                n_q, n_k,
                HEAD_DIM=d, CAUSAL=causal, DOT_PRECISION=_dot_precision(q.dtype), **_COMPILE_OPTIONS,
            )
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        do = do.contiguous()
        z, n_q, d = q.shape
        n_k = k.shape[1]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        delta = torch.empty_like(lse)
        cfg = _bwd_blocks(q.dtype, d)
        pre_m = _INTERPRET_BLOCK if INTERPRET else 128
        common = dict(HEAD_DIM=d, CAUSAL=ctx.causal, DOT_PRECISION=_dot_precision(q.dtype),
                      num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **_COMPILE_OPTIONS)
        with _on_device(q):
            _attn_bwd_preprocess[(triton.cdiv(n_q, pre_m), z)](
                o, do, delta, n_q, HEAD_DIM=d, BLOCK_M=pre_m, **_COMPILE_OPTIONS
            )
            block_n, block_m = cfg["dkdv"]
            _attn_bwd_dkdv[(triton.cdiv(n_k, block_n), z)](
                q, k, v, do, dk, dv, lse, delta, ctx.sm_scale, ctx.sm_scale * _LOG2E, n_q, n_k,
                BLOCK_M=block_m, BLOCK_N=block_n, **common,
            )
            block_m, block_n = cfg["dq"]
            _attn_bwd_dq[(triton.cdiv(n_q, block_m), z)](
                q, k, v, do, dq, lse, delta, ctx.sm_scale, ctx.sm_scale * _LOG2E, n_q, n_k,
                BLOCK_M=block_m, BLOCK_N=block_n, **common,
            )
        return dq, dk, dv, None, None


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError(
            "Triton is not installed: pip install -e '.[gpu]' "
            f"(importing it failed with {type(_TRITON_IMPORT_ERROR).__name__}: {_TRITON_IMPORT_ERROR})"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., n, d), got {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    d = q.shape[-1]
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dimension d must be one of {SUPPORTED_HEAD_DIMS}, got {d}")
    if k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError(f"q, k, v must share the head dimension d={d}, got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            "q (..., n_q, d), k and v (..., n_k, d) must share their leading dimensions and k, v their length: "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[-2] == 0:
        raise ValueError("k and v must hold at least one key (n_k >= 1)")
    if q.device.type != "cuda":
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"triton_flash_attention needs CUDA tensors, got tensors on {q.device}. "
                "To test on a CPU, run with TRITON_INTERPRET=1 set in the environment before Python starts."
            )
        if not INTERPRET:
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after companion.attention.triton_kernel was imported; "
                "Triton chooses between compiling and interpreting when the kernels are defined, "
                "so set it before the import (best: in the environment before Python starts)."
            )
        if q.dtype == torch.bfloat16:
            raise NotImplementedError(
                "Triton's CPU interpreter does not support bfloat16 tl.dot (it multiplies the raw bit patterns, "
                "triton-lang/triton#11584): use float16 or float32 under TRITON_INTERPRET=1, or a GPU for bfloat16."
            )


def triton_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale [+ causal mask]) v with the FlashAttention-2 Triton kernels.

    Equals ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``.

    Args:
        q: ``(..., n_q, d)``; float16, bfloat16 or float32; CUDA (or CPU under
            ``TRITON_INTERPRET=1``).
        k, v: ``(..., n_k, d)`` with the same leading dimensions and dtype.
        causal: mask keys ``j > i`` (top-left aligned, as SDPA's ``is_causal``).
        scale: multiplies the scores; defaults to ``1 / sqrt(d)``.

    Returns:
        ``(..., n_q, d)`` in the dtype of ``q``; differentiable in ``q``, ``k``, ``v``.
    """
    _check_inputs(q, k, v)
    *lead, n_q, d = q.shape
    n_k = k.shape[-2]
    sm_scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    if q.numel() == 0:  # no queries (or an empty batch): nothing to launch
        return torch.zeros_like(q) + 0.0 * (q.sum() + k.sum() + v.sum())  # keeps autograd happy
    z = math.prod(lead)
    qz = q.reshape(z, n_q, d).contiguous()
    kz = k.reshape(z, n_k, d).contiguous()
    vz = v.reshape(z, n_k, d).contiguous()
    out = _FlashAttention.apply(qz, kz, vz, bool(causal), sm_scale)
    return out.reshape(*lead, n_q, d)
