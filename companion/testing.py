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
    "TamperingDetected",
    "call_quietly",
    "call_within",
    "check_close",
    "check_dtype",
    "check_shape",
    "check_tensor_type",
    "cmp",
    "integrity_problems",
    "ok",
]

TAMPERING_MARK = "tampering detected at run time"


class TamperingDetected(AssertionError):
    """A check found the functions or hooks the tests rely on changed since this module was imported."""


# --- run-time integrity -------------------------------------------------------------------------------
# The autograder's static scan (grading/tamper.py) reads a submission before it runs; this is the second
# layer, inside the kernel. When this module is imported (the locked setup cell, or the grading kernel's
# start-up), it records which objects the namespaces the tests compute with hold; every check below first
# confirms they are unchanged: no function of torch, torch.Tensor, torch.testing, torch.nn.functional,
# torch.linalg, numpy, math, builtins or this module replaced, no IPython input transformer, AST
# transformer or event callback added, no trace or profile function set. A changed one fails the check with
# TAMPERING_MARK in its message, which the grader reports. Like any check inside the kernel it raises the
# bar rather than proving anything: it is one layer of three (static scan, this, the sandbox).

_SAFE_CALLBACK_MODULES = ("matplotlib", "matplotlib_inline", "ipykernel", "IPython", "ipywidgets", "comm",
                          "ipympl", "tqdm")


def _namespaces() -> dict[str, tuple[Any, bool]]:
    """name -> (namespace, strict): strict namespaces (classes) must not gain entries either."""
    import builtins
    import math
    import sys

    import torch.nn.functional

    spaces: dict[str, tuple[Any, bool]] = {
        "builtins": (builtins, False), "math": (math, False), "torch": (torch, False),
        "torch.testing": (torch.testing, False), "torch.nn.functional": (torch.nn.functional, False),
        "torch.linalg": (torch.linalg, False), "torch.Tensor": (torch.Tensor, True),
        "torch.nn.Module": (torch.nn.Module, True), "companion.testing": (sys.modules[__name__], False),
    }
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        spaces["numpy"] = (numpy, False)
        if "numpy.testing" in sys.modules:
            spaces["numpy.testing"] = (sys.modules["numpy.testing"], False)
    return spaces


# rebound in normal use: ipykernel points builtins.input at the front end for every cell it runs
_VOLATILE = {"input", "raw_input", "getpass"}


def _entries(space: Any, strict: bool) -> dict[str, int]:
    out = {}
    for key, value in list(vars(space).items()):
        if not strict and (key.startswith("_") or key in _VOLATILE):
            continue  # module-level private state changes in normal use (builtins._ is the last result)
        if strict or callable(value):
            out[key] = id(value)
    return out


def _shell_state() -> dict[str, Any]:
    import sys

    state: dict[str, Any] = {"trace": sys.gettrace(), "profile": sys.getprofile()}
    try:
        from IPython import get_ipython
    except ImportError:
        return state
    shell = get_ipython()
    if shell is None:
        return state
    state["shell"] = shell
    state["input_transformers_post"] = list(shell.input_transformers_post)
    state["input_transformers_cleanup"] = list(shell.input_transformers_cleanup)
    state["ast_transformers"] = list(shell.ast_transformers)
    state["events"] = {name: list(callbacks) for name, callbacks in shell.events.callbacks.items()}
    state["methods"] = {name: getattr(type(shell), name, None) for name in ("run_cell", "run_code", "showtraceback")}
    state["instance"] = {name: name in vars(shell) for name in ("run_cell", "run_code", "showtraceback")}
    return state


def _snapshot() -> dict[str, Any]:
    return {
        "spaces": {name: (space, strict, _entries(space, strict)) for name, (space, strict) in _namespaces().items()},
        "shell": _shell_state(),
        "objects": {},  # keeps every recorded object alive, so an id is never reused
    }


def _keep_alive(snap: dict[str, Any]) -> None:
    for name, (space, strict, _) in snap["spaces"].items():
        snap["objects"][name] = dict(vars(space))


_SNAPSHOT = _snapshot()
_keep_alive(_SNAPSHOT)


def _library_root(module: Any) -> str:
    import os

    return os.path.dirname(os.path.abspath(module.__file__)) + os.sep


def _library_wrapper(new: Any, old: Any) -> bool:
    """``new`` is a wrapper that torch or numpy put around ``old`` itself (importing torch._dynamo wraps
    torch.manual_seed, for one): defined in the library's own files and wrapping the original. A wrapper a
    student writes with functools.wraps also carries ``__wrapped__``, but its code lives in a notebook cell."""
    import sys

    code = getattr(new, "__code__", None)
    if code is None or old is None:
        return False
    roots = [_library_root(sys.modules[m]) for m in ("torch", "numpy") if m in sys.modules]
    if not any(code.co_filename.startswith(root) for root in roots):
        return False
    seen = 0
    while new is not None and seen < 10:
        new = getattr(new, "__wrapped__", None)
        if new is old:
            return True
        seen += 1
    return False


def _callback_ok(callback: Any) -> bool:
    module = getattr(callback, "__module__", None) or getattr(type(callback), "__module__", "") or ""
    return module.split(".")[0] in _SAFE_CALLBACK_MODULES


def integrity_problems() -> list[str]:
    """What changed, since this module was imported, in what the tests rely on ([] when nothing did)."""
    problems = []
    for name, (space, strict, before) in _SNAPSHOT["spaces"].items():
        now = _entries(space, strict)
        for key, ident in before.items():
            if key not in now:
                problems.append(f"{name}.{key} was deleted")
            elif now[key] != ident and not _library_wrapper(vars(space).get(key), _SNAPSHOT["objects"][name].get(key)):
                problems.append(f"{name}.{key} was replaced")
        if strict:
            problems += [f"{name}.{key} was added" for key in now if key not in before]
        if len(problems) > 3:
            break
    before = _SNAPSHOT["shell"]
    now = _shell_state()
    if now["trace"] is not before["trace"] or now["profile"] is not before["profile"]:
        problems.append("a trace or profile function was set (sys.settrace / sys.setprofile)")
    shell = before.get("shell")
    if shell is not None:
        if now.get("shell") is not shell:
            problems.append("the IPython shell was replaced")
        else:
            for key in ("input_transformers_post", "input_transformers_cleanup", "ast_transformers"):
                if now[key] != before[key]:
                    problems.append(f"IPython's {key} were changed")
            for event, callbacks in now["events"].items():
                old = before["events"].get(event, [])
                if any(c not in callbacks for c in old) or any(c not in old and not _callback_ok(c) for c in callbacks):
                    problems.append(f"an IPython '{event}' event callback was registered or removed")
            if now["methods"] != before["methods"] or now["instance"] != before["instance"]:
                problems.append("IPython's run_cell, run_code or showtraceback was replaced")
    return problems


def _guard() -> None:
    problems = integrity_problems()
    if problems:
        shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        raise TamperingDetected(f"{TAMPERING_MARK}: {shown}")


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return f"{type(obj).__name__}"


def check_tensor_type(name: str, actual: Any) -> None:
    _guard()
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{name}: expected a torch.Tensor, got {_describe(actual)}")


def check_shape(name: str, actual: Any, expected: Sequence[int]) -> None:
    """Assert ``actual`` is a tensor of shape ``expected``."""
    check_tensor_type(name, actual)  # (runs the integrity check)
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
    _guard()
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
    _guard()
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
