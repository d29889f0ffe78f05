r"""FlashAttention in pure PyTorch: tiled forward and backward with the online softmax.

Notation of Dao et al. (2022), "FlashAttention" (arXiv 2205.14135) and Dao (2023),
"FlashAttention-2": ``Q (n_q, d)``, ``K (n_k, d)``, ``V (n_k, d_v)``, scale ``τ``
(default ``1/sqrt(d)``). The queries are cut into blocks ``Q_i`` of ``block_q``
rows, the keys and values into blocks ``K_j, V_j`` of ``block_k`` rows, and only
one tile ``S_ij = τ Q_i K_jᵀ`` of shape ``(block_q, block_k)`` exists at a time.

Forward, for one query block, over the key blocks ``j = 1, 2, ...`` (the online
softmax; ``m`` running row max, ``ℓ`` running normaliser, ``A`` unnormalised output):

.. math::

    m^{new} = \max(m, \mathrm{rowmax}(S_{ij})),\quad
    \tilde P_{ij} = e^{S_{ij} - m^{new}},\quad
    \ell^{new} = e^{m - m^{new}}\ell + \mathrm{rowsum}(\tilde P_{ij}),\quad
    A^{new} = e^{m - m^{new}} A + \tilde P_{ij} V_j

and at the end ``O_i = A / ℓ`` and the logsumexp ``L_i = m + log ℓ`` (saved for
the backward pass). The extra memory is O(n·d): ``m, ℓ, L`` are vectors and ``A``
has the shape of one output block.

Backward (FlashAttention-2, recomputation instead of a stored ``P``): with
``D = rowsum(dO ∘ O)``, for every tile

.. math::

    P_{ij} = e^{S_{ij} - L_i},\quad dV_j \mathrel{+}= P_{ij}^\top dO_i,\quad
    dP_{ij} = dO_i V_j^\top,\quad dS_{ij} = P_{ij} \circ (dP_{ij} - D_i),\quad
    dQ_i \mathrel{+}= \tau\, dS_{ij} K_j,\quad dK_j \mathrel{+}= \tau\, dS_{ij}^\top Q_i.

Causal attention follows SDPA's ``is_causal=True`` (top-left aligned: query ``i``
sees keys ``j <= i``). A tile entirely above the diagonal is skipped, a tile the
diagonal crosses is masked, every other tile is computed in full
(:func:`tile_kind`). All loops run over the blocks only: every batch and head is
handled at once by batched matmuls, so Python overhead is one loop body per tile.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from companion.attention.reference import check_qkv, resolve_scale

__all__ = [
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_forward",
    "online_softmax_update",
    "tile_kind",
]

_NEG_INF = float("-inf")


def _check_block(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision inputs accumulate in float32 (as FlashAttention kernels do)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def tile_kind(q_start: int, q_end: int, k_start: int, k_end: int, causal: bool) -> str:
    """What the tiled loops do with the tile of queries ``[q_start, q_end)`` x keys ``[k_start, k_end)``.

    Returns ``"full"`` (no masked entry), ``"partial"`` (the causal diagonal
    crosses it: mask the entries with ``j > i``) or ``"skipped"`` (every entry
    has ``j > i``: the tile contributes nothing and is never computed).
    """
    if not causal or k_end - 1 <= q_start:  # largest key <= smallest query
        return "full"
    if k_start > q_end - 1:  # smallest key > largest query
        return "skipped"
    return "partial"


def _tile_mask(q_start: int, q_end: int, k_start: int, k_end: int, device: torch.device) -> torch.Tensor:
    """``(q_end - q_start, k_end - k_start)`` boolean, ``True`` where key ``j > i`` is masked."""
    i = torch.arange(q_start, q_end, device=device).unsqueeze(-1)
    j = torch.arange(k_start, k_end, device=device)
    return j > i


def online_softmax_update(
    m: torch.Tensor,
    l: torch.Tensor | None,  # noqa: E741 (the paper's ℓ)
    acc: torch.Tensor,
    scores_tile: torch.Tensor,
    v_tile: torch.Tensor,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One step of the online softmax: fold one key tile into the running state.

    .. math::

        m^{new} = \max(m, \mathrm{rowmax}(S)),\quad \alpha = e^{m - m^{new}},\quad
        \tilde P = e^{S - m^{new}},\quad
        \ell^{new} = \alpha\,\ell + \mathrm{rowsum}(\tilde P),\quad
        A^{new} = \alpha\,A + \tilde P V

    Shapes: ``m, l (..., bq)``, ``acc (..., bq, d_v)``, ``scores_tile (..., bq, bk)``
    (already scaled and masked with ``-inf``), ``v_tile (..., bk, d_v)``; returns
    ``(m_new, l_new, acc_new)`` with the shapes of ``m, l, acc``. Start from
    ``m = -inf, l = 0, acc = 0``; after the last tile ``acc / l`` is the attention
    output and ``m + log(l)`` the logsumexp.

    A row whose entries are all ``-inf`` so far keeps ``m = -inf, l = 0, acc = 0``
    and never yields NaN: the exponents use ``m^{new}`` clamped to the most
    negative finite float, so ``-inf - (-inf)`` never happens.

    ``l=None``: the normaliser rides in the last column of ``acc`` instead, for
    a ``v_tile`` whose last column is all ones: ``P̃ [V | 1] = [P̃ V | rowsum P̃]``,
    so the matmul that updates ``A`` also updates ``ℓ`` and the separate row sum
    disappears (FlashAttention kernels get the row sum from the matrix unit the
    same way). ``l_new`` is then ``None``. The tiled forward works this way.

    By default the inputs are not modified. ``inplace=True`` (what the tiled
    forward uses, to save an allocation and a pass per tile) overwrites
    ``scores_tile`` with ``P̃`` and updates ``acc`` in place, returning it as
    ``acc_new``.
    """
    lead = m.shape
    if (l is not None and l.shape != lead) or acc.shape[:-1] != lead or scores_tile.shape[:-1] != lead:
        raise ValueError(
            "online_softmax_update: expected m, l (..., bq), acc (..., bq, d_v), scores_tile (..., bq, bk); got "
            f"m {tuple(m.shape)}, l {None if l is None else tuple(l.shape)}, acc {tuple(acc.shape)}, "
            f"scores_tile {tuple(scores_tile.shape)}"
        )
    if v_tile.shape[:-2] != lead[:-1] or v_tile.shape[-2] != scores_tile.shape[-1] or v_tile.shape[-1] != acc.shape[-1]:
        raise ValueError(
            f"online_softmax_update: expected v_tile of shape {(*lead[:-1], scores_tile.shape[-1], acc.shape[-1])} "
            f"(..., bk, d_v), got {tuple(v_tile.shape)}"
        )
    m_new = torch.maximum(m, scores_tile.amax(dim=-1))
    m_safe = m_new.clamp_min(torch.finfo(m_new.dtype).min)  # -inf -> finite: no (-inf) - (-inf)
    alpha = torch.exp(m - m_safe)  # (..., bq): 0 where m = -inf
    if inplace:
        p = scores_tile.sub_(m_safe.unsqueeze(-1)).exp_()  # (..., bq, bk): 0 where masked
        acc_new = acc.mul_(alpha.unsqueeze(-1))
        if acc_new.dim() == 3:
            acc_new.baddbmm_(p, v_tile)  # one fused kernel: A <- A + P̃ V
        else:
            acc_new.add_(p @ v_tile)
    else:
        p = torch.exp(scores_tile - m_safe.unsqueeze(-1))
        acc_new = torch.addcmul(p @ v_tile, acc, alpha.unsqueeze(-1))
    l_new = None if l is None else torch.addcmul(p.sum(dim=-1), l, alpha)
    return m_new, l_new, acc_new


def _flatten(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(..., n, d) -> (B, n, d)`` with ``B`` the product of the leading dims."""
    return t.reshape(-1, *t.shape[-2:]).to(dtype)


def flash_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled attention forward: returns ``(out, lse)``, never an ``n_q x n_k`` tensor.

    Shapes: ``q (..., n_q, d)``, ``k (..., n_k, d)``, ``v (..., n_k, d_v)``, e.g.
    ``(batch, heads, seq, dim)``. Returns ``out (..., n_q, d_v)`` in the dtype of
    ``q`` and the row logsumexp ``lse (..., n_q)``, ``L = m + log ℓ``, in the
    accumulation dtype (float32 for half inputs). Not differentiable by itself:
    :func:`flash_attention` wraps it with the tiled backward.

    Loop structure: query blocks outside, key blocks inside, so the running
    state ``(m, ℓ, A)`` of one query block stays small; with ``causal=True`` the
    inner loop stops at the first fully masked key block. ``ℓ`` is kept as an
    extra column of ``A`` (``V`` gets a column of ones), see
    :func:`online_softmax_update`.
    """
    check_qkv(q, k, v, name="flash_attention")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    tau = resolve_scale(scale, q.shape[-1])
    lead, n_q, n_k, d_v = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    cdtype = _compute_dtype(q.dtype)

    q3 = _flatten(q, cdtype) * tau  # (B, n_q, d), scaled once: S_ij = (τ Q_i) K_jᵀ
    k3t = _flatten(k, cdtype).transpose(1, 2).contiguous()  # (B, d, n_k): Kᵀ, key blocks are column slices
    v3 = _flatten(v, cdtype)
    batch = q3.shape[0]
    # [V | 1] (B, n_k, d_v + 1): P̃ [V | 1] = [P̃ V | rowsum P̃], one matmul updates both A and ℓ
    v1 = torch.cat([v3, v3.new_ones(batch, n_k, 1)], dim=-1)
    out = q3.new_empty(batch, n_q, d_v)
    lse = q3.new_empty(batch, n_q)

    # (k_start, k_end, K_jᵀ (B, d, bk), [V_j | 1] (B, bk, d_v + 1)) for every key block, split once: views
    key_blocks = [
        (k_start, k_start + v_j.shape[1], kt_j, v_j)
        for k_start, kt_j, v_j in zip(range(0, n_k, block_k), k3t.split(block_k, dim=2), v1.split(block_k, dim=1))
    ]
    for q_start, q_i in zip(range(0, n_q, block_q), q3.split(block_q, dim=1)):  # q_i: (B, bq, d)
        q_end = q_start + q_i.shape[1]
        m = q3.new_full((batch, q_end - q_start), _NEG_INF)  # running row max
        acc = q3.new_zeros(batch, q_end - q_start, d_v + 1)  # [A | ℓ]: unnormalised output, running normaliser
        for k_start, k_end, kt_j, v_j in key_blocks:
            kind = tile_kind(q_start, q_end, k_start, k_end, causal)
            if kind == "skipped":  # and so is every key block to its right
                break
            s = torch.bmm(q_i, kt_j)  # (B, bq, bk): one tile of S
            if kind == "partial":
                s.masked_fill_(_tile_mask(q_start, q_end, k_start, k_end, s.device), _NEG_INF)
            m, _, acc = online_softmax_update(m, None, acc, s, v_j, inplace=True)
        l = acc[..., d_v]  # noqa: E741
        out[:, q_start:q_end] = acc[..., :d_v] / l.unsqueeze(-1)
        lse[:, q_start:q_end] = m + torch.log(l)

    return out.reshape(*lead, n_q, d_v).to(q.dtype), lse.reshape(*lead, n_q)


def flash_attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiled backward by recomputation (FlashAttention-2): returns ``(dq, dk, dv)``.

    Shapes: ``dout, out (..., n_q, d_v)``, ``lse (..., n_q)`` from
    :func:`flash_attention_forward` with the same ``causal, scale``; ``q, k, v``
    as there. Key blocks outside (``dK_j, dV_j`` accumulate in a block-sized
    buffer), query blocks inside (``dQ_i`` accumulates in place in ``dq``). Each
    tile recomputes ``P_ij = exp(S_ij - L_i)`` from the saved logsumexp, so no
    ``n_q x n_k`` tensor exists here either.
    """
    check_qkv(q, k, v, name="flash_attention_backward")
    want = (*q.shape[:-1], v.shape[-1])
    if tuple(dout.shape) != want or tuple(out.shape) != want or tuple(lse.shape) != want[:-1]:
        raise ValueError(
            f"flash_attention_backward: expected dout and out of shape {want} and lse of shape {want[:-1]}, "
            f"got dout {tuple(dout.shape)}, out {tuple(out.shape)}, lse {tuple(lse.shape)}"
        )
    tau = resolve_scale(scale, q.shape[-1])
    n_q, n_k = q.shape[-2], k.shape[-2]
    cdtype = _compute_dtype(q.dtype)
    q3 = _flatten(q, cdtype) * tau  # τ Q: S_ij = (τ Q_i) K_jᵀ and dK_j += dS_ijᵀ (τ Q_i)
    k3, v3 = _flatten(k, cdtype), _flatten(v, cdtype)
    do3, o3 = _flatten(dout, cdtype), _flatten(out, cdtype)
    lse2 = lse.reshape(-1, n_q).to(cdtype)
    delta = (do3 * o3).sum(dim=-1)  # D = rowsum(dO ∘ O), (B, n_q)

    dq = torch.zeros_like(q3)  # accumulates dS K; times τ at the end
    dk = torch.empty_like(k3)
    dv = torch.empty_like(v3)
    for k_start in range(0, n_k, block_k):
        k_end = min(k_start + block_k, n_k)
        k_j, v_j = k3[:, k_start:k_end], v3[:, k_start:k_end]  # (B, bk, d), (B, bk, d_v)
        dk_j = torch.zeros_like(k_j)
        dv_j = torch.zeros_like(v_j)
        for q_start in range(0, n_q, block_q):
            q_end = min(q_start + block_q, n_q)
            kind = tile_kind(q_start, q_end, k_start, k_end, causal)
            if kind == "skipped":
                continue
            q_i, do_i = q3[:, q_start:q_end], do3[:, q_start:q_end]
            s = q_i @ k_j.transpose(1, 2)  # (B, bq, bk)
            if kind == "partial":
                s.masked_fill_(_tile_mask(q_start, q_end, k_start, k_end, s.device), _NEG_INF)
            p = s.sub_(lse2[:, q_start:q_end].unsqueeze(-1)).exp_()  # P_ij = exp(S_ij - L_i)
            dv_j.baddbmm_(p.transpose(1, 2), do_i)  # dV_j += P_ijᵀ dO_i
            dp = do_i @ v_j.transpose(1, 2)  # dP_ij = dO_i V_jᵀ
            ds = p.mul_(dp.sub_(delta[:, q_start:q_end].unsqueeze(-1)))  # dS_ij = P_ij ∘ (dP_ij - D_i)
            dq[:, q_start:q_end].baddbmm_(ds, k_j)  # dQ_i += dS_ij K_j
            dk_j.baddbmm_(ds.transpose(1, 2), q_i)  # dK_j += dS_ijᵀ (τ Q_i)
        dk[:, k_start:k_end] = dk_j
        dv[:, k_start:k_end] = dv_j
    dq.mul_(tau)
    return (
        dq.reshape(q.shape).to(q.dtype),
        dk.reshape(k.shape).to(k.dtype),
        dv.reshape(v.shape).to(v.dtype),
    )


class _FlashAttention(torch.autograd.Function):
    """Autograd wrapper: saves ``q, k, v, out, lse`` (all O(n·d)), backward is the tiled pass."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_q, block_k):  # type: ignore[override]
        out, lse = flash_attention_forward(q, k, v, causal=causal, scale=scale, block_q=block_q, block_k=block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = dict(causal=causal, scale=scale, block_q=block_q, block_k=block_k)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(dout, q, k, v, out, lse, **ctx.options)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
) -> torch.Tensor:
    """Exact attention, tiled: equals ``scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``.

    Shapes: ``q (..., n_q, d)``, ``k (..., n_k, d)``, ``v (..., n_k, d_v)`` with
    any leading dims, e.g. ``(batch, heads, seq, dim)``; returns ``(..., n_q, d_v)``.
    Any ``n_q, n_k`` (not only multiples of the block sizes). Differentiable:
    the backward is the tiled recomputation of :func:`flash_attention_backward`.
    Memory beyond inputs and output: O(n·d) plus one ``block_q x block_k`` tile.
    """
    check_qkv(q, k, v, name="flash_attention")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    resolve_scale(scale, q.shape[-1])
    return _FlashAttention.apply(q, k, v, causal, scale, block_q, block_k)
