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

import operator
from collections.abc import Iterable, Sequence
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


def _as_wire(w: object, where: str) -> int:
    """A wire id must be an integer (Python int, NumPy or 0-d integer tensor); not a bool or a float."""
    if isinstance(w, bool) or (isinstance(w, torch.Tensor) and w.dtype == torch.bool):
        raise TypeError(f"{where}: a wire id is an int, got the bool {w!r}")
    try:
        return operator.index(w)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{where}: a wire id is an int, got {w!r} ({type(w).__name__})") from None


def _check_gate(kind: str, inputs: Sequence[int], k: int | None) -> Gate:
    if not isinstance(kind, str):
        raise TypeError(f"the gate kind is a str, one of {GATE_KINDS}; got {kind!r}")
    kind = kind.upper()
    if kind not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r}; expected one of {GATE_KINDS}")
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise TypeError(f"a {kind} gate's inputs are a sequence of wire ids, got {inputs!r}")
    ins = tuple(_as_wire(i, f"{kind} gate input") for i in inputs)
    if kind == "CONST":
        if ins:
            raise ValueError(f"a CONST gate has no inputs, got {len(ins)}")
        if isinstance(k, bool) or (isinstance(k, int) and k in (0, 1)):
            return Gate(kind, (), int(k))
        raise ValueError(f"a CONST gate needs its value k = 0 or 1 (or a bool), got {k!r}")
    if kind == "NOT" and len(ins) != 1:
        raise ValueError(f"a NOT gate has fan-in 1, got {len(ins)} inputs")
    if not ins:
        raise ValueError(f"a {kind} gate needs at least one input, got none")
    if kind == "THRESHOLD":
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"a THRESHOLD gate needs an integer k >= 0, got {k!r}")
        return Gate(kind, ins, int(k))
    if k is not None:
        raise ValueError(f"only THRESHOLD (k) and CONST (value) gates take k; got k={k!r} for {kind}")
    return Gate(kind, ins, None)


def _check_n_inputs(n_inputs: object) -> None:
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int):
        raise TypeError(f"n_inputs must be a non-negative int, got {n_inputs!r} ({type(n_inputs).__name__})")
    if n_inputs < 0:
        raise ValueError(f"n_inputs must be a non-negative int, got {n_inputs}")


@dataclass
class _Level:
    """One level of the evaluation plan (see :meth:`Circuit._build_plan`)."""

    n_reads: int
    gather: list[tuple[int, torch.Tensor, torch.Tensor]]  # (block, columns in the block, positions in reads)
    whole_block: int | None  # the level reads exactly this block, in order
    incidence: torch.Tensor | None  # (n_reads, n_gates) counts, or None: use src/dst with index_add
    src: torch.Tensor  # (edges,) position in reads of each gate input
    dst: torch.Tensor  # (edges,) gate of each gate input
    threshold: torch.Tensor  # (n_gates,) float32
    negate: torch.Tensor  # (n_gates,) bool

    def to(self, device: torch.device) -> "_Level":
        return _Level(self.n_reads, [(b, c.to(device), w.to(device)) for b, c, w in self.gather], self.whole_block,
                      None if self.incidence is None else self.incidence.to(device), self.src.to(device),
                      self.dst.to(device), self.threshold.to(device), self.negate.to(device))


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
        _check_n_inputs(n_inputs)
        self.n_inputs = n_inputs
        self.gates: list[Gate] = []
        self.outputs: list[int] = []
        self._plan: list[_Level] | None = None  # built by the first evaluate(); reset when the circuit changes
        self._plans: dict[str, list[_Level]] = {}  # the plan's tensors on each device used so far
        self._out_where: list[tuple[int, int]] = []

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
        i = _as_wire(i, "input()")
        if not 0 <= i < self.n_inputs:
            raise ValueError(f"input index {i} out of range 0..{self.n_inputs - 1}")
        return i

    def set_outputs(self, outputs: Sequence[int]) -> "Circuit":
        """Set the output wires (any wires, inputs included, in any order); returns the circuit."""
        if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Iterable):
            raise TypeError(f"outputs is a sequence of wire ids, got {outputs!r}")
        outs = [_as_wire(w, "output") for w in outputs]
        if not outs:
            raise ValueError("a circuit needs at least one output wire")
        for w in outs:
            self._check_wire(w, "the output list")
        self.outputs = outs
        self._plan = None
        return self

    @classmethod
    def from_gates(
        cls, n_inputs: int, gates: Sequence[tuple], outputs: Sequence[int]
    ) -> "Circuit":
        """Build from a list of ``(kind, inputs)`` or ``(kind, inputs, k)``.

        Gate ``j`` of the list is wire ``n_inputs + j``; inputs may refer to any
        wire, earlier or later. Raises ``ValueError`` on a cycle or a dangling wire.
        """
        _check_n_inputs(n_inputs)
        parsed = []
        for j, g in enumerate(gates):
            if not isinstance(g, (tuple, list)) or len(g) not in (2, 3):
                raise TypeError(f"gate {j}: expected (kind, inputs) or (kind, inputs, k), got {g!r}")
            parsed.append(_check_gate(g[0], g[1], g[2] if len(g) > 2 else None))
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
        outs = [_as_wire(w, "output") for w in outputs]
        c.set_outputs([new_id[w] if 0 <= w < n_wires else w for w in outs])
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
    def _build_plan(self) -> list[_Level]:
        """Group gates into levels (every gate after all gates it reads), one :class:`_Level` per level.

        Values live in *blocks*: block 0 is the inputs, block ``b >= 1`` the gates of level ``b`` in
        order. A level reads the distinct wires ``reads`` (possibly none: a level of CONST gates) and
        gathers them from their blocks; the (read wire, gate) incidence is a dense count matrix when it
        is small, else an edge list for ``index_add``. Everything here depends only on the circuit, so
        it is built once and cached (per device, see :meth:`_plan_on`).
        """
        level = [0] * self.n_wires
        for j, g in enumerate(self.gates):
            level[self.n_inputs + j] = 1 + max((level[w] for w in g.inputs), default=0)
        by_level: dict[int, list[int]] = {}
        for j in range(len(self.gates)):
            by_level.setdefault(level[self.n_inputs + j], []).append(j)
        block_of = [0] * self.n_inputs + [-1] * len(self.gates)
        col_of = list(range(self.n_inputs)) + [-1] * len(self.gates)
        block_width = [self.n_inputs]
        plan = []
        for b, lv in enumerate(sorted(by_level), start=1):
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
            # where each read wire lives: one (block, columns in that block, positions in `reads`) per block
            groups: dict[int, tuple[list[int], list[int]]] = {}
            for pos, w in enumerate(reads):
                cols, where = groups.setdefault(block_of[w], ([], []))
                cols.append(col_of[w])
                where.append(pos)
            whole = (len(groups) == 1 and len(reads) == block_width[next(iter(groups))]
                     and next(iter(groups.values()))[0] == list(range(len(reads))))
            src_t, dst_t = torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long)
            if len(reads) * len(js) <= self.DENSE_LIMIT:  # counts = values[:, reads] @ incidence: one matmul
                incidence = torch.zeros(len(reads), len(js))
                incidence.index_put_((src_t, dst_t), torch.ones(len(src)), accumulate=True)
            else:
                incidence = None
            plan.append(_Level(
                n_reads=len(reads),
                gather=[(blk, torch.tensor(cols, dtype=torch.long), torch.tensor(where, dtype=torch.long))
                        for blk, (cols, where) in sorted(groups.items())],
                whole_block=next(iter(groups)) if whole else None,
                incidence=incidence, src=src_t, dst=dst_t,
                threshold=torch.tensor(t, dtype=torch.float32), negate=torch.tensor(neg, dtype=torch.bool),
            ))
            for local, j in enumerate(js):
                block_of[self.n_inputs + j], col_of[self.n_inputs + j] = b, local
            block_width.append(len(js))
        self._out_where = [(block_of[w], col_of[w]) for w in self.outputs]
        return plan

    def _plan_on(self, device: torch.device) -> list[_Level]:
        """The evaluation plan with its tensors on ``device``, built and uploaded once per device."""
        if self._plan is None:
            self._plan = self._build_plan()
            self._plans = {}
        key = str(device)
        if key not in self._plans:
            self._plans[key] = [lvl.to(device) for lvl in self._plan]
        return self._plans[key]

    def evaluate(self, inputs: torch.Tensor) -> torch.Tensor:
        """Evaluate on a batch of input vectors.

        inputs: bool (or 0/1 integer) tensor of shape ``(batch, n_inputs)`` or ``(n_inputs,)``.
        Returns a bool tensor of shape ``(batch, n_outputs)`` (or ``(n_outputs,)``), on the
        inputs' device. Cost per level of the DAG: one gather and one matrix product
        (``index_add`` when the level's incidence matrix would be large). The level plan is
        built on the first call and kept on each device it has been used on.
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
        dev = x.device
        plan = self._plan_on(dev)
        batch = x.shape[0]
        # float32 holds every count exactly (fan-in < 2**24)
        blocks = [x.to(torch.float32)]
        for lvl in plan:
            if lvl.whole_block is not None:  # the level reads one whole block, in order: no copy
                inp = blocks[lvl.whole_block]
            else:
                inp = torch.empty(batch, lvl.n_reads, dtype=torch.float32, device=dev)
                for blk, cols, where in lvl.gather:
                    inp[:, where] = blocks[blk][:, cols]
            if lvl.incidence is not None:
                counts = inp @ lvl.incidence
            else:
                counts = torch.zeros(batch, lvl.threshold.numel(), dtype=torch.float32, device=dev)
                counts.index_add_(1, lvl.dst, inp[:, lvl.src])
            blocks.append(((counts >= lvl.threshold) ^ lvl.negate).to(torch.float32))
        result = torch.stack([blocks[b][:, c] for b, c in self._out_where], 1) > 0.5
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
