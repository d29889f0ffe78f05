"""Boolean circuits with unbounded fan-in, evaluated on many input vectors at once.

A circuit is a DAG. Its nodes (``wires``) are numbered: ``0 .. n_inputs - 1`` are
the inputs, then one id per gate in the order the gates were added. Gate kinds:

* ``CONST`` (no inputs, a fixed value), ``NOT`` (fan-in 1);
* ``AND``, ``OR`` (any fan-in >= 1);
* ``MAJORITY`` (true when *more than half* of its inputs are true: a tie is false);
* ``THRESHOLD`` with a parameter ``k`` (true when at least ``k`` inputs are true).

Every gate is a comparison of the *count* of its true inputs, ``c``, with a
threshold ``t`` (possibly negated): AND is ``c >= fan_in``, OR is ``c >= 1``,
MAJORITY is ``c >= floor(fan_in / 2) + 1``, THRESHOLD(k) is ``c >= k``, NOT is
``c < 1``. That single rule is what :meth:`Circuit.evaluate` computes, one layer
at a time, for a whole batch of input vectors with one matrix product per layer.

Conventions (the usual ones of circuit complexity):

* ``size`` counts gates, NOT and CONST included, inputs excluded;
* ``depth`` is the longest input-to-output path counting AND, OR, MAJORITY and
  THRESHOLD gates; NOT gates are free. Negations can always be pushed to the
  inputs without changing the depth (De Morgan for AND/OR;
  ``NOT THR_k(y_1..y_m) = THR_{m-k+1}(NOT y_1, ..., NOT y_m)`` for threshold
  gates) at most doubling the size, so this is the depth of the equivalent
  circuit whose negations sit on the inputs;
* fan-in is unbounded: ``fan_in`` reports the largest one used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Circuit", "Gate", "GATE_KINDS"]

GATE_KINDS = ("CONST", "NOT", "AND", "OR", "MAJORITY", "THRESHOLD")


@dataclass(frozen=True)
class Gate:
    """One gate: its kind, the wires it reads and (THRESHOLD) its k or (CONST) its value."""

    kind: str
    inputs: tuple[int, ...]
    k: int | None = None

    def threshold(self) -> tuple[int, bool]:
        """``(t, negate)``: the gate is ``(count >= t) != negate``."""
        m = len(self.inputs)
        if self.kind == "CONST":
            return (0 if self.k else 1), False  # count is always 0: 0 >= 0 is true, 0 >= 1 is false
        if self.kind == "NOT":
            return 1, True
        if self.kind == "AND":
            return m, False
        if self.kind == "OR":
            return 1, False
        if self.kind == "MAJORITY":
            return m // 2 + 1, False
        assert self.k is not None
        return self.k, False


def _check_gate(kind: str, inputs: Sequence[int], k: int | None) -> Gate:
    kind = kind.upper()
    if kind not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r}; expected one of {GATE_KINDS}")
    ins = tuple(int(i) for i in inputs)
    if kind == "CONST":
        if ins:
            raise ValueError("a CONST gate has no inputs")
        if k not in (0, 1, True, False):
            raise ValueError(f"a CONST gate needs its value k = 0 or 1, got {k!r}")
        return Gate(kind, (), int(k))
    if kind == "NOT" and len(ins) != 1:
        raise ValueError(f"a NOT gate has fan-in 1, got {len(ins)} inputs")
    if not ins:
        raise ValueError(f"a {kind} gate needs at least one input")
    if kind == "THRESHOLD":
        if k is None or int(k) != k or k < 0:
            raise ValueError(f"a THRESHOLD gate needs an integer k >= 0, got {k!r}")
        return Gate(kind, ins, int(k))
    if k is not None:
        raise ValueError(f"only THRESHOLD (k) and CONST (value) gates take k; got k={k!r} for {kind}")
    return Gate(kind, ins, None)


class Circuit:
    """A Boolean circuit: ``n_inputs`` input wires, gates, and a list of output wires.

    Build it gate by gate (each call returns the new gate's wire id)::

        c = Circuit(3)
        a = c.add("AND", [0, 1])
        c.set_outputs([c.add("OR", [a, c.add("NOT", [2])])])

    or all at once with :meth:`from_gates`, where a gate may name a wire defined
    later: the constructor sorts the gates topologically and raises
    ``ValueError`` on a cycle or on a wire that does not exist (a dangling wire).
    """

    DENSE_LIMIT = 1 << 22  # a level whose (wires read) x (gates) incidence has more entries uses index_add

    def __init__(self, n_inputs: int) -> None:
        if not isinstance(n_inputs, int) or n_inputs < 0:
            raise ValueError(f"n_inputs must be a non-negative int, got {n_inputs!r}")
        self.n_inputs = n_inputs
        self.gates: list[Gate] = []
        self.outputs: list[int] = []
        self._plan: list[tuple[torch.Tensor, ...]] | None = None

    # ---------------------------------------------------------------- building
    @property
    def n_wires(self) -> int:
        return self.n_inputs + len(self.gates)

    def _check_wire(self, w: int, where: str) -> None:
        if not 0 <= w < self.n_wires:
            raise ValueError(f"dangling wire: {where} reads wire {w}, but wires are 0..{self.n_wires - 1}")

    def add(self, kind: str, inputs: Sequence[int] = (), k: int | None = None) -> int:
        """Add a gate reading existing wires ``inputs``; returns its wire id."""
        gate = _check_gate(kind, inputs, k)
        for w in gate.inputs:
            self._check_wire(w, f"new {gate.kind} gate")
        self.gates.append(gate)
        self._plan = None
        return self.n_wires - 1

    def input(self, i: int) -> int:
        """Wire id of input ``i`` (it is ``i``)."""
        if not 0 <= i < self.n_inputs:
            raise ValueError(f"input index {i} out of range 0..{self.n_inputs - 1}")
        return i

    def set_outputs(self, outputs: Sequence[int]) -> "Circuit":
        outs = [int(w) for w in outputs]
        if not outs:
            raise ValueError("a circuit needs at least one output wire")
        for w in outs:
            self._check_wire(w, "the output list")
        self.outputs = outs
        return self

    @classmethod
    def from_gates(
        cls, n_inputs: int, gates: Sequence[tuple], outputs: Sequence[int]
    ) -> "Circuit":
        """Build from a list of ``(kind, inputs)`` or ``(kind, inputs, k)``.

        Gate ``j`` of the list is wire ``n_inputs + j``; inputs may refer to any
        wire, earlier or later. Raises ``ValueError`` on a cycle or a dangling wire.
        """
        parsed = [_check_gate(g[0], g[1], g[2] if len(g) > 2 else None) for g in gates]
        n_wires = n_inputs + len(parsed)
        for j, g in enumerate(parsed):
            for w in g.inputs:
                if not 0 <= w < n_wires:
                    raise ValueError(f"dangling wire: gate {n_inputs + j} ({g.kind}) reads wire {w}, "
                                     f"but wires are 0..{n_wires - 1}")
        # Kahn's algorithm over gates; inputs are sources
        indeg = [sum(1 for w in g.inputs if w >= n_inputs) for g in parsed]
        readers: list[list[int]] = [[] for _ in parsed]
        for j, g in enumerate(parsed):
            for w in g.inputs:
                if w >= n_inputs:
                    readers[w - n_inputs].append(j)
        order, ready = [], [j for j, d in enumerate(indeg) if d == 0]
        while ready:
            j = ready.pop()
            order.append(j)
            for r in readers[j]:
                indeg[r] -= 1
                if indeg[r] == 0:
                    ready.append(r)
        if len(order) != len(parsed):
            stuck = sorted(n_inputs + j for j, d in enumerate(indeg) if d > 0)
            raise ValueError(f"the circuit has a cycle through wires {stuck[:10]}")
        new_id = {w: w for w in range(n_inputs)}
        for pos, j in enumerate(order):
            new_id[n_inputs + j] = n_inputs + pos
        c = cls(n_inputs)
        for j in order:
            g = parsed[j]
            c.gates.append(Gate(g.kind, tuple(new_id[w] for w in g.inputs), g.k))
        c.set_outputs([new_id[int(w)] if 0 <= int(w) < n_wires else int(w) for w in outputs])
        return c

    # ---------------------------------------------------------------- measures
    @property
    def size(self) -> int:
        """Number of gates (NOT and CONST included, inputs excluded)."""
        return len(self.gates)

    def wire_depths(self) -> list[int]:
        """Depth of every wire: inputs and constants 0, NOT free, other gates 1 + max over inputs."""
        d = [0] * self.n_wires
        for j, g in enumerate(self.gates):
            below = max((d[w] for w in g.inputs), default=0)
            d[self.n_inputs + j] = below if g.kind in ("NOT", "CONST") else below + 1
        return d

    @property
    def depth(self) -> int:
        """Longest path from an input to an output, NOT gates free."""
        if not self.outputs:
            raise ValueError("set the outputs first (set_outputs)")
        d = self.wire_depths()
        return max(d[w] for w in self.outputs)

    @property
    def fan_in(self) -> int:
        """Largest fan-in of any gate (0 for a circuit with no gates)."""
        return max((len(g.inputs) for g in self.gates), default=0)

    @property
    def n_wires_total(self) -> int:
        """Number of gate-input connections (edges of the DAG)."""
        return sum(len(g.inputs) for g in self.gates)

    def count(self, kind: str) -> int:
        """Number of gates of one kind."""
        return sum(1 for g in self.gates if g.kind == kind.upper())

    def __repr__(self) -> str:
        kinds = {k: self.count(k) for k in GATE_KINDS if self.count(k)}
        return (f"Circuit(n_inputs={self.n_inputs}, size={self.size}, depth={self.depth if self.outputs else '?'}, "
                f"fan_in={self.fan_in}, outputs={len(self.outputs)}, gates={kinds})")

    # ---------------------------------------------------------------- evaluation
    def _build_plan(self) -> list[tuple[torch.Tensor, ...]]:
        """Group gates into levels (every gate after all gates it reads), one tensor bundle per level.

        Per level: the gates' wire ids, the distinct wires they read, the (read wire, gate)
        incidence (a dense count matrix when it is small, else an edge list for ``index_add``),
        and each gate's threshold and negation.
        """
        level = [0] * self.n_wires
        for j, g in enumerate(self.gates):
            level[self.n_inputs + j] = 1 + max((level[w] for w in g.inputs), default=0)
        by_level: dict[int, list[int]] = {}
        for j in range(len(self.gates)):
            by_level.setdefault(level[self.n_inputs + j], []).append(j)
        plan = []
        for lv in sorted(by_level):
            js = by_level[lv]
            reads = sorted({w for j in js for w in self.gates[j].inputs})
            col = {w: i for i, w in enumerate(reads)}
            src, dst, t, neg = [], [], [], []
            for local, j in enumerate(js):
                g = self.gates[j]
                src.extend(col[w] for w in g.inputs)
                dst.extend([local] * len(g.inputs))
                tj, nj = g.threshold()
                t.append(tj)
                neg.append(nj)
            src_t, dst_t = torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long)
            dense = len(reads) * len(js) <= self.DENSE_LIMIT
            if dense:  # counts = values[:, reads] @ incidence: one matmul
                incidence = torch.zeros(len(reads), len(js))
                incidence.index_put_((src_t, dst_t), torch.ones(len(src)), accumulate=True)
            else:
                incidence = torch.empty(0)
            plan.append((
                torch.tensor([self.n_inputs + j for j in js], dtype=torch.long),
                torch.tensor(reads, dtype=torch.long),
                incidence, src_t, dst_t,
                torch.tensor(t, dtype=torch.float32),
                torch.tensor(neg, dtype=torch.bool),
            ))
        return plan

    def evaluate(self, inputs: torch.Tensor) -> torch.Tensor:
        """Evaluate on a batch of input vectors.

        inputs: bool (or 0/1 integer) tensor of shape ``(batch, n_inputs)`` or ``(n_inputs,)``.
        Returns a bool tensor of shape ``(batch, n_outputs)`` (or ``(n_outputs,)``), on the
        inputs' device. Cost per level of the DAG: one gather and one matrix product
        (``index_add`` when the level's incidence matrix would be large).
        """
        if not self.outputs:
            raise ValueError("set the outputs first (set_outputs)")
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
        single = inputs.dim() == 1
        x = inputs[None] if single else inputs
        if x.dim() != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (batch, {self.n_inputs}) or ({self.n_inputs},), "
                             f"got {tuple(inputs.shape)}")
        if x.dtype != torch.bool:
            if x.is_floating_point() or x.is_complex():
                raise TypeError(f"inputs must be bool or 0/1 integers, got {x.dtype}")
            if ((x != 0) & (x != 1)).any():
                raise ValueError("integer inputs must be 0 or 1")
        if self._plan is None:
            self._plan = self._build_plan()
        dev = x.device
        # values live in blocks: the inputs, then one (batch, gates) block per level; float32 holds
        # every count exactly (fan-in < 2**24). A level that reads a whole block in order reads it in place.
        blocks = [x.to(torch.float32)]
        where_block = torch.zeros(self.n_wires, dtype=torch.long)
        where_col = torch.arange(self.n_wires)
        for bundle in self._plan:
            ids, reads, incidence, src, dst, t, neg = bundle
            rb = where_block[reads]
            first = int(rb[0])
            if bool((rb == first).all()) and reads.numel() == blocks[first].shape[1] and bool(
                    (where_col[reads] == torch.arange(reads.numel())).all()):
                inp = blocks[first]
            else:
                parts = [blocks[b][:, where_col[reads[rb == b]].to(dev)] for b in rb.unique().tolist()]
                order = torch.cat([torch.nonzero(rb == b).flatten() for b in rb.unique().tolist()])
                inp = torch.empty(x.shape[0], reads.numel(), dtype=torch.float32, device=dev)
                inp[:, order.to(dev)] = torch.cat(parts, 1)
            if incidence.numel():
                counts = inp @ incidence.to(dev)
            else:
                counts = torch.zeros(x.shape[0], ids.numel(), dtype=torch.float32, device=dev)
                counts.index_add_(1, dst.to(dev), inp[:, src.to(dev)])
            out = (counts >= t.to(dev)) ^ neg.to(dev)
            where_block[ids] = len(blocks)
            where_col[ids] = torch.arange(ids.numel())
            blocks.append(out.to(torch.float32))
        outs = torch.tensor(self.outputs, dtype=torch.long)
        ob = where_block[outs]
        result = torch.stack([blocks[int(b)][:, int(c)] for b, c in zip(ob, where_col[outs])], 1) > 0.5
        return result[0] if single else result

    def evaluate_loop(self, inputs: Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
        """The baseline: a Python loop over input vectors and, inside, over gates.

        Same semantics as :meth:`evaluate`, written the obvious way (lists of ints), for
        the benchmark and as an independent reference in the tests.
        """
        rows = inputs.tolist() if isinstance(inputs, torch.Tensor) else [list(r) for r in inputs]
        results = []
        for row in rows:
            if len(row) != self.n_inputs:
                raise ValueError(f"each input vector needs {self.n_inputs} entries, got {len(row)}")
            v = [int(b) for b in row]
            for g in self.gates:
                c = sum(v[w] for w in g.inputs)
                if g.kind == "CONST":
                    out = int(g.k)  # type: ignore[arg-type]
                elif g.kind == "NOT":
                    out = 1 - c
                elif g.kind == "AND":
                    out = int(c == len(g.inputs))
                elif g.kind == "OR":
                    out = int(c > 0)
                elif g.kind == "MAJORITY":
                    out = int(2 * c > len(g.inputs))
                else:
                    out = int(c >= g.k)  # type: ignore[operator]
                v.append(out)
            results.append([v[w] for w in self.outputs])
        return results
