"""Mixture-of-experts routing: routers, capacity, dispatch, balancing losses, expert parallelism.

Notation (Switch Transformer, GShard, ST-MoE): ``T`` tokens of width ``d``, ``E``
experts, each a SwiGLU feed-forward block of hidden width ``d_ff``, ``k`` experts
per token.

* Router logits ``h = x W_rᵀ`` of shape ``(T, E)``; probabilities ``p = softmax(h)``
  over the expert axis.
* **Token choice** (:func:`route_topk`): each token keeps its ``k`` largest
  ``p_e``; Mixtral renormalises those ``k`` weights to sum to 1, Switch/GShard
  keep the probabilities as they are.
* **Capacity** (:func:`expert_capacity`): ``C = ceil(capacity_factor · T · k / E)``
  assignments per expert; :func:`capacity_keep_mask` admits them first come first
  served in token order and an overflowing assignment contributes nothing (the
  residual connection around the layer carries the token on).
* **Expert choice** (:func:`expert_choice_route`): each expert takes its top
  ``capacity`` tokens by ``p_e`` (Zhou et al. 2022).
* Losses: :func:`load_balancing_loss` ``E · Σ_e f_e P_e`` (Switch eq. 4, with
  ``f_e`` the fraction of tokens whose top-k contains ``e``), and
  :func:`router_z_loss` ``mean_t (logsumexp_e h_te)²`` (ST-MoE eq. 5).
* :func:`moe_ffn` computes the layer with three interchangeable dispatches:
  ``"loop"`` (one gather per expert), ``"einsum"`` (GShard's one-hot dispatch and
  combine tensors of shape ``(T, E, C)``) and ``"sorted"`` (sort assignments by
  expert, contiguous matmuls per expert, gate and up in one when the weights have
  the layout of :func:`fuse_gate_up`; ``torch._grouped_mm`` on CUDA, or where asked).
* :func:`expert_parallel_moe_ffn` shards experts across ranks and exchanges tokens
  with two all-to-alls, over ``torch.distributed`` (:class:`TorchDistComm`) or over
  threads in one process (:class:`ThreadComm`, :func:`run_threaded`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DISPATCHES",
    "GROUPED_MM_DTYPES",
    "HAS_GROUPED_MM",
    "MoELayer",
    "ThreadComm",
    "TorchDistComm",
    "capacity_keep_mask",
    "centred_cosine",
    "cluster_data",
    "cluster_moe_forward",
    "dense_swiglu",
    "drop_fraction_uniform",
    "expected_drop_fraction",
    "expert_capacity",
    "expert_choice_route",
    "expert_parallel_moe_ffn",
    "fuse_gate_up",
    "init_moe_params",
    "load_balancing_loss",
    "moe_ffn",
    "noisy_topk_logits",
    "plot_expert_load",
    "route_topk",
    "router_z_loss",
    "run_threaded",
    "sort_by_expert",
    "swiglu_expert",
    "train_balance",
    "train_cluster_moe",
]

DISPATCHES = ("loop", "einsum", "sorted")
HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


# ----------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------


def _check_logits(router_logits: torch.Tensor, name: str = "router_logits") -> tuple[int, int]:
    if not isinstance(router_logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(router_logits).__name__}")
    if router_logits.dim() != 2:
        raise ValueError(f"{name} must have shape (tokens, experts), got {tuple(router_logits.shape)}")
    if not router_logits.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {router_logits.dtype}")
    return int(router_logits.shape[0]), int(router_logits.shape[1])


def _check_expert_ids(experts: torch.Tensor, n_experts: int, name: str = "experts") -> None:
    """experts: (T, k) integer ids in [0, n_experts)."""
    if not isinstance(experts, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(experts).__name__}")
    if experts.dim() != 2:
        raise ValueError(f"{name} must have shape (tokens, k), got {tuple(experts.shape)}")
    if experts.is_floating_point() or experts.is_complex() or experts.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer expert ids (int64), got {experts.dtype}")
    if not isinstance(n_experts, int) or isinstance(n_experts, bool) or n_experts < 1:
        raise ValueError(f"n_experts must be a positive int, got {n_experts!r}")
    if experts.numel():
        lo, hi = int(experts.min()), int(experts.max())
        if lo < 0 or hi >= n_experts:
            raise ValueError(f"{name} must lie in [0, {n_experts}) (n_experts = {n_experts}), "
                             f"got ids from {lo} to {hi}")


def _check_k(k: int, n_experts: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n_experts:
        raise ValueError(f"k must be an int in 1..{n_experts} (the number of experts), got {k!r}")


# ----------------------------------------------------------------------------------------
# Routers and losses
# ----------------------------------------------------------------------------------------


def route_topk(router_logits: torch.Tensor, k: int, *, renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-choice routing: softmax over experts, then each token's top ``k``.

    router_logits: ``(T, E)``. Returns ``(weights, experts)``, both ``(T, k)``, sorted
    by decreasing probability; ``experts`` is int64. With ``renormalize`` the k
    weights are divided by their sum (Mixtral: ``softmax(TopK(h))``, which is the same
    thing); without, they are the softmax probabilities ``p_e`` (Switch, GShard).
    """
    _, n_experts = _check_logits(router_logits)
    _check_k(k, n_experts)
    return _topk_of_probs(torch.softmax(router_logits, dim=-1), k, renormalize)


def _topk_of_probs(probs: torch.Tensor, k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    weights, experts = probs.topk(k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def noisy_topk_logits(router_logits: torch.Tensor, noise_logits: torch.Tensor, k: int, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Shazeer et al. (2017) noisy top-k gating, before the softmax.

    ``H = h + N(0, 1) · softplus(h_noise)``; entries outside each row's top ``k`` are
    set to ``-inf`` so ``softmax`` gives them weight 0. Shapes ``(T, E)`` in and out.
    """
    _check_logits(router_logits)
    if noise_logits.shape != router_logits.shape:
        raise ValueError(f"noise_logits must have shape {tuple(router_logits.shape)}, got {tuple(noise_logits.shape)}")
    _check_k(k, router_logits.shape[1])
    noise = torch.randn(router_logits.shape, generator=generator, dtype=router_logits.dtype,
                        device=router_logits.device)
    h = router_logits + noise * F.softplus(noise_logits)
    kth = h.topk(k, dim=-1).values[:, -1:]
    return h.masked_fill(h < kth, float("-inf"))


def load_balancing_loss(router_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Switch Transformer's auxiliary loss without its α: ``E · Σ_e f_e · P_e``.

    ``f_e`` = fraction of tokens whose top-k contains expert ``e`` (so ``Σ_e f_e = k``;
    no gradient: it is a count), ``P_e`` = mean over tokens of ``softmax(h)_e``.
    At perfect balance it equals ``k`` (1 for Switch's k = 1); when every token
    goes to one expert with probability 1 it equals ``E`` for k = 1. router_logits
    ``(T, E)``; returns a 0-d tensor of the logits' dtype.
    """
    _, n_experts = _check_logits(router_logits)
    _check_k(k, n_experts)
    probs = torch.softmax(router_logits, dim=-1)
    return _balance_of(probs, probs.topk(k, dim=-1).indices)


def _balance_of(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """E · Σ_e f_e P_e from probabilities (T, E) and the top-k ids (T, k)."""
    n_tokens, n_experts = probs.shape
    counts = torch.zeros(n_experts, dtype=probs.dtype, device=probs.device)
    counts.index_add_(0, experts.reshape(-1), torch.ones(experts.numel(), dtype=probs.dtype, device=probs.device))
    f = counts / n_tokens
    return n_experts * (f * probs.mean(dim=0)).sum()


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss: ``(1/T) Σ_t (log Σ_e exp h_te)²``; (T, E) -> 0-d tensor."""
    _check_logits(router_logits)
    return torch.logsumexp(router_logits, dim=-1).pow(2).mean()


def expert_choice_route(router_logits: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert choice (Zhou et al. 2022): each expert picks its top ``capacity`` tokens.

    ``S = softmax(h)`` over experts, shape ``(T, E)``; ``G, I = TopK(Sᵀ, capacity)``.
    Returns ``(weights, tokens)``, both ``(E, capacity)``, sorted by decreasing score;
    ``tokens`` is int64. A token may be picked by several experts or by none.
    """
    n_tokens, _ = _check_logits(router_logits)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or not 1 <= capacity <= n_tokens:
        raise ValueError(f"capacity must be an int in 1..{n_tokens} (the number of tokens), got {capacity!r}")
    scores = torch.softmax(router_logits, dim=-1)
    weights, tokens = scores.t().topk(capacity, dim=-1)
    return weights, tokens


# ----------------------------------------------------------------------------------------
# Capacity
# ----------------------------------------------------------------------------------------


def expert_capacity(n_tokens: int, n_experts: int, k: int, capacity_factor: float) -> int:
    """``C = ceil(capacity_factor · T · k / E)``: assignments each expert accepts."""
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
    # round first so that 1.1 * 100 * 1 / 10 = 11.000000000000002 is not ceiled to 12
    return int(math.ceil(round(capacity_factor * n_tokens * k / n_experts, 9)))


def capacity_keep_mask(experts: torch.Tensor, n_experts: int, capacity: int | None) -> torch.Tensor:
    """Which assignments fit: first come first served in token order.

    experts: ``(T, k)`` int64 expert ids. Assignment ``(t, j)`` to expert ``e`` is kept
    when fewer than ``capacity`` assignments to ``e`` come from tokens ``< t`` (a token
    lists each expert at most once). ``capacity=None`` keeps everything (dropless).
    Returns a bool tensor ``(T, k)``.
    """
    _check_expert_ids(experts, n_experts)
    if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0):
        raise ValueError(f"capacity must be None or a non-negative int, got {capacity!r}")
    if capacity is None:
        return torch.ones(experts.shape, dtype=torch.bool, device=experts.device)
    experts = experts.long()
    one_hot = F.one_hot(experts.reshape(-1), n_experts)  # (T*k, E), rows in token order
    position = (one_hot.cumsum(dim=0) - 1).gather(1, experts.reshape(-1, 1)).reshape(experts.shape)
    return position < capacity


def sort_by_expert(experts: torch.Tensor, keep: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Permutation that groups the kept assignments by expert (stable: token order within an expert).

    experts, keep: ``(T, k)``. Returns ``(token_idx, slot_idx, counts)``: the token and
    slot of each kept assignment, ordered by expert, shape ``(n_kept,)``; and the
    number of kept assignments per expert, ``(E,)`` int64.
    """
    _check_expert_ids(experts, n_experts)
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != experts.shape:
        got = (keep.dtype, tuple(keep.shape)) if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise ValueError(f"keep must be a bool tensor of the shape of experts {tuple(experts.shape)}, got {got}")
    experts = experts.long()
    k = experts.shape[1]
    flat_experts = experts.reshape(-1)
    flat_keep = keep.reshape(-1)
    # dropped assignments get the key E, so they sort to the end and are cut off
    key = torch.where(flat_keep, flat_experts, torch.full_like(flat_experts, n_experts))
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(flat_experts[flat_keep], minlength=n_experts)
    order = order[: int(counts.sum())]
    return order // k, order % k, counts


# ----------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------


def swiglu_expert(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """One SwiGLU expert: ``w_down @ (silu(w_gate @ x) * (w_up @ x))`` for each row of x ``(n, d)``.

    w_gate, w_up: ``(d_ff, d)``; w_down: ``(d, d_ff)``. Returns ``(n, d)``.
    """
    if torch.is_grad_enabled() and (x.requires_grad or w_gate.requires_grad or w_up.requires_grad):
        return (F.silu(x @ w_gate.t()) * (x @ w_up.t())) @ w_down.t()
    h = F.silu(x @ w_gate.t(), inplace=True)  # no autograd: reuse the buffers
    return h.mul_(x @ w_up.t()) @ w_down.t()


def dense_swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The dense baseline: one SwiGLU FFN applied to every row (same as :func:`swiglu_expert`)."""
    return swiglu_expert(x, w_gate, w_up, w_down)


def _check_params(x: torch.Tensor, router_weight: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                  w_down: torch.Tensor) -> tuple[int, int, int, int]:
    if x.dim() != 2:
        raise ValueError(f"x must have shape (tokens, d), got {tuple(x.shape)}")
    n_tokens, d = x.shape
    if router_weight.dim() != 2 or router_weight.shape[1] != d:
        raise ValueError(f"router_weight must have shape (E, {d}), got {tuple(router_weight.shape)}")
    n_experts = router_weight.shape[0]
    if w_gate.dim() != 3 or w_gate.shape[0] != n_experts or w_gate.shape[2] != d:
        raise ValueError(f"w_gate must have shape ({n_experts}, d_ff, {d}), got {tuple(w_gate.shape)}")
    d_ff = w_gate.shape[1]
    if tuple(w_up.shape) != (n_experts, d_ff, d):
        raise ValueError(f"w_up must have shape ({n_experts}, {d_ff}, {d}), got {tuple(w_up.shape)}")
    if tuple(w_down.shape) != (n_experts, d, d_ff):
        raise ValueError(f"w_down must have shape ({n_experts}, {d}, {d_ff}), got {tuple(w_down.shape)}")
    for name, t in (("router_weight", router_weight), ("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}: use one dtype")
    return n_tokens, d, n_experts, d_ff


def _dispatch_loop(x, weights, experts, keep, w_gate, w_up, w_down):
    y = torch.zeros_like(x)
    for e in range(w_gate.shape[0]):
        token, slot = ((experts == e) & keep).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        out = swiglu_expert(x[token], w_gate[e], w_up[e], w_down[e])
        y = y.index_add(0, token, out * weights[token, slot].unsqueeze(-1))
    return y


def _dispatch_einsum(x, weights, experts, keep, w_gate, w_up, w_down, capacity):
    """GShard: dispatch (T, E, C) one-hot and combine = dispatch · gate, all dense einsums."""
    n_tokens, n_experts = x.shape[0], w_gate.shape[0]
    flat = experts.reshape(-1)
    position = (F.one_hot(flat, n_experts).cumsum(dim=0) - 1).gather(1, flat[:, None]).reshape(experts.shape)
    token, slot = keep.nonzero(as_tuple=True)
    expert, pos = experts[token, slot], position[token, slot]
    if capacity is None:  # dropless: pad every expert to the largest load
        capacity = int(pos.max().item()) + 1 if pos.numel() else 1
    index = (token, expert, pos)
    dispatch = x.new_zeros(n_tokens, n_experts, capacity).index_put(index, x.new_ones(token.shape[0]))
    combine = x.new_zeros(n_tokens, n_experts, capacity).index_put(index, weights[token, slot])
    expert_in = torch.einsum("tec,td->ecd", dispatch, x)
    h = F.silu(torch.einsum("ecd,efd->ecf", expert_in, w_gate)) * torch.einsum("ecd,efd->ecf", expert_in, w_up)
    expert_out = torch.einsum("ecf,edf->ecd", h, w_down)
    return torch.einsum("tec,ecd->td", combine, expert_out)


GROUPED_MM_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _grouped_mm_wanted(x: torch.Tensor, grouped_mm: bool | None) -> bool:
    """Whether the sorted path tries ``torch._grouped_mm``.

    ``None`` (auto): on CUDA for bfloat16, float16 and float32 when this torch has it
    (the GPU kernel; never measured in this course, which had no GPU), never on the
    CPU, where this torch's ``_grouped_mm`` computes the same per-expert products as
    the loop and was not faster in ``benchmarks/moe.py``. ``True``: always (raises if
    torch lacks it or rejects the inputs). ``False``: never.
    """
    if grouped_mm is None:
        return HAS_GROUPED_MM and x.is_cuda and x.dtype in GROUPED_MM_DTYPES
    if grouped_mm and not HAS_GROUPED_MM:
        raise RuntimeError(f"grouped_mm=True but torch {torch.__version__} has no torch._grouped_mm")
    return bool(grouped_mm)


def fuse_gate_up(w_gate: torch.Tensor, w_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy ``w_gate`` and ``w_up`` ``(E, d_ff, d)`` into one ``(E, 2·d_ff, d)`` tensor; return its two halves.

    The halves are views, equal to the inputs, that the sorted dispatch recognises
    (:func:`_fused_gate_up`): it then computes ``x @ [W_gate; W_up]ᵀ``, one matmul of
    width ``2·d_ff`` per expert, instead of two of width ``d_ff``, with no copy per
    call. :class:`MoELayer` holds its parameters this way. Anything that copies the
    tensors one by one (``.to(dtype)``, ``.clone()``) loses the layout; the layer then
    runs the unfused matmuls and gives the same ``y``.
    """
    if w_gate.dim() != 3 or w_gate.shape != w_up.shape:
        raise ValueError(f"w_gate and w_up must both have shape (E, d_ff, d), got {tuple(w_gate.shape)} and "
                         f"{tuple(w_up.shape)}")
    d_ff = w_gate.shape[1]
    fused = torch.cat([w_gate.detach(), w_up.detach()], dim=1)
    return fused[:, :d_ff], fused[:, d_ff:]


def _fused_gate_up(w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor | None:
    """The ``(E, 2·d_ff, d)`` tensor whose halves are w_gate and w_up, without a copy, or None.

    Only when they are the two halves of one contiguous buffer, as :func:`fuse_gate_up`
    makes them; for no-grad use only (the view reaches past w_gate into w_up's memory).
    """
    if w_gate.dim() != 3 or w_gate.shape != w_up.shape or w_gate.dtype != w_up.dtype or w_gate.device != w_up.device:
        return None
    n_experts, d_ff, d = w_gate.shape
    strides = (2 * d_ff * d, d, 1)
    if n_experts == 0 or w_gate.stride() != strides or w_up.stride() != strides:
        return None
    if w_gate.untyped_storage().data_ptr() != w_up.untyped_storage().data_ptr():
        return None
    if w_up.storage_offset() != w_gate.storage_offset() + d_ff * d:
        return None
    return w_gate.as_strided((n_experts, 2 * d_ff, d), strides)


def _no_grad(*tensors: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def _dispatch_sorted(x, weights, experts, keep, w_gate, w_up, w_down, grouped_mm=None):
    """Sort by expert, one contiguous block of rows per expert, gather-and-weight combine.

    Returns ``(y, path, grouped_error)``: ``path`` names the expert matmuls that ran.
    """
    n_experts = w_gate.shape[0]
    token, slot, counts = sort_by_expert(experts, keep, n_experts)
    xs = x.index_select(0, token)  # (n_kept, d), grouped by expert
    out, path, error = None, None, None
    if _grouped_mm_wanted(x, grouped_mm):
        try:
            out = _grouped_matmuls(xs, counts, w_gate, w_up, w_down)
            path = "torch._grouped_mm"
        except (RuntimeError, TypeError, NotImplementedError, ValueError) as exc:
            if grouped_mm:  # asked for explicitly: do not hide it
                raise
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]  # auto: fall back, and say so in stats
    if out is None:
        out, path = _sorted_matmuls(xs, counts, w_gate, w_up, w_down, spare_row=True)
    return _combine(out, token, slot, weights), path, error


def _grouped_matmuls(xs, counts, w_gate, w_up, w_down):
    """All experts in two ``torch._grouped_mm`` calls (gate and up fused): ``(n, d) -> (n, d)``."""
    offs = counts.cumsum(0).to(torch.int32)
    d_ff = w_gate.shape[1]
    fused = _fused_gate_up(w_gate, w_up) if _no_grad(w_gate, w_up) else None
    if fused is None:
        fused = torch.cat([w_gate, w_up], dim=1)  # differentiable; a copy per call
    gu = torch._grouped_mm(xs, fused.transpose(-2, -1), offs=offs)  # (n, 2 d_ff)
    h = F.silu(gu[:, :d_ff]) * gu[:, d_ff:]
    return torch._grouped_mm(h, w_down.transpose(-2, -1), offs=offs)


def _sorted_matmuls(xs, counts, w_gate, w_up, w_down, *, spare_row: bool = False):
    """Expert e on rows [offset_e, offset_e + counts[e]) of xs: ``(n, d) -> (n (+1), d)``, and the path's name.

    ``spare_row`` appends one zero row (index n) that :func:`_combine` uses for dropped
    assignments. Without autograd: one output buffer written in place with ``out=``,
    one scratch buffer reused by every expert, and gate and up in one matmul when
    w_gate and w_up share the layout of :func:`fuse_gate_up`.
    """
    bounds = [0] + counts.cumsum(0).tolist()
    n, d_out, d_ff = xs.shape[0], w_down.shape[1], w_gate.shape[1]
    ranges = [(e, bounds[e], bounds[e + 1]) for e in range(len(bounds) - 1) if bounds[e + 1] > bounds[e]]
    if _no_grad(xs, w_gate, w_up, w_down):
        out = xs.new_empty((n + spare_row, d_out))
        if spare_row:
            out[n].zero_()
        rows = max((hi - lo for _, lo, hi in ranges), default=0)
        fused = _fused_gate_up(w_gate, w_up)
        if fused is not None:
            scratch = xs.new_empty((rows, 2 * d_ff))
            for e, lo, hi in ranges:
                gu = torch.mm(xs[lo:hi], fused[e].t(), out=scratch[: hi - lo])
                h = F.silu(gu[:, :d_ff], inplace=True).mul_(gu[:, d_ff:])
                torch.mm(h, w_down[e].t(), out=out[lo:hi])
            return out, "per-expert torch.mm, gate and up fused"
        gate_buf, up_buf = xs.new_empty((rows, d_ff)), xs.new_empty((rows, d_ff))
        for e, lo, hi in ranges:
            h = F.silu(torch.mm(xs[lo:hi], w_gate[e].t(), out=gate_buf[: hi - lo]), inplace=True)
            h.mul_(torch.mm(xs[lo:hi], w_up[e].t(), out=up_buf[: hi - lo]))
            torch.mm(h, w_down[e].t(), out=out[lo:hi])
        return out, "per-expert torch.mm"
    outs = [swiglu_expert(xs[lo:hi], w_gate[e], w_up[e], w_down[e]) for e, lo, hi in ranges]
    if spare_row or not outs:
        outs.append(xs.new_zeros((int(spare_row), d_out)))
    return torch.cat(outs), "per-expert torch.mm"


def _combine(out: torch.Tensor, token: torch.Tensor, slot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``y_t = Σ_j w_tj · out[row of (t, j)]``: one gather and a batched ``(1, k) @ (k, d)`` per token.

    out ``(n_kept + 1, d)`` in sorted order, its last row zero (a dropped assignment
    reads it; appended here if out has only n_kept rows); token, slot ``(n_kept,)``;
    weights ``(T, k)``. A gather and a small bmm are faster on the CPU than
    scatter-adding (index_add) the weighted rows.
    """
    n_tokens, k = weights.shape
    n_kept = token.shape[0]
    if n_kept < n_tokens * k and out.shape[0] == n_kept:  # drops, and no spare zero row yet (grouped path)
        out = torch.cat([out, out.new_zeros((1, out.shape[1]))])
    row = torch.full((n_tokens * k,), n_kept, dtype=torch.int64, device=token.device)
    row[token * k + slot] = torch.arange(n_kept, device=token.device)
    gathered = out.index_select(0, row).view(n_tokens, k, out.shape[1])
    return torch.bmm(weights.unsqueeze(1).to(out.dtype), gathered).squeeze(1)


def moe_ffn(x: torch.Tensor, router_weight: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
            w_down: torch.Tensor, *, k: int = 2, capacity_factor: float | None = None, dispatch: str = "sorted",
            renormalize: bool = True, grouped_mm: bool | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """A top-k mixture of SwiGLU experts.

    x ``(T, d)``; router_weight ``(E, d)``; w_gate, w_up ``(E, d_ff, d)``; w_down
    ``(E, d, d_ff)``. ``y_t = Σ_{j kept} w_tj · expert_{e_tj}(x_t)`` with ``(w, e)`` from
    :func:`route_topk`. ``capacity_factor=None`` is dropless; otherwise each expert
    takes at most :func:`expert_capacity` assignments, first come first served in
    token order, and an overflowing assignment contributes nothing.
    ``dispatch`` in ``("loop", "einsum", "sorted")`` gives the same ``y``.
    ``grouped_mm`` (sorted dispatch only): ``None`` uses ``torch._grouped_mm`` on CUDA
    (bfloat16, float16, float32) when torch has it, ``True`` forces it (on the CPU
    too), ``False`` never; see :func:`_grouped_mm_wanted`.

    Returns ``(y, stats)``; stats holds ``tokens_per_expert`` (routed assignments,
    ``(E,)``), ``kept_per_expert``, ``dropped_fraction`` (of the T·k assignments; 0
    when T = 0), ``capacity`` (int or None), ``load_balancing_loss`` and ``z_loss``
    (0-d tensors with gradients, for the caller to scale; NaN when T = 0),
    ``expert_matmul`` (which code ran the experts: ``"loop"``, ``"einsum"``,
    ``"torch._grouped_mm"``, ``"per-expert torch.mm"`` or ``"per-expert torch.mm, gate
    and up fused"``) and ``grouped_mm_error`` (None, or why ``torch._grouped_mm``
    was tried and failed, in which case the per-expert matmuls ran).
    """
    n_tokens, _, n_experts, _ = _check_params(x, router_weight, w_gate, w_up, w_down)
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
    if grouped_mm is not None and not isinstance(grouped_mm, bool):
        raise TypeError(f"grouped_mm must be None, True or False, got {grouped_mm!r}")
    _check_k(k, n_experts)
    logits = x @ router_weight.t()
    probs = torch.softmax(logits, dim=-1)  # shared by the router and the balancing loss
    weights, experts = _topk_of_probs(probs, k, renormalize)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    grouped_error = None
    if dispatch == "loop":
        y, path = _dispatch_loop(x, weights, experts, keep, w_gate, w_up, w_down), "loop"
    elif dispatch == "einsum":
        y, path = _dispatch_einsum(x, weights, experts, keep, w_gate, w_up, w_down, capacity), "einsum"
    else:
        y, path, grouped_error = _dispatch_sorted(x, weights, experts, keep, w_gate, w_up, w_down, grouped_mm)
    routed = torch.bincount(experts.reshape(-1), minlength=n_experts)
    kept = torch.bincount(experts[keep], minlength=n_experts)
    stats = {
        "tokens_per_expert": routed,
        "kept_per_expert": kept,
        "dropped_fraction": 1.0 - kept.sum().item() / experts.numel() if experts.numel() else 0.0,
        "capacity": capacity,
        "load_balancing_loss": _balance_of(probs, experts),
        "z_loss": router_z_loss(logits),
        "expert_matmul": path,
        "grouped_mm_error": grouped_error,
    }
    return y, stats


def init_moe_params(d: int, d_ff: int, n_experts: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, router_std: float | None = None) -> dict[str, torch.Tensor]:
    """Random parameters for :func:`moe_ffn`: std 1/sqrt(fan_in) (router std ``router_std`` if given)."""
    def randn(*shape, std):
        return torch.randn(*shape, generator=generator, dtype=dtype) * std

    return {
        "router_weight": randn(n_experts, d, std=router_std if router_std is not None else d ** -0.5),
        "w_gate": randn(n_experts, d_ff, d, std=d ** -0.5),
        "w_up": randn(n_experts, d_ff, d, std=d ** -0.5),
        "w_down": randn(n_experts, d, d_ff, std=d_ff ** -0.5),
    }


class MoELayer(nn.Module):
    """An ``nn.Module`` around :func:`moe_ffn` holding ``router_weight``, ``w_gate``, ``w_up``, ``w_down``.

    forward(x) takes ``(..., d)`` and returns ``(y, stats)`` with ``y`` of the same
    shape; the stats are those of :func:`moe_ffn` over all ``prod(...)`` tokens.
    """

    def __init__(self, d: int, d_ff: int, n_experts: int, k: int, *, capacity_factor: float | None = None,
                 dispatch: str = "sorted", renormalize: bool = True, router_std: float | None = None,
                 seed: int = 0, grouped_mm: bool | None = None) -> None:
        super().__init__()
        _check_k(k, n_experts)
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        params = init_moe_params(d, d_ff, n_experts, generator=torch.Generator().manual_seed(seed),
                                 router_std=router_std)
        # w_gate and w_up are the two halves of one (E, 2 d_ff, d) buffer: the sorted dispatch then runs one
        # matmul of width 2 d_ff per expert for both (fuse_gate_up); they stay two parameters with those names
        params["w_gate"], params["w_up"] = fuse_gate_up(params["w_gate"], params["w_up"])
        for name, value in params.items():
            setattr(self, name, nn.Parameter(value))
        self.d, self.d_ff, self.n_experts, self.k = d, d_ff, n_experts, k
        self.capacity_factor, self.dispatch, self.renormalize = capacity_factor, dispatch, renormalize
        self.grouped_mm = grouped_mm

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if x.shape[-1] != self.d:
            raise ValueError(f"MoELayer expects x of shape (..., {self.d}), got {tuple(x.shape)}")
        y, stats = moe_ffn(x.reshape(-1, self.d), self.router_weight, self.w_gate, self.w_up, self.w_down,
                           k=self.k, capacity_factor=self.capacity_factor, dispatch=self.dispatch,
                           renormalize=self.renormalize, grouped_mm=self.grouped_mm)
        return y.reshape(x.shape), stats

    def extra_repr(self) -> str:
        return (f"d={self.d}, d_ff={self.d_ff}, n_experts={self.n_experts}, k={self.k}, "
                f"capacity_factor={self.capacity_factor}, dispatch={self.dispatch!r}")


# ----------------------------------------------------------------------------------------
# Drop rates
# ----------------------------------------------------------------------------------------


def expected_drop_fraction(n_tokens: int, n_experts: int, capacity: int) -> float:
    """Exact expected dropped fraction when each of T tokens picks one of E experts uniformly (k = 1).

    Each expert's load is ``Binomial(T, 1/E)``; it drops ``max(0, n - C)``, so the
    fraction is ``(E / T) · Σ_n P(n) · max(0, n - C)``, computed in log space.
    """
    p = 1.0 / n_experts
    total = 0.0
    for n in range(capacity + 1, n_tokens + 1):
        log_pmf = (math.lgamma(n_tokens + 1) - math.lgamma(n + 1) - math.lgamma(n_tokens - n + 1)
                   + n * math.log(p) + (n_tokens - n) * math.log1p(-p))
        total += math.exp(log_pmf) * (n - capacity)
    return n_experts * total / n_tokens


def drop_fraction_uniform(n_tokens: int, n_experts: int, k: int, capacity_factor: float, *, trials: int = 200,
                          generator: torch.Generator | None = None) -> float:
    """Monte Carlo: mean dropped fraction of assignments when router logits are i.i.d. N(0, 1)."""
    capacity = expert_capacity(n_tokens, n_experts, k, capacity_factor)
    dropped = 0.0
    for _ in range(trials):
        logits = torch.randn(n_tokens, n_experts, generator=generator)
        _, experts = route_topk(logits, k)
        dropped += 1.0 - capacity_keep_mask(experts, n_experts, capacity).float().mean().item()
    return dropped / trials


# ----------------------------------------------------------------------------------------
# Expert parallelism
# ----------------------------------------------------------------------------------------


class ThreadComm:
    """All-to-all between ``world_size`` threads of one process (a stand-in for torch.distributed).

    Use one instance per rank from :func:`run_threaded`; ``all_to_all(chunks)`` takes
    ``world_size`` tensors (chunk ``r`` goes to rank ``r``) and returns the chunks
    every rank sent to this one. ``bytes_sent`` counts what left this rank.
    """

    def __init__(self, rank: int, world_size: int, shared: dict) -> None:
        self.rank, self.world_size, self._shared = rank, world_size, shared
        self.bytes_sent = 0

    def all_to_all(self, chunks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(chunks) != self.world_size:
            raise ValueError(f"all_to_all needs {self.world_size} chunks, got {len(chunks)}")
        box, barrier = self._shared["box"], self._shared["barrier"]
        self.bytes_sent += sum(c.numel() * c.element_size() for r, c in enumerate(chunks) if r != self.rank)
        box[self.rank] = [c.clone() for c in chunks]
        barrier.wait()
        received = [box[src][self.rank] for src in range(self.world_size)]
        barrier.wait()
        return received


def run_threaded(world_size: int, fn: Callable[[ThreadComm], Any]) -> list[Any]:
    """Run ``fn(comm)`` on ``world_size`` threads that can all-to-all; returns the results by rank."""
    shared = {"box": [None] * world_size, "barrier": threading.Barrier(world_size, timeout=60)}
    results: list[Any] = [None] * world_size
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(ThreadComm(rank, world_size, shared))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


class TorchDistComm:
    """All-to-all over ``torch.distributed`` (gloo on CPU): sizes first, then one flat exchange."""

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self._dist, self.group = dist, group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.bytes_sent = 0

    def all_to_all(self, chunks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Chunk ``r`` goes to rank ``r``; returns what every rank sent here, in rank order.

        Chunks are ``(n_r, *tail)`` with one ``tail`` and dtype on every rank; ``n_r`` may be
        0 (nothing for that rank), and a rank may send nothing at all.
        """
        dist = self._dist
        if len(chunks) != self.world_size:
            raise ValueError(f"all_to_all needs {self.world_size} chunks, got {len(chunks)}")
        tail, dtype = tuple(chunks[0].shape[1:]), chunks[0].dtype
        for r, c in enumerate(chunks):
            if tuple(c.shape[1:]) != tail or c.dtype != dtype:
                raise ValueError(f"all_to_all chunks must share trailing shape {tail} and dtype {dtype}; chunk {r} "
                                 f"has shape {tuple(c.shape)} and dtype {c.dtype}")
        width = math.prod(tail)  # explicit: reshape(n, -1) is ambiguous when n = 0
        rows_out = torch.tensor([c.shape[0] for c in chunks], dtype=torch.int64)
        rows_in = torch.empty_like(rows_out)
        dist.all_to_all_single(rows_in, rows_out, group=self.group)
        send = torch.cat([c.reshape(c.shape[0], width) for c in chunks]).contiguous()
        recv = send.new_empty((int(rows_in.sum()), width))
        dist.all_to_all_single(recv, send, output_split_sizes=rows_in.tolist(),
                               input_split_sizes=rows_out.tolist(), group=self.group)
        self.bytes_sent += sum(c.numel() * c.element_size() for r, c in enumerate(chunks) if r != self.rank)
        return [part.reshape((part.shape[0],) + tail) for part in recv.split(rows_in.tolist())]


def expert_parallel_moe_ffn(x: torch.Tensor, router_weight: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                            w_down: torch.Tensor, comm: Any, *, k: int = 2,
                            renormalize: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
    """Dropless top-k MoE with experts sharded across ranks (forward only).

    Each rank holds its own tokens x ``(T_r, d)``, the full router ``(E, d)``, and the
    experts ``[rank · E/W, (rank + 1) · E/W)``: w_gate, w_up ``(E/W, d_ff, d)``, w_down
    ``(E/W, d, d_ff)``. Steps: route locally; sort assignments by expert; all-to-all
    the token vectors (and their local expert ids) to the ranks owning those experts;
    run the local experts on contiguous slices; all-to-all the outputs back; combine
    with the router weights. ``comm`` is a :class:`TorchDistComm` or a
    :class:`ThreadComm`. Returns ``(y, {"sent_rows": ..., "received_rows": ...})``.
    """
    world = comm.world_size
    if router_weight.dim() != 2:
        raise ValueError(f"router_weight must have shape (E, d), got {tuple(router_weight.shape)}")
    n_experts, d = router_weight.shape
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"x must have shape (tokens, {d}) (d from router_weight), got {tuple(x.shape)}")
    if n_experts % world:
        raise ValueError(f"{n_experts} experts cannot be split evenly over {world} ranks")
    per_rank = n_experts // world
    if w_gate.dim() != 3 or w_gate.shape[0] != per_rank or w_gate.shape[2] != d:
        raise ValueError(f"each rank must hold {per_rank} experts: w_gate must have shape ({per_rank}, d_ff, {d}), "
                         f"got {tuple(w_gate.shape)}")
    d_ff = w_gate.shape[1]
    if tuple(w_up.shape) != (per_rank, d_ff, d):
        raise ValueError(f"w_up must have shape ({per_rank}, {d_ff}, {d}), got {tuple(w_up.shape)}")
    if tuple(w_down.shape) != (per_rank, d, d_ff):
        raise ValueError(f"w_down must have shape ({per_rank}, {d}, {d_ff}), got {tuple(w_down.shape)}")
    weights, experts = route_topk(x @ router_weight.t(), k, renormalize=renormalize)
    keep = torch.ones_like(experts, dtype=torch.bool)
    token, slot, counts = sort_by_expert(experts, keep, n_experts)
    sorted_experts = experts[token, slot]
    rows_per_rank = counts.reshape(world, per_rank).sum(dim=1).tolist()
    # 1. send each token vector, with its expert id local to the receiver
    x_parts = list(x[token].split(rows_per_rank))
    id_parts = list((sorted_experts % per_rank).split(rows_per_rank))
    x_in = comm.all_to_all(x_parts)
    ids_in = comm.all_to_all(id_parts)
    # 2. local experts on contiguous slices (stable sort keeps each source's order)
    xs, ids = torch.cat(x_in), torch.cat(ids_in)
    order = torch.argsort(ids, stable=True)
    local_counts = torch.bincount(ids, minlength=per_rank)
    out_sorted, _ = _sorted_matmuls(xs[order], local_counts, w_gate, w_up, w_down)
    out = torch.empty_like(out_sorted)
    out[order] = out_sorted
    # 3. send the outputs back where they came from, in the order they came
    back = comm.all_to_all(list(out.split([p.shape[0] for p in x_in])))
    out_local = torch.cat(back)
    y = torch.zeros_like(x).index_add(0, token, out_local * weights[token, slot].unsqueeze(-1))
    return y, {"sent_rows": rows_per_rank, "received_rows": [p.shape[0] for p in x_in]}


# ----------------------------------------------------------------------------------------
# Data for the cluster experiment (Chen, Deng, Wu, Gu, Li 2022)
# ----------------------------------------------------------------------------------------


def cluster_data(n: int, *, n_clusters: int = 4, dim: int = 32, n_patches: int = 4, alpha: float = 1.0,
                 beta: float = 2.0, gamma: float = 1.0, noise_std: float = 0.1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch data with cluster structure, after Chen et al. (2022), Definition 3.1 (simplified).

    Each sample has a label ``y = ±1`` and a cluster ``c``; its ``n_patches`` patches are,
    in a random order: the feature signal ``α y v_c``, the cluster-centre signal ``β c_c``,
    feature noise ``γ ε v_{c'}`` from another cluster ``c' ≠ c`` with a random sign
    ``ε``, and Gaussian noise patches. ``v`` and ``c`` are orthonormal vectors.
    Returns ``(x (n, P, dim), y (n,), cluster (n,), centers (K, dim), features (K, dim))``.
    """
    if n_patches < 3:
        raise ValueError(f"n_patches must be at least 3 (signal, centre, feature noise), got {n_patches}")
    if 2 * n_clusters > dim:
        raise ValueError(f"dim must be at least 2 * n_clusters = {2 * n_clusters}, got {dim}")
    g = generator
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    features, centers = basis[:n_clusters], basis[n_clusters:2 * n_clusters]
    y = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    cluster = torch.randint(0, n_clusters, (n,), generator=g)
    other = (cluster + torch.randint(1, n_clusters, (n,), generator=g)) % n_clusters
    eps = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    patches = noise_std * torch.randn(n, n_patches, dim, generator=g)
    patches[:, 0] = alpha * y[:, None] * features[cluster]
    patches[:, 1] = beta * centers[cluster]
    patches[:, 2] = gamma * eps[:, None] * features[other]
    perm = torch.argsort(torch.rand(n, n_patches, generator=g), dim=1)
    x = patches.gather(1, perm[:, :, None].expand(-1, -1, dim))
    return x, y, cluster, centers, features


# ----------------------------------------------------------------------------------------
# Plot (the widget's backing function)
# ----------------------------------------------------------------------------------------


def plot_expert_load(router_logits: torch.Tensor, k: int, capacity_factor: float | None, *,
                     temperature: float = 1.0, ax: Any = None, title: str | None = None) -> Any:
    """Bar chart of kept and dropped assignments per expert for logits ``(T, E)`` / temperature.

    Draws the capacity line ``C = ceil(cf · T · k / E)`` (none when cf is None) and
    returns the axes.
    """
    import matplotlib.pyplot as plt

    n_tokens, n_experts = _check_logits(router_logits)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    _, experts = route_topk(router_logits / temperature, k)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    kept = torch.bincount(experts[keep], minlength=n_experts).numpy()
    dropped = torch.bincount(experts[~keep], minlength=n_experts).numpy()
    idx = range(n_experts)
    ax.bar(idx, kept, color="tab:blue", label="kept")
    ax.bar(idx, dropped, bottom=kept, color="tab:red", label="dropped")
    ax.axhline(n_tokens * k / n_experts, color="0.4", ls=":", lw=1, label="balanced load T·k/E")
    if capacity is not None:
        ax.axhline(capacity, color="k", ls="--", lw=1, label=f"capacity C = {capacity}")
    frac = dropped.sum() / max(experts.numel(), 1)
    ax.set_xlabel("expert")
    ax.set_ylabel("assignments")
    ax.set_title(title or f"k = {k}, capacity factor {capacity_factor}, temperature {temperature:g}: "
                 f"{100 * frac:.1f}% dropped", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return ax


# ----------------------------------------------------------------------------------------
# Experiments: balancing-loss ablation, cluster data (small, seeded, CPU)
# ----------------------------------------------------------------------------------------


def train_balance(alpha: float, *, steps: int = 300, n_experts: int = 8, k: int = 1, d: int = 16, d_ff: int = 32,
                  batch: int = 256, input_mean: float = 3.0, lr: float = 1e-2, z_coef: float = 0.0, seed: int = 0,
                  record_every: int = 10, progress: bool = False) -> dict[str, Any]:
    """Fit a dense SwiGLU teacher with an MoE student; loss = relative MSE + alpha · balancing (+ z_coef · z).

    Inputs are ``N(μ, I)`` with ``|μ| = input_mean``: a shared mean direction, as hidden
    states have, is what lets one expert win every token. k = 1 uses Switch gating
    (``y = p_e · expert_e(x)``), k > 1 Mixtral's renormalised weights. Returns, every
    ``record_every`` steps, the load per expert ``(n_records, E)``, the steps, the task
    loss, the balancing loss, the z-loss, and three means over that step's tokens of
    their router logits ``h_t``: ``logsumexp_mean`` (of ``log Σ_e exp h_te``, what the
    z-loss squares), ``max_logit_mean`` (of ``max_e h_te``) and ``logit_spread`` (of the
    standard deviation over experts, which sets how sharp the softmax is and does not
    change when a constant is added to a token's logits); and the trained layer.
    """
    g = torch.Generator().manual_seed(seed)
    teacher = init_moe_params(d, 4 * d_ff, 1, generator=g)
    mu = torch.randn(d, generator=g)
    mu = input_mean * mu / mu.norm()
    layer = MoELayer(d, d_ff, n_experts, k, renormalize=k > 1, seed=seed + 1)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    loads, rec_steps, task, balance, zl = [], [], [], [], []
    logits_seen: dict[str, list[float]] = {"logsumexp_mean": [], "max_logit_mean": [], "logit_spread": []}
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc=f"alpha={alpha:g}", leave=False)
    for step in steps_iter:
        x = torch.randn(batch, d, generator=g) + mu
        with torch.no_grad():
            target = swiglu_expert(x, teacher["w_gate"][0], teacher["w_up"][0], teacher["w_down"][0])
        y, stats = layer(x)
        fit = (y - target).pow(2).mean() / target.pow(2).mean()
        loss = fit + alpha * stats["load_balancing_loss"] + z_coef * stats["z_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % record_every == 0 or step == steps - 1:
            loads.append(stats["tokens_per_expert"].clone())
            rec_steps.append(step)
            task.append(fit.item())
            balance.append(stats["load_balancing_loss"].item())
            zl.append(stats["z_loss"].item())
            with torch.no_grad():
                logits = x @ layer.router_weight.t()
                logits_seen["logsumexp_mean"].append(torch.logsumexp(logits, dim=-1).mean().item())
                logits_seen["max_logit_mean"].append(logits.max(dim=-1).values.mean().item())
                logits_seen["logit_spread"].append(logits.std(dim=-1).mean().item())
    return {"loads": torch.stack(loads), "steps": rec_steps, "task_loss": task, "balance_loss": balance,
            "z_loss": zl, **logits_seen, "layer": layer, "input_mean": mu}


def cluster_moe_forward(x: torch.Tensor, router: torch.Tensor, experts: torch.Tensor, *,
                        noise: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chen et al.'s MoE on patches: top-1 router on ``Σ_p x_p``, cubic two-layer CNN experts.

    x ``(n, P, d)``; router ``(E, d)``; experts ``(E, width, d)``. Expert m computes
    ``f_m(x) = Σ_j Σ_p ⟨w_mj, x_p⟩³``; the output is ``π_m(x) f_m(x)`` for the
    expert ``m`` with the largest (optionally uniform-noise-perturbed) router score.
    Returns ``(output (n,), chosen expert (n,))``.
    """
    h = x.sum(1) @ router.t()
    if noise:
        h = h + noise * torch.rand(h.shape, generator=generator)
    p = torch.softmax(h, dim=-1)
    m = p.argmax(dim=-1)
    f = torch.einsum("npd,ejd->nepj", x, experts).pow(3).sum((-1, -2))  # (n, E): every expert, for clarity
    return p.gather(1, m[:, None])[:, 0] * f.gather(1, m[:, None])[:, 0], m


def centred_cosine(router: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``cos(θ_m − θ̄, c_k − c̄)`` for every expert m and centre k: ``(E, K)``.

    Softmax routing sees only differences between router rows, so both sides are
    centred; a router whose rows are the centres scores exactly 1 on the diagonal.
    """
    a = F.normalize(router - router.mean(0), dim=1)
    b = F.normalize(centers - centers.mean(0), dim=1)
    return a @ b.t()


def train_cluster_moe(n_experts: int, *, n_train: int = 2000, n_test: int = 2000, n_clusters: int = 4, dim: int = 32,
                      n_patches: int = 4, width: int = 8, steps: int = 400, lr: float = 0.02, router_lr: float = 1.0,
                      router_optimizer: str = "sgd", noise: float = 1.0, seed: int = 0,
                      record_every: int = 10) -> dict[str, Any]:
    """Train :func:`cluster_moe_forward` with the logistic loss on :func:`cluster_data` (full batch).

    Experts: Adam (lr ``lr``), small random init; router: zero init, plain gradient
    descent (``router_optimizer="sgd"``, lr ``router_lr``) or Adam. ``n_experts=1`` is
    the single expert. Returns test accuracy, the per-step router-centre cosine
    (mean over experts of the best centred cosine), the cluster × expert dispatch
    counts on the test set, and the trained weights.
    """
    g = torch.Generator().manual_seed(seed)
    x_all, y_all, c_all, centers, features = cluster_data(n_train + n_test, n_clusters=n_clusters, dim=dim,
                                                          n_patches=n_patches, generator=g)
    x, y = x_all[:n_train], y_all[:n_train]
    xt, yt, ct = x_all[n_train:], y_all[n_train:], c_all[n_train:]
    experts = (0.1 * torch.randn(n_experts, width, dim, generator=g)).requires_grad_()
    router = torch.zeros(n_experts, dim, requires_grad=True)
    opt = torch.optim.Adam([experts], lr=lr)
    if router_optimizer == "sgd":
        ropt: torch.optim.Optimizer = torch.optim.SGD([router], lr=router_lr)
    elif router_optimizer == "adam":
        ropt = torch.optim.Adam([router], lr=lr)
    else:
        raise ValueError(f"router_optimizer must be 'sgd' or 'adam', got {router_optimizer!r}")
    cos_hist, rec_steps = [], []
    for step in range(steps):
        out, _ = cluster_moe_forward(x, router, experts, noise=noise if n_experts > 1 else 0.0, generator=g)
        loss = F.softplus(-y * out).mean()
        opt.zero_grad()
        ropt.zero_grad()
        loss.backward()
        opt.step()
        ropt.step()
        if n_experts > 1 and (step % record_every == 0 or step == steps - 1):
            cos_hist.append(centred_cosine(router.detach(), centers).max(dim=1).values.mean().item())
            rec_steps.append(step)
    with torch.no_grad():
        out, m = cluster_moe_forward(xt, router, experts)
        acc = ((out * yt) > 0).float().mean().item()
        dispatch = torch.zeros(n_clusters, n_experts)
        dispatch.index_put_((ct, m), torch.ones(len(m)), accumulate=True)
    return {"accuracy": acc, "cosine": cos_hist, "steps": rec_steps, "dispatch": dispatch,
            "router": router.detach(), "experts": experts.detach(), "centers": centers, "features": features}
