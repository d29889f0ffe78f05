"""Variable-free Boolean formulas: generation, evaluation, log-depth tree contraction, chain-of-thought traces.

Grammar (fully parenthesised, no spaces)::

    F := 0 | 1 | !F | (F&F) | (F|F)

Deciding the value of such a formula is the Boolean formula value problem,
complete for NC1 (= ALOGTIME) under DLOGTIME reductions (Buss 1987).

* :func:`evaluate_formula`: a sequential left-to-right stack evaluator, O(|s|).
* :func:`evaluate_formula_parallel`: tree contraction (Abrahamson, Dadoun,
  Kirkpatrick, Przytycka 1989). Every round rakes every other leaf, so a tree
  with L leaves is reduced to one in ``floor(log2 L)`` rounds of two parallel
  sub-steps each: O(log |s|) rounds, whatever the shape of the formula.
* :func:`cot_trace`: the chain of thought used in the chapter. One step rewrites
  *every innermost redex* (``!0``, ``!1``, ``(a&b)``, ``(a|b)`` with a, b constants)
  at once; the number of steps is the depth of the formula.

Parsing is done with an explicit stack (no recursion), so formulas of 10^5
symbols nested 10^5 deep are fine.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import torch

__all__ = [
    "FormulaTree",
    "compose",
    "contraction_schedule",
    "cot_trace",
    "evaluate_formula",
    "evaluate_formula_parallel",
    "formula_depth",
    "parse_formula",
    "max_rounds_bound",
    "plot_formula",
    "rake_label",
    "rake_schedule",
    "random_formula",
    "reduce_step",
    "sized_formula",
]

ALPHABET = set("01!&|()")
ID, NEG, ZERO, ONE = (0, 1), (1, 0), (0, 0), (1, 1)  # functions {0,1} -> {0,1} as (f(0), f(1))


# ------------------------------------------------------------------ parsing
@dataclass
class FormulaTree:
    """A parsed formula. Node ids are in post-order (children before parents, leaves left to right).

    ``kind[v]`` is one of ``"0", "1", "!", "&", "|"``; ``left[v]``/``right[v]`` are child
    ids or -1 (a NOT node uses ``left`` only); ``root`` is the last node.
    """

    kind: list[str]
    left: list[int]
    right: list[int]

    @property
    def root(self) -> int:
        return len(self.kind) - 1

    @property
    def n_leaves(self) -> int:
        return sum(1 for k in self.kind if k in "01")

    def depth(self) -> list[int]:
        """Height of every node: constants 0, a NOT or binary node 1 + its highest child."""
        h = [0] * len(self.kind)
        for v, k in enumerate(self.kind):
            if k == "!":
                h[v] = 1 + h[self.left[v]]
            elif k in "&|":
                h[v] = 1 + max(h[self.left[v]], h[self.right[v]])
        return h

    def values(self) -> list[int]:
        """Value of every node, bottom-up (ids are post-order)."""
        val = [0] * len(self.kind)
        for v, k in enumerate(self.kind):
            if k in "01":
                val[v] = int(k)
            elif k == "!":
                val[v] = 1 - val[self.left[v]]
            elif k == "&":
                val[v] = val[self.left[v]] & val[self.right[v]]
            else:
                val[v] = val[self.left[v]] | val[self.right[v]]
        return val


def _malformed(s: str, pos: int, why: str) -> ValueError:
    shown = s if len(s) <= 60 else s[max(0, pos - 25): pos + 25]
    return ValueError(f"malformed formula at position {pos}: {why} (in {shown!r}); "
                      "grammar: F := 0 | 1 | !F | (F&F) | (F|F), no spaces")


def parse_formula(s: str) -> FormulaTree:
    """Parse a formula into a :class:`FormulaTree`; ``ValueError`` naming the position if malformed."""
    if not isinstance(s, str):
        raise TypeError(f"a formula is a str, got {type(s).__name__}")
    if not s:
        raise ValueError("malformed formula: empty string")
    kind: list[str] = []
    left: list[int] = []
    right: list[int] = []
    stack: list[object] = []  # node ids (int) and markers ("(", "!", "&", "|")

    def new(k: str, a: int = -1, b: int = -1) -> int:
        kind.append(k)
        left.append(a)
        right.append(b)
        return len(kind) - 1

    def push_node(v: int) -> None:
        while stack and stack[-1] == "!":
            stack.pop()
            v = new("!", v)
        stack.append(v)

    for pos, ch in enumerate(s):
        top = stack[-1] if stack else None
        if ch in "01!(":
            if isinstance(top, int):
                raise _malformed(s, pos, f"{ch!r} after a complete subformula (expected '&', '|' or ')')")
            if ch == "!" or ch == "(":
                stack.append(ch)
            else:
                push_node(new(ch))
        elif ch in "&|":
            if not (isinstance(top, int) and len(stack) >= 2 and stack[-2] == "("):
                raise _malformed(s, pos, f"operator {ch!r} must follow '(' and a subformula")
            stack.append(ch)
        elif ch == ")":
            if not (len(stack) >= 4 and isinstance(stack[-1], int) and stack[-2] in ("&", "|")
                    and isinstance(stack[-3], int) and stack[-4] == "("):
                raise _malformed(s, pos, "')' must close '(F&F)' or '(F|F)'")
            b, op, a = stack.pop(), stack.pop(), stack.pop()
            stack.pop()
            push_node(new(op, a, b))  # type: ignore[arg-type]
        else:
            raise _malformed(s, pos, f"unexpected character {ch!r}")
    if len(stack) != 1 or not isinstance(stack[0], int):
        raise _malformed(s, len(s), "the formula is incomplete (unclosed '(' or a dangling '!' or operator)")
    return FormulaTree(kind, left, right)


def evaluate_formula(s: str) -> bool:
    """Value of a formula (sequential, O(|s|)); ``ValueError`` if malformed."""
    t = parse_formula(s)
    return bool(t.values()[t.root])


def formula_depth(s: str) -> int:
    """Depth of a formula: 0 for a constant, 1 + the deepest operand for ``!F`` and ``(F op F)``."""
    t = parse_formula(s)
    return t.depth()[t.root]


# ------------------------------------------------------------------ generation
def _rng(generator: torch.Generator | None) -> random.Random:
    if generator is None:
        raise TypeError("pass generator=torch.Generator().manual_seed(...) so the formula is reproducible")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))


def random_formula(depth: int, *, generator: torch.Generator, p_not: float = 0.25) -> str:
    """A random formula of depth exactly ``depth``.

    depth 0: a uniform constant. Otherwise, with probability ``p_not`` a NOT of a
    depth-(d-1) formula, else ``(A op B)`` with op uniform in {&, |}, one operand of
    depth d-1 and the other of a depth uniform in 0..d-1 (on a random side).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    if isinstance(p_not, bool) or not isinstance(p_not, (int, float)) or not 0 <= p_not <= 1:
        raise ValueError(f"p_not must be a probability in [0, 1], got {p_not!r}")
    rng = _rng(generator)

    def gen(d: int) -> str:
        if d == 0:
            return rng.choice("01")
        if rng.random() < p_not:
            return "!" + gen(d - 1)
        a, b = gen(d - 1), gen(rng.randrange(d))
        if rng.random() < 0.5:
            a, b = b, a
        return f"({a}{rng.choice('&|')}{b})"

    return gen(depth)


def sized_formula(n_leaves: int, *, generator: torch.Generator, shape: str = "random", p_not: float = 0.1) -> str:
    """A formula with ``n_leaves`` constants, of a chosen tree shape (for large sizes; no recursion).

    * ``"random"``: split the leaves at a uniform point, recursively (depth ~ O(log n) on average);
    * ``"balanced"``: split in halves (depth ceil(log2 n));
    * ``"caterpillar"``: a left spine ``((((c op c) op c) op c) ...)``, depth n - 1.
    Each subformula is negated with probability ``p_not``.
    """
    if isinstance(n_leaves, bool) or not isinstance(n_leaves, int) or n_leaves < 1:
        raise ValueError(f"n_leaves must be an int >= 1, got {n_leaves!r}")
    rng = _rng(generator)
    neg = lambda: "!" if rng.random() < p_not else ""  # noqa: E731
    if shape == "caterpillar":
        parts = ["(" * (n_leaves - 1), neg(), rng.choice("01")]
        for _ in range(n_leaves - 1):
            parts.append(rng.choice("&|") + neg() + rng.choice("01") + ")")
        return "".join(parts)
    if shape not in ("random", "balanced"):
        raise ValueError(f"shape must be 'random', 'balanced' or 'caterpillar', got {shape!r}")
    out: list[str] = []
    todo: list[object] = [n_leaves]  # ints: subformulas still to write; strs: literal text
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        m = int(item)  # type: ignore[call-overload]
        prefix = neg()
        if m == 1:
            out.append(prefix + rng.choice("01"))
            continue
        k = m // 2 if shape == "balanced" else rng.randint(1, m - 1)
        out.append(prefix + "(")
        todo.extend([")", m - k, rng.choice("&|"), k])  # popped in reverse: k, op, m - k, ")"
    return "".join(out)


# ------------------------------------------------------------------ chain of thought
_REDEX = re.compile(r"!([01])|\(([01])([&|])([01])\)")


def _reduce(m: re.Match) -> str:
    if m.group(1) is not None:
        return "1" if m.group(1) == "0" else "0"
    a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
    return str(a & b if op == "&" else a | b)


def reduce_step(s: str) -> str:
    """Rewrite every innermost redex (``!c`` or ``(c op c)``, c a constant) at once: one CoT step.

    The redexes never overlap, so the result is well defined; it is the formula whose
    tree is the old tree with every node of height 1 replaced by its value.
    """
    if s in ("0", "1"):
        return s
    return _REDEX.sub(_reduce, s)


def cot_trace(s: str) -> list[str]:
    """The chain of thought: ``[s, step 1, ..., "0" or "1"]``, ``formula_depth(s) + 1`` strings."""
    parse_formula(s)  # raises on malformed input
    trace = [s]
    while trace[-1] not in ("0", "1"):
        trace.append(reduce_step(trace[-1]))
    return trace


# ------------------------------------------------------------------ tree contraction
def compose(f: tuple[int, int], g: tuple[int, int]) -> tuple[int, int]:
    """``f o g`` for functions {0,1} -> {0,1} stored as ``(f(0), f(1))``: apply g first."""
    return (f[g[0]], f[g[1]])


def rake_label(op: str, x: int, f_parent: tuple[int, int], f_sibling: tuple[int, int]) -> tuple[int, int]:
    """The sibling's new edge label when a leaf of value ``x`` (its own label already applied) is raked.

    The parent computed ``f_parent(op(x, f_sibling(y)))`` from the sibling's value y;
    ``op(x, .)`` is the identity or a constant (AND with 0 is 0, OR with 1 is 1), so the
    parent disappears and the sibling's label becomes ``f_parent o op(x, .) o f_sibling``.
    """
    if op == "&":
        h = ID if x else ZERO
    elif op == "|":
        h = ONE if x else ID
    else:
        raise ValueError(f"op must be '&' or '|', got {op!r}")
    return compose(f_parent, compose(h, f_sibling))


def _contract(s: str, record: bool = False):
    """Tree contraction of ``s``: ``(value, rounds)``, or with ``record`` also the tree, each node's removal
    round and the leaves raked in each half-round."""
    t = parse_formula(s)
    n = len(t.kind)
    # absorb NOT nodes into edge labels: each non-NOT node's label is NOT^(number of NOTs right above it)
    label = [ID] * n
    parent = [-1] * n
    is_left = [False] * n
    keep = [k != "!" for k in t.kind]
    stack = [(t.root, -1, False, 0)]
    while stack:  # top-down: (node, binary parent, side, pending NOT parity)
        v, p, side, neg = stack.pop()
        if t.kind[v] == "!":
            stack.append((t.left[v], p, side, neg ^ 1))
            continue
        label[v] = NEG if neg else ID
        parent[v], is_left[v] = p, side
        if t.kind[v] in "&|":
            stack.append((t.left[v], v, True, 0))
            stack.append((t.right[v], v, False, 0))
    child = {v: [t.left[v], t.right[v]] for v in range(n) if t.kind[v] in "&|"}
    for v in child:  # children past NOT chains
        for i, c in enumerate(child[v]):
            while t.kind[c] == "!":
                c = t.left[c]
            child[v][i] = c
    root = t.root
    while t.kind[root] == "!":
        root = t.left[root]
    leaves = [v for v in range(n) if t.kind[v] in "01"]  # post-order: left to right
    value = {v: int(t.kind[v]) for v in leaves}
    removed_at = [0 if not keep[v] else -1 for v in range(n)]  # NOT nodes: absorbed before round 1
    rounds = 0
    halves: list[list[int]] = []
    while len(leaves) > 1:
        rounds += 1
        odd = leaves[0::2]  # leaves numbered 1, 3, 5, ... (1-based)
        for want_left in (True, False):  # two synchronous sub-steps; no two rakes interfere
            halves.append([])
            for leaf in odd:
                if is_left[leaf] != want_left:
                    continue
                halves[-1].append(leaf)
                p = parent[leaf]
                sib = child[p][1] if want_left else child[p][0]
                x = label[leaf][value[leaf]]
                label[sib] = rake_label(t.kind[p], x, label[p], label[sib])
                gp = parent[p]
                parent[sib], is_left[sib] = gp, is_left[p]
                if gp == -1:
                    root = sib
                else:
                    child[gp][0 if is_left[p] else 1] = sib
                removed_at[leaf] = removed_at[p] = rounds
        leaves = leaves[1::2]
    final = label[root][value[root]]
    removed_at[root] = rounds
    if record:
        return bool(final), rounds, t, removed_at, halves
    return bool(final), rounds


def evaluate_formula_parallel(s: str) -> tuple[bool, int]:
    """Value of a formula by tree contraction, and the number of parallel rounds used.

    NOT nodes are first absorbed into edge labels (functions {0,1} -> {0,1}; on a
    PRAM this is a prefix-parity computation). Then, with the L leaves numbered
    1..L from left to right, each round rakes the odd-numbered leaves that are left
    children, then those that are right children (:func:`rake_label`), and halves the
    numbering. Two leaves raked in the same sub-step never share a parent or a
    grandparent edge (they would be consecutive), so each sub-step is one parallel
    step. L becomes floor(L/2) per round: ``rounds = floor(log2 L) <= log2 |s|``.
    (Abrahamson, Dadoun, Kirkpatrick, Przytycka, J. Algorithms 10, 1989.)
    """
    return _contract(s)  # type: ignore[return-value]


def contraction_schedule(s: str) -> tuple[FormulaTree, list[int]]:
    """The parsed tree and, for each node, the round in which contraction removed it (0: a NOT, absorbed)."""
    _, _, t, removed, _ = _contract(s, record=True)
    return t, removed


def rake_schedule(s: str) -> tuple[FormulaTree, list[list[int]]]:
    """The parsed tree and the leaves raked in each half-round, in order.

    Entry ``2r`` lists the node ids (of :func:`parse_formula`'s tree) of the leaves raked in the first
    sub-step of round ``r + 1`` (odd-numbered leaves that are left children), entry ``2r + 1`` those of
    the second sub-step (right children); ``len(halves) == 2 * rounds``. A schedule is valid when, in
    the tree as it stands before each half-round, no two of its leaves share a parent and no leaf's
    parent is another's grandparent: then the rakes of a half-round commute, and run in one parallel step.
    """
    _, _, t, _, halves = _contract(s, record=True)
    return t, halves


def plot_formula(s: str, ax=None, *, title: str | None = None, max_nodes: int = 400):
    """Draw the formula's tree, nodes coloured by the contraction round that removes them. Returns the axes."""
    import matplotlib.pyplot as plt

    t, removed = contraction_schedule(s)
    n = len(t.kind)
    if n > max_nodes:
        raise ValueError(f"{n} nodes is too many to draw (max_nodes={max_nodes})")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    # x: leaves at 0, 1, 2, ... left to right; parents at the mean of their children; y: -depth from the root
    x = [0.0] * n
    nxt = 0
    for v, k in enumerate(t.kind):
        if k in "01":
            x[v], nxt = float(nxt), nxt + 1
        elif k == "!":
            x[v] = x[t.left[v]]
        else:
            x[v] = (x[t.left[v]] + x[t.right[v]]) / 2
    y = [0] * n
    for v in range(n - 1, -1, -1):  # parents after children in post-order: walk down from the root
        for c in (t.left[v], t.right[v]):
            if c >= 0:
                y[c] = y[v] - 1
    rounds = max(removed) if removed else 0
    cmap = plt.get_cmap("viridis", max(rounds + 1, 2))
    for v in range(n):
        for c in (t.left[v], t.right[v]):
            if c >= 0:
                ax.plot([x[v], x[c]], [y[v], y[c]], color="0.6", lw=0.8, zorder=1)
    vals = t.values()
    for v in range(n):
        r, g_, b_, _ = cmap(removed[v])
        ink = "k" if 0.299 * r + 0.587 * g_ + 0.114 * b_ > 0.5 else "w"  # readable on light and dark fills
        ax.scatter([x[v]], [y[v]], s=220, color=cmap(removed[v]), zorder=2, edgecolors="k", linewidths=0.5)
        ax.text(x[v], y[v], t.kind[v], ha="center", va="center", fontsize=8, color=ink, zorder=3)
    ax.set_xticks([])
    ax.set_ylabel("depth (root at 0)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-0.5, max(rounds, 1) + 0.5))
    plt.colorbar(sm, ax=ax, label="contraction round (0: NOT absorbed)", ticks=range(max(rounds, 1) + 1))
    ax.set_title(title or f"value {vals[t.root]}, depth {t.depth()[t.root]}, {t.n_leaves} leaves, "
                 f"{rounds} rounds = floor(log2 {t.n_leaves})", fontsize=9)
    return ax


def max_rounds_bound(length: int) -> int:
    """floor(log2 L) with L <= (length + 3) / 4 leaves: the largest round count a formula of that length can need."""
    leaves = max(1, (length + 3) // 4)
    return int(math.floor(math.log2(leaves)))
