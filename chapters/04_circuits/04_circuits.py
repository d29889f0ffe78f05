# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Circuit limits: what a constant-depth transformer cannot do in one pass
#
# **The question.** A transformer with $L$ layers does a fixed number of sequential steps per token, however long
# the input. Which problems does that rule out, and why does asking the model to *write down intermediate steps*
# (chain of thought) lift the limit? Circuit complexity gives a precise answer: a constant-depth transformer is a
# constant-depth threshold circuit (the class $\mathsf{TC}^0$), and evaluating a Boolean formula is complete for the
# larger class $\mathsf{NC}^1$ of log-depth circuits. Unless the two classes are equal, which nobody knows how to
# rule out but almost everybody believes false, no constant-depth transformer of polynomial size evaluates every
# formula, while one that writes a chain of thought of length proportional to the formula's depth does.
#
# This chapter builds the objects the theorems talk about and measures them:
#
# * **circuits** with unbounded fan-in AND, OR, NOT, MAJORITY and THRESHOLD gates; the classes
#   $\mathsf{AC}^0 \subsetneq \mathsf{TC}^0 \subseteq \mathsf{NC}^1$;
# * **parity**, easy with threshold gates (depth 2, linear size) and exponentially hard for depth-2 AND/OR circuits;
#   **comparison** and **addition** in constant depth; **sensitivity**, parity's $n$ against majority's
#   $\approx\sqrt{2n/\pi}$;
# * the theorems placing transformers in $\mathsf{TC}^0$ (Merrill & Sabharwal; Chiang; Chen et al. for RoPE), with their
#   **precision regimes**, and what "cannot" means;
# * the **Boolean formula value problem**, a log-round **tree-contraction** evaluator (13 rounds for a formula
#   of 40 000 symbols nested 10 000 deep), and a **chain of thought** that reduces a formula one level per step;
# * an **experiment**: transformers of 2 and 4 layers answering directly against a 2-layer one stepping through the
#   chain of thought, accuracy against formula depth, next to Feng et al.'s numbers.
#
# You will build a threshold gate, majority, a depth-2 parity circuit, a constant-depth comparator, average
# sensitivity, a formula evaluator, the rake step of tree contraction, the chain-of-thought trace and the loop that
# runs a step model.
#
# Several of these have a finished, tested counterpart in the companion (`cc.parity_circuit`, `cc.comparison_circuit`,
# `cc.average_sensitivity`, `cc.evaluate_formula`, `cc.rake_label`, `cc.cot_trace`): the demonstrations and the tests
# use it as the reference. Inside your answers, do not call the companion's version of the function you are asked to
# write: the point of each exercise is to build it.

# %% tags=["locked"] grade_id="setup"
import math
import time

import matplotlib.pyplot as plt
import torch

import companion.circuits as cc
from companion import get_device, is_reduced, require_version, scaled
from companion.circuits import model as cm
from companion.testing import call_quietly, call_within, check_close, check_dtype, check_shape, ok

require_version("0.1")
torch.set_num_threads(1)  # every tensor here is small: one thread is as fast and is immune to a busy machine


def check_equal_list(name, got, want, hint=""):
    """Compare two lists (of str or int) and say where they first differ."""
    if not isinstance(got, list):
        raise AssertionError(f"{name}: expected a list, got {type(got).__name__}")
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            raise AssertionError(f"{name}: entry {i} is {a!r}, expected {b!r}" + (f". Hint: {hint}" if hint else ""))
    if len(got) != len(want):
        raise AssertionError(f"{name}: {len(got)} entries, expected {len(want)}" + (f". Hint: {hint}" if hint else ""))


def check_tuple(name, got, want, hint=""):
    """`got` must be a tuple as long as `want`, each entry of the same type as `want`'s (int, str or None) and equal."""
    more = f". Hint: {hint}" if hint else ""
    if not isinstance(got, tuple):
        raise AssertionError(f"{name}: expected a tuple, got {type(got).__name__} {got!r}" + more)
    if len(got) != len(want):
        raise AssertionError(f"{name}: expected a tuple of {len(want)} entries, got {len(got)}: {got!r}" + more)
    for i, (a, b) in enumerate(zip(got, want)):
        if type(a) is not type(b):
            raise AssertionError(f"{name}: entry {i} is {a!r} ({type(a).__name__}), expected {b!r} "
                                 f"({type(b).__name__})" + more)
        if a != b:
            raise AssertionError(f"{name}: entry {i} is {a!r}, expected {b!r}" + more)


# %% [markdown]
# ## 1. Circuits and their classes
#
# A **Boolean circuit** with $n$ inputs is a directed acyclic graph: sources are the inputs $x_1, \dots, x_n$ (and
# constants), every other node is a **gate** computing a Boolean function of the nodes that feed it, and some gates
# are outputs. Its **size** is the number of gates, its **depth** the length of the longest input-to-output path. A
# problem on inputs of every length $n$ needs a **family** $(C_n)_{n \ge 1}$, one circuit per length. The classes of
# this chapter (Vollmer, *Introduction to Circuit Complexity*, 1999):
#
# | class | gates | fan-in | depth | size |
# |---|---|---|---|---|
# | $\mathsf{NC}^i$ | AND, OR, NOT | 2 | $O(\log^i n)$ | $n^{O(1)}$ |
# | $\mathsf{AC}^i$ | AND, OR, NOT | unbounded | $O(\log^i n)$ | $n^{O(1)}$ |
# | $\mathsf{TC}^0$ | AND, OR, NOT, MAJORITY | unbounded | $O(1)$ | $n^{O(1)}$ |
#
# A THRESHOLD$_k$ gate ("at least $k$ inputs are true") can replace MAJORITY in the definition of $\mathsf{TC}^0$:
# each is a small constant-depth circuit of the other (pad MAJORITY with constant inputs to move its threshold).
# The known inclusions are
# $$\mathsf{NC}^0 \subsetneq \mathsf{AC}^0 \subsetneq \mathsf{TC}^0 \subseteq \mathsf{NC}^1 \subseteq \mathsf{L}
#   \subseteq \mathsf{NL} \subseteq \mathsf{AC}^1 \subseteq \mathsf{P} \qquad\text{(for the uniform classes).}$$
# $\mathsf{AC}^0 \ne \mathsf{TC}^0$ because parity is in $\mathsf{TC}^0$ (section 2) but not in $\mathsf{AC}^0$;
# $\mathsf{TC}^0 \subseteq \mathsf{NC}^1$ because the sum of $n$ bits, hence a MAJORITY gate, has a fan-in-2 circuit of
# depth $O(\log n)$. Whether $\mathsf{TC}^0 = \mathsf{NC}^1$ is **open**.
#
# **Uniformity.** A family may be *non-uniform* (any circuits at all, one per $n$): such families decide even some
# undecidable unary languages. A family is *L-uniform* if a log-space machine prints $C_n$ on input $1^n$, and
# *DLOGTIME-uniform* if a machine answers "what is gate $i$ of $C_n$ and what feeds it?" in time $O(\log n)$. The
# transformer theorems of section 4 give uniform families, which matters: a transformer is *one* set of weights used
# at every length.
#
# `companion.circuits.Circuit` is such a DAG, with unbounded fan-in AND, OR, NOT, MAJORITY, THRESHOLD($k$) and
# constant gates, and `evaluate` runs it on a whole batch of input vectors at once. Conventions: size counts every gate
# (inputs excluded); **NOT gates are free for depth**, since negations can be pushed to the inputs without changing
# the depth ($\lnot \mathrm{THR}_k(y_1..y_m) = \mathrm{THR}_{m-k+1}(\lnot y_1, .., \lnot y_m)$, De Morgan for AND/OR).

# %%
c = cc.Circuit(3)  # a circuit with 3 inputs: they are wires 0, 1 and 2
both = c.add("AND", [0, 1])  # add() appends a gate and returns its wire id (here 3)
not_x2 = c.add("NOT", [2])  # wire 4
result = c.add("OR", [both, not_x2])  # wire 5: (x0 AND x1) OR NOT x2
c.set_outputs([result])
x = cc.all_inputs(3)  # all 8 input vectors, bool of shape (8, 3): row r is r in binary, column i is input x_i
out = c.evaluate(x)[:, 0]  # evaluate returns (batch, number of outputs); we have one output
assert torch.equal(out, (x[:, 0] & x[:, 1]) | ~x[:, 2])
print(c)
print("x0 x1 x2 | out")
for row, value in zip(x.int().tolist(), out.int().tolist()):
    print(f" {row[0]}  {row[1]}  {row[2]} |  {value}")

# %% [markdown]
# Every gate in this library is a comparison of the **number of true inputs** $c$ with a threshold: AND is
# $c \ge$ fan-in, OR is $c \ge 1$, MAJORITY is $c > \text{fan-in}/2$, NOT is $c < 1$. That is also how `evaluate`
# computes a whole level of gates for a whole batch: one matrix product (counts) and one comparison.
#
# **Exercise 1 (2 points).** Write `threshold_gate(x, k)`: for a bool tensor `x` of shape `(batch, m)` (one gate's
# $m$ inputs per row), return a bool tensor of shape `(batch,)` that is true where **at least** `k` entries of the row
# are true.

# %% tags=["solution"] grade_id="threshold_gate"
def threshold_gate(x: torch.Tensor, k: int) -> torch.Tensor:
    """THRESHOLD_k of each row of x (batch, m), bool: at least k true entries. Returns bool (batch,)."""
    ### BEGIN SOLUTION
    return x.sum(dim=-1) >= k
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_threshold_gate" points=2
_x = torch.tensor([[True, False, True], [False, False, True], [True, True, True], [False, False, False]])
_got = call_quietly(threshold_gate, _x, 2)
check_shape("threshold_gate(x of shape (4, 3), 2)", _got, (4,))
check_dtype("threshold_gate(x, 2)", _got, torch.bool)
check_close("threshold_gate(x, 2)", _got, torch.tensor([True, False, True, False]),
            hint="true where the row has AT LEAST k true entries: >=, not >; count along the last axis")
check_close("threshold_gate(x, 3)", call_quietly(threshold_gate, _x, 3), torch.tensor([False, False, True, False]))
ok("threshold_gate: a row with k true entries passes, k - 1 does not")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(41)
for _b, _m in ((50, 9), (9, 9), (3, 20), (1, 1)):
    _xx = torch.rand(_b, _m, generator=_g) < torch.rand(_b, 1, generator=_g)
    for _k in range(0, _m + 2):
        check_close(f"threshold_gate on x of shape {(_b, _m)}, k = {_k}", call_quietly(threshold_gate, _xx, _k),
                    _xx.sum(-1) >= _k, hint="count the true entries of each row (last axis) and compare with >= k")
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (2 points).** Write `majority(x)` with your `threshold_gate`: true where **more than half** of the
# row's $m$ entries are true. A tie (possible when $m$ is even) is false.

# %% tags=["solution"] grade_id="majority"
def majority(x: torch.Tensor) -> torch.Tensor:
    """MAJORITY of each row of x (batch, m), bool: strictly more than m/2 true entries. Returns bool (batch,)."""
    ### BEGIN SOLUTION
    return threshold_gate(x, x.shape[-1] // 2 + 1)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_majority" points=2
_x = torch.tensor([[True, False, True], [False, False, True]])
check_close("majority of 3 bits", call_quietly(majority, _x), torch.tensor([True, False]))
_x = torch.tensor([[True, True, False, False], [True, True, True, False]])
check_close("majority of 4 bits (a 2-2 tie is false)", call_quietly(majority, _x), torch.tensor([False, True]),
            hint="more than m/2: for m = 4 that is at least 3, i.e. threshold m // 2 + 1")
ok("majority: strict, ties are false")
### BEGIN HIDDEN TESTS
for _m in range(1, 11):
    _xx = cc.all_inputs(_m)
    check_close(f"majority on all inputs of {_m} bits", call_quietly(majority, _xx), 2 * _xx.sum(1) > _m,
                hint="strictly more than half: threshold m // 2 + 1, for odd and even m")
_xx = torch.rand(7, 64, generator=torch.Generator().manual_seed(42)) < 0.5
check_close("majority on x of shape (7, 64)", call_quietly(majority, _xx), _xx.sum(1) > 32,
            hint="the m in 'more than m/2' is the number of columns, x.shape[-1]")
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Parity: easy with thresholds, hard without
#
# $\mathrm{PARITY}_n(x) = x_1 \oplus \dots \oplus x_n$. With AND/OR gates of unbounded fan-in:
#
# * **Depth 2 needs $2^{n-1}$ terms.** A DNF (an OR of ANDs of literals) for parity must use, for each of the
#   $2^{n-1}$ odd-weight inputs, a term that fixes all $n$ variables: a term that leaves one variable free accepts two
#   inputs of different parity. `cc.parity_circuit(n, "ac0")` is that DNF.
# * **Any constant depth needs exponential size.** *Theorem (Furst, Saxe, Sipser 1984, "Parity, circuits, and the
#   polynomial-time hierarchy"; Ajtai 1983):* parity has no polynomial-size constant-depth family of AND/OR/NOT
#   circuits, so $\mathrm{PARITY} \notin \mathsf{AC}^0$. *Håstad (1986, the switching lemma)* sharpened this to the
#   nearly tight bound: depth-$d$ circuits for parity need size $\exp\big(\Omega(n^{1/(d-1)})\big)$.
#
# With threshold gates parity takes depth 2 and $O(n)$ gates. Let $s = x_1 + \dots + x_n$ and
# $G_k = [s \ge k]$ for $k = 1..n$ (one THRESHOLD gate each). Then $G_1 \ge G_2 \ge \dots$, so
# $\sum_{k=1}^n (-1)^{k+1} G_k = G_1 - G_2 + G_3 - \dots$ is 1 when $s$ is odd and 0 when it is even. A second layer
# turns this signed sum into a count: among $G_1, \lnot G_2, G_3, \lnot G_4, \dots$ exactly
# $\lfloor n/2 \rfloor + 1$ are true when $s$ is odd and $\lfloor n/2\rfloor$ when $s$ is even, so one
# THRESHOLD$_{\lfloor n/2\rfloor+1}$ gate reads off the parity.
#
# **Exercise 3 (3 points).** Write `parity_tc0(n)` returning a `cc.Circuit` with $n$ inputs and one output that
# computes parity with **depth at most 2** and **at most $2n + 1$ gates**. NOT gates are free for the depth but
# count toward the size. The tests check both budgets: the visible test requires `parity_tc0(3)` to have depth at
# most 2 and at most 7 gates, and the hidden tests check the same budgets for every $n$ up to 12. (The construction
# above uses $n + \lfloor n/2 \rfloor + 1$ gates; the $2^{n-1}$-term DNF is far over budget.) Use
# `c = cc.Circuit(n)`, `c.add("THRESHOLD", wires, k=...)`, `c.add("NOT", [wire])` (each returns the new gate's wire
# id) and `c.set_outputs([wire])`. Do not call `cc.parity_circuit`: the point is to build the circuit yourself.

# %% tags=["solution"] grade_id="parity_tc0"
def parity_tc0(n: int) -> "cc.Circuit":
    """A depth-2 threshold circuit for PARITY of n bits, at most 2n + 1 gates."""
    ### BEGIN SOLUTION
    c = cc.Circuit(n)
    g = [c.add("THRESHOLD", range(n), k=k) for k in range(1, n + 1)]
    alternating = [g[k - 1] if k % 2 == 1 else c.add("NOT", [g[k - 1]]) for k in range(1, n + 1)]
    return c.set_outputs([c.add("THRESHOLD", alternating, k=n // 2 + 1)])
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_parity_tc0" points=3
_c = call_quietly(parity_tc0, 3)
assert isinstance(_c, cc.Circuit), f"parity_tc0 must return a cc.Circuit, got {type(_c).__name__}"
_x = cc.all_inputs(3)
check_close("parity_tc0(3) on all 8 inputs", _c.evaluate(_x)[:, 0], _x.sum(1) % 2 == 1,
            hint="the second gate needs threshold n // 2 + 1 over G_1, NOT G_2, G_3, ...")
assert _c.depth <= 2, f"parity_tc0(3) has depth {_c.depth}; depth 2 is enough (NOT gates are free)"
assert _c.size <= 7, (f"parity_tc0(3) has {_c.size} gates, more than the budget 2n + 1 = 7 (NOT gates count toward "
                      f"the size): n threshold gates G_k, a NOT on every other one, and one output gate")
ok(f"parity_tc0(3): right on all 8 inputs, depth {_c.depth} (budget 2), {_c.size} gates (budget 7)")
### BEGIN HIDDEN TESTS
for _n in range(1, 13):
    _c = call_quietly(parity_tc0, _n)
    assert len(_c.outputs) == 1, f"parity_tc0({_n}) must have exactly one output"
    _x = cc.all_inputs(_n)
    check_close(f"parity_tc0({_n}) on all {2 ** _n} inputs", _c.evaluate(_x)[:, 0], _x.sum(1) % 2 == 1,
                hint="negate the even-indexed G_k (G_2, G_4, ...) and use threshold n // 2 + 1")
    assert _c.depth <= 2, f"parity_tc0({_n}) has depth {_c.depth}, the exercise asks for depth <= 2"
    assert _c.size <= 2 * _n + 1, f"parity_tc0({_n}) has {_c.size} gates, more than 2n + 1 = {2 * _n + 1}"
_xx = torch.rand(300, 61, generator=torch.Generator().manual_seed(43)) < 0.5
check_close("parity_tc0(61) on 300 random inputs", call_quietly(parity_tc0, 61).evaluate(_xx)[:, 0], _xx.sum(1) % 2 == 1)
### END HIDDEN TESTS

# %% [markdown]
# The two parity circuits side by side, with majority, the $n$-bit comparator and the $n$-bit adder of the
# companion. The adder (`cc.adder_circuit`) uses carry look-ahead: with $g_j = a_j \wedge b_j$ ("bit $j$ generates a
# carry") and $p_j = a_j \vee b_j$ ("bit $j$ passes one on"), the carry into bit $i$ is
# $c_i = \bigvee_{j<i} (g_j \wedge p_{j+1} \wedge \dots \wedge p_{i-1})$, and each sum bit
# $s_i = a_i \oplus b_i \oplus c_i$ is the depth-2 threshold parity of three bits. Its depth is constant in the basis
# of **unbounded fan-in** AND, OR and THRESHOLD gates (NOT free): 5 for every $n \ge 3$ (2 at $n = 1$, 4 at $n = 2$).
# What grows with $n$ is the **fan-in** (the carry into bit $i$ is an OR of $i$ ANDs of up to $i$ inputs each) and
# the **size**, $O(n^2)$ gates (751 at $n = 32$). With fan-in-2 gates no adder has constant depth: the top carry
# depends on all $2n$ input bits, which takes depth at least $\log_2 (2n)$. Threshold gates are a convenience here,
# not a need: writing each 3-bit XOR as a DNF of AND/OR gates keeps depth 5, so addition is in $\mathsf{AC}^0$.
# Sizes on a log scale: only the AC$^0$ parity grows exponentially.

# %%
ns = list(range(2, 33, 2))
ns_ac0 = [n for n in ns if n <= 14]  # the DNF has 2^(n-1) terms: stop at n = 14 (8207 gates)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
cc.plot_circuit_sizes(ns, ax=axes[0], max_ac0=14)
axes[0].set_title("Size: depth-2 AND/OR parity doubles with each bit; threshold circuits stay polynomial", fontsize=9)
ac0 = {n: cc.parity_circuit(n, "ac0") for n in ns_ac0}
depth_curves = {  # name: (values of n, depth of the circuit at each n)
    "parity AC0": (ns_ac0, [ac0[n].depth for n in ns_ac0]),
    "parity TC0": (ns, [cc.parity_circuit(n, "tc0").depth for n in ns]),
    "majority": (ns, [cc.majority_circuit(n).depth for n in ns]),
    "adder": (ns, [cc.adder_circuit(n).depth for n in ns]),
    "comparison": (ns, [cc.comparison_circuit(n).depth for n in ns]),
}
for name, (xs, depths) in depth_curves.items():
    axes[1].plot(xs, depths, marker="o", ms=3, label=name)
axes[1].set_xlabel("n (input bits per number)")
axes[1].set_ylabel("depth (NOT gates free)")
axes[1].set_ylim(0, 6)
axes[1].set_title("Depth: constant in n for every construction (both parities 2, adder 5 from n = 3)", fontsize=9)
axes[1].legend(fontsize=8)
plt.show()
plt.close(fig)
for n in (8, 14):
    a, t = ac0[n], cc.parity_circuit(n, "tc0")
    print(f"parity of {n} bits: AC0 DNF {a.size} gates ({a.n_wires_total} wires), TC0 {t.size} gates "
          f"({t.n_wires_total} wires), both depth {a.depth}")

# %% [markdown]
# **Comparison in constant depth.** For two $n$-bit numbers $a, b$ (least significant bit first),
# $a > b$ iff at some position $i$, $a_i = 1$, $b_i = 0$ and $a_l = b_l$ at every more significant position $l > i$:
# $$[a > b] = \bigvee_{i=0}^{n-1} \Big( a_i \wedge \lnot b_i \wedge \bigwedge_{l > i} e_l \Big), \qquad
#   e_l = (a_l \wedge b_l) \vee (\lnot a_l \wedge \lnot b_l).$$
# That is an $\mathsf{AC}^0$ circuit of depth 4 (AND, OR for $e_l$; AND; OR) and $O(n)$ gates. The schoolbook
# comparison, scanning from the top bit down and carrying "equal so far", is correct too but has depth growing with
# $n$: the point of this exercise is that the carry chain can be flattened.
#
# **Exercise 4 (3 points).** Write `greater_than(n)` returning a `cc.Circuit` with $2n$ inputs (wires $0..n-1$ are
# $a_0..a_{n-1}$, wires $n..2n-1$ are $b_0..b_{n-1}$, least significant first) and one output $[a > b]$, of **depth at
# most 4** and **at most $10n$ gates** (NOT gates included). You may use AND, OR and NOT gates. The tests check both
# budgets: the visible test requires `greater_than(8)` to have depth at most 4 and at most 80 gates. Build each
# $e_l$ once and let every term that needs it read the same wire: rebuilding the $e_l$ inside every term is correct
# but takes $O(n^2)$ gates. Do not call `cc.comparison_circuit`: the point is to build the circuit yourself.

# %% tags=["solution"] grade_id="greater_than"
def greater_than(n: int) -> "cc.Circuit":
    """[a > b] for n-bit a (wires 0..n-1) and b (wires n..2n-1), LSB first; depth <= 4, <= 10n gates."""
    ### BEGIN SOLUTION
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    not_a = [c.add("NOT", [a[i]]) for i in range(n)]
    not_b = [c.add("NOT", [b[i]]) for i in range(n)]
    equal = [c.add("OR", [c.add("AND", [a[i], b[i]]), c.add("AND", [not_a[i], not_b[i]])]) for i in range(n)]
    terms = [c.add("AND", [a[i], not_b[i], *equal[i + 1:]]) for i in range(n)]
    return c.set_outputs([c.add("OR", terms)])
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_greater_than" points=3
_c = call_quietly(greater_than, 2)
assert isinstance(_c, cc.Circuit) and _c.n_inputs == 4, "greater_than(2) must return a cc.Circuit with 4 inputs"
_x = cc.all_inputs(4)
_a, _b = cc.bits_to_int(_x[:, :2]), cc.bits_to_int(_x[:, 2:])
check_close("greater_than(2) on all 16 pairs", _c.evaluate(_x)[:, 0], _a > _b,
            hint="bit 0 is the least significant; equal numbers are not greater")
_c8 = call_quietly(greater_than, 8)
assert isinstance(_c8, cc.Circuit) and _c8.n_inputs == 16, "greater_than(8) must return a cc.Circuit with 16 inputs"
assert _c8.depth <= 4, (f"greater_than(8) has depth {_c8.depth}, more than the budget 4: do not carry 'equal so far' "
                        f"from bit to bit; AND the e_l of all higher bits directly into each term")
assert _c8.size <= 80, (f"greater_than(8) has {_c8.size} gates, more than the budget 10n = 80: build each e_l (and each "
                        f"NOT) once and share it between the terms")
ok(f"greater_than(2): right on all 16 pairs; greater_than(8): depth {_c8.depth} (budget 4), {_c8.size} gates (budget 80)")
### BEGIN HIDDEN TESTS
for _n in range(1, 6):
    _c = call_quietly(greater_than, _n)
    _x = cc.all_inputs(2 * _n)
    _a, _b = cc.bits_to_int(_x[:, :_n]), cc.bits_to_int(_x[:, _n:])
    check_close(f"greater_than({_n}) on all pairs", _c.evaluate(_x)[:, 0], _a > _b,
                hint="the most significant bit (index n - 1) decides first; a == b gives False")
_g = torch.Generator().manual_seed(44)
for _n in (8, 16, 24):
    _c = call_quietly(greater_than, _n)
    _a = torch.randint(0, 2 ** _n, (400,), generator=_g)
    _b = torch.randint(0, 2 ** _n, (400,), generator=_g)
    _b[:50] = _a[:50]
    _b[50:100] = _a[50:100] ^ 1  # differ only in the lowest bit
    _x = torch.cat((cc.int_to_bits(_a, _n), cc.int_to_bits(_b, _n)), 1)
    check_close(f"greater_than({_n}) on 400 random pairs", _c.evaluate(_x)[:, 0], _a > _b)
    assert _c.depth <= 4, f"greater_than({_n}) has depth {_c.depth}: flatten the carry chain to depth <= 4"
    assert _c.size <= 10 * _n, f"greater_than({_n}) has {_c.size} gates, more than 10n = {10 * _n}"
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Sensitivity: why parity is the hard case
#
# The **sensitivity** of $f : \{0,1\}^n \to \{0,1\}$ at $x$ is the number of single-bit flips that change $f(x)$;
# the **average sensitivity** is its mean over uniform $x$:
# $$\mathrm{as}(f) = \mathbb{E}_{x}\,\big|\{ i : f(x) \ne f(x^{\oplus i}) \}\big|.$$
# Parity flips under *every* bit: $\mathrm{as} = n$, the maximum. Majority (odd $n$) flips only when the vote is one
# away from a tie: $\mathrm{as} = n\binom{n-1}{(n-1)/2}/2^{n-1} \approx \sqrt{2n/\pi}$. AND is sensitive almost nowhere:
# $n/2^{n-1}$. Polynomial-size $\mathsf{AC}^0$ circuits have average sensitivity polylogarithmic in $n$ (Linial,
# Mansour, Nisan 1993, via Håstad's switching lemma), another way to see that parity is out of reach.
#
# For transformers, Hahn (2020, "Theoretical Limitations of Self-Attention in Neural Sequence Models", TACL,
# arXiv:1906.06755, Lemma 5) shows that, for a soft-attention transformer with fixed weights, changing one input
# symbol changes the output by only $O(1/n)$: a function of sensitivity $n$ must then be computed with confidence shrinking as $1/n$. Chiang and
# Cholak (2022, "Overcoming a Theoretical Limitation of Self-Attention", ACL, arXiv:2202.12172) construct a
# transformer that recognises PARITY with perfect accuracy at every length and use layer normalisation to make its
# confidence length-independent: the limitation is about margins and learning, not about exact expressivity.
#
# **Exercise 5 (3 points).** Write `average_sensitivity(f, n)`: `f` maps a bool tensor `(batch, n)` to a bool tensor
# `(batch,)`; enumerate all $2^n$ inputs (`cc.all_inputs(n)`), count for each input how many of the $n$ single-bit
# flips change `f`, and return the mean over inputs as a Python `float`. Do not call `cc.average_sensitivity`: the
# point is to write the enumeration yourself.

# %% tags=["solution"] grade_id="average_sensitivity"
def average_sensitivity(f, n: int) -> float:
    """E_x #{i : f(x) != f(x with bit i flipped)}, over all 2^n inputs x; a Python float."""
    ### BEGIN SOLUTION
    x = cc.all_inputs(n)
    fx = f(x)
    total = 0
    for i in range(n):
        flipped = x.clone()
        flipped[:, i] = ~flipped[:, i]
        total += int((f(flipped) != fx).sum())
    return total / 2 ** n
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_average_sensitivity" points=3
_par = lambda x: x.sum(-1) % 2 == 1  # noqa: E731
_got = call_quietly(average_sensitivity, _par, 4)
assert isinstance(_got, float), f"average_sensitivity must return a Python float, got {type(_got).__name__}"
assert abs(_got - 4.0) < 1e-9, f"average sensitivity of parity of 4 bits: got {_got}, expected 4 (every flip matters)"
_got = call_quietly(average_sensitivity, lambda x: x[:, 0], 3)
assert abs(_got - 1.0) < 1e-9, f"f(x) = x_0 on 3 bits: got {_got}, expected 1 (only bit 0 matters, always)"
ok("average_sensitivity: parity of 4 bits is 4, a dictator is 1")
### BEGIN HIDDEN TESTS
for _n in (1, 3, 5, 9):
    _got = call_quietly(average_sensitivity, lambda x: 2 * x.sum(-1) > x.shape[-1], _n)
    assert abs(_got - cc.majority_sensitivity(_n)) < 1e-9, \
        f"majority of {_n} bits: got {_got}, expected {cc.majority_sensitivity(_n):.6f}"
for _n in (2, 6):
    _got = call_quietly(average_sensitivity, lambda x: x.all(-1), _n)
    assert abs(_got - _n / 2 ** (_n - 1)) < 1e-9, f"AND of {_n} bits: got {_got}, expected {_n / 2 ** (_n - 1)}"
    _got = call_quietly(average_sensitivity, _par, _n)
    assert abs(_got - _n) < 1e-9, \
        f"parity of {_n} bits: got {_got}, expected {_n}: count flips of every bit, both 0->1 and 1->0, average over inputs"
_got = call_quietly(average_sensitivity, lambda x: x[:, 0] & ~x[:, 2], 3)  # sensitive to bit 0 w.p. 1/2, bit 2 w.p. 1/2
assert abs(_got - 1.0) < 1e-9, f"x0 AND NOT x2 on 3 bits: got {_got}, expected 1.0"
### END HIDDEN TESTS

# %% [markdown]
# Parity against majority, measured with your function on the companion's circuits:

# %%
print(f"{'n':>3s} | {'parity':>7s} {'majority':>9s} {'closed form':>11s} {'sqrt(2n/pi)':>11s}")
for n in (3, 5, 9, 13):
    par, maj = cc.parity_circuit(n, "tc0"), cc.majority_circuit(n)
    s_par = average_sensitivity(lambda x: par.evaluate(x)[:, 0], n)
    s_maj = average_sensitivity(lambda x: maj.evaluate(x)[:, 0], n)
    assert abs(s_maj - cc.majority_sensitivity(n)) < 1e-9 and s_par == n
    print(f"{n:3d} | {s_par:7.2f} {s_maj:9.3f} {cc.majority_sensitivity(n):11.3f} {math.sqrt(2 * n / math.pi):11.3f}")

# %% [markdown]
# ## 4. Transformers are constant-depth threshold circuits
#
# Why $\mathsf{TC}^0$? Everything in a transformer layer is an iterated sum followed by a local function: a dot
# product, a softmax denominator, an attention-weighted average. Summing $n$ numbers of $p$ bits each is in
# $\mathsf{TC}^0$ (threshold gates count), and so are the products, divisions and exponentials to $p$ bits that the
# layer needs. A constant number of layers composes a constant number of such circuits. One attention head already
# computes a threshold: uniform attention averages the bits, and the MLP compares the mean with $1/2$.
#
# The theorems differ in the **precision** they allow the numbers inside the model, as a function of the input
# length $n$:
#
# * **Log precision.** *Merrill & Sabharwal (2023, "The Parallelism Tradeoff: Limitations of Log-Precision
#   Transformers", TACL, arXiv:2207.00729):* transformers whose arithmetic uses $O(\log n)$ bits (and whose
#   feedforward nets are computable in linear space) can be simulated by constant-depth **L-uniform** threshold
#   circuits: they are in L-uniform $\mathsf{TC}^0$.
# * **Polynomial precision.** *Chiang (2025, "Transformers in Uniform TC$^0$", TMLR, arXiv:2409.13629):*
#   softmax-attention transformers with $O(\mathrm{poly}(n))$ bits of floating-point precision (and those with at
#   most $2^{-O(\mathrm{poly}(n))}$ absolute error), and average-hard-attention transformers with no approximation, are
#   in **DLOGTIME-uniform** $\mathsf{TC}^0$.
# * **RoPE.** *Chen, Li, Liang, Long, Shi, Song (2024, "Circuit Complexity Bounds for RoPE-based Transformer
#   Architecture", arXiv:2411.07602):* RoPE transformers with $\mathrm{poly}(n)$ precision, $O(1)$ layers and hidden
#   dimension $d \le O(n)$ are in uniform $\mathsf{TC}^0$ (chapter 02).
# * **Constant precision.** *Li, Liu, Zhou, Ma (2024, "Chain of Thought Empowers Transformers to Solve Inherently
#   Serial Problems", ICLR, arXiv:2402.12875):* with constant-bit precision, constant-depth transformers are in
#   $\mathsf{AC}^0$ (a non-uniform version), so they cannot even compute parity; with $T$ steps of chain of thought,
#   constant depth, constant precision and $O(\log n)$ embedding size, they solve every problem with Boolean circuits
#   of size $T$.
#
# The **Boolean formula value problem** (section 5) is $\mathsf{NC}^1$-complete (Buss 1987), so each inclusion gives:
# *unless $\mathsf{TC}^0 = \mathsf{NC}^1$, no transformer family in that regime decides the value of every Boolean
# formula.* Feng, Zhang, Gu, Ye, He, Wang (2023, "Towards Revealing the Mystery behind Chain of Thought: A Theoretical
# Perspective", NeurIPS, arXiv:2305.15408) prove the same kind of statement for arithmetic expressions and linear
# equations (bounded-depth log-precision transformers cannot solve them directly unless $\mathsf{TC}^0 = \mathsf{NC}^1$)
# and construct constant-size transformers that solve them by writing a chain of thought.
#
# **Precision in numbers.** The TC$^0$ parity circuit of Exercise 3 is a one-layer transformer in disguise: uniform
# attention gives the mean $\bar x = s/n$, and an MLP of $2n$ ReLUs computes
# $[s \ge k] = \mathrm{ReLU}(n\bar x - k + 1) - \mathrm{ReLU}(n \bar x - k)$ for every $k$ and the alternating sum.
# Its width grows with $n$ (polynomial size), and it needs $\bar x$ to $\log_2 n$ bits: in float16 (11 significant
# bits) the sum of more than 2048 ones is no longer exact, and the construction breaks.

# %%
def one_layer_parity(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform attention (the mean) + a 2n-ReLU MLP, all in `dtype`: the depth-2 threshold circuit as a layer."""
    n = x.shape[-1]
    mean = x.to(dtype).mean(-1, keepdim=True)  # what one head with constant scores outputs
    k = torch.arange(1, n + 1, dtype=dtype)
    steps = torch.relu(n * mean - k + 1) - torch.relu(n * mean - k)  # [s >= k], exact when n * mean is exact
    signs = torch.where(k % 2 == 1, 1.0, -1.0).to(dtype)
    return (steps * signs).sum(-1) > 0.5


_g = torch.Generator().manual_seed(4)
for n in (64, 1024, 4096):
    x = torch.rand(256, n, generator=_g) < torch.rand(256, 1, generator=_g)
    accs = {str(dt).replace("torch.", ""): (one_layer_parity(x, dt) == (x.sum(1) % 2 == 1)).float().mean().item()
            for dt in (torch.float16, torch.float32)}
    print(f"n = {n:5d}: accuracy of the one-layer parity construction " + ", ".join(f"{k} {v:.2f}" for k, v in accs.items()))

# %% [markdown]
# At $n = 4096$ the float16 version is wrong on about a quarter of the inputs: the rows with more than 2048 ones
# (about half of them, since each row draws its own density) lose the last bit of their count, and get a coin flip.
# Float32 (24 bits) is still exact. The margin between "odd" and "even" is one count in $n$, so the precision must
# grow like $\log n$. This is why every theorem above
# states its precision regime, and why constant precision collapses to $\mathsf{AC}^0$, where parity is impossible.
#
# ## 5. The Boolean formula value problem
#
# Variable-free Boolean formulas, fully parenthesised, no spaces:
# $$F \; := \; 0 \mid 1 \mid\ !F \mid (F\&F) \mid (F|F).$$
# *Theorem (Buss 1987, "The Boolean formula value problem is in ALOGTIME", STOC):* deciding whether such a formula
# is true is in alternating log time, and it is **complete** for that class under deterministic log-time reductions
# (hence also under $\mathsf{AC}^0$ reductions). DLOGTIME-uniform $\mathsf{NC}^1$ equals ALOGTIME, so the problem is
# $\mathsf{NC}^1$-complete: a constant-depth family for it would put all of $\mathsf{NC}^1$ in that class.
# Buss, Cook, Gupta and Ramachandran (1992, "An optimal parallel algorithm for formula evaluation", SIAM J. Comput.
# 21) give a new route to Buss's algorithm, show the problem complete for $\mathsf{NC}^1$ under $\mathsf{AC}^0$
# reductions, and extend the method to evaluating *arithmetic* formulas with arithmetic circuits: the arithmetic
# expressions of Feng et al. below are the arithmetic relative of our Boolean formulas. Checking
# that a string is a well-formed formula is easy (a Dyck-language check, which transformers can do); computing its
# **value** is the hard part.
#
# The **depth** of a formula is its nesting depth: 0 for a constant, one more than its deepest operand for $!F$ and
# $(F \,\text{op}\, F)$. `cc.random_formula(depth, generator=...)` draws a formula of exactly that depth (with
# probability 1/4 a negation, else a binary node with one operand of depth $d - 1$ and the other of a uniform depth
# below it):

# %%
g = torch.Generator().manual_seed(0)
for d in range(5):
    s = cc.random_formula(d, generator=g)
    print(f"depth {d}: {s:<40s} value {int(cc.evaluate_formula(s))}")

# %% [markdown]
# **Exercise 6 (3 points).** Write `evaluate_formula(s)` returning the value of a formula as a Python `bool`. Raise a
# `ValueError` for any string that is not a formula of the grammar (unbalanced parentheses, a missing operand, an
# operator outside parentheses, two operators in one pair, a space, any other character). It must handle formulas
# nested **10 000 deep**, so it must not recurse: a recursive parser makes one Python call per level of nesting, and
# CPython stops at its recursion limit (1000 nested calls by default, `sys.getrecursionlimit()`) with a
# `RecursionError`. Keep the pending operators on an explicit stack (a Python list) instead; the visible test checks
# that `evaluate_formula("!" * 10000 + "0")` is `False`. Do not call `cc.evaluate_formula` or `cc.parse_formula`: the
# point is to write the evaluator yourself.
#
# *Hint:* scan left to right with a stack. Push `(`, `!`, operators and values. Whenever a value lands on top of a
# `!`, replace the two by the negated value. At `)` the top must be `( value op value`: replace it by the result (and
# apply pending `!`s again). At the end the stack must hold exactly one value.

# %% tags=["solution"] grade_id="evaluate_formula"
def evaluate_formula(s: str) -> bool:
    """Value of a formula of F := 0 | 1 | !F | (F&F) | (F|F); ValueError if malformed. Iterative, O(len(s))."""
    ### BEGIN SOLUTION
    stack = []

    def push_value(v):
        while stack and stack[-1] == "!":
            stack.pop()
            v = not v
        stack.append(v)

    for pos, ch in enumerate(s):
        top_is_value = bool(stack) and isinstance(stack[-1], bool)
        if ch in "01":
            if top_is_value:
                raise ValueError(f"position {pos}: a constant cannot follow a complete subformula")
            push_value(ch == "1")
        elif ch in "(!":
            if top_is_value:
                raise ValueError(f"position {pos}: {ch!r} cannot follow a complete subformula")
            stack.append(ch)
        elif ch in "&|":
            if not (top_is_value and len(stack) >= 2 and stack[-2] == "("):
                raise ValueError(f"position {pos}: operator {ch!r} must follow '(' and a subformula")
            stack.append(ch)
        elif ch == ")":
            if not (len(stack) >= 4 and isinstance(stack[-1], bool) and stack[-2] in ("&", "|")
                    and isinstance(stack[-3], bool) and stack[-4] == "("):
                raise ValueError(f"position {pos}: ')' must close (F&F) or (F|F)")
            b, op, a, _ = stack.pop(), stack.pop(), stack.pop(), stack.pop()
            push_value((a and b) if op == "&" else (a or b))
        else:
            raise ValueError(f"position {pos}: unexpected character {ch!r}")
    if len(stack) != 1 or not isinstance(stack[0], bool):
        raise ValueError("incomplete formula")
    return stack[0]
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_evaluate_formula" points=3
for _s, _v in (("1", True), ("!1", False), ("(0|1)", True), ("(1&0)", False), ("!(0&1)", True), ("!!0", False),
               ("((1&!0)|0)", True)):
    _got = call_quietly(evaluate_formula, _s)
    assert isinstance(_got, bool), f"evaluate_formula({_s!r}) must return a Python bool, got {type(_got).__name__}"
    assert _got == _v, f"evaluate_formula({_s!r}) = {_got}, expected {_v}"
for _bad in ("(0&1", "0&1"):
    try:
        call_quietly(evaluate_formula, _bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"evaluate_formula({_bad!r}) must raise ValueError: it is not a formula of the grammar")
try:
    _got = call_quietly(evaluate_formula, "!" * 10000 + "0")
except RecursionError:
    raise AssertionError("evaluate_formula('!' * 10000 + '0') hit Python's recursion limit: keep pending operators "
                         "on an explicit stack (a list) instead of recursing once per nesting level") from None
assert _got is False, f"evaluate_formula('!' * 10000 + '0') = {_got!r}, expected False (an even number of negations of 0)"
ok("evaluate_formula: seven small formulas, two malformed strings rejected, 10 000 nested negations without recursion")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(45)
for _d in range(0, 9):
    for _ in range(25):
        _s = cc.random_formula(_d, generator=_g)
        _got = call_quietly(evaluate_formula, _s)
        assert isinstance(_got, bool) and _got == cc.evaluate_formula(_s), \
            f"evaluate_formula({_s!r}) = {_got!r}, expected {cc.evaluate_formula(_s)}"
for _shape in ("caterpillar", "random"):
    _s = cc.sized_formula(12000, generator=_g, shape=_shape)
    assert call_quietly(evaluate_formula, _s) == cc.evaluate_formula(_s), \
        f"wrong value on a {_shape} formula of {len(_s)} symbols (nested {cc.formula_depth(_s)} deep)"
assert call_quietly(evaluate_formula, "!" * 20001 + "0") is True, "20001 negations of 0 are 1 (use a stack, not recursion)"
for _bad in ("", "(", ")", "!", "01", "(0&&1)", "(0&1|0)", "( 0&1)", "(0&1))", "((0&1)|1", "(!0)", "2", "(0&1)(1|0)",
             "!()", "(0)", "0|1", "&", "(0^1)"):
    try:
        call_quietly(evaluate_formula, _bad)
    except ValueError:
        continue
    except Exception as _e:  # noqa: BLE001
        raise AssertionError(f"evaluate_formula({_bad!r}) raised {type(_e).__name__}, expected ValueError") from None
    raise AssertionError(f"evaluate_formula({_bad!r}) must raise ValueError: it is not a formula of the grammar")
### END HIDDEN TESTS

# %% [markdown]
# ## 6. Evaluating a formula in $O(\log n)$ parallel rounds
#
# Your evaluator reads the formula left to right: $O(n)$ sequential steps. Evaluating level by level (all operators
# whose operands are known, at once) takes as many parallel rounds as the formula is deep, which can be $n/4$ (a
# *caterpillar* $((((0\&1)|0)\&1)\dots)$). $\mathsf{NC}^1$ promises $O(\log n)$. **Tree contraction** delivers it
# (Miller & Reif 1985; the version here is Abrahamson, Dadoun, Kirkpatrick, Przytycka 1989, "A simple parallel tree
# contraction algorithm", J. Algorithms 10):
#
# 1. Put every NOT on an **edge** as a *label*: each node $v$ carries a function $f_v : \{0,1\} \to \{0,1\}$
#    (identity, negation, constant 0 or constant 1) applied to its value before its parent reads it. What is left is a
#    full binary tree of AND/OR nodes with $L$ constant leaves.
# 2. Number the leaves $1..L$ from left to right. A **round** rakes the odd-numbered leaves: first those that are left
#    children, then those that are right children. To **rake** a leaf $\ell$ with parent $p$ and sibling $s$, remove
#    $\ell$ and $p$ and hang $s$ where $p$ was, with the label that makes the result unchanged. Then renumber.
# 3. Two leaves raked in the same half-round never share a parent, nor is one's parent the other's grandparent: they
#    would be consecutive, and consecutive leaves are not both odd. So each half-round is one parallel step, and
#    every round halves $L$: **$\lfloor \log_2 L \rfloor$ rounds**, whatever the shape.
#
# The rake step is where the algebra is. The parent computed $f_p(\text{op}(x, f_s(y)))$ from the raked leaf's value
# $x$ (its own label already applied) and the sibling's value $y$. With $x$ known, $z \mapsto \text{op}(x, z)$ is the
# identity or a constant ($0 \,\&\, z = 0$, $1 \,\&\, z = z$, $1 \,|\, z = 1$, $0 \,|\, z = z$), so the sibling's new
# label is the composition
# $$f_s' = f_p \circ \text{op}(x, \cdot) \circ f_s .$$
#
# **Exercise 7 (3 points).** Functions $\{0,1\}\to\{0,1\}$ are stored as tuples `(f(0), f(1))`: identity `(0, 1)`,
# negation `(1, 0)`, constants `(0, 0)` and `(1, 1)`. Write `rake_label(op, x, f_parent, f_sibling)` returning the
# sibling's new label $f_p \circ \text{op}(x, \cdot) \circ f_s$ as a tuple of two ints, for `op` in `"&"`, `"|"` and
# `x` in 0, 1. Do not call `cc.rake_label`: the point is to work out the composition yourself.

# %% tags=["solution"] grade_id="rake_label"
def rake_label(op: str, x: int, f_parent: tuple, f_sibling: tuple) -> tuple:
    """The sibling's new label f_parent o op(x, .) o f_sibling, as (value at 0, value at 1)."""
    ### BEGIN SOLUTION
    if op == "&":
        h = (0, 1) if x else (0, 0)
    else:
        h = (1, 1) if x else (0, 1)
    return tuple(f_parent[h[f_sibling[y]]] for y in (0, 1))
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_rake_label" points=3
_ID, _NEG, _ZERO, _ONE = (0, 1), (1, 0), (0, 0), (1, 1)
for _args, _want in ((("&", 0, _ID, _ID), _ZERO), (("&", 1, _ID, _ID), _ID), (("|", 1, _ID, _ID), _ONE),
                     (("|", 0, _ID, _NEG), _NEG), (("&", 1, _NEG, _ID), _NEG)):
    check_tuple(f"rake_label{_args}", call_quietly(rake_label, *_args), _want,
                hint="a tuple of two ints (value at 0, value at 1) of f_parent o op(x, .) o f_sibling")
ok("rake_label: AND with 0 is constant, AND with 1 and OR with 0 pass through, labels compose")
### BEGIN HIDDEN TESTS
import itertools as _it

for _op, _x, _fp, _fs in _it.product("&|", (0, 1), (_ID, _NEG, _ZERO, _ONE), (_ID, _NEG, _ZERO, _ONE)):
    _want = tuple(_fp[(_x & _fs[_y]) if _op == "&" else (_x | _fs[_y])] for _y in (0, 1))
    check_tuple(f"rake_label({_op!r}, {_x}, {_fp}, {_fs})", call_quietly(rake_label, _op, _x, _fp, _fs), _want,
                hint="apply f_sibling first, then op(x, .), then f_parent; return a tuple of two ints")
### END HIDDEN TESTS

# %% [markdown]
# `cc.evaluate_formula_parallel(s)` runs the whole contraction with the companion's `rake_label` and returns the
# value and the number of rounds. Rounds against length, for three shapes of formula, next to the depth (the number of
# rounds of level-by-level evaluation, and of chain-of-thought steps in section 7):

# %%
g = torch.Generator().manual_seed(1)
sizes = scaled(full=[10, 100, 1000, 10_000, 25_000], reduced=[10, 100, 1000, 2500])
rows = []
for shape in ("balanced", "random", "caterpillar"):
    for leaves in sizes:
        s = cc.sized_formula(leaves, generator=g, shape=shape)
        value, rounds = cc.evaluate_formula_parallel(s)
        assert value == evaluate_formula(s) and rounds == math.floor(math.log2(leaves))
        rows.append((shape, len(s), rounds, cc.formula_depth(s)))
print(f"{'shape':>12s} {'symbols':>8s} {'rounds':>6s} {'log2(symbols)':>13s} {'depth':>6s}")
for shape, n, rounds, depth in rows:
    print(f"{shape:>12s} {n:8d} {rounds:6d} {math.log2(n):13.1f} {depth:6d}")

# %% [markdown]
# **Reading the table.** The number of rounds is exactly $\lfloor \log_2 L \rfloor$, where $L$ is the number of
# leaves (constants); a formula has about 4 symbols per leaf, so the rounds sit about 2 below the $\log_2$(symbols)
# column, and they grow by the same amount for every shape: about 3.3 rounds per factor of 10 in length. The depth
# (the last column) depends on the shape: it grows logarithmically for balanced formulas (the excess over
# $\lceil \log_2 L \rceil$ comes from the negations, one level each), slowly for random ones, and linearly for the
# caterpillar (a quarter of the length: 24 999 levels for 100 000 symbols). So tree contraction is a
# log-depth parallel algorithm whatever the shape, which is the content of "$\in \mathsf{NC}^1$"; level-by-level
# evaluation is not. (Parsing the parentheses, done sequentially here, is itself a prefix-sum computation of
# $O(\log n)$ parallel rounds.)
#
# ## 7. Chain of thought: one level per step
#
# A transformer that answers in one forward pass has constant depth. One that **writes intermediate results and reads
# them back** can chain as many constant-depth steps as it writes. For formulas, the natural step is: rewrite every
# *innermost redex* at once, an operator whose operands are already constants ($!0 \to 1$, $!1 \to 0$,
# $(a\&b)$ and $(a|b)$ with $a, b \in \{0,1\}$ to their value). Redexes never overlap, and one step lowers the
# depth by exactly one, so a formula of depth $d$ takes $d$ steps:
# $$(!(0|1)\&(1|!0)) \;\to\; (!1\&(1|1)) \;\to\; (0\&1) \;\to\; 0 .$$
# Each step is a *local* rewrite: what a symbol becomes depends on at most four neighbours on each side, a
# constant-depth computation for a transformer. A formula of depth $d$ therefore needs $d$ such steps. For balanced
# formulas $d = O(\log n)$, within the $\mathsf{NC}^1$ budget; for a caterpillar $d \approx n/4$, many more steps than
# the $\lfloor \log_2 L \rfloor$ rounds of tree contraction.
#
# **Exercise 8 (3 points).** Write `cot_trace(s)` returning the list `[s, s_1, ..., s_d]` where each string is the
# previous one with **every** innermost redex rewritten, and $s_d$ is `"0"` or `"1"` (for a constant, `[s]`).
# Malformed input must raise `ValueError`: check `s` first (your `evaluate_formula` raises it for you). Without that
# check, a string such as `(0&1` contains no redex, a step leaves it unchanged, and a loop that runs until the string
# is a constant never ends; the visible test calls `cot_trace("(0&1")` and stops it after 10 s. A regular expression
# such as `r"!([01])|\(([01])([&|])([01])\)"` with `re.sub` and a replacement function does one step. Do not call
# `cc.cot_trace` or `cc.reduce_step` (the companion's single step): the point is to write the step yourself.

# %% tags=["solution"] grade_id="cot_trace"
import re


def cot_trace(s: str) -> list:
    """[s, s_1, ..., "0" or "1"]: every innermost redex rewritten at each step. ValueError if malformed."""
    ### BEGIN SOLUTION
    evaluate_formula(s)  # validates
    redex = re.compile(r"!([01])|\(([01])([&|])([01])\)")

    def reduce(m):
        if m.group(1) is not None:
            return "1" if m.group(1) == "0" else "0"
        a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
        return str(a & b if op == "&" else a | b)

    trace = [s]
    while trace[-1] not in ("0", "1"):
        trace.append(redex.sub(reduce, trace[-1]))
    return trace
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_cot_trace" points=3
_s = "(!(0|1)&(1|!0))"
check_equal_list(f"cot_trace({_s!r})", call_quietly(cot_trace, _s), [_s, "(!1&(1|1))", "(0&1)", "0"],
                 hint="rewrite every innermost redex in each step, and start the list with s itself")
check_equal_list("cot_trace('1')", call_quietly(cot_trace, "1"), ["1"])
check_equal_list("cot_trace('!!0')", call_quietly(cot_trace, "!!0"), ["!!0", "!1", "0"],
                 hint="only the inner ! has a constant operand: one level per step")
try:
    call_within(10, cot_trace, "(0&1")
except ValueError:
    pass
else:
    raise AssertionError("cot_trace('(0&1') must raise ValueError: it is not a formula (check s with evaluate_formula "
                         "before rewriting)")
ok("cot_trace: one level per step, from s to its value; a malformed string raises ValueError")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(46)
for _d in range(0, 9):
    for _ in range(15):
        _s = cc.random_formula(_d, generator=_g)
        check_equal_list(f"cot_trace({_s!r})", call_quietly(cot_trace, _s), cc.cot_trace(_s),
                         hint="a step rewrites ALL innermost redexes (both !c and (a op b)) and nothing else")
for _bad in ("(0&1", "(0&1|1)", "x"):
    try:
        call_within(10, cot_trace, _bad)
    except ValueError:
        continue
    raise AssertionError(f"cot_trace({_bad!r}) must raise ValueError")
### END HIDDEN TESTS

# %% [markdown]
# A model that does one step per forward pass needs a driver: feed the formula, read the next string, feed it back,
# stop at a constant. A broken step can loop or ramble, so the driver has a budget.
#
# **Exercise 9 (2 points).** Write `run_chain(step, s, max_steps)`: starting from `s`, replace the current string by
# `step(current)` until it is `"0"` or `"1"`. Return `(answer, steps)`: the final `"0"`/`"1"` and the number of times
# `step` was called; or `(None, max_steps)` if `max_steps` calls did not reach a constant. Do not call `step` on a
# string that is already a constant.

# %% tags=["solution"] grade_id="run_chain"
def run_chain(step, s: str, max_steps: int) -> tuple:
    """Apply step until "0"/"1": (answer, calls made), or (None, max_steps) if the budget runs out."""
    ### BEGIN SOLUTION
    current = s
    for calls in range(max_steps + 1):
        if current in ("0", "1"):
            return current, calls
        if calls == max_steps:
            break
        current = step(current)
    return None, max_steps
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_run_chain" points=2
_s = "(!(0|1)&(1|!0))"
check_tuple(f"run_chain(reduce_step, {_s!r}, 10)", call_quietly(run_chain, cc.reduce_step, _s, 10), ("0", 3),
            hint="return (answer, steps): the final string '0' or '1' and the number of calls to step")
check_tuple("run_chain(reduce_step, '1', 5)", call_quietly(run_chain, cc.reduce_step, "1", 5), ("1", 0),
            hint="a constant needs no call to step")
check_tuple("run_chain(step that never progresses, s, 4)", call_quietly(run_chain, lambda t: t, _s, 4), (None, 4),
            hint="after max_steps calls without reaching '0' or '1', return (None, max_steps)")
ok("run_chain: counts its calls, stops at a constant, gives up after max_steps")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(47)
for _d in range(1, 8):
    _s = cc.random_formula(_d, generator=_g)
    _v = str(int(cc.evaluate_formula(_s)))
    _calls = []

    def _counting(t, _calls=_calls):
        _calls.append(t)
        return cc.reduce_step(t)

    check_tuple(f"run_chain(step, formula of depth {_d}, {_d})", call_quietly(run_chain, _counting, _s, _d), (_v, _d))
    assert len(_calls) == _d, f"depth {_d}, budget {_d}: step was called {len(_calls)} times, expected {_d}"
    _calls.clear()
    check_tuple(f"run_chain(step, formula of depth {_d}, {_d - 1})", call_quietly(run_chain, _counting, _s, _d - 1),
                (None, _d - 1), hint="the budget runs out one call before the constant: (None, max_steps)")
    assert len(_calls) == _d - 1, f"depth {_d}, budget {_d - 1}: step was called {len(_calls)} times, expected {_d - 1}"
check_tuple("run_chain(step that returns garbage, '(0|1)', 3)", call_quietly(run_chain, lambda t: "?", "(0|1)", 3),
            (None, 3))
check_tuple("run_chain(step, '0', 0)", call_quietly(run_chain, cc.reduce_step, "0", 0), ("0", 0))
### END HIDDEN TESTS

# %% [markdown]
# ## 8. Experiment: direct answers against chain of thought at fixed depth
#
# **Models** (`companion.circuits.model`). One architecture for all: an encoder with $d_\text{model} = 64$,
# 4 heads, MLP width 128, a learned relative position bias per head (offsets clipped at $\pm 8$, as in Shaw et al.
# 2018 and T5; no absolute positions); 2 layers (about 68 000 parameters) unless stated.
#
# * **Direct**: reads CLS + formula, answers 0/1 at the CLS position in **one** forward pass. Two of them: with
#   2 layers, and with 4 layers (about 135 000 parameters), trained on the same formulas in the same order.
# * **Chain of thought** (2 layers): reads the current string and writes, at every position, what that symbol
#   becomes in the next step (itself, a redex's value, or a blank); dropping the blanks gives the next string, which
#   is fed back with your `run_chain`. A formula of depth $d$ costs $d$ forward passes.
#
# **Training** (`python -m companion.circuits.train`, run once offline; 5 to 20 minutes per model on one core of a
# busy CPU, the 4-layer model longest): 1500 AdamW steps of 64 fresh random formulas of depths 1 to 6
# (at most 128 symbols), cross-entropy on the answer (direct) or on every symbol of one randomly chosen step of the
# trace (CoT). The script is deterministic (one thread, fixed seeds) and writes the three checkpoints shipped with
# the package (`companion/circuits/checkpoints/*.pt`, about 1.1 MB together); each records every training setting
# and the sha256 of its weights, and the test suite checks that the shipped files are what the script makes
# (with `TM_SLOW=1` it retrains them and compares bit for bit; the bits hold on the same CPU type and PyTorch
# version, and change with the thread count or the CPU's vector instructions). The notebook loads them; set
# `RETRAIN = True` to retrain here (tens of minutes).
#
# This chain of thought is not token-by-token autoregressive like Feng et al.'s: the model writes a whole step per
# forward pass (each step is still a constant-depth computation, and the number of steps grows with the input,
# which is what the theory needs). It makes the experiment fit a CPU budget.

# %% tags=["nbval-ignore-output"]
RETRAIN = False
if RETRAIN:
    from companion.circuits.train import train_model

    direct_model, _ = train_model("direct", progress=True)
    direct4_model, _ = train_model("direct4", progress=True)
    cot_model, _ = train_model("cot", progress=True)
else:
    direct_model, direct4_model, cot_model = cm.load_model("direct"), cm.load_model("direct4"), cm.load_model("cot")
for name, m in (("direct, 2 layers", direct_model), ("direct, 4 layers", direct4_model), ("CoT, 2 layers", cot_model)):
    print(f"{name}: {sum(p.numel() for p in m.parameters())} parameters")
print(f"checkpoints in {cm.CHECKPOINT_DIR}")


def model_step(s: str) -> str:
    """One chain-of-thought step by the model: predict every symbol's fate, drop the blanks."""
    with torch.no_grad():
        return cm.decode_step(s, cot_model(cm.encode([s]))[0, 1:].argmax(-1))


s = cc.random_formula(5, generator=torch.Generator().manual_seed(3))
trace = [s]  # every string the model writes, for printing


def recorded_model_step(t: str) -> str:
    """model_step, also appending the string it writes to `trace`."""
    next_string = model_step(t)
    trace.append(next_string)
    return next_string


answer, steps = run_chain(recorded_model_step, s, max_steps=10)
print("model's chain of thought:", " -> ".join(trace))
print(f"answer {answer} after {steps} steps; true value {int(evaluate_formula(s))}; direct models say "
      f"{int(cm.direct_answer(direct_model, [s])[0])} (2 layers), {int(cm.direct_answer(direct4_model, [s])[0])} (4 layers)")

# %% [markdown]
# Accuracy against depth, on fresh formulas (a different seed from training), with depths 7 and 8 beyond training.
# The dotted line is the accuracy of always answering the more frequent value at that depth.

# %%
depths = list(range(1, 9))
n_eval = scaled(full=400, reduced=100)
res = cm.accuracy_by_depth(direct_model, cot_model, depths, n_eval, seed=2024, more_direct={"direct4": direct4_model})
print(f"{'depth':>5s} {'length':>6s} | {'direct 2L':>9s} {'direct 4L':>9s} {'CoT 2L':>6s} {'baseline':>8s}"
      f"   ({n_eval} formulas per depth)")
for i, d in enumerate(depths):
    print(f"{d:5d} {res['length'][i]:6.1f} | {res['direct'][i]:9.3f} {res['direct4'][i]:9.3f} {res['cot'][i]:6.3f} "
          f"{res['baseline'][i]:8.3f}")
fig, ax = plt.subplots(figsize=(7, 4))
cm.plot_accuracy(res, ax=ax, train_depths=[1, 6],
                 labels={"direct": "direct answer, 2 layers", "direct4": "direct answer, 4 layers"})
ax.set_title("Direct answers decay with depth (4 layers later than 2); the 2-layer chain of thought holds",
             fontsize=10)
plt.show()
plt.close(fig)

# %% [markdown]
# Where does the chain of thought fail? Its errors, by the length of the formula, against how often such long
# formulas occur in training (the first 20 000 training formulas of the direct models, drawn again with the
# training script's seed and settings; the CoT model's formulas come from the same distribution):

# %%
from companion.circuits.train import run_spec

_spec = run_spec("direct")
_g = torch.Generator().manual_seed(_spec["seed"])
train_lengths = [len(t) for _ in range(20_000 // _spec["batch"] + 1)
                 for t in cm.formula_dataset(_spec["batch"], _spec["depths"], generator=_g, max_len=_spec["max_len"],
                                             p_not=_spec["p_not"])][:20_000]
_g = torch.Generator().manual_seed(2024)  # the evaluation formulas of accuracy_by_depth, drawn again
eval_lengths = [len(t) for d in depths for t in cm.formula_dataset(n_eval, [d], generator=_g)]
wrong = res["cot_wrong_lengths"]
n_long = sum(n > 60 for n in eval_lengths)
n_long_wrong = sum(n > 60 for n in wrong)
print(f"CoT errors: {len(wrong)} of {len(eval_lengths)} formulas, {n_long_wrong} of them on formulas of more than "
      f"60 symbols")
print(f"error rate: {n_long_wrong / max(n_long, 1):.3f} on the {n_long} formulas of more than 60 symbols, "
      f"{(len(wrong) - n_long_wrong) / (len(eval_lengths) - n_long):.4f} on the {len(eval_lengths) - n_long} shorter ones")
print(f"formulas of more than 60 symbols: {sum(n > 60 for n in train_lengths) / len(train_lengths):.1%} of the "
      f"training formulas, {n_long / len(eval_lengths):.1%} of the evaluation formulas")

# %% [markdown]
# **Reading it.** At depths 1 and 2 (formulas of 4 to 9 symbols on average) every model is perfect. From depth 3
# on, the 2-layer direct model loses accuracy with every level: 0.94, 0.85, 0.79, then 0.70 at depth 6, the deepest
# it was trained on, and 0.64 at depth 8, where the baseline (always answering the more frequent value) scores
# 0.52. Two layers do a fixed amount of sequential work per answer; a deeper formula needs more, and beyond that the
# model can only guess from features of the string that correlate with the value, which keeps it above the baseline
# but far from perfect. With **4 layers** (same formulas, same number of steps) the curve moves up but keeps its
# shape: 0.99, 0.93, 0.87 at depths 3 to 5, 0.75 at depth 6 and 0.68 at depth 8; from depth 4 to 7 that is about
# what the 2-layer model scored one level shallower (0.93 against 0.94, 0.87 against 0.85, 0.75 against 0.79,
# 0.71 against 0.70). The 2-layer model trained to take *one step at a time* is perfect up to
# depth 5 and at 0.99 on depth 6. Beyond the trained depths it degrades (0.97 and 0.93 at depths 7 and 8). Its
# errors are mostly on long strings (the cell above): 40 of its 47 errors are on formulas of more than 60 symbols,
# which make up 3.6% of the training formulas (and 17% of the evaluation formulas, which reach depth 8): an error
# rate of 0.074 on those, against 0.003 on the shorter ones. One misplaced blank or value in one step is never
# repaired by the next steps, so a chain of $d$ steps is correct only if every one of its steps is: that is the
# price of a chain of thought.
#
# **Against Feng et al. (2023).** Their task is arithmetic expressions, with models far larger than ours ($d$ in the
# hundreds) trained much longer. Their logs report, for expressions with 4 operators: direct answers 63.6% with
# 3 layers and 94.7% with 5 layers, chain of thought 99.99% with 3 layers; with 6 operators, direct 47.0% with
# 5 layers against 99.98% with chain of thought. On the points both experiments measure, they agree: a fixed-depth
# model answering directly loses accuracy as the input grows; more layers raise that accuracy (3 to 5 layers there,
# 2 to 4 here) without removing the decay (their 5-layer model falls from 94.7% to 47.0% between 4 and 6 operators,
# our 4-layer one from 0.99 to 0.75 between depths 3 and 6); and a shallow model with a chain of thought is near
# perfect. With two depths each, neither experiment says how the gain from more layers grows or shrinks with depth.
# Neither proves the theorem either (both use bounded lengths, where some constant-depth network exists for every
# finite set of inputs); they show what training finds.
#
# ## 9. Explore: formula depth, the tree, the rounds and the model's answers
#
# The tree of a random formula drawn with `cc.random_formula(depth)`. Each node is coloured by the tree-contraction
# round (section 6) in which it is removed; round 0 marks the negations, which are not raked but folded into the
# label of the edge above them before the first round. The title gives the true value, the depth, the number of
# rounds, and both models' answers. A static picture first, then a widget where you choose the depth and the seed.

# %%
def show(depth: int = 5, seed: int = 0) -> None:
    s = cc.random_formula(depth, generator=torch.Generator().manual_seed(seed))
    fig, ax = plt.subplots(figsize=(10, 4))
    cm.show_formula(s, direct_model, cot_model, ax=ax)
    plt.show()
    plt.close(fig)


show(5, 0)

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets

widgets.interact(
    show,
    depth=widgets.IntSlider(value=5, min=1, max=7, step=1, continuous_update=False),
    seed=widgets.IntSlider(value=0, min=0, max=50, step=1, continuous_update=False),
);

# %% [markdown]
# ## 10. Scale it: batched circuit evaluation
#
# `Circuit.evaluate` runs a whole level of gates for a whole batch of input vectors with one matrix product (counts of
# true inputs) and one comparison; the natural baseline, `Circuit.evaluate_loop`, walks the gates one by one for one
# input vector at a time in Python. On a CUDA GPU the same code runs with the inputs on the GPU.
# `benchmarks/circuits.py` reports the full table (and the rounds of tree contraction up to $10^5$ symbols); here, on
# the current device:

# %% tags=["nbval-ignore-output"]
device = get_device()
batch = scaled(full=65536, reduced=8192)
circuits = {"majority, 64 inputs": cc.majority_circuit(64), "parity (TC0), 64 inputs": cc.parity_circuit(64, "tc0"),
            "adder, 2 x 32 bits": cc.adder_circuit(32)}


def best_of(fn, repeats=3):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


print(f"{device}: input vectors per second")
for name, circ in circuits.items():
    x = torch.rand(batch, circ.n_inputs, generator=torch.Generator().manual_seed(0)) < 0.5
    small = x[:256]
    assert torch.equal(circ.evaluate(small), torch.tensor(circ.evaluate_loop(small), dtype=torch.bool))
    loop = 256 / best_of(lambda: circ.evaluate_loop(small), repeats=1)
    xd = x.to(device)
    fast = batch / best_of(lambda: circ.evaluate(xd))
    print(f"  {name:>24s} ({circ.size:4d} gates, depth {circ.depth}): loop {loop:9.3g}, batched {fast:9.3g} "
          f"({fast / loop:5.0f}x)")

# %% [markdown]
# ## 11. What "cannot" means
#
# "A constant-depth transformer cannot evaluate Boolean formulas" is shorthand. Precisely:
#
# 1. **Conditional.** It assumes $\mathsf{TC}^0 \ne \mathsf{NC}^1$, which is unproven. Circuit lower bounds against
#    $\mathsf{TC}^0$ are notoriously weak; if the classes were equal, the statement would be false.
# 2. **Asymptotic, about families.** At any one length $n$ there are finitely many formulas, so some depth-2 circuit
#    (an exponential-size lookup table, if nothing better) is correct on all of them, and a big enough fixed network
#    is correct on all inputs up to any length you choose. The theorem is about **families**: no family of constant
#    depth and polynomial size, built by **one rule for every length** (uniformity; a transformer is one set of weights
#    used at every length), is correct at **all** lengths.
# 3. **Tied to a precision regime.** Log precision (Merrill & Sabharwal), polynomial precision (Chiang), RoPE with
#    polynomial precision (Chen et al.); constant precision is weaker still ($\mathsf{AC}^0$, Li et al.). Exact
#    arithmetic on unbounded reals is outside all of them.
# 4. **About one forward pass.** The bound is on what a single forward pass computes. Each chain-of-thought step is
#    another forward pass that reads the previous ones' output, so $T$ steps compute a circuit of depth proportional
#    to $T$, and once $T$ grows with $n$ the $\mathsf{TC}^0$ bound no longer applies. In our scheme $T$ is the
#    formula's depth: $O(\log n)$ for balanced formulas, about $n/4$ for a caterpillar.
# 5. **Silent about learning.** Our 2-layer direct model's 0.79 at depth 5 (formulas of about 32 symbols), and the
#    4-layer one's 0.87, are not the theorem at work: the theorem says nothing about one finite length. They are what
#    1500 steps of training found. Conversely,
#    the theorems say which weights exist, not which ones training finds.
#
# ## Limits and pitfalls
#
# * **$\mathsf{TC}^0 \ne \mathsf{NC}^1$ is open.** Every "cannot" here is conditional on it (or on $\mathsf{L} \ne
#   \mathsf{P}$ for other problems, Merrill & Sabharwal).
# * **Uniform vs non-uniform.** Non-uniform constant-depth families are very strong (they decide some undecidable unary
#   languages); the transformer results give uniform families, and the lower bounds assumed are for those classes.
# * **Precision regime.** State it: constant ($\mathsf{AC}^0$), $O(\log n)$ or $\mathrm{poly}(n)$ bits
#   ($\mathsf{TC}^0$). The one-layer parity construction works in float32 at $n = 4096$ and fails in float16.
# * **NOT gates are free** in depth counts (and in this library); an AND/OR circuit with NOTs in the middle has an
#   equivalent one of the same depth with NOTs at the inputs.
# * **Majority vs threshold.** MAJORITY is strict (a tie is false); THRESHOLD$_k$ is "at least $k$".
# * **"Cannot" is asymptotic.** At finite lengths, accuracy curves illustrate but do not test the theorem.
# * **Our chain of thought is one step per forward pass**, not token by token; Feng et al.'s constructions generate
#   each step autoregressively.
# * **Depth is not length.** A caterpillar formula of $n$ symbols has depth $\approx n/4$ (that many CoT steps in our
#   scheme) but contracts in $\log_2 (n/4)$ rounds.
#
# ## References
#
# * M. Furst, J. Saxe, M. Sipser, "Parity, circuits, and the polynomial-time hierarchy", Math. Systems Theory 17, 1984
#   (FOCS 1981); M. Ajtai, "$\Sigma^1_1$-formulae on finite structures", Ann. Pure Appl. Logic 24, 1983.
# * J. Håstad, "Almost optimal lower bounds for small depth circuits", STOC 1986 (the switching lemma).
# * N. Linial, Y. Mansour, N. Nisan, "Constant depth circuits, Fourier transform, and learnability", J. ACM 40, 1993.
# * S. R. Buss, "The Boolean formula value problem is in ALOGTIME", STOC 1987.
# * S. R. Buss, S. A. Cook, A. Gupta, V. Ramachandran, "An optimal parallel algorithm for formula evaluation",
#   SIAM J. Comput. 21, 755-780, 1992.
# * K. Abrahamson, N. Dadoun, D. Kirkpatrick, T. Przytycka, "A simple parallel tree contraction algorithm",
#   J. Algorithms 10, 1989; G. L. Miller, J. H. Reif, "Parallel tree contraction and its application", FOCS 1985.
# * H. Vollmer, *Introduction to Circuit Complexity: A Uniform Approach*, Springer, 1999.
# * W. Merrill, A. Sabharwal, "The Parallelism Tradeoff: Limitations of Log-Precision Transformers", TACL 2023,
#   arXiv:2207.00729.
# * D. Chiang, "Transformers in Uniform TC$^0$", TMLR 2025, arXiv:2409.13629.
# * B. Chen, X. Li, Y. Liang, J. Long, Z. Shi, Z. Song, "Circuit Complexity Bounds for RoPE-based Transformer
#   Architecture", 2024, arXiv:2411.07602 (EMNLP 2025).
# * G. Feng, B. Zhang, Y. Gu, H. Ye, D. He, L. Wang, "Towards Revealing the Mystery behind Chain of Thought: A
#   Theoretical Perspective", NeurIPS 2023, arXiv:2305.15408.
# * Z. Li, H. Liu, D. Zhou, T. Ma, "Chain of Thought Empowers Transformers to Solve Inherently Serial Problems",
#   ICLR 2024, arXiv:2402.12875.
# * M. Hahn, "Theoretical Limitations of Self-Attention in Neural Sequence Models", TACL 2020, arXiv:1906.06755.
# * D. Chiang, P. Cholak, "Overcoming a Theoretical Limitation of Self-Attention", ACL 2022, arXiv:2202.12172.
# * P. Shaw, J. Uszkoreit, A. Vaswani, "Self-Attention with Relative Position Representations", NAACL 2018,
#   arXiv:1803.02155; C. Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
#   Transformer", JMLR 2020, arXiv:1910.10683 (learned relative position biases, as in our tiny model).
#
# ## What you can now do
#
# * Define $\mathsf{AC}^0$, $\mathsf{TC}^0$ and $\mathsf{NC}^1$, say which inclusions are known to be strict, and what
#   uniformity adds.
# * Build threshold circuits by hand: majority, parity in depth 2 with $O(n)$ gates, comparison in depth 4, and
#   explain why a depth-2 AND/OR circuit for parity needs $2^{n-1}$ terms.
# * Compute average sensitivity and explain why parity (sensitivity $n$) is the hard case for $\mathsf{AC}^0$ and for
#   soft attention.
# * State which transformer models are in $\mathsf{TC}^0$, under which precision and uniformity, and what follows
#   for the $\mathsf{NC}^1$-complete Boolean formula value problem.
# * Evaluate a formula sequentially with a stack, and in $\lfloor \log_2 L \rfloor$ parallel rounds by tree
#   contraction.
# * Write the chain of thought that reduces a formula one level per step, drive a step model with a budget, and read
#   an accuracy-against-depth experiment for what it does and does not show.
