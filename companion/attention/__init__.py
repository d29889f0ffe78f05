"""Attention for chapter 01 (attention I/O tiling): the reference, FlashAttention, and its I/O model.

* :mod:`companion.attention.reference`: ``naive_attention``, the score matrix written out.
* :mod:`companion.attention.flash`: ``flash_attention``, tiled forward and backward
  with the online softmax in pure PyTorch, and the pieces the exercises build on
  (``online_softmax_update``, ``flash_attention_forward``).
* :mod:`companion.attention.io`: an executable two-level memory model (fast memory of
  ``M`` words, slow memory) that counts the words each attention algorithm moves.

``triton_flash_attention`` (a GPU kernel, in ``companion.attention.triton_kernel``)
is imported on first access only, so this package imports without Triton or CUDA.
"""

from __future__ import annotations

from companion.attention.flash import (
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
    online_softmax_update,
    tile_kind,
)
from companion.attention.io import (
    FastMemory,
    FastMemoryOverflow,
    IOResult,
    SlowMemory,
    flash_attention_backward_io,
    flash_attention_io,
    io_bounds,
    paper_block_sizes,
    plot_io_vs_memory,
    plot_tile_schedule,
    small_cache_attention_io,
    standard_attention_io,
)
from companion.attention.reference import causal_mask, naive_attention

__all__ = [
    "FastMemory",
    "FastMemoryOverflow",
    "IOResult",
    "SlowMemory",
    "causal_mask",
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_backward_io",
    "flash_attention_forward",
    "flash_attention_io",
    "io_bounds",
    "naive_attention",
    "online_softmax_update",
    "paper_block_sizes",
    "plot_io_vs_memory",
    "plot_tile_schedule",
    "small_cache_attention_io",
    "standard_attention_io",
    "tile_kind",
]

_LAZY = {"triton_flash_attention": "companion.attention.triton_kernel"}


def __getattr__(name: str):
    """Import the Triton kernel module only when ``triton_flash_attention`` is first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
