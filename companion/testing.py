"""Checks that exercise cells call: clear messages, nothing on stderr, no ``==`` on student objects.

Every check raises ``AssertionError`` with a message that says what was expected
and what came back (shape, dtype, largest difference, a hint), and returns
``None``: a test cell must not end in a value, since nbgrader reads a number as
partial credit.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "call_quietly",
    "call_within",
    "check_close",
    "check_dtype",
    "check_shape",
    "check_tensor_type",
    "cmp",
    "ok",
]


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return f"{type(obj).__name__}"


def check_tensor_type(name: str, actual: Any) -> None:
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{name}: expected a torch.Tensor, got {_describe(actual)}")


def check_shape(name: str, actual: Any, expected: Sequence[int]) -> None:
    """Assert ``actual`` is a tensor of shape ``expected``."""
    check_tensor_type(name, actual)
    want = tuple(int(s) for s in expected)
    got = tuple(actual.shape)
    if got != want:
        hint = ""
        if sorted(got) == sorted(want):
            hint = " (same sizes in another order: are two axes transposed?)"
        raise AssertionError(f"{name}: expected shape {want}, got {got}{hint}")


def check_dtype(name: str, actual: Any, expected: torch.dtype) -> None:
    """Assert ``actual`` is a tensor of dtype ``expected``."""
    check_tensor_type(name, actual)
    if actual.dtype != expected:
        raise AssertionError(f"{name}: expected dtype {expected}, got {actual.dtype}")


def check_close(
    name: str,
    actual: Any,
    expected: torch.Tensor,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    hint: str = "",
) -> None:
    """Assert values agree (``torch.testing.assert_close``), with a short message.

    Checks the type, shape and dtype first so a student sees the first thing
    that is wrong, then the values: the message names the largest absolute
    difference and where it is.
    """
    check_tensor_type(name, actual)
    check_shape(name, actual, expected.shape)
    check_dtype(name, actual, expected.dtype)
    actual = actual.detach()
    expected = expected.detach().to(actual.device)
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=False)
    except AssertionError:
        if actual.is_floating_point() or actual.is_complex():
            bad = ~torch.isfinite(actual) & torch.isfinite(expected)
            if bad.any():
                where = tuple(int(i) for i in bad.nonzero()[0])
                msg = f"{name}: non-finite value {actual[where].item()} at index {where}, expected {expected[where].item()}"
            else:
                diff = (actual - expected).abs().to(torch.float64)
                diff = torch.nan_to_num(diff, nan=float("inf"))
                flat = int(diff.argmax())
                where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
                msg = (
                    f"{name}: values differ; largest difference {diff.max().item():.3g} at index {where} "
                    f"(got {actual[where].item():.6g}, expected {expected[where].item():.6g})"
                )
        else:
            mismatch = actual != expected
            where = tuple(int(i) for i in mismatch.nonzero()[0])
            msg = (
                f"{name}: {int(mismatch.sum())} of {mismatch.numel()} entries differ; first at index {where} "
                f"(got {actual[where].item()}, expected {expected[where].item()})"
            )
        raise AssertionError(msg + (f". Hint: {hint}" if hint else "")) from None



def call_quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a student's function with warnings recorded rather than printed.

    A warning printed on stderr inside a graded test cell costs the whole cell's
    points (nbgrader reads stderr as failure); a warning is not a wrong answer.
    """
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return fn(*args, **kwargs)


def call_within(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call_quietly(fn, ...)``, but an ``AssertionError`` if it has not returned after ``seconds``.

    For checks where a plausible wrong answer never returns (a rewrite loop that makes no progress on bad
    input): the student sees which call hung instead of waiting for the grader's cell time limit. Uses
    ``SIGALRM``, so the limit applies on the main thread of a POSIX process (a notebook kernel); elsewhere
    the call simply runs unbounded.
    """
    name = getattr(fn, "__name__", "the function")
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        return call_quietly(fn, *args, **kwargs)

    class _Late(BaseException):  # not an Exception: a student's `except Exception` cannot swallow it
        pass

    def _alarm(signum, frame):
        raise _Late

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call_quietly(fn, *args, **kwargs)
    except _Late:
        shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise AssertionError(
            f"{name}({shown}) did not return within {seconds:g} s: it probably loops forever on this input"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ok(message: str) -> None:
    """Print a passed check (stdout)."""
    print(f"\u2713 {message}")


def cmp(name: str, mine: torch.Tensor, reference: torch.Tensor) -> None:
    """A friendly self-check while building: exact, approximately equal, or the max difference."""
    if not isinstance(mine, torch.Tensor):
        print(f"{name:>20s} | not a tensor: {_describe(mine)}")
        return
    if mine.shape != reference.shape:
        print(f"{name:>20s} | shape {tuple(mine.shape)} vs reference {tuple(reference.shape)}")
        return
    exact = bool(torch.equal(mine, reference))
    approx = bool(torch.allclose(mine.to(reference.dtype), reference, rtol=1e-5, atol=1e-6))
    maxdiff = (mine.to(torch.float64) - reference.to(torch.float64)).abs().max().item() if mine.numel() else 0.0
    print(f"{name:>20s} | exact: {exact!s:5} | approximate: {approx!s:5} | max diff: {maxdiff:.2e}")
