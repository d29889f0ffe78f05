"""Rotary position embedding (RoPE) for chapter 02: both pairings, context extension, the decay bound.

RoFormer (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv 2104.09864) encodes the position ``m`` of a query or key by
*rotating* it. The ``d`` coordinates are grouped into ``d/2`` pairs and pair
``i`` is turned by the angle ``m θ_i``::

    f(x, m) = R^d_{Θ,m} x,        θ_i = base^(-2(i-1)/d),  i = 1..d/2     (RoFormer eq. 15)

The code counts pairs from 0, so ``θ_i = base^(-2i/d)`` for ``i = 0..d/2-1``
(the same numbers; ``θ_0 = 1`` is the fastest-turning pair, ``θ_{d/2-1} ≈
1/base`` the slowest). On one pair ``(a, b)``::

    [a']   [cos mθ_i  -sin mθ_i] [a]
    [b'] = [sin mθ_i   cos mθ_i] [b],     i.e.  a' + i b' = (a + i b) · e^{i m θ_i}

**Relative position.** Rotations compose, ``R_mᵀ R_n = R_{n-m}``, hence
(RoFormer eq. 16)::

    q_mᵀ k_n = (R_{Θ,m} W_q x_m)ᵀ (R_{Θ,n} W_k x_n) = x_mᵀ W_qᵀ R_{Θ,n-m} W_k x_n :

the score depends on the positions only through ``n - m``. Rotate ``q`` and
``k``, never ``v``.

**Two pairings** of the ``d`` coordinates, the same maths in two memory layouts:

* ``interleaved=True``: pair ``i`` is ``(2i, 2i+1)`` (RoFormer, GPT-J, Meta's
  original LLaMA code, which views it as ``d/2`` complex numbers);
* ``interleaved=False`` (default): pair ``i`` is ``(i, i + d/2)``, the
  "rotate_half" layout of GPT-NeoX and Hugging Face Llama.

A model trained with one pairing gives wrong scores under the other unless
the rows of ``W_q`` and ``W_k`` are permuted
(:func:`interleaved_to_half_split_permutation`).

**Precision.** Angles ``m θ_i`` are computed in float32 (float64 for float64
inputs) whatever the input dtype, and the rotated vector is rounded back to
the input dtype once. bfloat16 keeps 8 significant bits: it cannot even hold
the position 257 (it rounds to 256), and at ``m = 4000`` its angle error is
several radians. Float32 positions are exact up to ``2^24``.

**Context extension** (``scaling=``): a model trained on ``L`` tokens is run on
``L' = s L``. Three recipes change the frequencies ``θ_i``; see
:class:`LinearScaling`, :class:`NTKScaling`, :class:`YaRNScaling` and
:func:`inv_freq`, each checked against its paper and Hugging Face
``transformers/modeling_rope_utils.py``.

**Long-term decay** (RoFormer §3.4.3): :func:`rope_decay_bound`.

**Train short, test long** (the chapter's experiment): :class:`PositionTaskModel`,
one causal attention head with RoPE, learned absolute positions or none,
trained by :func:`train_copy_offset` on :func:`copy_offset_batch` sequences and
scored per position by :func:`copy_offset_accuracy`; :func:`plot_attention`
draws its attention.

The fused Triton kernel lives in :mod:`companion.rope_triton`;
``apply_rope_triton`` and ``HAS_TRITON`` are importable from here, but Triton
is imported only when one of them is first asked for.

Shapes: ``x`` is ``(..., seq, dim)`` (e.g. ``(batch, heads, seq, dim)``);
``positions`` broadcasts to ``x.shape[:-1]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

__all__ = [
    "ENCODINGS",
    "LinearScaling",
    "NTKScaling",
    "PositionTaskModel",
    "RotaryEmbedding",
    "Scaling",
    "YaRNScaling",
    "apply_rope",
    "apply_rope_complex",
    "attention_factor",
    "copy_offset_accuracy",
    "copy_offset_batch",
    "interleaved_to_half_split_permutation",
    "inv_freq",
    "plot_attention",
    "plot_decay",
    "plot_frequencies",
    "plot_rotation",
    "resolve_scaling",
    "rope_angles",
    "rope_decay_bound",
    "train_copy_offset",
    "yarn_ramp",
]  # plus HAS_TRITON and apply_rope_triton, imported on first access (kept out of `import *`)


# ----------------------------------------------------------------------------------------
# Context-extension scalings
# ----------------------------------------------------------------------------------------


def _check_factor(factor: float, name: str) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
        raise ValueError(f"{name}.factor is s = L'/L, the context extension ratio: a number >= 1, got {factor!r}")
    return float(factor)


@dataclass(frozen=True)
class LinearScaling:
    """Position interpolation, "PI" (Chen et al. 2023, arXiv 2306.15595; kaiokendev 2023).

    Positions are squeezed into the trained range, ``f'(x, m) = f(x, m / s)``
    (PI's ``f'(x, m) = f(x, mL/L')`` with ``s = L'/L``), which is the same as dividing every frequency::

        θ'_i = θ_i / s

    Checked against HF ``_compute_linear_scaling_rope_parameters`` (``inv_freq /= factor``).
    """

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_factor(self.factor, "LinearScaling"))


@dataclass(frozen=True)
class NTKScaling:
    """"NTK-aware" base scaling (bloc97, Reddit r/LocalLLaMA, June 2023; restated in the YaRN paper, §3).

    Enlarge the base instead of the positions::

        base' = base · s^(d/(d-2)),    θ'_i = base'^(-2i/d) = θ_i · s^(-2i/(d-2))

    so the fastest pair (``i = 0``) is untouched and the slowest
    (``i = d/2 - 1``) is interpolated by exactly ``s``. Hugging Face implements
    only the *dynamic* variant, ``_compute_dynamic_ntk_parameters``:
    ``base · (factor · l/L - (factor - 1))^(d/(d-2))`` for the current length
    ``l > L``; with ``factor = 1`` and ``l = sL`` it is this static formula.
    """

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_factor(self.factor, "NTKScaling"))


@dataclass(frozen=True)
class YaRNScaling:
    """YaRN (Peng, Quesnelle, Fan, Shippole 2023, arXiv 2309.00071): NTK-by-parts + attention temperature.

    Pair ``i`` turns ``r_i = L / λ_i = L θ_i / (2π)`` times over the trained
    context ``L`` (``λ_i = 2π/θ_i`` is its wavelength). Pairs that turn many
    times (``r > β``) are extrapolated (kept), pairs that turn less than once
    (``r < α``) are interpolated like PI, and a ramp ``γ`` blends in between
    (the paper's "NTK-by-parts" interpolation)::

        θ'_i = (1 - γ_i) · θ_i / s + γ_i · θ_i,      α = 1, β = 32 (paper, for LLaMA)

    and the logits are divided by a temperature ``t`` with
    ``sqrt(1/t) = 0.1 ln s + 1`` (the paper's recommended temperature). As in the reference code
    (``jquesnelle/yarn``) and HF, that factor multiplies ``cos`` and ``sin``,
    i.e. both ``q`` and ``k``, so ``q·k`` is multiplied by ``(0.1 ln s + 1)^2 = 1/t``.

    Fields:
        factor: ``s = L'/L``.
        original_max_position_embeddings: ``L``, the context the model was
            trained on (default 2048, LLaMA's, the reference code's default).
        alpha, beta: the ramp's ends in rotations (HF names: ``beta_slow``,
            ``beta_fast``).
        attention_factor: overrides ``0.1 ln s + 1`` (HF ``attention_factor``).
        truncate: round the ramp's ends outwards to whole pair indices, as the
            reference code and HF (``truncate=True``, their default) do.
        ramp: ``"code"`` (default), the ramp that the reference code and HF
            ship; ``"paper"``, Definition 2 as printed. See :func:`yarn_ramp`
            for how the two differ.
    """

    factor: float
    original_max_position_embeddings: int = 2048
    alpha: float = 1.0
    beta: float = 32.0
    attention_factor: float | None = None
    truncate: bool = True
    ramp: str = "code"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_factor(self.factor, "YaRNScaling"))
        L = self.original_max_position_embeddings
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ValueError(f"YaRNScaling.original_max_position_embeddings must be a positive int, got {L!r}")
        if not 0 < self.alpha < self.beta:
            raise ValueError(
                f"YaRNScaling needs 0 < alpha < beta (rotations), got alpha={self.alpha}, beta={self.beta}"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ValueError(f"YaRNScaling.attention_factor must be > 0, got {self.attention_factor!r}")
        if self.ramp not in ("code", "paper"):
            raise ValueError(f"YaRNScaling.ramp must be 'code' or 'paper', got {self.ramp!r}")


Scaling = Union[LinearScaling, NTKScaling, YaRNScaling]

_KINDS = {"linear": LinearScaling, "pi": LinearScaling, "ntk": NTKScaling, "ntk-aware": NTKScaling, "yarn": YaRNScaling}
# Hugging Face's rope_scaling keys -> our field names
_HF_KEYS = {"beta_fast": "beta", "beta_slow": "alpha"}


def resolve_scaling(scaling: Scaling | Mapping[str, Any] | None) -> Scaling | None:
    """Turn ``scaling=`` into one of the dataclasses (or ``None``).

    Accepts a :class:`LinearScaling`, :class:`NTKScaling` or
    :class:`YaRNScaling`, or a dict in Hugging Face's ``rope_scaling`` style:
    ``{"type": "linear" | "ntk" | "yarn", "factor": s, ...}`` (``"rope_type"``
    works too; YaRN also takes ``original_max_position_embeddings``,
    ``beta_fast``, ``beta_slow``, ``attention_factor``, ``truncate``).
    """
    if scaling is None or isinstance(scaling, (LinearScaling, NTKScaling, YaRNScaling)):
        return scaling
    if not isinstance(scaling, Mapping):
        raise TypeError(
            "scaling must be None, LinearScaling, NTKScaling, YaRNScaling or a dict like "
            f"{{'type': 'yarn', 'factor': 4.0}}, got {type(scaling).__name__}"
        )
    spec = dict(scaling)
    kinds = {spec.pop(k) for k in ("type", "rope_type") if k in spec}
    if len(kinds) != 1:
        raise ValueError(f"a scaling dict needs one 'type' (or 'rope_type') out of {sorted(_KINDS)}, got {scaling!r}")
    kind = str(kinds.pop()).lower()
    if kind not in _KINDS:
        raise ValueError(f"unknown scaling type {kind!r}; expected one of {sorted(_KINDS)}")
    cls = _KINDS[kind]
    fields = {_HF_KEYS.get(k, k): v for k, v in spec.items()}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad keys for a {kind!r} scaling: {sorted(spec)} ({exc})") from None


def attention_factor(scaling: Scaling | Mapping[str, Any] | None) -> float:
    """The factor that multiplies ``cos`` and ``sin``: YaRN's ``0.1 ln s + 1``, else 1.

    HF ``_compute_yarn_parameters`` (``get_mscale``) and the reference code
    both return 1 for ``s <= 1``.
    """
    s = resolve_scaling(scaling)
    if not isinstance(s, YaRNScaling):
        return 1.0
    if s.attention_factor is not None:
        return float(s.attention_factor)
    return 0.1 * math.log(s.factor) + 1.0 if s.factor > 1 else 1.0


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: dim must be an even int >= 2, got {dim!r}")
    return dim


def _yarn_correction_dim(rotations: float, dim: int, base: float, L: int) -> float:
    """The (fractional) pair index i at which r_i = L θ_i / 2π equals ``rotations``.

    Solves ``L / (2π base^(2i/d)) = rotations``: ``i = d ln(L / (2π rotations)) / (2 ln base)``
    (reference code and HF: ``find_correction_dim``).
    """
    return dim * math.log(L / (rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_ramp(dim: int, base: float, scaling: YaRNScaling | Mapping[str, Any]) -> torch.Tensor:
    """YaRN's ``γ_i``, the weight of extrapolation for each pair: ``(dim/2,)`` float64 in [0, 1].

    ``γ_i = 1`` keeps ``θ_i``; ``γ_i = 0`` divides it by ``s``.

    * ``ramp="paper"`` (YaRN, "NTK-by-parts"): ``γ(r) = 0`` if ``r < α``, 1 if
      ``r > β``, else ``(r - α)/(β - α)``, with ``r_i = L θ_i / (2π)``.
    * ``ramp="code"`` (``jquesnelle/yarn`` ``LlamaYaRNScaledRotaryEmbedding``
      and HF ``_compute_yarn_parameters``): with ``low = floor(i(β))``, ``high =
      ceil(i(α))`` (the pair indices where ``r = β`` and ``r = α``, see
      :func:`_yarn_correction_dim`; no rounding if ``truncate=False``),
      ``γ_i = 1 - clamp((i - low)/(high - low), 0, 1)``.

    The two agree outside the ramp but not inside it: the code's ramp is
    linear in the pair index ``i``, i.e. in ``log r``, the paper's is linear
    in ``r``. (Both clamp ``high`` to ``d - 1`` although indices stop at
    ``d/2 - 1``: harmless.) For ``d = 128``, base 1e4, ``L = 2048`` the ramp
    spans pairs 16..41 and ``γ = 1/2`` falls at pair 28.5 in the code and near
    pair 20.7 in the paper. Models are fine-tuned with the code's ramp, which
    is the default here.
    """
    s = resolve_scaling(scaling)
    if not isinstance(s, YaRNScaling):
        raise TypeError(f"yarn_ramp needs a YaRN scaling, got {type(s).__name__}")
    _check_dim(dim)
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    L = s.original_max_position_embeddings
    if s.ramp == "paper":
        theta = base ** (-2.0 * i / dim)
        r = L * theta / (2 * math.pi)
        return ((r - s.alpha) / (s.beta - s.alpha)).clamp(0.0, 1.0)
    low = _yarn_correction_dim(s.beta, dim, base, L)
    high = _yarn_correction_dim(s.alpha, dim, base, L)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as the reference code: avoid 0/0
    return 1.0 - ((i - low) / (high - low)).clamp(0.0, 1.0)


def inv_freq(
    dim: int,
    base: float = 10000.0,
    scaling: Scaling | Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The rotation frequencies ``θ_i``, ``i = 0..dim/2-1``, after ``scaling``: shape ``(dim/2,)``.

    ``θ_i = base^(-2i/d)`` (RoFormer eq. 15, indices from 0), then

    * :class:`LinearScaling`: ``θ_i / s``;
    * :class:`NTKScaling`: ``(base · s^(d/(d-2)))^(-2i/d)``;
    * :class:`YaRNScaling`: ``(1 - γ_i) θ_i / s + γ_i θ_i`` (:func:`yarn_ramp`).

    Computed in float64 and rounded once to ``dtype``. (YaRN's attention factor
    is not a frequency: see :func:`attention_factor`.)
    """
    _check_dim(dim)
    if not (isinstance(base, (int, float)) and not isinstance(base, bool) and base > 1):
        raise ValueError(f"base must be a number > 1, got {base!r}")
    s = resolve_scaling(scaling)
    base = float(base)
    i = torch.arange(dim // 2, dtype=torch.float64)
    if isinstance(s, NTKScaling):
        if dim == 2:
            raise ValueError("NTK-aware scaling needs dim > 2 (its exponent is d/(d-2))")
        theta = (base * s.factor ** (dim / (dim - 2))) ** (-2.0 * i / dim)
    else:
        theta = base ** (-2.0 * i / dim)
    if isinstance(s, LinearScaling):
        theta = theta / s.factor
    elif isinstance(s, YaRNScaling):
        gamma = yarn_ramp(dim, base, s)
        theta = (1.0 - gamma) * theta / s.factor + gamma * theta
    return theta.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Angles and the rotation
# ----------------------------------------------------------------------------------------


def _as_positions(positions: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
    if isinstance(positions, bool):
        raise TypeError("positions must be an int (a length) or a tensor of positions, got a bool")
    if isinstance(positions, int):
        return torch.arange(positions)
    if not isinstance(positions, torch.Tensor):
        positions = torch.as_tensor(positions)
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"positions must be an integer or real tensor, got dtype {positions.dtype}")
    return positions


def rope_angles(
    positions: torch.Tensor | Sequence[int] | int,
    dim: int,
    *,
    base: float = 10000.0,
    scaling: Scaling | Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(m θ_i)`` and ``sin(m θ_i)`` for every position ``m``: each ``positions.shape + (dim/2,)``.

    Args:
        positions: a tensor of positions (integer or real, any shape), or an
            int ``n`` meaning ``arange(n)``.
        dim: the head dimension ``d`` (even).
        base, scaling: see :func:`inv_freq`. YaRN's :func:`attention_factor`
            multiplies both ``cos`` and ``sin``.
        dtype: float32 or float64. Default: float64 when ``positions`` is
            float64, else float32 — never the dtype of a bf16/fp16 activation.
    """
    positions = _as_positions(positions)
    if dtype is None:
        dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"angles are computed in float32 or float64, got dtype={dtype}")
    device = positions.device
    freqs = inv_freq(dim, base, scaling, dtype=dtype, device=device)  # (d/2,)
    angles = positions.to(dtype)[..., None] * freqs  # (..., d/2): m θ_i
    cos, sin = angles.cos(), angles.sin()
    a = attention_factor(scaling)
    if a != 1.0:
        cos, sin = cos * a, sin * a
    return cos, sin


def _check_x(x: torch.Tensor, dim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (..., seq, dim), got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., seq, dim), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    d = x.shape[-1]
    if d % 2:
        raise ValueError(
            f"RoPE rotates pairs of coordinates, so the last dimension of x must be even: "
            f"got x of shape {tuple(x.shape)} (dim = {d})"
        )
    if dim is not None and d != dim:
        raise ValueError(f"expected x of shape (..., seq, {dim}), got {tuple(x.shape)}")


def _resolve_positions(x: torch.Tensor, positions: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    """``arange(seq)`` by default; otherwise check that ``positions`` broadcasts to ``x.shape[:-1]``."""
    lead = tuple(x.shape[:-1])
    if positions is None:
        return torch.arange(x.shape[-2], device=x.device)
    if isinstance(positions, int) and not isinstance(positions, bool):
        raise TypeError(
            f"positions must be a tensor broadcastable to x.shape[:-1] = {lead}, not the int {positions}; "
            f"for a KV-cache offset pass offset + torch.arange(seq)"
        )
    positions = _as_positions(positions).to(x.device)
    hint = (" Add the missing dimensions explicitly, e.g. positions[:, None, :] for per-batch positions "
            "of a (batch, heads, seq, dim) input.")
    partial = 1 < positions.dim() < len(lead) and any(n != 1 for n in positions.shape[:-1])
    try:
        ok = torch.broadcast_shapes(positions.shape, lead) == lead
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"positions of shape {tuple(positions.shape)} do not broadcast to x.shape[:-1] = {lead} "
            f"(x has shape (..., seq, dim) = {tuple(x.shape)})." + (hint if partial else "")
        )
    # (B, S) positions against (B, H, S, D) inputs broadcast against the heads when B == H, silently.
    if partial:
        raise ValueError(
            f"positions of shape {tuple(positions.shape)} for x of shape {tuple(x.shape)} are ambiguous: they would "
            f"line up with the last {positions.dim()} dimensions of {lead}." + hint
        )
    return positions


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Turn pair i of x by the angle whose cos/sin are given. x: (..., d); cos, sin: broadcast to (..., d/2).

    Pair by pair, RoFormer's "computationally efficient realization" (§3.4.2):
    ``(a, b) ↦ (a cos - b sin, a sin + b cos)``, without building the sparse ``R^d_{Θ,m}``.
    """
    if interleaved:  # pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    half = x.shape[-1] // 2  # pairs (i, i + d/2)
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | Sequence[int] | None = None,
    *,
    base: float = 10000.0,
    interleaved: bool = False,
    scaling: Scaling | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Rotate every pair of ``x`` by ``m θ_i``: ``f(x, m) = R^d_{Θ,m} x`` (RoFormer eq. 14-15).

    Args:
        x: ``(..., seq, dim)``, ``dim`` even; any float dtype.
        positions: the position ``m`` of each row, broadcastable to ``(..., seq)``;
            default ``arange(seq)``. With a KV cache pass ``offset + arange(seq)``;
            per-batch positions of a ``(batch, heads, seq, dim)`` input are
            ``(batch, 1, seq)``. Integer or real.
        base: ``θ_i = base^(-2i/d)``.
        interleaved: pair ``(2i, 2i+1)`` (RoFormer/GPT-J) instead of ``(i, i + d/2)``
            (GPT-NeoX/Llama "rotate_half").
        scaling: a context-extension scaling (:func:`resolve_scaling`).

    Returns:
        A tensor like ``x`` (same shape and dtype); angles and products are
        computed in float32 (float64 when ``x`` is float64). Differentiable.
    """
    _check_x(x)
    positions = _resolve_positions(x, positions)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_angles(positions, x.shape[-1], base=base, scaling=scaling, dtype=compute)
    return _rotate(x.to(compute), cos, sin, interleaved).to(x.dtype)


def apply_rope_complex(
    x: torch.Tensor,
    positions: torch.Tensor | Sequence[int] | None = None,
    *,
    base: float = 10000.0,
    interleaved: bool = False,
    scaling: Scaling | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """The same rotation in the paper's complex form (RoFormer §3.2.1, eq. 12): ``z_i ↦ z_i e^{i m θ_i}``.

    Pair ``i`` becomes the complex number ``z_i = a + i b`` and is multiplied
    by ``e^{i m θ_i}`` (``torch.polar``), as Meta's LLaMA reference code does.
    Slower than :func:`apply_rope` (complex tensors, copies); kept as the
    readable form and as the benchmark's baseline.
    """
    _check_x(x)
    positions = _resolve_positions(x, positions)
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    d, half = x.shape[-1], x.shape[-1] // 2
    angles = positions.to(real)[..., None] * inv_freq(d, base, scaling, dtype=real, device=x.device)
    rot = torch.polar(torch.full_like(angles, attention_factor(scaling)), angles)  # a · e^{i m θ_i}
    xr = x.to(real)
    if interleaved:
        z = torch.view_as_complex(xr.reshape(*x.shape[:-1], half, 2).contiguous())
        return torch.view_as_real(z * rot).flatten(-2).to(x.dtype)
    z = torch.complex(xr[..., :half].contiguous(), xr[..., half:].contiguous())
    y = z * rot
    return torch.cat((y.real, y.imag), dim=-1).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE as a module, with a cos/sin cache that grows on demand.

    ``forward(x, positions=None)`` returns what :func:`apply_rope` returns
    with this module's ``base``, ``interleaved`` and ``scaling``. The cache
    holds ``cos(m θ_i)``, ``sin(m θ_i)`` for ``m = 0..cached_len-1`` in float32,
    as non-persistent buffers (they move with ``.to(device)`` and stay out of
    the ``state_dict``; if ``model.half()`` or ``.to(torch.bfloat16)`` casts
    them, the next call rebuilds them in float32). ``inv_freq`` is a buffer
    for inspection only: the cache is built by :func:`rope_angles`, never from
    it. When a position ``>= cached_len`` is asked for, the cache is rebuilt
    at ``max(needed, 2 · cached_len)`` rows, so growing one token at a time
    costs O(log n) rebuilds. Negative or fractional positions,
    and float64 inputs, are computed directly without the cache.

    Args:
        dim: head dimension ``d`` (even).
        base, interleaved, scaling: as in :func:`apply_rope`.
    """

    cos_cached: torch.Tensor
    sin_cached: torch.Tensor
    inv_freq: torch.Tensor

    def __init__(
        self,
        dim: int,
        base: float = 10000.0,
        interleaved: bool = False,
        scaling: Scaling | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_dim(dim)
        self.base = float(base)
        self.interleaved = bool(interleaved)
        self.scaling = resolve_scaling(scaling)
        self.attention_factor = attention_factor(self.scaling)
        self.register_buffer("inv_freq", inv_freq(dim, base, self.scaling), persistent=False)
        self.register_buffer("cos_cached", torch.empty(0, dim // 2), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, dim // 2), persistent=False)

    @property
    def cached_len(self) -> int:
        """Number of positions (0..cached_len-1) whose cos/sin are cached."""
        return self.cos_cached.shape[0]

    def _ensure_cached(self, n: int, device: torch.device) -> None:
        # Rebuilt when too short, on another device, or cast by module.half() / .to(torch.bfloat16)
        fresh = self.cos_cached.device == device and self.cos_cached.dtype == torch.float32
        if n <= self.cached_len and fresh:
            return
        new_len = max(n, 2 * self.cached_len) if n > self.cached_len else self.cached_len
        cos, sin = rope_angles(
            torch.arange(new_len, device=device), self.dim, base=self.base, scaling=self.scaling, dtype=torch.float32
        )
        self.cos_cached, self.sin_cached = cos, sin  # assigning to a registered buffer name replaces the buffer

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``(cos, sin)`` of shape ``positions.shape + (dim/2,)``, from the cache when possible.

        Reading the smallest and largest position costs one device sync on a GPU.
        """
        positions = _as_positions(positions)
        if positions.is_floating_point() or positions.numel() == 0 or int(positions.min()) < 0:
            return rope_angles(positions, self.dim, base=self.base, scaling=self.scaling, dtype=torch.float32)
        self._ensure_cached(int(positions.max()) + 1, positions.device)
        return self.cos_cached[positions], self.sin_cached[positions]

    def forward(self, x: torch.Tensor, positions: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Rotate ``x`` of shape ``(..., seq, dim)``; ``positions`` as in :func:`apply_rope`."""
        _check_x(x, self.dim)
        if x.dtype == torch.float64:
            return apply_rope(x, positions, base=self.base, interleaved=self.interleaved, scaling=self.scaling)
        if positions is None:
            seq = x.shape[-2]
            self._ensure_cached(seq, x.device)
            cos, sin = self.cos_cached[:seq], self.sin_cached[:seq]
        else:
            cos, sin = self.cos_sin(_resolve_positions(x, positions))
        return _rotate(x.float(), cos, sin, self.interleaved).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, base={self.base:g}, interleaved={self.interleaved}, "
                f"scaling={self.scaling}, cached_len={self.cached_len}")


def interleaved_to_half_split_permutation(dim: int) -> torch.Tensor:
    """The index permutation ``perm`` that takes the interleaved layout to the half-split one.

    ``perm = [0, 2, 4, ..., d-2, 1, 3, ..., d-1]``: coordinate ``j`` of the
    half-split vector is coordinate ``perm[j]`` of the interleaved one, so pair
    ``(2i, 2i+1)`` lands on ``(i, i + d/2)`` and::

        apply_rope(x[..., perm], interleaved=False) == apply_rope(x, interleaved=True)[..., perm]

    To convert a model, permute the output rows of ``W_q`` and ``W_k`` head by
    head (``W[perm]`` for each head's ``d`` rows) — what HF's LLaMA conversion
    script does. ``perm.argsort()`` goes back. ``W_v`` is not rotated: leave it.
    """
    _check_dim(dim)
    return torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))


# ----------------------------------------------------------------------------------------
# Long-term decay (RoFormer §3.4.3)
# ----------------------------------------------------------------------------------------


def rope_decay_bound(
    distances: torch.Tensor | Sequence[float] | float,
    dim: int,
    base: float = 10000.0,
    *,
    scaling: Scaling | Mapping[str, Any] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """RoFormer's upper bound on a RoPE score at relative distance ``r = m - n`` (§3.4.3, eqs. 35-37).

    Write the score as a sum over pairs, ``q_mᵀ k_n = Re[Σ_{i=0}^{d/2-1} h_i e^{i(m-n)θ_i}]``
    with ``h_i = q_{[2i:2i+1]} k*_{[2i:2i+1]}``. With the partial sums
    ``S_j = Σ_{k=0}^{j-1} e^{i(m-n)θ_k}`` (``S_0 = 0``, ``h_{d/2} = 0``), Abel
    summation gives ``Σ h_i (S_{i+1} - S_i) = -Σ S_{i+1} (h_{i+1} - h_i)``, so::

        |Σ_i h_i e^{i(m-n)θ_i}| <= (max_i |h_{i+1} - h_i|) · Σ_{j=1}^{d/2} |S_j|

    The paper plots the *relative upper bound* ``(1/(d/2)) Σ_{j=1}^{d/2} |S_j|``
    (its Figure 2, ``θ_i = 10000^(-2i/d)``, distances 0 to about 250; it does
    not say which ``d``), returned here; ``normalize=False`` returns
    ``Σ_j |S_j|``. With ``d = 128`` the curve has the figure's range: about 20
    at ``r = 5``, a floor near 6 by ``r = 250``. At ``r = 0`` every
    ``|S_j| = j``, so it is ``(d/2 + 1)/2`` (32.5 for ``d = 128``). It falls
    with ``r`` but not monotonically (d=128, base 1e4: 4.47 at r=1000, 5.04 at
    r=4000). The paper shows that the bound decays, not the score: the factor
    ``max_i |h_{i+1} - h_i|`` depends on ``q, k``, and for independent random
    ``q, k`` the expected score is 0 at every ``r``.

    Args:
        distances: relative distances (any shape; real).
        dim, base, scaling: the frequencies, as in :func:`inv_freq`.

    Returns:
        float64 tensor with the shape of ``distances``.
    """
    r = torch.as_tensor(distances, dtype=torch.float64)
    theta = inv_freq(dim, base, scaling, dtype=torch.float64)  # θ_k, k = 0..d/2-1
    flat = r.reshape(-1)
    out = torch.empty_like(flat)
    chunk = 2048  # rows of the (distances, d/2) phase matrix at a time
    for start in range(0, flat.numel(), chunk):
        phase = flat[start:start + chunk, None] * theta  # (R, d/2): (m - n) θ_k
        S = torch.polar(torch.ones_like(phase), phase).cumsum(dim=-1)  # S_1..S_{d/2}
        out[start:start + chunk] = S.abs().sum(dim=-1)
    if normalize:
        out = out / (dim // 2)
    return out.reshape(r.shape)


# ----------------------------------------------------------------------------------------
# Figures (pure: one call draws one axes; pass ax to place it in a grid)
# ----------------------------------------------------------------------------------------


def plot_rotation(
    m: float, theta: float, ax: plt.Axes | None = None, *, pair: tuple[float, float] = (1.0, 0.0)
) -> plt.Axes:
    """One 2-D pair ``(a, b)`` at position 0 and rotated to position ``m``: the angle is ``m θ``.

    Draws the trajectory of the pair over positions ``0..m`` (dots, for
    integer ``m <= 200``), the two vectors and the arc between them. Meant for
    a slider over ``m`` (and ``θ``) in the notebook.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    a, b = float(pair[0]), float(pair[1])
    radius = math.hypot(a, b)
    if radius == 0:
        raise ValueError("pair must be a non-zero 2-D vector")
    phi0, angle = math.atan2(b, a), m * theta
    rotated = (a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle))
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(radius * torch.cos(t), radius * torch.sin(t), color="0.85", lw=1)
    if float(m).is_integer() and 0 < abs(m) <= 200:
        steps = torch.arange(0, int(abs(m)) + 1) * math.copysign(1.0, m)
        ax.scatter(radius * torch.cos(phi0 + steps * theta), radius * torch.sin(phi0 + steps * theta),
                   s=8, color="tab:blue", alpha=0.35, label="positions 0..m")
    arc = torch.linspace(0, 1, 100) * angle
    ax.plot(0.35 * radius * torch.cos(phi0 + arc), 0.35 * radius * torch.sin(phi0 + arc), color="tab:orange", lw=1.5)
    ax.annotate("", xy=(a, b), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="0.4", lw=2))
    ax.annotate("", xy=rotated, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:red", lw=2))
    ax.plot([], [], color="0.4", lw=2, label="pair at m = 0")
    ax.plot([], [], color="tab:red", lw=2, label=f"pair at m = {m:g}")
    lim = 1.3 * radius
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.9", lw=0.8, zorder=0)
    ax.axvline(0, color="0.9", lw=0.8, zorder=0)
    ax.set_xlabel("first coordinate of the pair")
    ax.set_ylabel("second coordinate of the pair")
    turns = angle / (2 * math.pi)
    ax.set_title(f"m = {m:g}, θ = {theta:.3g}: rotated by mθ = {angle:.3g} rad ({turns:.2f} turns)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_decay(
    bases: Sequence[float], dim: int, max_distance: int, ax: plt.Axes | None = None
) -> plt.Axes:
    """RoFormer's relative upper bound (:func:`rope_decay_bound`) against distance, one curve per base.

    The legend gives, for each base, the distance at which the bound first
    falls to half its value at ``r = 0``.
    """
    import matplotlib.pyplot as plt

    if not bases:
        raise ValueError("bases must hold at least one base")
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1, got {max_distance}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    r = torch.unique(torch.linspace(0, max_distance, min(max_distance + 1, 2001)).round())
    for base in bases:
        bound = rope_decay_bound(r, dim, base)
        below = torch.nonzero(bound <= bound[0] / 2)
        half = f"halves by r = {r[below[0, 0]].item():.0f}" if below.numel() else "never halves here"
        ax.plot(r, bound, lw=1.2, label=f"base {base:g} ({half})")
    ax.set_xlabel("relative distance m − n (tokens)")
    ax.set_ylabel("relative upper bound  (2/d) Σ_j |S_j|")
    ax.set_title(f"RoPE long-term decay bound, d = {dim}: a larger base decays more slowly", fontsize=10)
    ax.legend(fontsize=8)
    return ax


def _describe(scaling: Scaling) -> str:
    if isinstance(scaling, LinearScaling):
        return f"PI (linear), s = {scaling.factor:g}"
    if isinstance(scaling, NTKScaling):
        return f"NTK-aware, s = {scaling.factor:g}"
    ramp = ", paper's ramp" if scaling.ramp == "paper" else ""
    return f"YaRN, s = {scaling.factor:g}, L = {scaling.original_max_position_embeddings}{ramp}"


def plot_frequencies(
    dim: int,
    base: float,
    scalings: Sequence[Any] | Mapping[str, Any],
    ax: plt.Axes | None = None,
    *,
    relative: bool = True,
) -> plt.Axes:
    """What each context-extension scaling does to the frequencies, pair by pair.

    ``relative=True`` plots ``θ'_i / θ_i`` (1 = kept, ``1/s`` = interpolated
    like PI) on a log axis; ``relative=False`` plots ``θ'_i`` itself with the
    unscaled ``θ_i``. ``scalings`` is a list of scalings (labelled
    automatically) or a dict ``{label: scaling}``.
    """
    import matplotlib.pyplot as plt

    items = list(scalings.items()) if isinstance(scalings, Mapping) else [(None, s) for s in scalings]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    i = torch.arange(dim // 2)
    theta = inv_freq(dim, base, dtype=torch.float64)
    if not relative:
        ax.plot(i, theta, color="k", lw=2, label="RoPE (no scaling)")
    for label, scaling in items:
        s = resolve_scaling(scaling)
        scaled = inv_freq(dim, base, s, dtype=torch.float64)
        label = label or ("no scaling" if s is None else _describe(s))
        ax.plot(i, scaled / theta if relative else scaled, lw=1.5, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("pair index i (0 = fastest rotation)")
    ax.set_ylabel("θ'_i / θ_i" if relative else "θ_i (radians per token)")
    ax.set_title(
        "PI slows every pair by s; NTK and YaRN keep the fast pairs and slow the slow ones"
        if relative else f"RoPE frequencies, d = {dim}, base {base:g}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return ax


# ----------------------------------------------------------------------------------------
# A tiny model for the length-generalisation experiment (chapter 02, section 9)
# ----------------------------------------------------------------------------------------

ENCODINGS = ("rope", "absolute", "nope")


def copy_offset_batch(
    batch: int, seq_len: int, *, vocab: int = 16, offset: int = 3, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy-with-offset task: at position ``t`` predict the token at ``t - offset``.

    Returns ``(tokens, targets)``, both ``(batch, seq_len)`` int64: tokens are
    uniform in ``0..vocab-1``; ``targets[:, t] = tokens[:, t - offset]`` for
    ``t >= offset`` and ``-100`` (cross-entropy's ``ignore_index``) before.
    Only *relative* position tells the model where to look.
    """
    if offset < 1 or seq_len <= offset:
        raise ValueError(f"need 1 <= offset < seq_len, got offset={offset}, seq_len={seq_len}")
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=generator)
    targets = torch.full_like(tokens, -100)
    targets[:, offset:] = tokens[:, :-offset]
    return tokens, targets


class PositionTaskModel(nn.Module):
    """One causal attention head between a token embedding and an unembedding.

    ``encoding`` is where the order comes from:

    * ``"rope"``: ``q`` and ``k`` rotated by :func:`apply_rope` (half-split,
      ``base``, and the attribute ``scaling``, which can be changed after
      training to try a context extension);
    * ``"absolute"``: a learned table of ``max_len`` position vectors added to
      the token embeddings (GPT-2 style); rows never reached in training stay at
      their initial values;
    * ``"nope"``: nothing; only the causal mask breaks the symmetry.

    Shapes: ``tokens (batch, seq)`` -> logits ``(batch, seq, vocab)``.
    """

    def __init__(
        self,
        encoding: str,
        *,
        vocab: int = 16,
        dim: int = 32,
        max_len: int = 512,
        base: float = 10000.0,
        scaling: Scaling | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.encoding, self.base, self.scaling = encoding, float(base), resolve_scaling(scaling)
        self.max_len = max_len
        self.embed = nn.Embedding(vocab, _check_dim(dim))
        self.pos = nn.Embedding(max_len, dim) if encoding == "absolute" else None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.unembed = nn.Linear(dim, vocab)

    def attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights, values)``: causal attention weights ``(batch, seq, seq)`` and values ``(batch, seq, dim)``."""
        n = tokens.shape[-1]
        if n > self.max_len and self.pos is not None:
            raise ValueError(f"sequence of {n} tokens is longer than the position table ({self.max_len})")
        h = self.embed(tokens)
        if self.pos is not None:
            h = h + self.pos.weight[:n]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        if self.encoding == "rope":
            q = apply_rope(q, base=self.base, scaling=self.scaling)
            k = apply_rope(k, base=self.base, scaling=self.scaling)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        future = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1), v

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights, v = self.attention(tokens)
        return self.unembed(weights @ v)


def train_copy_offset(
    encoding: str,
    *,
    steps: int = 400,
    seq_len: int = 32,
    vocab: int = 16,
    offset: int = 3,
    dim: int = 32,
    batch: int = 64,
    lr: float = 1e-2,
    base: float = 10000.0,
    max_len: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> tuple[PositionTaskModel, list[float]]:
    """Train a :class:`PositionTaskModel` on copy-with-offset sequences of ``seq_len`` tokens (Adam, fresh batches).

    Seeded: the initial weights come from ``torch.manual_seed(seed)`` and the
    data from its own generator, so one call gives the same model every time
    (on one machine, with one thread count). ``progress=True`` shows a
    ``tqdm.auto`` bar (stderr: keep it out of graded cells). Returns the model
    (in eval mode) and the training losses.
    """
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    model = PositionTaskModel(encoding, vocab=vocab, dim=dim, max_len=max_len, base=base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    loop: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        loop = tqdm(loop, desc=f"{encoding:>8s}", leave=False)
    for _ in loop:
        tokens, targets = copy_offset_batch(batch, seq_len, vocab=vocab, offset=offset, generator=data)
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def copy_offset_accuracy(
    model: PositionTaskModel, seq_len: int, *, offset: int = 3, n: int = 256, seed: int = 1
) -> torch.Tensor:
    """Accuracy at each position on ``n`` fresh sequences of ``seq_len`` tokens: ``(seq_len,)`` float64.

    Positions ``t < offset`` have no target and hold ``nan``.
    """
    vocab = model.unembed.out_features
    tokens, targets = copy_offset_batch(
        n, seq_len, vocab=vocab, offset=offset, generator=torch.Generator().manual_seed(seed)
    )
    right = (model(tokens).argmax(dim=-1) == targets).to(torch.float64).mean(dim=0)
    right[:offset] = float("nan")
    return right


def plot_attention(
    weights: torch.Tensor, ax: plt.Axes | None = None, *, title: str = "", mark: int | None = None
) -> plt.Axes:
    """Heatmap of one attention matrix ``(queries, keys)``; ``mark`` draws a dashed line at that query/key index.

    Queries run down, keys across, like the matrix. Colour is the weight (0 to 1).
    """
    import matplotlib.pyplot as plt

    if weights.dim() != 2:
        raise ValueError(f"weights must be one (queries, keys) matrix, got shape {tuple(weights.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    image = ax.imshow(weights.detach().float().cpu().numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if mark is not None:
        ax.axhline(mark - 0.5, color="w", lw=0.8, ls="--")
        ax.axvline(mark - 0.5, color="w", lw=0.8, ls="--")
    ax.set_xlabel("key position n")
    ax.set_ylabel("query position m")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return ax


# ----------------------------------------------------------------------------------------
# The Triton kernel, imported on first access
# ----------------------------------------------------------------------------------------

_LAZY = {"apply_rope_triton": "companion.rope_triton", "HAS_TRITON": "companion.rope_triton"}


def __getattr__(name: str) -> Any:
    """Import :mod:`companion.rope_triton` (and Triton) only when its names are first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
