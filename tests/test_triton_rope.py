"""The fused Triton RoPE kernel (companion.rope_triton) against the eager companion.rope.apply_rope.

There is no GPU in CI, so the kernel runs under Triton's CPU interpreter.
Triton decides between compiling and interpreting when a kernel is *defined*
(when the module is imported), and another test module in this pytest process
may already have imported it (or triton) without the interpreter. So every
check that runs the kernel runs in a fresh subprocess started with
``TRITON_INTERPRET=1`` in its environment: one subprocess computes every case
below and reports the largest differences as JSON, and the tests read their
row from it.

apply_rope itself is checked against an independent complex-number reference
in tests/test_companion_rope.py; here the kernel must agree with it. Shapes are
small (the interpreter runs programs one after the other in NumPy). float32 and
float16 are compared tightly; bfloat16 is covered with a one-ulp allowance,
because the interpreter casts float32 to bfloat16 by truncation instead of
rounding to nearest (triton/runtime/interpreter.py, ``cast_impl``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap

import pytest
from triton_harness import interpreter_results, last_json, run_python

MODULE = "companion.rope_triton"

HAS_TRITON = importlib.util.find_spec("triton") is not None  # find_spec does not import triton here
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install -e '.[gpu]'); the interpreter tests need it"
)

# (id, shape, dtype, interleaved, positions, scaling, grad)
# positions: None (arange), "offset" (1000 + arange), "batch" (random ints, shape (B, 1, S)), "float" (fractional)
CASES = [
    ("half", (2, 3, 17, 16), "float32", False, None, None, True),
    ("interleaved", (2, 3, 17, 16), "float32", True, None, None, True),
    ("offset", (2, 2, 9, 32), "float32", False, "offset", None, False),
    ("offset-interleaved", (2, 2, 9, 32), "float32", True, "offset", None, False),
    ("per-batch-positions", (3, 2, 5, 32), "float32", False, "batch", None, True),
    ("2d-dim24", (33, 24), "float32", False, None, None, False),  # d/2 = 12: padded to 16 lanes
    ("5d", (2, 1, 2, 19, 8), "float32", True, None, None, False),
    ("float-positions", (1, 2, 7, 16), "float32", False, "float", None, False),
    ("linear", (1, 2, 9, 32), "float32", False, "offset", {"type": "linear", "factor": 4.0}, False),
    ("ntk", (1, 2, 9, 32), "float32", True, "offset", {"type": "ntk", "factor": 4.0}, False),
    ("yarn", (2, 2, 9, 32), "float32", True, "batch",
     {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512}, True),
    ("non-contiguous", (2, 9, 3, 16), "float32", False, None, None, True),  # (B, S, H, D).transpose(1, 2)
    ("fp16", (1, 2, 40, 64), "float16", False, "offset", None, True),
    ("fp16-interleaved", (1, 2, 40, 64), "float16", True, None, None, False),
    ("bf16", (1, 2, 40, 64), "bfloat16", False, "offset", None, False),
]
CASE_IDS = [c[0] for c in CASES]

_RUN_CASES = textwrap.dedent(
    """
    import json, sys, traceback
    import torch
    from companion import rope_triton as rt
    from companion.rope import apply_rope

    out = {"HAS_TRITON": rt.HAS_TRITON, "INTERPRET": rt.INTERPRET, "cases": {}}
    if not rt.HAS_TRITON:
        print(json.dumps(out)); sys.exit(0)

    def diff(a, b):
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0

    for cid, shape, dtype, interleaved, pos_kind, scaling, grad in json.loads(sys.argv[1]):
        row = {}
        try:
            g = torch.Generator().manual_seed(0)
            dt = getattr(torch, dtype)
            if cid == "non-contiguous":
                b, s, h, d = shape
                x = torch.randn(b, s, h, d, generator=g).to(dt).transpose(1, 2)
                shape = x.shape
            else:
                x = torch.randn(shape, generator=g).to(dt)
            x.requires_grad_(grad)
            seq = shape[-2]
            pos = {None: None,
                   "offset": 1000 + torch.arange(seq),
                   "batch": torch.randint(0, 5000, (shape[0], 1, seq), generator=g),
                   "float": torch.linspace(0.25, 30.5, seq)}[pos_kind]
            kw = dict(interleaved=interleaved, scaling=scaling)
            y = rt.apply_rope_triton(x, pos, **kw)
            ref = apply_rope(x, pos, **kw)  # float32 angles, rounded once to dt
            ref32 = apply_rope(x.float(), pos, **kw)  # before the rounding
            row.update(shape=list(y.shape), dtype=str(y.dtype).replace("torch.", ""),
                       out=diff(y, ref), out_vs_f32=diff(y, ref32), ref_max=ref32.abs().max().item(),
                       ulp_ok=bool(((y.double() - ref32.double()).abs()
                                    <= 2 * torch.finfo(dt).eps * ref32.double().abs() + 1e-6).all()))
            if grad:
                dy = torch.randn(y.shape, generator=g).to(dt)
                got = torch.autograd.grad(y, x, dy)[0]
                want = torch.autograd.grad(ref, x, dy)[0]
                row.update(dx=diff(got, want), dx_dtype=str(got.dtype).replace("torch.", ""),
                           dx_shape=list(got.shape))
        except Exception:
            row["error"] = traceback.format_exc()
        out["cases"][cid] = row

    errors = {}
    def expect(name, fn):
        try:
            fn()
            errors[name] = None
        except Exception as exc:
            errors[name] = [type(exc).__name__, str(exc)]
    expect("odd_dim", lambda: rt.apply_rope_triton(torch.randn(2, 4, 7)))
    expect("float64", lambda: rt.apply_rope_triton(torch.randn(2, 4, 8, dtype=torch.float64)))
    expect("positions", lambda: rt.apply_rope_triton(torch.randn(2, 4, 8), torch.arange(5)))
    out["errors"] = errors
    empty = rt.apply_rope_triton(torch.randn(2, 0, 8))
    out["empty_shape"] = list(empty.shape)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def interp() -> dict:
    return interpreter_results(_RUN_CASES, CASES, HAS_TRITON)


# max |triton - eager| allowed: float32 differs only in the last bits of cos/sin (NumPy vs PyTorch);
# float16 is rounded once from float32 on both sides; bfloat16 see the module docstring.
TOL = {"float32": 2e-6, "float16": 2e-3}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_eager(interp, case):
    cid, shape, dtype, *_ = case
    row = interp["cases"][cid]
    assert "error" not in row, row.get("error")
    assert row["shape"] == list(shape if cid != "non-contiguous" else (shape[0], shape[2], shape[1], shape[3]))
    assert row["dtype"] == dtype
    if dtype == "bfloat16":
        # truncation instead of round-to-nearest: within 2 bfloat16 ulps of the float32 result
        assert row["ulp_ok"], f"{cid}: more than 2 ulps from the float32 result (max diff {row['out_vs_f32']:.3g})"
    else:
        assert row["out"] <= TOL[dtype] * max(1.0, row["ref_max"]), f"{cid}: max |triton - eager| = {row['out']:.3g}"


@pytest.mark.parametrize("case", [c for c in CASES if c[-1]], ids=[c[0] for c in CASES if c[-1]])
def test_backward_matches_eager(interp, case):
    cid, shape, dtype, *_ = case
    row = interp["cases"][cid]
    assert "error" not in row, row.get("error")
    assert row["dx_dtype"] == dtype and row["dx_shape"] == row["shape"]
    assert row["dx"] <= TOL[dtype] * 4, f"{cid}: max |dx triton - dx eager| = {row['dx']:.3g}"


def test_interpreter_run_writes_nothing_on_stderr(interp):
    assert interp["stderr"].strip() == "", interp["stderr"][-2000:]


@pytest.mark.parametrize(
    "name, exc, words",
    [
        ("odd_dim", "ValueError", "must be even: got x of shape (2, 4, 7)"),
        ("float64", "ValueError", "float16, bfloat16 or float32"),
        ("positions", "ValueError", "do not broadcast"),
    ],
)
def test_invalid_inputs_raise_clear_errors(interp, name, exc, words):
    got = interp["errors"][name]
    assert got is not None, f"{name}: no error raised"
    assert got[0] == exc and words in got[1], f"{name}: got {got}"


def test_empty_input(interp):
    assert interp["empty_shape"] == [2, 0, 8]


_NO_TRITON = textwrap.dedent(
    f"""
    import json, sys
    sys.modules["triton"] = None  # makes `import triton` raise ImportError
    sys.modules["triton.language"] = None
    import torch
    from companion.rope import HAS_TRITON, apply_rope_triton
    import {MODULE} as rt
    try:
        apply_rope_triton(torch.randn(1, 4, 16))
        err = None
    except Exception as exc:
        err = [type(exc).__name__, str(exc)]
    print(json.dumps({{"HAS_TRITON": HAS_TRITON, "module_flag": rt.HAS_TRITON, "err": err}}))
    """
)


def test_import_without_triton_then_call_raises():
    out = last_json(run_python(_NO_TRITON))
    assert out["HAS_TRITON"] is False and out["module_flag"] is False
    assert out["err"] is not None and out["err"][0] == "RuntimeError", out["err"]
    assert "Triton is not installed: pip install -e '.[gpu]'" in out["err"][1]


_CPU_NO_INTERPRETER = textwrap.dedent(
    f"""
    import json, os
    import torch
    from {MODULE} import HAS_TRITON, apply_rope_triton
    x = torch.randn(1, 4, 16)
    res = {{"HAS_TRITON": HAS_TRITON}}
    for key in ("plain", "late_env"):
        if key == "late_env":
            os.environ["TRITON_INTERPRET"] = "1"  # too late: the kernel was defined compiled
        try:
            apply_rope_triton(x)
            res[key] = None
        except Exception as exc:
            res[key] = [type(exc).__name__, str(exc)]
    print(json.dumps(res))
    """
)


@needs_triton
def test_cpu_tensors_without_interpreter_raise():
    out = last_json(run_python(_CPU_NO_INTERPRETER))
    assert out["HAS_TRITON"] is True
    assert out["plain"] is not None and out["plain"][0] == "RuntimeError", out["plain"]
    assert "CUDA" in out["plain"][1] and "TRITON_INTERPRET=1" in out["plain"][1]
    assert out["late_env"] is not None and out["late_env"][0] == "RuntimeError", out["late_env"]
    assert "before the import" in out["late_env"][1]
