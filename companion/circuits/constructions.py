"""Circuits built by hand: majority, parity (AC0 and TC0 style), addition, comparison; sensitivity.

Input layout of the two-number circuits: ``a`` then ``b``, each ``n`` bits, least
significant bit first (wire ``i`` is ``a_i``, wire ``n + i`` is ``b_i``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

from companion.circuits.circuit import Circuit

__all__ = [
    "adder_circuit",
    "all_inputs",
    "average_sensitivity",
    "bits_to_int",
    "circuit_measures",
    "comparison_circuit",
    "int_to_bits",
    "majority_circuit",
    "majority_sensitivity",
    "parity_circuit",
    "plot_circuit_sizes",
]


def _check_n(n: int, lo: int = 1) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < lo:
        raise ValueError(f"n must be an int >= {lo}, got {n!r}")


def all_inputs(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All ``2**n`` input vectors as a bool tensor of shape ``(2**n, n)``; row r is r in binary, bit i = input i."""
    _check_n(n, 0)
    if n > 24:
        raise ValueError(f"2**{n} rows is too many to enumerate")
    r = torch.arange(2**n, device=device)
    return ((r[:, None] >> torch.arange(n, device=device)) & 1).bool()


def int_to_bits(values: torch.Tensor, n: int) -> torch.Tensor:
    """Non-negative integers (any shape) to their n low bits, least significant first.

    values: an integer tensor of any shape, entries in ``0 .. 2**63 - 1``; n: 0 .. 63.
    Returns a bool tensor of shape ``values.shape + (n,)`` (bits of ``v mod 2**n``).
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be an integer torch.Tensor, got {type(values).__name__}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values must be an integer tensor (e.g. int64), got dtype {values.dtype}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 63:
        raise ValueError(f"n must be an int in 0..63, got {n!r}")
    if values.numel() and bool((values < 0).any()):
        raise ValueError(f"values must be non-negative, got a minimum of {int(values.min())}")
    return ((values.long()[..., None] >> torch.arange(n, device=values.device)) & 1).bool()


def bits_to_int(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`int_to_bits`: ``(..., n)`` bits, LSB first, to int64 values of shape ``(...)``."""
    if not isinstance(bits, torch.Tensor):
        raise TypeError(f"bits must be a bool or 0/1 integer torch.Tensor, got {type(bits).__name__}")
    if bits.dim() == 0:
        raise ValueError("bits must have at least one axis (the last axis holds the bits), got a 0-d tensor")
    n = bits.shape[-1]
    if n > 63:
        raise ValueError(f"at most 63 bits fit in int64, got {n}")
    if bits.dtype != torch.bool:
        if bits.is_floating_point() or bits.is_complex():
            raise TypeError(f"bits must be bool or 0/1 integers, got dtype {bits.dtype}")
        if bits.numel() and bool(((bits != 0) & (bits != 1)).any()):
            raise ValueError("integer bits must be 0 or 1")
    return (bits.long() << torch.arange(n, device=bits.device)).sum(-1)


def majority_circuit(n: int) -> Circuit:
    """MAJORITY of n bits (true iff more than n/2 are true): one MAJORITY gate, depth 1, size 1."""
    _check_n(n)
    c = Circuit(n)
    return c.set_outputs([c.add("MAJORITY", range(n))])


def parity_circuit(n: int, basis: str = "ac0") -> Circuit:
    """PARITY of n bits (true iff an odd number are true).

    * ``basis="ac0"``: a depth-2 DNF, the OR of one AND term per odd-weight input
      vector: ``2**(n-1)`` AND gates of fan-in n, n NOT gates, one OR
      (``n + 2**(n-1) + 1`` gates). Exponential size, and unavoidable at depth 2: a
      term that leaves some variable free accepts two inputs of different parity, so
      every DNF for parity has ``2**(n-1)`` terms (and, dually, every CNF ``2**(n-1)``
      clauses). This counting argument is elementary. For every constant depth d,
      Hastad (1986, the switching lemma) shows that AND/OR/NOT circuits for parity need
      ``exp(Omega(n**(1/(d-1))))`` gates.
    * ``basis="tc0"``: depth 2, ``n + floor(n/2) + 1`` gates. Layer 1:
      ``G_k = [x_1 + ... + x_n >= k]`` for k = 1..n. Since ``sum_k (-1)^(k+1) G_k``
      is 1 when the count s is odd and 0 when it is even, parity is a single
      threshold gate over ``G_1, NOT G_2, G_3, NOT G_4, ...``: the number of those
      that are true is ``floor(n/2) + 1`` if s is odd and ``floor(n/2)`` if s is even.
    """
    _check_n(n)
    c = Circuit(n)
    if basis == "ac0":
        negs = [c.add("NOT", [i]) for i in range(n)]
        terms = []
        for bits in itertools.product((0, 1), repeat=n):
            if sum(bits) % 2 == 1:
                terms.append(c.add("AND", [i if b else negs[i] for i, b in enumerate(bits)]))
        return c.set_outputs([c.add("OR", terms)])
    if basis == "tc0":
        g = [c.add("THRESHOLD", range(n), k=k) for k in range(1, n + 1)]
        alternating = [g[k - 1] if k % 2 == 1 else c.add("NOT", [g[k - 1]]) for k in range(1, n + 1)]
        return c.set_outputs([c.add("THRESHOLD", alternating, k=n // 2 + 1)])
    raise ValueError(f"basis must be 'ac0' or 'tc0', got {basis!r}")


def adder_circuit(n: int) -> Circuit:
    """Sum of two n-bit numbers: n + 1 output bits (LSB first), constant depth (carry look-ahead).

    ``g_j = a_j AND b_j`` (generate), ``p_j = a_j OR b_j`` (propagate);
    carry into bit i: ``c_i = OR_{j<i} (g_j AND p_{j+1} AND ... AND p_{i-1})``;
    sum bit ``s_i = a_i XOR b_i XOR c_i`` with the depth-2 threshold parity of three
    bits. Depth (NOT free): 5 for every n >= 3 (g and p, the AND terms, the OR of the
    carry c_i for i >= 2, then two threshold layers); 2 for n = 1 (no carry enters bit 0,
    and c_1 = OR(g_0) has depth 2); 4 for n = 2 (c_1 has depth 2, so s_1 has depth 4, and
    c_2 depth 3). Size O(n^2) gates (751 at n = 32). Addition is in AC0 (the XOR could be
    a DNF); threshold gates just keep it small.
    """
    _check_n(n)
    c = Circuit(2 * n)
    a = list(range(n))
    b = list(range(n, 2 * n))
    g = [c.add("AND", [a[j], b[j]]) for j in range(n)]
    p = [c.add("OR", [a[j], b[j]]) for j in range(n)]
    carries: list[int | None] = [None]
    for i in range(1, n + 1):
        terms = [c.add("AND", [g[j], *p[j + 1 : i]]) if i - j > 1 else g[j] for j in range(i)]
        carries.append(c.add("OR", terms))

    def xor3(wires: Sequence[int]) -> int:
        m = len(wires)
        layer = [c.add("THRESHOLD", wires, k=k) for k in range(1, m + 1)]
        alt = [layer[k - 1] if k % 2 == 1 else c.add("NOT", [layer[k - 1]]) for k in range(1, m + 1)]
        return c.add("THRESHOLD", alt, k=m // 2 + 1)

    outs = []
    for i in range(n):
        ci = carries[i]
        outs.append(xor3([a[i], b[i]] if ci is None else [a[i], b[i], ci]))
    outs.append(carries[n])  # type: ignore[arg-type]
    return c.set_outputs(outs)  # type: ignore[arg-type]


def comparison_circuit(n: int) -> Circuit:
    """``[a > b]`` for two n-bit unsigned numbers: an AC0 circuit of depth 4 (n >= 2).

    ``a > b`` iff for some i, ``a_i = 1, b_i = 0`` and ``a_l = b_l`` for every
    more significant l > i. Equality of two bits is
    ``e_l = (a_l AND b_l) OR (NOT a_l AND NOT b_l)`` (depth 2); the term for i is an
    AND (depth 3 when some e_l enters it) and the answer an OR of the n terms: depth 4
    for n >= 2. For n = 1 the only term is ``a_0 AND NOT b_0`` and the depth is 2 (the
    circuit still builds an unused e_0). Size 6n + 1 gates (2n NOT, 3n for the e_l,
    n terms, one OR), O(n^2) wires.
    """
    _check_n(n)
    c = Circuit(2 * n)
    a = list(range(n))
    b = list(range(n, 2 * n))
    na = [c.add("NOT", [a[i]]) for i in range(n)]
    nb = [c.add("NOT", [b[i]]) for i in range(n)]
    eq = [c.add("OR", [c.add("AND", [a[i], b[i]]), c.add("AND", [na[i], nb[i]])]) for i in range(n)]
    terms = [c.add("AND", [a[i], nb[i], *eq[i + 1 :]]) for i in range(n)]
    return c.set_outputs([c.add("OR", terms)])


def circuit_measures(c: Circuit) -> dict[str, int]:
    """``{"size", "depth", "fan_in", "wires"}`` of a circuit."""
    return {"size": c.size, "depth": c.depth, "fan_in": c.fan_in, "wires": c.n_wires_total}


def average_sensitivity(f: Callable[[torch.Tensor], torch.Tensor], n: int) -> float:
    """Average sensitivity of a Boolean function of n bits, by enumeration of all 2**n inputs.

    ``f`` maps a bool tensor ``(batch, n)`` to a bool tensor ``(batch,)``.
    ``as(f) = E_x [ #{ i : f(x) != f(x with bit i flipped) } ]``, x uniform on {0,1}^n.
    Parity: n. Majority (n odd): ``n * C(n-1, (n-1)/2) / 2**(n-1)`` ~ sqrt(2n/pi).
    """
    _check_n(n)
    x = all_inputs(n)
    fx = f(x).reshape(-1).bool()
    total = 0
    for i in range(n):
        flipped = x.clone()
        flipped[:, i] = ~flipped[:, i]
        total += int((f(flipped).reshape(-1).bool() != fx).sum())
    return total / 2**n


def majority_sensitivity(n: int) -> float:
    """Closed form of the average sensitivity of MAJORITY_n for odd n: n * C(n-1, (n-1)/2) / 2^(n-1)."""
    if n % 2 == 0:
        raise ValueError("the closed form is for odd n (no ties)")
    return n * math.comb(n - 1, (n - 1) // 2) / 2 ** (n - 1)


def plot_circuit_sizes(ns: Sequence[int], ax=None, *, max_ac0: int = 14):
    """Size (log scale) and depth of the hand-built circuits against n. Returns the axes.

    Parity in AC0 (DNF) is drawn for n <= ``max_ac0`` only (2**(n-1) terms).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    builders = {
        "parity, AC0 (DNF, depth 2)": lambda n: parity_circuit(n, "ac0"),
        "parity, TC0 (threshold, depth 2)": lambda n: parity_circuit(n, "tc0"),
        "majority (depth 1)": majority_circuit,
        "n-bit adder (depth 5 for n >= 3)": adder_circuit,
        "n-bit comparison (depth 4 for n >= 2)": comparison_circuit,
    }
    for name, build in builders.items():
        xs = [n for n in ns if not (name.startswith("parity, AC0") and n > max_ac0)]
        sizes = [build(n).size for n in xs]
        ax.plot(xs, sizes, marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("n (input bits per number)")
    ax.set_ylabel("size (number of gates)")
    ax.legend(fontsize=8)
    return ax
