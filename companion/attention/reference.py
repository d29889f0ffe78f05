r"""The reference: attention that writes down the whole score matrix.

.. math::

    S = \tau\, Q K^\top \in \mathbb{R}^{n_q \times n_k},\qquad
    P = \mathrm{softmax}(S) \text{ (row-wise)},\qquad
    O = P V \in \mathbb{R}^{n_q \times d_v},

with ``\tau = 1/\sqrt{d}`` unless a ``scale`` is given. This is Algorithm 0 of
Dao et al. (2022), the algorithm FlashAttention replaces: it allocates the
``n_q x n_k`` matrices ``S`` and ``P``, so its extra memory is Θ(n_q·n_k).
Everything else in :mod:`companion.attention` is checked against this function
and against ``torch.nn.functional.scaled_dot_product_attention``.

The input checks shared by the package live here too (:func:`check_qkv`), so
every implementation rejects the same inputs with the same messages.
"""

from __future__ import annotations

import math

import torch

__all__ = ["causal_mask", "check_qkv", "naive_attention", "resolve_scale"]


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, name: str = "attention") -> None:
    """Raise a clear error unless ``q, k, v`` are valid attention inputs.

    Expected shapes: ``q (..., n_q, d)``, ``k (..., n_k, d)``, ``v (..., n_k, d_v)``
    with the same leading dims ``...`` (batch, heads; no broadcasting), the same
    floating dtype and the same device, and ``n_q, n_k, d >= 1``.
    """
    for label, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name}: {label} must have shape (..., seq, dim), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {label} must have a floating dtype, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{name}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{name}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"{name}: q, k, v must have the same leading (batch, heads) dims, got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    n_q, d = q.shape[-2:]
    n_k, d_k = k.shape[-2:]
    if d_k != d:
        raise ValueError(
            f"{name}: q and k must have the same last dim d; expected k of shape (..., n_k, {d}), "
            f"got k {tuple(k.shape)} for q {tuple(q.shape)}"
        )
    if v.shape[-2] != n_k:
        raise ValueError(
            f"{name}: k and v must have the same sequence length n_k; expected v of shape "
            f"(..., {n_k}, d_v), got v {tuple(v.shape)} for k {tuple(k.shape)}"
        )
    if min(n_q, n_k, d, v.shape[-1]) < 1:
        raise ValueError(
            f"{name}: every sequence length and head dim must be at least 1, got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )


def resolve_scale(scale: float | None, d: int) -> float:
    """The softmax scale τ: ``scale`` if given, else ``1/sqrt(d)`` (SDPA's default)."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite float or None, got {scale!r}")
    return float(scale)


def causal_mask(n_q: int, n_k: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(n_q, n_k)`` mask, ``True`` where query ``i`` may attend to key ``j``.

    SDPA's ``is_causal=True`` convention: top-left aligned, ``j <= i``, i.e.
    ``torch.ones(n_q, n_k).tril()``, also when ``n_q != n_k``. Every row keeps
    key 0, so no row is entirely masked.
    """
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention with the score matrix materialised: ``softmax(τ q kᵀ [+ mask]) v``.

    Shapes: ``q (..., n_q, d)``, ``k (..., n_k, d)``, ``v (..., n_k, d_v)`` with
    any leading dims, e.g. ``(batch, heads, seq, dim)``; returns ``(..., n_q, d_v)``
    in the dtype of ``q``. ``causal=True`` masks key ``j > i`` for query ``i``
    (top-left aligned, as SDPA's ``is_causal``). Differentiable by autograd.
    Extra memory Θ(n_q·n_k): the reference, not the fast path.
    """
    check_qkv(q, k, v, name="naive_attention")
    tau = resolve_scale(scale, q.shape[-1])
    s = tau * (q @ k.transpose(-2, -1))  # (..., n_q, n_k): the matrix FlashAttention never builds
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    p = torch.softmax(s, dim=-1)
    return p @ v
