"""companion.circuits against independent references.

* Circuits: the batched torch evaluator against a per-gate Python loop (random circuits with
  CONST gates anywhere, levels made only of constants, constant outputs) and against closed
  forms (popcount parity, integer addition and comparison); sizes and depths of the
  constructions against their formulas and against a longest-path computation written here.
* Formulas: a parser written here (post-order ids and spans) against ``parse_formula``; the
  evaluator against Python's own ``not``/``and``/``or`` on the translated string; tree
  contraction against the evaluator, and its schedule replayed on a tree built here: every
  half-round conflict-free (no shared parent, no parent that is another rake's grandparent),
  order-independent, raking the odd-numbered leaves, with at most log2|s| rounds, on random,
  balanced and caterpillar shapes up to 10^5 symbols; chain-of-thought traces step by step.
* The tiny transformer: attention (relative bias, padding mask) against a softmax written out
  here; encoding, answers, datasets, plots; deterministic training; the shipped checkpoints
  against what ``companion.circuits.train`` makes (spec and sha256 always; a full retrain
  compared bit for bit with ``TM_SLOW=1``).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
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
    circuit_measures,
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
    parse_formula,
    plot_circuit_sizes,
    plot_formula,
    random_formula,
    rake_label,
    rake_schedule,
    reduce_step,
    sized_formula,
)
from companion.circuits import model as cm


def python_value(s: str) -> bool:
    """Independent reference: translate to a Python expression and let Python evaluate it."""
    expr = s.replace("!", " not ").replace("&", " and ").replace("|", " or ")
    return bool(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - the alphabet is checked below


def random_circuit(n_inputs: int, n_gates: int, g: torch.Generator, p_const: float = 1 / 6,
                   n_outputs: int = 3) -> Circuit:
    """A random circuit: CONST gates with probability p_const at every point of the construction
    (so gates at any depth read constants), other kinds uniform; outputs anywhere (inputs, constants)."""
    c = Circuit(n_inputs)
    kinds = ["AND", "OR", "NOT", "MAJORITY", "THRESHOLD"]
    for _ in range(n_gates):
        w = c.n_wires
        if w == 0 or float(torch.rand((), generator=g)) < p_const:
            c.add("CONST", k=int(torch.randint(2, (1,), generator=g)))
            continue
        kind = kinds[int(torch.randint(len(kinds), (1,), generator=g))]
        if kind == "NOT":
            c.add("NOT", [int(torch.randint(w, (1,), generator=g))])
        else:
            m = int(torch.randint(1, min(w, 6) + 1, (1,), generator=g))
            ins = torch.randint(w, (m,), generator=g).tolist()  # repeated wires are allowed (counted twice)
            k = int(torch.randint(0, m + 2, (1,), generator=g)) if kind == "THRESHOLD" else None
            c.add(kind, ins, k=k)
    outs = torch.randint(c.n_wires, (n_outputs,), generator=g).tolist()
    return c.set_outputs(outs)


def levels_of(c: Circuit) -> dict[int, list[str]]:
    """Gate kinds per level (1 + the highest level read; inputs are level 0), computed here."""
    lv = [0] * c.n_inputs
    by: dict[int, list[str]] = {}
    for gate in c.gates:
        lv.append(1 + max((lv[w] for w in gate.inputs), default=0))
        by.setdefault(lv[-1], []).append(gate.kind)
    return by


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


def test_small_random_circuits_with_constants_match_loop():
    """Many small circuits, constants at every point: levels made only of CONST gates, constant outputs."""
    g = torch.Generator().manual_seed(99)
    const_only_levels = const_outputs = 0
    for trial in range(300):
        n_in = trial % 5  # 0 inputs too
        c = random_circuit(n_in, 1 + trial % 12, g, p_const=0.5, n_outputs=1 + trial % 3)
        x = all_inputs(n_in)
        want = torch.tensor(c.evaluate_loop(x), dtype=torch.bool)
        got = c.evaluate(x)
        assert got.shape == want.shape and torch.equal(got, want), (trial, c.gates, c.outputs)
        const_only_levels += any(set(kinds) == {"CONST"} for kinds in levels_of(c).values())
        const_outputs += any(w >= n_in and c.gates[w - n_in].kind == "CONST" for w in c.outputs)
    # the cases this test is for did occur
    assert const_only_levels > 50 and const_outputs > 50, (const_only_levels, const_outputs)


def test_levels_of_only_constants_regression():
    # the CONST gate alone on its level, read by the AND of the next level
    c = Circuit(1)
    k = c.add("CONST", k=1)
    c.set_outputs([c.add("AND", [0, k])])
    x = torch.tensor([[0], [1]])
    assert c.evaluate(x).tolist() == [[False], [True]] == [[bool(v) for v in r] for r in c.evaluate_loop(x)]
    # a circuit whose only output is a constant, and one with a constant and an input as outputs
    for value in (0, 1):
        c = Circuit(2)
        c.set_outputs([c.add("CONST", k=value)])
        assert c.evaluate(all_inputs(2)).tolist() == [[bool(value)]] * 4
        c.set_outputs([2, 1])  # wire 2 is the CONST gate
        assert c.evaluate(all_inputs(2)).tolist() == [[bool(value), bool(r >> 1 & 1)] for r in range(4)]
    # no inputs at all: NOT(CONST 1) and OR(CONST 0, CONST 1)
    c = Circuit(0)
    one, zero = c.add("CONST", k=True), c.add("CONST", k=0)
    c.set_outputs([c.add("NOT", [one]), c.add("OR", [zero, one]), zero])
    assert c.evaluate(torch.zeros(3, 0, dtype=torch.bool)).tolist() == [[False, True, False]] * 3
    assert c.evaluate(torch.zeros(0, dtype=torch.bool)).tolist() == [False, True, False]


def test_plan_is_cached_and_rebuilt_when_the_circuit_changes():
    c = parity_circuit(5, "tc0")
    x = all_inputs(5)
    want = x.sum(1) % 2 == 1
    assert torch.equal(c.evaluate(x)[:, 0], want)
    plan = c._plan_on(x.device)
    assert c._plan_on(x.device) is plan  # uploaded once per device, reused by every call
    assert torch.equal(c.evaluate(x)[:, 0], want)
    a = c.add("AND", [0, 1])  # a changed circuit gets a new plan
    c.set_outputs([c.outputs[0], a])
    assert c._plan_on(x.device) is not plan
    assert torch.equal(c.evaluate(x), torch.stack([want, x[:, 0] & x[:, 1]], 1))


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


def test_errors_wire_ids_counts_and_values():
    with pytest.raises(TypeError, match="n_inputs"):
        Circuit(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_inputs"):
        Circuit(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_inputs"):
        Circuit(-1)
    with pytest.raises(TypeError, match="0.5"):
        Circuit(2).add("AND", [0.5, 1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="bool"):
        Circuit(2).add("AND", [True, 1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence"):
        Circuit(2).add("AND", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kind"):
        Circuit(2).add(None, [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer k"):
        Circuit(2).add("THRESHOLD", [0, 1], k=1.5)
    with pytest.raises(ValueError, match="integer k"):
        Circuit(2).add("THRESHOLD", [0, 1], k=True)
    with pytest.raises(ValueError, match="k = 0 or 1"):
        Circuit(2).add("CONST", k=2)
    with pytest.raises(ValueError, match="no inputs"):
        Circuit(2).add("CONST", [0], k=1)
    with pytest.raises(TypeError, match="1.0"):
        Circuit(2).set_outputs([1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one output"):
        Circuit(2).set_outputs([])
    with pytest.raises(TypeError, match="gate 0"):
        Circuit.from_gates(2, ["AND"], [2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="n_inputs"):
        Circuit.from_gates(True, [("AND", [0, 1])], [2])  # type: ignore[arg-type]
    # integer-like wire ids are fine: NumPy-free check with a 0-d integer tensor
    c = Circuit(2)
    c.set_outputs([c.add("AND", [torch.tensor(0), 1])])
    assert c.gates[0].inputs == (0, 1) and all(type(w) is int for w in c.gates[0].inputs)
    with pytest.raises(TypeError, match="integer tensor"):
        int_to_bits(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="integer torch.Tensor"):
        int_to_bits([1, 2], 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        int_to_bits(torch.tensor([3, -1]), 3)
    with pytest.raises(ValueError, match="0..63"):
        int_to_bits(torch.tensor([3]), 64)
    with pytest.raises(TypeError, match="0/1"):
        bits_to_int(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="0 or 1"):
        bits_to_int(torch.tensor([[0, 2]]))


def reference_depth(c: Circuit) -> int:
    """Longest input-to-output path, NOT and CONST free: a memoised walk from each output down (written here)."""
    memo: dict[int, int] = {}

    def depth(w: int) -> int:
        todo = [w]
        while todo:
            v = todo[-1]
            if v in memo:
                todo.pop()
                continue
            if v < c.n_inputs:
                memo[v] = 0
                todo.pop()
                continue
            gate = c.gates[v - c.n_inputs]
            missing = [u for u in gate.inputs if u not in memo]
            if missing:
                todo.extend(missing)
                continue
            below = max((memo[u] for u in gate.inputs), default=0)
            memo[v] = below + (0 if gate.kind in ("NOT", "CONST") else 1)
            todo.pop()
        return memo[w]

    return max(depth(w) for w in c.outputs)


def test_circuit_measures_against_closed_forms_and_a_reference():
    cases = []
    for n in range(1, 9):
        cases += [
            (majority_circuit(n), {"size": 1, "depth": 1, "fan_in": n, "wires": n}),
            (parity_circuit(n, "tc0"), {"size": n + n // 2 + 1, "depth": 2, "fan_in": n,
                                        "wires": n * n + n // 2 + n}),
            (parity_circuit(n, "ac0"), {"size": n + 2 ** (n - 1) + 1, "depth": 2, "fan_in": max(n, 2 ** (n - 1)),
                                        "wires": n + n * 2 ** (n - 1) + 2 ** (n - 1)}),
            (comparison_circuit(n), {"size": 6 * n + 1, "depth": 2 if n == 1 else 4, "fan_in": max(n, n + 1),
                                     "wires": 2 * n + 6 * n + sum(2 + (n - 1 - i) for i in range(n)) + n}),
        ]
    for c, want in cases:
        assert circuit_measures(c) == want, (c, want)
    g = torch.Generator().manual_seed(5)
    for trial in range(40):
        c = random_circuit(1 + trial % 6, 1 + 3 * trial, g, p_const=0.2)
        got = circuit_measures(c)
        assert got == {"size": len(c.gates), "depth": reference_depth(c),
                       "fan_in": max(len(gate.inputs) for gate in c.gates),
                       "wires": sum(len(gate.inputs) for gate in c.gates)}


def test_construction_depths_match_their_docstrings():
    # adder: 2 at n = 1, 4 at n = 2, 5 from n = 3 on; comparison: 2 at n = 1, 4 from n = 2 on
    assert [reference_depth(adder_circuit(n)) for n in range(1, 9)] == [2, 4, 5, 5, 5, 5, 5, 5]
    assert [adder_circuit(n).depth for n in range(1, 9)] == [2, 4, 5, 5, 5, 5, 5, 5]
    assert [reference_depth(comparison_circuit(n)) for n in range(1, 9)] == [2] + [4] * 7
    assert adder_circuit(32).size == 751


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


def reference_parse(s: str) -> tuple[list[str], list[int], list[int], list[tuple[int, int]]]:
    """A parser written here for well-formed formulas: (kind, left, right, span) per node, post-order ids.

    Post-order: a node gets its id when it is complete (a constant at once, a NOT when its operand is,
    a binary node at its ')'), so children come before parents and left subtrees before right ones.
    ``span`` is the node's substring ``s[start:end]``. Iterative: fine for any nesting depth.
    """
    kind: list[str] = []
    left: list[int] = []
    right: list[int] = []
    span: list[tuple[int, int]] = []
    stack: list[tuple] = []

    def new(k: str, a: int, b: int, start: int, end: int) -> int:
        kind.append(k), left.append(a), right.append(b), span.append((start, end))
        return len(kind) - 1

    def complete(v: int, start: int, end: int) -> None:
        while stack and stack[-1][0] == "!":
            start = stack.pop()[1]
            v = new("!", v, -1, start, end)
        stack.append(("node", v))

    for pos, ch in enumerate(s):
        if ch in "01":
            complete(new(ch, -1, -1, pos, pos + 1), pos, pos + 1)
        elif ch in "(!":
            stack.append((ch, pos))
        elif ch in "&|":
            stack.append(("op", ch))
        else:
            (_, b), (_, op), (_, a), (_, start) = stack.pop(), stack.pop(), stack.pop(), stack.pop()
            complete(new(op, a, b, start, pos + 1), start, pos + 1)
    assert len(stack) == 1
    return kind, left, right, span


def reference_value(s: str) -> int:
    """Value of a formula from reference_parse, bottom-up (for strings too deeply nested for python_value)."""
    kind, left, right, _ = reference_parse(s)
    val: list[int] = []
    for k, a, b in zip(kind, left, right):
        val.append(int(k) if k in "01" else 1 - val[a] if k == "!" else
                   (val[a] & val[b]) if k == "&" else (val[a] | val[b]))
    return val[-1]


def test_parse_formula_and_tree_against_reference_parser():
    g = torch.Generator().manual_seed(21)
    formulas = ["0", "!1", "(0&1)", "!!(1|!0)", "(!(0&1)|((1|0)&!!1))"]
    formulas += [random_formula(d, generator=g) for d in range(9) for _ in range(6)]
    formulas += [sized_formula(n, generator=g, shape=sh) for n in (5, 60) for sh in ("random", "caterpillar")]
    for s in formulas:
        kind, left, right, span = reference_parse(s)
        t = parse_formula(s)
        assert (t.kind, t.left, t.right) == (kind, left, right), s
        assert t.root == len(kind) - 1 and t.n_leaves == sum(c in "01" for c in s)
        values = t.values()
        heights = t.depth()
        for v, (a, b) in enumerate(span):
            sub = s[a:b]
            assert values[v] == int(python_value(sub)), (s, sub)
            assert heights[v] == formula_depth(sub)
        assert heights[t.root] == formula_depth(s) and values[t.root] == reference_value(s)
    with pytest.raises(TypeError):
        parse_formula(b"(0&1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="position 2"):
        parse_formula("(0(")


def replay_rakes(s: str, halves: list[list[int]]) -> tuple[int, list[int]]:
    """Replay a rake schedule on a tree built here; assert every half-round is a valid parallel step.

    Returns ``(value, leaves left after each round)``. NOT chains are folded into edge labels (functions
    {0,1} -> {0,1} as (f(0), f(1))); a rake of leaf l under parent p with sibling q hangs q where p was
    with label y -> f_p(op(x, f_q(y))), x = f_l(value of l), computed pointwise.
    """
    kind, left, right, _ = reference_parse(s)

    def skip(v: int) -> tuple[int, tuple[int, int]]:
        neg = 0
        while kind[v] == "!":
            v, neg = left[v], neg ^ 1
        return v, ((1, 0) if neg else (0, 1))

    root, root_label = skip(len(kind) - 1)
    parent: dict[int, int | None] = {root: None}
    label = {root: root_label}
    child: dict[int, list[int]] = {}
    todo = [root]
    while todo:
        v = todo.pop()
        if kind[v] in "&|":
            child[v] = []
            for c in (left[v], right[v]):
                c, f = skip(c)
                parent[c], label[c] = v, f
                child[v].append(c)
                todo.append(c)
    state = {"parent": parent, "child": child, "label": label, "root": root}

    def rake(st: dict, leaf: int) -> None:
        par, ch, lab = st["parent"], st["child"], st["label"]
        p = par[leaf]
        q = ch[p][1] if ch[p][0] == leaf else ch[p][0]
        x = lab[leaf][int(kind[leaf])]
        fp, fq = lab[p], lab[q]
        lab[q] = tuple(fp[(x & fq[y]) if kind[p] == "&" else (x | fq[y])] for y in (0, 1))
        gp = par[p]
        par[q] = gp
        if gp is None:
            st["root"] = q
        else:
            ch[gp][ch[gp].index(p)] = q
        for gone in (leaf, p):
            del par[gone], lab[gone]
        del ch[p]

    assert len(halves) % 2 == 0
    remaining = []
    for i, half in enumerate(halves):
        par = state["parent"]
        leaves_now = sorted(v for v in par if kind[v] in "01")  # post-order ids: left to right
        if i % 2 == 0:  # a round rakes the odd-numbered leaves (1st, 3rd, ...): left children, then right
            odd = leaves_now[0::2]
            assert sorted(half + halves[i + 1]) == odd, f"round {i // 2 + 1} does not rake the odd-numbered leaves"
        assert all(leaf in par and kind[leaf] in "01" and par[leaf] is not None for leaf in half)
        parents = [par[leaf] for leaf in half]
        assert len(set(parents)) == len(parents), f"half-round {i}: two rakes share a parent"
        grandparents = {par[p] for p in parents}
        assert not set(parents) & grandparents, f"half-round {i}: a rake's parent is another's grandparent"
        # conflict-free rakes commute: forward and backward order give the same tree
        other = copy.deepcopy(state)
        for leaf in half:
            rake(state, leaf)
        for leaf in reversed(half):
            rake(other, leaf)
        assert state == other, f"half-round {i}: the result depends on the order of the rakes"
        if i % 2 == 1:
            remaining.append(sum(kind[v] in "01" for v in state["parent"]))
    assert len(state["parent"]) == 1 and kind[state["root"]] in "01"
    return state["label"][state["root"]][int(kind[state["root"]])], remaining


@pytest.mark.parametrize("shape", ["formula", "random", "balanced", "caterpillar"])
def test_contraction_half_rounds_conflict_free_and_logarithmic(shape):
    g = torch.Generator().manual_seed(12)
    if shape == "formula":
        formulas = [random_formula(d, generator=g) for d in range(1, 11) for _ in range(5)]
    else:
        formulas = [sized_formula(n, generator=g, shape=shape, p_not=0.3) for n in (1, 2, 3, 5, 8, 33, 100, 2500)]
    for s in formulas:
        tree, halves = rake_schedule(s)
        assert (tree.kind, tree.left, tree.right) == reference_parse(s)[:3]
        value, remaining = replay_rakes(s, halves)
        assert value == reference_value(s) == int(evaluate_formula(s))
        leaves = sum(c in "01" for c in s)
        want_remaining, n_left = [], leaves
        while n_left > 1:
            n_left //= 2
            want_remaining.append(n_left)
        assert remaining == want_remaining  # every round halves the leaves (rounded down)
        rounds = len(halves) // 2
        assert rounds == evaluate_formula_parallel(s)[1]
        # an independent bound: L <= (|s| + 3) / 4 leaves (each binary node adds '(', op, ')'),
        # so rounds <= log2((|s| + 3) / 4) <= log2 |s|
        assert rounds <= math.log2((len(s) + 3) / 4) + 1e-12 and rounds <= math.log2(len(s))


def test_contraction_schedule_on_a_1e5_symbol_caterpillar():
    s = sized_formula(25000, generator=torch.Generator().manual_seed(13), shape="caterpillar", p_not=0.2)
    assert len(s) > 100_000 - 4000 and formula_depth(s) >= 24999
    value, remaining = replay_rakes(s, rake_schedule(s)[1])
    assert value == reference_value(s) and len(remaining) == 14 <= math.log2(len(s))


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
    assert ids[0].tolist() == [cm.CLS] + [cm.TOKENS.index(c) for c in "(0&1)"]
    assert ids[1].tolist() == [cm.CLS, cm.TOKENS.index("1")] + [cm.PAD] * 4
    g = torch.Generator().manual_seed(5)
    for depth in range(1, 7):
        for _ in range(20):
            s = random_formula(depth, generator=g)
            targets = torch.tensor(cm.step_targets(s))
            assert cm.decode_step(s, targets) == reduce_step(s)
    with pytest.raises(ValueError):
        cm.encode(["(0&1)"], max_len=3)


def test_encode_and_answer_errors_are_clear():
    with pytest.raises(ValueError, match=r"'2' at position 3"):
        cm.encode(["(0&2)"])
    with pytest.raises(ValueError, match=r"'_' at position 0"):
        cm.encode(["_"])  # the BLANK token is an output, not an input symbol
    with pytest.raises(ValueError, match="empty"):
        cm.encode([])
    with pytest.raises(ValueError, match="empty string"):
        cm.encode(["1", ""])
    with pytest.raises(TypeError, match="list of str"):
        cm.encode("(0&1)")  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = cm.TinyTransformer(n_out=10)
    with pytest.raises(ValueError, match="cot_answer: formulas is empty"):
        cm.cot_answer(model, [])
    with pytest.raises(ValueError, match="direct_answer: formulas is empty"):
        cm.direct_answer(model, [])
    with pytest.raises(ValueError, match="bool|non-negative"):
        random_formula(True, generator=torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p_not"):
        random_formula(2, generator=torch.Generator(), p_not=1.5)
    with pytest.raises(ValueError, match="n_leaves"):
        sized_formula(True, generator=torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_len"):
        cm.formula_dataset(3, [6], generator=torch.Generator(), max_len=5)
    with pytest.raises(ValueError, match="depths"):
        cm.formula_dataset(3, [], generator=torch.Generator())


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


def reference_block(blk, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """One encoder block written out in float64: scores q.k / sqrt(d_head) + rel[h, clip(j - i)], padded keys
    dropped, softmax by exp / sum, loops over batch, heads, queries and keys."""
    p = {k: v.detach().double() for k, v in blk.state_dict().items()}
    x = x.detach().double()
    b, n, d = x.shape
    h, r = blk.n_heads, blk.max_rel
    dh = d // h

    def ln(y, name):
        mu = y.mean(-1, keepdim=True)
        var = ((y - mu) ** 2).mean(-1, keepdim=True)
        return (y - mu) / torch.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    qkv = ln(x, "ln1") @ p["qkv.weight"].T + p["qkv.bias"]
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    out = torch.zeros(b, n, d, dtype=torch.float64)
    for bi in range(b):
        keys = [j for j in range(n) if not pad[bi, j]]
        for hi in range(h):
            sl = slice(hi * dh, (hi + 1) * dh)
            for i in range(n):
                scores = [float(q[bi, i, sl] @ k[bi, j, sl]) / math.sqrt(dh)
                          + float(p["rel"][hi, min(max(j - i, -r), r) + r]) for j in keys]
                top = max(scores)
                w = [math.exp(sc - top) for sc in scores]
                total = sum(w)
                out[bi, i, sl] = sum((wj / total) * v[bi, j, sl] for wj, j in zip(w, keys))
    x = x + out @ p["proj.weight"].T + p["proj.bias"]
    hidden = ln(x, "ln2") @ p["mlp.0.weight"].T + p["mlp.0.bias"]
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    return x + hidden @ p["mlp.2.weight"].T + p["mlp.2.bias"]


def test_attention_with_relative_bias_and_padding_matches_manual_softmax():
    torch.manual_seed(3)
    model = cm.TinyTransformer(n_out=10, n_layers=2, d_model=16, n_heads=2, d_ff=24, max_rel=3)
    with torch.no_grad():
        for blk in model.blocks:  # the bias starts at 0: make it matter, and span more than max_rel
            blk.rel.copy_(torch.randn_like(blk.rel))
    ids = cm.encode(["(0&1)", "!((1|0)&!1)", "1"])  # padded rows, offsets beyond +-3
    pad = ids == cm.PAD
    assert pad.any() and ids.shape[1] > 2 * 3 + 1
    x = model.embed(ids)
    want = x.detach().double()
    for blk in model.blocks:
        got = blk(x, pad)
        want = reference_block(blk, x, pad)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        x = got
    logits = model(ids)
    ref = torch.nn.functional.layer_norm(want, (16,), model.ln.weight.double(), model.ln.bias.double())
    ref = ref @ model.head.weight.double().T + model.head.bias.double()
    torch.testing.assert_close(logits.double(), ref, atol=1e-5, rtol=1e-5)
    # a padded key gets no weight: changing the embedding of PAD changes no unpadded output
    with torch.no_grad():
        model.embed.weight[cm.PAD] += 10.0
    torch.testing.assert_close(model(ids)[~pad], logits[~pad], atol=1e-5, rtol=1e-5)


def test_direct_answer_is_the_argmax_at_cls():
    torch.manual_seed(4)
    model = cm.TinyTransformer(n_out=2)
    g = torch.Generator().manual_seed(8)
    formulas = [random_formula(int(d), generator=g) for d in torch.randint(0, 6, (23,), generator=g)]
    with torch.no_grad():  # untrained, the model leans one way: move the head's bias between two middle margins
        margin = (lambda lg: lg[:, 1] - lg[:, 0])(model(cm.encode(formulas))[:, 0]).sort().values
        model.head.bias[1] -= float(margin[10] + margin[11]) / 2
    got = cm.direct_answer(model, formulas)
    with torch.no_grad():
        logits = torch.stack([model(cm.encode([s]))[0, 0] for s in formulas])  # one at a time, no padding
    want = logits[:, 1] > logits[:, 0]
    assert got.dtype == torch.bool and got.shape == (23,) and torch.equal(got, want)
    assert 0 < int(want.sum()) < 23
    assert torch.equal(cm.direct_answer(model, formulas, batch_size=4), want)


def test_formula_dataset_is_filtered_random_formula():
    for seed, depths, max_len in ((0, [1, 2, 3], 128), (1, [4, 6], 30), (2, [0], 5)):
        got = cm.formula_dataset(40, depths, generator=torch.Generator().manual_seed(seed), max_len=max_len)
        # the same draws, written here: random_formula at the cycling depth, too-long ones redrawn
        g = torch.Generator().manual_seed(seed)
        want: list[str] = []
        while len(want) < 40:
            s = random_formula(depths[len(want) % len(depths)], generator=g)
            if len(s) <= max_len:
                want.append(s)
        assert got == want
        assert [len(reference_parse(s)[0]) > 0 and formula_depth(s) for s in got] == \
            [depths[i % len(depths)] for i in range(40)]
        assert max(len(s) for s in got) <= max_len
    a = cm.formula_dataset(10, [3], generator=torch.Generator().manual_seed(0))
    b = cm.formula_dataset(10, [3], generator=torch.Generator().manual_seed(1))
    assert a != b and cm.formula_dataset(0, [3], generator=torch.Generator()) == []


def test_cot_answer_handles_constants_and_invalid_steps():
    torch.manual_seed(0)
    model = cm.TinyTransformer(n_out=10)  # untrained: its steps are garbage, which must end as "invalid"
    ans, valid, traces = cm.cot_answer(model, ["1", "(0|!1)"], max_steps=3)
    assert bool(ans[0]) and bool(valid[0]) and traces[0] == ["1"]
    assert len(traces[1]) <= 4
    assert re.fullmatch(r"[01!&|()?]*", traces[1][-1])


class ReduceStepModel(torch.nn.Module):
    """A 'model' whose logits are the exact CoT step targets: cot_answer must then reproduce cot_trace."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.full((*ids.shape, cm.BLANK + 1), -1.0)
        for i, row in enumerate(ids.tolist()):
            s = "".join(cm.TOKENS[t] for t in row[1:] if t != cm.PAD)
            for j, t in enumerate(cm.step_targets(s)):
                out[i, 1 + j, t] = 1.0
        return out


def test_cot_answer_with_an_exact_step_model_follows_cot_trace():
    g = torch.Generator().manual_seed(9)
    formulas = [random_formula(d, generator=g) for d in range(0, 8)]
    ans, valid, traces = cm.cot_answer(ReduceStepModel(), formulas, batch_size=3)
    assert valid.all() and traces == [cot_trace(s) for s in formulas]
    assert ans.tolist() == [python_value(s) for s in formulas]
    ans, valid, _ = cm.cot_answer(ReduceStepModel(), formulas, max_steps=3)
    assert valid.tolist() == [formula_depth(s) <= 3 for s in formulas]


def test_show_formula_title_states_the_truth_and_the_models_answers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(1)
    direct = cm.TinyTransformer(n_out=2)
    s = "(!(0&1)|((1|0)&!!1))"
    with torch.no_grad():
        logits = direct(cm.encode([s]))[0, 0]
    leaves = sum(c in "01" for c in s)
    ax = cm.show_formula(s, direct, ReduceStepModel())
    title = ax.get_title()
    assert title.startswith(f"true value {int(python_value(s))}, depth {formula_depth(s)}, "
                            f"{int(math.floor(math.log2(leaves)))} contraction rounds")
    assert f"direct model: {int(logits[1] > logits[0])}" in title
    assert f"CoT model: {int(python_value(s))} after {formula_depth(s)} steps" in title
    assert len(ax.collections) == len(reference_parse(s)[0])  # one marker per node
    torch.manual_seed(0)
    title = cm.show_formula("(0|!1)", cot=cm.TinyTransformer(n_out=10)).get_title()
    assert "CoT model: invalid" in title and "direct" not in title
    plt.close("all")


def test_plot_accuracy_draws_the_given_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = {"depth": [1, 2, 3], "direct": [1.0, 0.8, 0.6], "cot": [1.0, 1.0, 0.9], "baseline": [0.5, 0.55, 0.5],
           "direct4": [1.0, 0.9, 0.7], "cot_valid": [1.0] * 3, "length": [5.0, 9.0, 14.0]}
    ax = cm.plot_accuracy(res, train_depths=[1, 2], labels={"direct": "direct, 2 layers", "direct4": "4 layers"})
    lines = {line.get_label(): line for line in ax.get_lines()}
    for key, label in (("cot", "chain of thought (one step per pass)"), ("direct", "direct, 2 layers"),
                       ("direct4", "4 layers"), ("baseline", "always the more frequent value")):
        assert list(lines[label].get_xdata()) == res["depth"] and list(lines[label].get_ydata()) == res[key]
    assert len(lines) == 4 and ax.get_xlabel() == "formula depth d" and ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "trained depths"
    res["cot"] = [float("nan")] * 3  # a missing model is not drawn
    assert "chain of thought (one step per pass)" not in [line.get_label() for line in cm.plot_accuracy(res).get_lines()]
    with pytest.raises(KeyError, match="direct8"):
        cm.plot_accuracy(res, labels={"direct8": "8 layers"})
    with pytest.raises(ValueError, match="entries"):
        cm.plot_accuracy({**res, "direct": [1.0]})
    plt.close("all")


def test_accuracy_by_depth_scores_every_model_on_the_same_formulas():
    torch.manual_seed(2)
    a, b = cm.TinyTransformer(n_out=2), cm.TinyTransformer(n_out=2, n_layers=1)
    res = cm.accuracy_by_depth(a, ReduceStepModel(), [1, 3], 30, seed=4, more_direct={"one_layer": b})
    g = torch.Generator().manual_seed(4)
    for i, d in enumerate([1, 3]):
        formulas = cm.formula_dataset(30, [d], generator=g)
        truth = torch.tensor([python_value(s) for s in formulas])
        for name, m in (("direct", a), ("one_layer", b)):
            assert res[name][i] == pytest.approx((cm.direct_answer(m, formulas) == truth).float().mean().item())
        assert res["cot"][i] == 1.0 and res["cot_valid"][i] == 1.0
        assert res["baseline"][i] == pytest.approx(max(truth.float().mean().item(), 1 - truth.float().mean().item()))
        assert res["length"][i] == pytest.approx(sum(map(len, formulas)) / 30)
    assert res["cot_wrong_lengths"] == []
    with pytest.raises(ValueError, match="taken"):
        cm.accuracy_by_depth(a, None, [1], 5, more_direct={"cot": b})


# ------------------------------------------------------------------ training and the shipped checkpoints
def test_training_is_deterministic_whatever_the_callers_threads():
    from companion.circuits.train import state_sha256, train_model

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        m1, l1 = train_model("cot", steps=4, batch=8, progress=False)
        torch.set_num_threads(2)  # train_model runs on one thread itself, and restores the caller's setting
        m2, l2 = train_model("cot", steps=4, batch=8, progress=False)
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
    assert l1 == l2
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(v, w), k
    assert state_sha256(m1.state_dict()) == state_sha256(m2.state_dict())
    m3, _ = train_model("cot", steps=4, batch=8, progress=False, seed=1)
    assert state_sha256(m3.state_dict()) != state_sha256(m1.state_dict())


def test_train_script_writes_and_checks_checkpoints(tmp_path, capsys):
    from companion.circuits.train import main, run_spec, state_sha256

    assert main(["--kinds", "direct", "--steps", "3", "--out", str(tmp_path)]) == 0
    blob = torch.load(tmp_path / "direct.pt", weights_only=True)
    assert blob["meta"]["spec"] == run_spec("direct", steps=3)
    assert blob["meta"]["state_sha256"] == state_sha256(blob["state_dict"])
    assert main(["--kinds", "direct", "--steps", "3", "--out", str(tmp_path), "--check"]) == 0
    assert main(["--kinds", "direct", "--steps", "4", "--out", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "identical to" in out and "DIFFERENT from" in out
    with pytest.raises(ValueError, match="unknown or fixed"):
        run_spec("direct", layers=3)


CKPT = Path(cm.CHECKPOINT_DIR)


def test_state_sha256_reads_every_bit():
    from companion.circuits.train import state_sha256

    torch.manual_seed(0)
    sd = cm.TinyTransformer(n_out=2).state_dict()
    base = state_sha256(sd)
    assert base == state_sha256({k: sd[k].clone() for k in reversed(list(sd))})  # key order does not matter
    flipped = {k: v.clone() for k, v in sd.items()}
    w = flipped["head.weight"].view(-1).view(torch.int32)
    w[5] ^= 1  # the last bit of one float
    assert state_sha256(flipped) != base
    assert state_sha256({**sd, "head.weight": sd["head.weight"].double()}) != base


@pytest.mark.skipif(not (CKPT / "cot.pt").exists(), reason="checkpoints not built")
def test_shipped_checkpoints_are_what_the_script_makes():
    """Fast: each checkpoint's config and spec are train.py's defaults and its weights hash to the recorded sha256."""
    from companion.circuits import train

    assert set(cm.MODEL_KINDS) == set(train.MODELS) == {p.stem for p in CKPT.glob("*.pt")}
    for kind in cm.MODEL_KINDS:
        blob = torch.load(CKPT / f"{kind}.pt", map_location="cpu", weights_only=True)
        spec = train.run_spec(kind)
        assert blob["meta"]["spec"] == spec, kind
        assert blob["config"] == train._model_for(spec).config, kind
        assert blob["meta"]["state_sha256"] == train.state_sha256(blob["state_dict"]), kind
        assert set(blob["meta"]) == {"spec", "final_loss", "torch", "state_sha256"}
        assert blob["config"]["n_layers"] == {"direct": 2, "direct4": 4, "cot": 2}[kind]


@pytest.mark.skipif(not (CKPT / "cot.pt").exists(), reason="checkpoints not built")
def test_shipped_checkpoints_small_and_working():
    total = sum(p.stat().st_size for p in CKPT.glob("*.pt"))
    assert total < 2 * 1024 * 1024, f"checkpoints are {total} bytes"
    direct, direct4, cot = cm.load_model("direct"), cm.load_model("direct4"), cm.load_model("cot")
    assert len(direct4.blocks) == 4 and len(direct.blocks) == 2
    res = cm.accuracy_by_depth(direct, cot, [1, 3], 100, seed=7, more_direct={"direct4": direct4})
    assert res["direct"][0] > 0.95 and res["direct4"][0] > 0.95  # depth 1 is a lookup
    assert min(res["cot"]) > 0.9
    with pytest.raises(ValueError):
        cm.load_model("other")
    with pytest.raises(FileNotFoundError):
        cm.load_model("cot", path=CKPT / "missing.pt")


@pytest.mark.skipif(os.environ.get("TM_SLOW") != "1", reason="retrains every model (minutes of CPU): set TM_SLOW=1")
@pytest.mark.parametrize("kind", cm.MODEL_KINDS)
def test_retraining_reproduces_the_shipped_checkpoint_bit_for_bit(kind):
    from companion.circuits import train

    blob = torch.load(CKPT / f"{kind}.pt", map_location="cpu", weights_only=True)
    if blob["meta"]["torch"] != str(torch.__version__):
        pytest.skip(f"checkpoint made with torch {blob['meta']['torch']}, this is {torch.__version__}: "
                    "bits may differ")
    model, losses = train.train_model(kind, progress=False)
    state = model.state_dict()
    assert set(state) == set(blob["state_dict"])
    differ = [k for k in state if not torch.equal(state[k], blob["state_dict"][k])]
    assert not differ, f"{kind}: {len(differ)} tensors differ from the shipped checkpoint, e.g. {differ[:3]}"
    assert train.state_sha256(state) == blob["meta"]["state_sha256"]
    assert sum(losses[-50:]) / 50 == blob["meta"]["final_loss"]
