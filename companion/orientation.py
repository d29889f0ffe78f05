"""Reference implementations for chapter 00 (orientation).

The three exercises of the orientation chapter are small on purpose: a stable
softmax, a causal mask, a seeded token sampler. Each function here is the
reference its tests compare against, and each has a parity test in
``tests/test_companion_orientation.py`` against an independent implementation.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

__all__ = ["causal_mask", "plot_softmax_temperature", "random_tokens", "softmax"]


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Numerically stable softmax along ``dim``.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}},\quad m = \max_j x_j

    Subtracting the row maximum ``m`` changes nothing mathematically and keeps
    every exponent at most 0, so nothing overflows. Entries equal to ``-inf``
    (masked) get probability 0; a row that is entirely ``-inf`` is an error of
    the caller and gives NaN, as in ``torch.softmax``.

    Shapes: ``x`` any shape; the result has the shape and dtype of ``x``.
    """
    if not x.is_floating_point():
        raise TypeError(f"softmax needs a floating-point tensor, got dtype {x.dtype}")
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True)


def causal_mask(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(n, n)`` mask, ``True`` where query ``i`` may attend to key ``j`` (``j <= i``)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def random_tokens(batch: int, seq_len: int, vocab_size: int, *, generator: torch.Generator) -> torch.Tensor:
    """Uniform random token ids in ``[0, vocab_size)`` drawn from ``generator`` only.

    Shapes: returns ``(batch, seq_len)``, dtype ``torch.long``. The global torch
    generator is not touched, so the result depends on ``generator`` alone.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    return torch.randint(0, vocab_size, (batch, seq_len), generator=generator, dtype=torch.long)


def plot_softmax_temperature(logits: torch.Tensor, temperature: float, ax: plt.Axes | None = None) -> plt.Axes:
    """Bar chart of ``softmax(logits / temperature)``: low temperature sharpens, high flattens."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    probs = softmax(logits.to(torch.float64) / temperature)
    ax.bar(range(len(probs)), probs.numpy(), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_xlabel("token index")
    ax.set_ylabel("probability")
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum().item()
    ax.set_title(f"T = {temperature:g}: max p = {probs.max().item():.2f}, entropy = {entropy:.2f} nats")
    return ax
