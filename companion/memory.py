"""Measure the memory a PyTorch function allocates, on any device, from inside Python.

``peak_tensor_bytes(fn, *args)`` runs ``fn`` under a ``TorchDispatchMode`` that
sees every tensor an operator returns, counts the bytes of each new storage
while it is alive (a ``weakref.finalize`` subtracts it when freed) and reports
the peak above what existed before the call. Unlike the process's resident set
size it sees exactly the tensors the algorithm creates, and unlike
``torch.cuda.max_memory_allocated`` it works on the CPU. Views share their base's
storage and are not counted twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["largest_tensor", "peak_tensor_bytes"]


class _PeakTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen.add(key)
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)``; return ``(result, peak bytes of tensors it allocated)``."""
    tracker = _PeakTracker()
    with tracker:
        result = fn(*args, **kwargs)
    return result, tracker.peak


class _LargestTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.shape: tuple[int, ...] = ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.shape = t.numel(), tuple(t.shape)
        return out


def largest_tensor(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int, tuple[int, ...]]:
    """Run ``fn``; return ``(result, numel, shape)`` of the largest tensor any operator inside it produced.

    A check that an algorithm never materialises something big, e.g. that tiled
    attention never forms the ``n_q x n_k`` score matrix.
    """
    tracker = _LargestTracker()
    with tracker:
        result = fn(*args, **kwargs)
    return result, tracker.largest, tracker.shape
