"""The Triton FlashAttention kernels (companion.attention.triton_kernel) against PyTorch SDPA.

There is no GPU in CI, so the kernels run under Triton's CPU interpreter. Triton
decides between compiling and interpreting when a kernel is *defined*, i.e. when
the module is imported, and another test module in this pytest process may
already have imported it (or triton) without the interpreter. So every check
that runs a kernel runs in a fresh subprocess started with ``TRITON_INTERPRET=1``
in its environment: one subprocess computes every case below and reports the
largest differences as JSON, and the tests read their row from it.

The interpreter runs the programs one after the other in NumPy with 16x16 blocks,
so the cases stay small (n <= 80, d <= 32, batch*heads <= 4) and the whole file
runs in well under a minute. bfloat16 is not covered here: the interpreter's
``tl.dot`` does not support it (triton-lang/triton#11584); the GPU benchmark
(benchmarks/attention_gpu.py) checks bfloat16 against SDPA on a CUDA machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap

import pytest
from triton_harness import interpreter_results, last_json, run_python

MODULE = "companion.attention.triton_kernel"

HAS_TRITON = importlib.util.find_spec("triton") is not None  # find_spec does not import triton here
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install -e '.[gpu]'); the interpreter tests need it"
)

# (id, batch, heads, n_q, n_k, d, causal, dtype, scale, grad)
CASES = [
    ("n1", 1, 2, 1, 1, 16, False, "float32", None, True),
    ("n1-causal", 1, 2, 1, 1, 16, True, "float32", None, True),
    ("n17", 2, 2, 17, 17, 16, False, "float32", None, True),
    ("n17-causal", 2, 2, 17, 17, 16, True, "float32", None, True),
    ("n70-d32", 1, 2, 70, 70, 32, False, "float32", None, True),
    ("n70-d32-causal", 1, 2, 70, 70, 32, True, "float32", None, True),
    ("n32-exact-blocks-causal", 1, 1, 32, 32, 32, True, "float32", None, True),
    ("nq17-nk40", 2, 1, 17, 40, 16, False, "float32", None, True),
    ("nq70-nk23", 1, 2, 70, 23, 32, False, "float32", None, True),
    ("nq40-nk17-causal-topleft", 1, 2, 40, 17, 16, True, "float32", None, True),
    ("nq33-nk70-causal-topleft", 1, 1, 33, 70, 32, True, "float32", None, True),
    ("scale0.3-causal", 1, 2, 45, 45, 16, True, "float32", 0.3, True),
    ("fp16", 1, 2, 40, 40, 32, False, "float16", None, True),
    ("fp16-causal", 1, 2, 40, 40, 32, True, "float16", None, True),
]
CASE_IDS = [c[0] for c in CASES]
TOL = {  # (atol, rtol); float16 is compared with SDPA in float32 on the same (rounded) inputs
    "float32": (2e-5, 1e-4),
    "float16": (4e-3, 1e-2),
}
GRAD_TOL = {"float32": (5e-5, 1e-4), "float16": (2e-2, 2e-2)}

_RUN_CASES = textwrap.dedent(
    """
    import json, sys, traceback
    import torch
    import torch.nn.functional as F
    from companion.attention import triton_kernel as tk

    out = {"HAS_TRITON": tk.HAS_TRITON, "INTERPRET": tk.INTERPRET, "cases": {}}
    if not tk.HAS_TRITON:
        print(json.dumps(out)); sys.exit(0)

    def diff(a, b):
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0

    for cid, b, h, n_q, n_k, d, causal, dtype, scale, grad in json.loads(sys.argv[1]):
        row = {}
        try:
            torch.manual_seed(0)
            dt = getattr(torch, dtype)
            q = torch.randn(b, h, n_q, d, dtype=dt, requires_grad=True)
            k = torch.randn(b, h, n_k, d, dtype=dt, requires_grad=True)
            v = torch.randn(b, h, n_k, d, dtype=dt, requires_grad=True)
            o = tk.triton_flash_attention(q, k, v, causal=causal, scale=scale)
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal, scale=scale)
            row.update(shape=list(o.shape), dtype=str(o.dtype).replace("torch.", ""), out=diff(o, ref),
                       ref_max=ref.abs().max().item())
            if grad:
                do = torch.randn_like(o)
                got = torch.autograd.grad(o, (q, k, v), do)
                want = torch.autograd.grad(ref, (q, k, v), do.float())
                row.update({f"d{n}": diff(g, w) for n, g, w in zip("qkv", got, want)})
                row.update({f"d{n}_max": w.abs().max().item() for n, w in zip("qkv", want)})
                row["grad_dtypes"] = [str(g.dtype).replace("torch.", "") for g in got]
        except Exception:
            row["error"] = traceback.format_exc()
        out["cases"][cid] = row

    # leading dimensions other than (batch, heads): (n, d) and (a, b, c, n, d)
    extra = {}
    try:
        torch.manual_seed(1)
        for shape_q, shape_k in (((20, 16), (9, 16)), ((2, 1, 2, 19, 16), (2, 1, 2, 21, 16))):
            q, k, v = torch.randn(shape_q), torch.randn(shape_k), torch.randn(shape_k)
            o = tk.triton_flash_attention(q, k, v)
            extra[str(len(shape_q))] = [list(o.shape), diff(o, F.scaled_dot_product_attention(q, k, v))]
    except Exception:
        extra["error"] = traceback.format_exc()
    out["shapes"] = extra

    # causal key-block skipping: with 16x16 blocks and n = 48, queries 0..31 never need keys 32..47.
    # Poison those values with NaN: a kernel that loaded them (even to multiply by p = 0) returns NaN.
    skip = {}
    try:
        torch.manual_seed(2)
        q, k, v = (torch.randn(1, 1, 48, 16) for _ in range(3))
        v_bad = v.clone()
        v_bad[..., 32:, :] = float("nan")
        o = tk.triton_flash_attention(q, k, v_bad, causal=True)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        skip["finite_rows"] = bool(torch.isfinite(o[..., :32, :]).all())
        skip["diff"] = diff(o[..., :32, :], ref[..., :32, :])
    except Exception:
        skip["error"] = traceback.format_exc()
    out["skip"] = skip

    # input validation
    errors = {}
    def expect(name, fn):
        try:
            fn()
            errors[name] = None
        except Exception as exc:
            errors[name] = [type(exc).__name__, str(exc)]
    x16 = torch.randn(1, 1, 8, 16)
    expect("d24", lambda: tk.triton_flash_attention(*(torch.randn(1, 1, 8, 24),) * 3))
    expect("dtype_mix", lambda: tk.triton_flash_attention(x16, x16.double(), x16))
    expect("float64", lambda: tk.triton_flash_attention(*(x16.double(),) * 3))
    expect("lead_mismatch", lambda: tk.triton_flash_attention(x16, torch.randn(2, 1, 8, 16), torch.randn(2, 1, 8, 16)))
    expect("bf16_interp", lambda: tk.triton_flash_attention(*(x16.bfloat16(),) * 3))
    out["errors"] = errors
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def interp() -> dict:
    return interpreter_results(_RUN_CASES, CASES, HAS_TRITON)


def _assert_close(err: float, scale: float, atol: float, rtol: float, what: str) -> None:
    assert err <= atol + rtol * scale, f"{what}: max |triton - sdpa| = {err:.3g} > {atol} + {rtol} * {scale:.3g}"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_sdpa(interp, case):
    cid, b, h, n_q, n_k, d, causal, dtype, scale, grad = case
    row = interp["cases"][cid]
    assert "error" not in row, row.get("error")
    assert row["shape"] == [b, h, n_q, d]
    assert row["dtype"] == dtype
    _assert_close(row["out"], row["ref_max"], *TOL[dtype], f"{cid} output")


@pytest.mark.parametrize("case", [c for c in CASES if c[-1]], ids=[c[0] for c in CASES if c[-1]])
def test_backward_matches_sdpa(interp, case):
    cid, *_, dtype, _scale, _grad = case
    row = interp["cases"][cid]
    assert "error" not in row, row.get("error")
    assert row["grad_dtypes"] == [dtype] * 3
    for name in ("dq", "dk", "dv"):
        _assert_close(row[name], row[f"{name}_max"], *GRAD_TOL[dtype], f"{cid} {name}")


def test_interpreter_run_writes_nothing_on_stderr(interp):
    # masked scores go through exp2(-inf) = 0, never exp2(large): no overflow warnings
    assert interp["stderr"].strip() == "", interp["stderr"][-2000:]


def test_leading_dims_are_flattened(interp):
    shapes = interp["shapes"]
    assert "error" not in shapes, shapes.get("error")
    assert shapes["2"][0] == [20, 16] and shapes["2"][1] < 2e-5
    assert shapes["5"][0] == [2, 1, 2, 19, 16] and shapes["5"][1] < 2e-5


def test_causal_skips_fully_masked_key_blocks(interp):
    skip = interp["skip"]
    assert "error" not in skip, skip.get("error")
    assert skip["finite_rows"], "rows 0..31 read keys 32..47, which lie above the diagonal: blocks not skipped"
    assert skip["diff"] < 2e-5


@pytest.mark.parametrize(
    "name, exc, words",
    [
        ("d24", "ValueError", "head dimension"),
        ("dtype_mix", "ValueError", "share a dtype"),
        ("float64", "ValueError", "float16, bfloat16 or float32"),
        ("lead_mismatch", "ValueError", "leading dimensions"),
        ("bf16_interp", "NotImplementedError", "bfloat16"),
    ],
)
def test_invalid_inputs_raise_clear_errors(interp, name, exc, words):
    got = interp["errors"][name]
    assert got is not None, f"{name}: no error raised"
    assert got[0] == exc and words in got[1], f"{name}: got {got}"


_NO_TRITON = textwrap.dedent(
    f"""
    import json, sys
    sys.modules["triton"] = None  # makes `import triton` raise ImportError
    sys.modules["triton.language"] = None
    import torch
    from {MODULE} import HAS_TRITON, triton_flash_attention
    try:
        triton_flash_attention(*(torch.randn(1, 1, 4, 16),) * 3)
        err = None
    except Exception as exc:
        err = [type(exc).__name__, str(exc)]
    print(json.dumps({{"HAS_TRITON": HAS_TRITON, "err": err}}))
    """
)


def test_import_without_triton_then_call_raises():
    out = last_json(run_python(_NO_TRITON))
    assert out["HAS_TRITON"] is False
    assert out["err"] is not None and out["err"][0] == "RuntimeError", out["err"]
    assert "Triton is not installed: pip install -e '.[gpu]'" in out["err"][1]


_CPU_NO_INTERPRETER = textwrap.dedent(
    f"""
    import json, os
    import torch
    from {MODULE} import HAS_TRITON, triton_flash_attention
    x = torch.randn(1, 1, 4, 16)
    res = {{"HAS_TRITON": HAS_TRITON}}
    for key in ("plain", "late_env"):
        if key == "late_env":
            os.environ["TRITON_INTERPRET"] = "1"  # too late: the kernels were defined compiled
        try:
            triton_flash_attention(x, x, x)
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
