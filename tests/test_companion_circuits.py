"""companion.circuits against independent references.

* Circuits: the batched torch evaluator against a per-gate Python loop and against
  closed forms (popcount parity, integer addition and comparison); sizes and depths of
  the constructions against their formulas.
* Formulas: the evaluator against Python's own ``not``/``and``/``or`` on the translated
  string; tree contraction against the evaluator, with its round count equal to
  floor(log2 leaves) on random, balanced and caterpillar shapes up to 10^5 symbols;
  chain-of-thought traces step by step.
* The tiny transformer: shapes, errors, the target encoding of one CoT step, determinism
  of training, and the shipped checkpoints (size and accuracy).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from companion.circuits import (
    Circuit,
    adder_circuit,
    all_inputs,
    average_sensitivity,
    bits_to_int,
    comparison_circuit,
    compose,
    contraction_schedule,
    cot_trace,
    evaluate_formula,
    evaluate_formula_parallel,
    formula_depth,
    int_to_bits,
    majority_circuit,
    majority_sensitivity,
    max_rounds_bound,
    parity_circuit,
    plot_circuit_sizes,
    plot_formula,
    random_formula,
    rake_label,
    reduce_step,
    sized_formula,
)
from companion.circuits import model as cm


def python_value(s: str) -> bool:
    """Independent reference: translate to a Python expression and let Python evaluate it."""
    expr = s.replace("!", " not ").replace("&", " and ").replace("|", " or ")
    return bool(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - the alphabet is checked below


def random_circuit(n_inputs: int, n_gates: int, g: torch.Generator) -> Circuit:
    c = Circuit(n_inputs)
    kinds = ["AND", "OR", "NOT", "MAJORITY", "THRESHOLD", "CONST"]
    for _ in range(n_gates):
        kind = kinds[int(torch.randint(len(kinds), (1,), generator=g))]
        w = c.n_wires
        if kind == "CONST":
            c.add("CONST", k=int(torch.randint(2, (1,), generator=g)))
        elif kind == "NOT":
            c.add("NOT", [int(torch.randint(w, (1,), generator=g))])
        else:
            m = int(torch.randint(1, min(w, 6) + 1, (1,), generator=g))
            ins = torch.randint(w, (m,), generator=g).tolist()  # repeated wires are allowed (counted twice)
            k = int(torch.randint(0, m + 2, (1,), generator=g)) if kind == "THRESHOLD" else None
            c.add(kind, ins, k=k)
    outs = torch.randint(c.n_wires, (3,), generator=g).tolist()
    return c.set_outputs(outs)


# ------------------------------------------------------------------ circuits
@pytest.mark.parametrize("seed", range(6))
def test_batched_evaluation_matches_per_gate_loop(seed):
    g = torch.Generator().manual_seed(seed)
    c = random_circuit(7, 60, g)
    x = all_inputs(7)
    got = c.evaluate(x)
    want = torch.tensor(c.evaluate_loop(x), dtype=torch.bool)
    assert got.dtype == torch.bool and got.shape == (128, 3)
    assert torch.equal(got, want)
    assert torch.equal(c.evaluate(x[5]), want[5])  # a single vector
    assert torch.equal(c.evaluate(x.long()), want)  # 0/1 integers


def test_gate_semantics_by_hand():
    c = Circuit(4)
    w = [c.add("AND", range(4)), c.add("OR", range(4)), c.add("MAJORITY", range(4)),
         c.add("THRESHOLD", range(4), k=2), c.add("NOT", [0]), c.add("CONST", k=1), c.add("CONST", k=0)]
    c.set_outputs(w)
    x = all_inputs(4)
    out = c.evaluate(x)
    s = x.sum(1)
    assert torch.equal(out[:, 0], s == 4)
    assert torch.equal(out[:, 1], s >= 1)
    assert torch.equal(out[:, 2], s >= 3)  # strict majority: a 2-2 tie is false
    assert torch.equal(out[:, 3], s >= 2)
    assert torch.equal(out[:, 4], ~x[:, 0])
    assert out[:, 5].all() and not out[:, 6].any()


def test_depth_size_fan_in_conventions():
    c = Circuit(3)
    a = c.add("AND", [0, 1])
    n = c.add("NOT", [a])  # NOT is free
    o = c.add("OR", [n, 2])
    c.set_outputs([o])
    assert (c.size, c.depth, c.fan_in) == (3, 2, 2)
    assert majority_circuit(9).depth == 1 and majority_circuit(9).size == 1 and majority_circuit(9).fan_in == 9


def test_errors_cycles_dangling_shapes_dtypes():
    with pytest.raises(ValueError, match="cycle"):
        Circuit.from_gates(2, [("AND", [0, 3]), ("OR", [2, 1])], [3])
    with pytest.raises(ValueError, match="dangling"):
        Circuit.from_gates(2, [("AND", [0, 7])], [2])
    with pytest.raises(ValueError, match="dangling"):
        Circuit(2).add("AND", [0, 5])
    with pytest.raises(ValueError, match="dangling"):
        Circuit(2).set_outputs([9])
    with pytest.raises(ValueError, match="fan-in 1"):
        Circuit(2).add("NOT", [0, 1])
    with pytest.raises(ValueError, match="THRESHOLD"):
        Circuit(2).add("THRESHOLD", [0, 1])
    with pytest.raises(ValueError, match="unknown gate"):
        Circuit(2).add("XOR", [0, 1])
    c = parity_circuit(3, "tc0")
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        c.evaluate(torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or 0/1"):
        c.evaluate(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="0 or 1"):
        c.evaluate(torch.full((4, 3), 2))
    with pytest.raises(ValueError, match="outputs"):
        Circuit(2).evaluate(torch.zeros(1, 2, dtype=torch.bool))


def test_from_gates_sorts_topologically():
    # gate 3 (wire 5) is listed first but reads wire 4, defined after it
    c = Circuit.from_gates(3, [("OR", [4, 2]), ("AND", [0, 1])], [3])
    x = all_inputs(3)
    assert torch.equal(c.evaluate(x)[:, 0], (x[:, 0] & x[:, 1]) | x[:, 2])


@pytest.mark.parametrize("n", range(1, 11))
def test_parity_both_bases_exhaustive(n):
    x = all_inputs(n)
    want = x.sum(1) % 2 == 1
    ac0, tc0 = parity_circuit(n, "ac0"), parity_circuit(n, "tc0")
    assert torch.equal(ac0.evaluate(x)[:, 0], want)
    assert torch.equal(tc0.evaluate(x)[:, 0], want)
    assert ac0.size == n + 2 ** (n - 1) + 1 and ac0.depth == (2 if n > 0 else 0)
    assert tc0.size == n + n // 2 + 1 and tc0.depth == 2
    assert set(g.kind for g in tc0.gates) <= {"THRESHOLD", "NOT"}


def test_parity_tc0_large_random():
    g = torch.Generator().manual_seed(3)
    for n in (31, 64, 200):
        x = torch.rand(500, n, generator=g) < torch.rand(500, 1, generator=g)
        assert torch.equal(parity_circuit(n, "tc0").evaluate(x)[:, 0], x.sum(1) % 2 == 1)
    with pytest.raises(ValueError, match="basis"):
        parity_circuit(3, "nc1")


def test_majority_exhaustive_and_random():
    for n in range(1, 11):
        x = all_inputs(n)
        assert torch.equal(majority_circuit(n).evaluate(x)[:, 0], 2 * x.sum(1) > n)
    x = torch.rand(1000, 64, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(majority_circuit(64).evaluate(x)[:, 0], x.sum(1) > 32)


@pytest.mark.parametrize("n", range(1, 6))
def test_adder_and_comparison_exhaustive(n):
    x = all_inputs(2 * n)
    a, b = bits_to_int(x[:, :n]), bits_to_int(x[:, n:])
    assert torch.equal(bits_to_int(adder_circuit(n).evaluate(x)), a + b)
    assert torch.equal(comparison_circuit(n).evaluate(x)[:, 0], a > b)


def test_adder_and_comparison_constant_depth_random():
    g = torch.Generator().manual_seed(1)
    for n in (8, 16, 24):
        a = torch.randint(0, 2**n, (300,), generator=g)
        b = torch.randint(0, 2**n, (300,), generator=g)
        b[:20] = a[:20]  # equal pairs: a > b is false
        x = torch.cat((int_to_bits(a, n), int_to_bits(b, n)), 1)
        add, cmp_ = adder_circuit(n), comparison_circuit(n)
        assert torch.equal(bits_to_int(add.evaluate(x)), a + b)
        assert torch.equal(cmp_.evaluate(x)[:, 0], a > b)
        assert add.depth == 5 and cmp_.depth == 4


def test_average_sensitivity_closed_forms():
    for n in (1, 2, 5, 8):
        par = parity_circuit(n, "tc0")
        assert average_sensitivity(lambda x: par.evaluate(x)[:, 0], n) == n
        assert average_sensitivity(lambda x: x.all(1), n) == pytest.approx(n / 2 ** (n - 1))
    for n in (1, 3, 7, 11):
        maj = majority_circuit(n)
        assert average_sensitivity(lambda x: maj.evaluate(x)[:, 0], n) == pytest.approx(majority_sensitivity(n))
    assert majority_sensitivity(101) == pytest.approx(math.sqrt(2 * 101 / math.pi), rel=0.01)
    with pytest.raises(ValueError):
        majority_sensitivity(4)


def test_bits_round_trip():
    v = torch.arange(64)
    assert torch.equal(bits_to_int(int_to_bits(v, 6)), v)
    assert torch.equal(bits_to_int(all_inputs(5)), torch.arange(32))


# ------------------------------------------------------------------ formulas
@pytest.mark.parametrize("depth", range(0, 9))
def test_evaluate_matches_python(depth):
    g = torch.Generator().manual_seed(depth)
    for _ in range(40):
        s = random_formula(depth, generator=g)
        assert set(s) <= set("01!&|()")
        assert formula_depth(s) == depth
        assert evaluate_formula(s) == python_value(s)
        value, rounds = evaluate_formula_parallel(s)
        assert value == python_value(s)
        leaves = sum(c in "01" for c in s)
        assert rounds == int(math.floor(math.log2(leaves)))


@pytest.mark.parametrize("bad", ["", "(", "0&1", "(0&1", "(0&1))", "!", "(!0)", "(0&&1)", "2", "((0&1)|1",
                                 "01", "(0&1)(1|0)", "( 0&1)", "!()", "(0&1|0)", ")0("])
def test_malformed_raise(bad):
    with pytest.raises(ValueError, match="malformed"):
        evaluate_formula(bad)
    with pytest.raises(ValueError, match="malformed"):
        evaluate_formula_parallel(bad)
    with pytest.raises(ValueError, match="malformed"):
        cot_trace(bad)


def test_non_string_raises():
    with pytest.raises(TypeError):
        evaluate_formula(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        random_formula(3, generator=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", ["random", "balanced", "caterpillar"])
def test_contraction_rounds_logarithmic_up_to_1e5_symbols(shape):
    g = torch.Generator().manual_seed(11)
    for leaves in (1, 2, 3, 4, 7, 100, 1000, 25000):
        s = sized_formula(leaves, generator=g, shape=shape)
        assert sum(c in "01" for c in s) == leaves
        value, rounds = evaluate_formula_parallel(s)
        assert value == evaluate_formula(s)
        assert rounds == int(math.floor(math.log2(leaves)))
        assert rounds <= max_rounds_bound(len(s)) <= math.log2(len(s))
    if shape == "caterpillar":
        assert formula_depth(s) >= leaves - 1  # depth 25000: recursion-free parsing


def test_deep_not_chain():
    s = "!" * 100001 + "0"
    assert evaluate_formula(s) is True
    assert evaluate_formula_parallel(s) == (True, 0)
    assert formula_depth(s) == 100001


def test_rake_label_brute_force():
    funcs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for op, x, fp, fs in itertools.product("&|", (0, 1), funcs, funcs):
        got = rake_label(op, x, fp, fs)
        for y in (0, 1):
            inner = fs[y]
            parent = (x & inner) if op == "&" else (x | inner)
            assert got[y] == fp[parent]
    assert compose((1, 0), (0, 0)) == (1, 1)  # NOT after constant 0 is constant 1
    with pytest.raises(ValueError):
        rake_label("^", 0, (0, 1), (0, 1))


def test_contraction_schedule_covers_every_node():
    s = "(!(0&1)|((1|0)&!!1))"
    t, removed = contraction_schedule(s)
    assert len(removed) == len(t.kind) and min(removed) >= 0
    assert max(removed) == evaluate_formula_parallel(s)[1]


@pytest.mark.parametrize("seed", range(5))
def test_cot_trace_steps(seed):
    g = torch.Generator().manual_seed(100 + seed)
    for depth in range(0, 8):
        s = random_formula(depth, generator=g)
        trace = cot_trace(s)
        assert trace[0] == s and trace[-1] in ("0", "1")
        assert len(trace) == depth + 1
        for i, step in enumerate(trace):
            assert formula_depth(step) == depth - i
            assert python_value(step) == python_value(s)
        assert trace[-1] == str(int(python_value(s)))
    assert reduce_step("(!0&(1|0))") == "(1&1)"
    assert reduce_step("!!0") == "!1"
    assert cot_trace("1") == ["1"]


def test_sized_formula_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        sized_formula(0, generator=g)
    with pytest.raises(ValueError):
        sized_formula(5, generator=g, shape="zigzag")


def test_plots_return_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_circuit_sizes([2, 4, 6])
    assert ax.get_yscale() == "log"
    ax2 = plot_formula("(!(0&1)|((1|0)&!!1))")
    assert "rounds" in ax2.get_title()
    with pytest.raises(ValueError):
        plot_formula(sized_formula(500, generator=torch.Generator().manual_seed(0)))
    plt.close("all")


# ------------------------------------------------------------------ the tiny transformer
def test_encode_and_step_targets():
    ids = cm.encode(["(0&1)", "1"])
    assert ids.shape == (2, 6) and ids.dtype == torch.long
    assert ids[0, 0] == cm.CLS and ids[1, 2] == cm.PAD
    g = torch.Generator().manual_seed(5)
    for depth in range(1, 7):
        for _ in range(20):
            s = random_formula(depth, generator=g)
            targets = torch.tensor(cm.step_targets(s))
            assert cm.decode_step(s, targets) == reduce_step(s)
    with pytest.raises(ValueError):
        cm.encode(["(0&1)"], max_len=3)


def test_model_shapes_and_errors():
    torch.manual_seed(0)
    model = cm.TinyTransformer(n_out=10)
    out = model(cm.encode(["(0&1)", "!1"]))
    assert out.shape == (2, 6, 10)
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        cm.TinyTransformer(n_out=2, d_model=30, n_heads=4)
    # padding does not change the answer for a formula
    a = model(cm.encode(["(0&1)"]))[0, :6]
    b = model(cm.encode(["(0&1)", "((0&1)|(1&1))"]))[0, :6]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_training_is_deterministic():
    from companion.circuits.train import train_model

    torch.set_num_threads(1)
    m1, l1 = train_model("cot", steps=3, batch=8, progress=False)
    m2, l2 = train_model("cot", steps=3, batch=8, progress=False)
    assert l1 == l2
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(v, w), k


CKPT = Path(cm.CHECKPOINT_DIR)


@pytest.mark.skipif(not (CKPT / "cot.pt").exists(), reason="checkpoints not built")
def test_shipped_checkpoints_small_and_working():
    total = sum(p.stat().st_size for p in CKPT.glob("*.pt"))
    assert total < 2 * 1024 * 1024, f"checkpoints are {total} bytes"
    direct, cot = cm.load_model("direct"), cm.load_model("cot")
    res = cm.accuracy_by_depth(direct, cot, [1, 3], 100, seed=7)
    assert res["direct"][0] > 0.95  # depth 1 is a lookup
    assert min(res["cot"]) > 0.9
    with pytest.raises(ValueError):
        cm.load_model("other")
    with pytest.raises(FileNotFoundError):
        cm.load_model("cot", path=CKPT / "missing.pt")


def test_cot_answer_handles_constants_and_invalid_steps():
    torch.manual_seed(0)
    model = cm.TinyTransformer(n_out=10)  # untrained: its steps are garbage, which must end as "invalid"
    ans, valid, traces = cm.cot_answer(model, ["1", "(0|!1)"], max_steps=3)
    assert bool(ans[0]) and bool(valid[0]) and traces[0] == ["1"]
    assert len(traces[1]) <= 4
    assert re.fullmatch(r"[01!&|()?]*", traces[1][-1])
