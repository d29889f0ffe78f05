r"""An executable two-level memory model: how many words each attention algorithm moves.

The model of Dao et al. (2022), "FlashAttention" (arXiv 2205.14135, Section 3.2)
and Saha & Ye (2024), "The I/O complexity of attention, or how optimal is
FlashAttention?" (arXiv 2402.07443): a *slow memory* (HBM) of unbounded size
holds the named matrices; a *fast memory* (SRAM) holds at most ``M`` words;
arithmetic happens only on data resident in fast memory; the cost is the number
of words moved between the two. Here both memories are real: blocks are torch
tensors copied by :meth:`FastMemory.load` and :meth:`FastMemory.store`, the
fast memory refuses (:class:`FastMemoryOverflow`) any step that would make more
than ``M`` words resident, and the counts come from the loops that run, not from
a formula.

Conventions (the same for every algorithm here):

* One word per matrix entry; reading a block of ``r x c`` entries from slow
  memory costs ``r·c`` reads, writing it back ``r·c`` writes.
* Every block, and every named intermediate (``S_ij``, the row statistics
  ``m, ℓ``, ...) is resident while it exists. Elementwise operations and row
  reductions are fused: they need no words beyond their named result. A matmul
  either creates a new resident result or accumulates in place into a resident
  block (``C += A B``, as a kernel accumulates in registers).
* Inputs start in slow memory; allocating and initialising an output in slow
  memory (``O = 0``, ``m = -inf``) is free; reading the final result back is not
  counted.

Single head: ``Q (N, d)``, ``K (N_k, d)``, ``V (N_k, d_v)``; ``N`` is the number
of queries. The asymptotic counts (``io_bounds``):

=====================  ==========================  ==============================
algorithm              I/O                         source
=====================  ==========================  ==============================
standard (Alg. 0)      Θ(N d + N²)                 Dao et al., Theorem 2
FlashAttention (Alg.1) Θ(N² d² / M)                Dao et al., Theorem 2
small cache, M < d²    Θ(N² d / √M)                Saha & Ye
lower bound            Ω(min(N²d²/M, N²d/√M))      Saha & Ye
=====================  ==========================  ==============================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from companion.attention.flash import tile_kind
from companion.attention.reference import check_qkv, resolve_scale

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

__all__ = [
    "FastMemory",
    "FastMemoryOverflow",
    "IOResult",
    "SlowMemory",
    "flash_attention_backward_io",
    "flash_attention_io",
    "flash_backward_footprint",
    "flash_forward_footprint",
    "io_bounds",
    "paper_block_sizes",
    "plot_io_vs_memory",
    "plot_tile_schedule",
    "small_cache_attention_io",
    "standard_attention_io",
]

Index = slice | None


# ----------------------------------------------------------------------------- the two memories


class FastMemoryOverflow(RuntimeError):
    """A step would make more than ``M`` words resident in fast memory."""


def _block(t: torch.Tensor, rows: Index, cols: Index) -> torch.Tensor:
    """The view ``t[rows, cols]`` (``t[rows]`` for a vector)."""
    rows = slice(None) if rows is None else rows
    if t.dim() == 1:
        if cols is not None:
            raise ValueError("a vector in slow memory has no columns")
        return t[rows]
    return t[rows, slice(None) if cols is None else cols]


class SlowMemory:
    """Slow memory (HBM): named matrices of any size; counts the words read and written.

    ``SlowMemory(q=q, k=k)`` copies the inputs in. :meth:`allocate` creates an
    output (free, see the module conventions). Only :class:`FastMemory` moves
    data, through :meth:`read` and :meth:`write`, and every word is counted.
    """

    def __init__(self, **matrices: torch.Tensor) -> None:
        self._m: dict[str, torch.Tensor] = {name: t.detach().clone() for name, t in matrices.items()}
        self.reads = 0
        self.writes = 0

    def allocate(self, name: str, shape: tuple[int, ...], *, fill: float = 0.0, dtype: torch.dtype) -> None:
        self._m[name] = torch.full(shape, fill, dtype=dtype)

    def __getitem__(self, name: str) -> torch.Tensor:
        """The whole matrix, e.g. a result after the run (not a counted transfer)."""
        return self._m[name]

    def words(self, name: str, rows: Index = None, cols: Index = None) -> int:
        return _block(self._m[name], rows, cols).numel()

    def read(self, name: str, rows: Index = None, cols: Index = None) -> torch.Tensor:
        block = _block(self._m[name], rows, cols).clone()
        self.reads += block.numel()
        return block

    def write(self, name: str, block: torch.Tensor, rows: Index = None, cols: Index = None) -> None:
        target = _block(self._m[name], rows, cols)
        if target.shape != block.shape:
            raise ValueError(
                f"writing a block of shape {tuple(block.shape)} into {name}[...] of shape {tuple(target.shape)}"
            )
        target.copy_(block)
        self.writes += block.numel()


class FastMemory:
    """Fast memory (SRAM) of ``M`` words: named resident blocks, never more than ``M`` words.

    ``load(key, slow, name, rows, cols)`` copies a block in (counted as reads of
    ``slow``), ``store(key, slow, name, rows, cols)`` copies a resident block out
    (counted as writes), ``put(key, tensor)`` makes a computed result resident,
    ``free(*keys)`` releases blocks. Any of these that would make more than
    ``M`` words resident raises :class:`FastMemoryOverflow` before anything
    moves. ``peak`` is the most words ever resident.
    """

    def __init__(self, M: int) -> None:
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise ValueError(f"fast memory size M must be a positive int (words), got {M!r}")
        self.capacity = M
        self._blocks: dict[str, torch.Tensor] = {}
        self.used = 0
        self.peak = 0

    def _admit(self, key: str, words: int) -> None:
        old = self._blocks[key].numel() if key in self._blocks else 0
        if self.used - old + words > self.capacity:
            resident = ", ".join(f"{k} {t.numel()}" for k, t in self._blocks.items()) or "nothing"
            raise FastMemoryOverflow(
                f"fast memory overflow: {key!r} needs {words} words, which would make "
                f"{self.used - old + words} words resident, but M = {self.capacity} "
                f"(resident: {resident}). Use smaller blocks or a larger M."
            )
        self.used += words - old
        self.peak = max(self.peak, self.used)

    def put(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        self._admit(key, tensor.numel())
        self._blocks[key] = tensor
        return tensor

    def load(self, key: str, slow: SlowMemory, name: str, rows: Index = None, cols: Index = None) -> torch.Tensor:
        self._admit(key, slow.words(name, rows, cols))
        self._blocks[key] = slow.read(name, rows, cols)
        return self._blocks[key]

    def store(self, key: str, slow: SlowMemory, name: str, rows: Index = None, cols: Index = None) -> None:
        slow.write(name, self._blocks[key], rows, cols)

    def free(self, *keys: str) -> None:
        for key in keys:
            self.used -= self._blocks.pop(key).numel()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._blocks[key]

    def __contains__(self, key: str) -> bool:
        return key in self._blocks


@dataclass
class IOResult:
    """What an instrumented run returns.

    ``output``: the attention output ``(N, d_v)`` (for the backward pass the
    tuple ``(dq, dk, dv)``); ``reads``/``writes``: words moved from/to slow
    memory; ``peak_words``: the most words resident in fast memory;
    ``schedule``: the block sizes used (and, for FlashAttention, the paper's).
    """

    output: Any
    reads: int
    writes: int
    peak_words: int
    schedule: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.reads + self.writes


def _check_single_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, M: int, name: str) -> None:
    check_qkv(q, k, v, name=name)
    if q.dim() != 2:
        raise ValueError(f"{name}: the I/O model runs one head, q (N, d); got q of shape {tuple(q.shape)}")
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"{name}: M must be a positive int (words of fast memory), got {M!r}")


def _steps(n: int, b: int) -> list[slice]:
    return [slice(s, min(s + b, n)) for s in range(0, n, b)]


# ----------------------------------------------------------------------------- standard attention


def _softmax_rows(fm: FastMemory, hbm: SlowMemory, n_q: int, n_k: int) -> dict:
    """``P = softmax(S)`` row by row, both in slow memory.

    If a whole row fits (``n_k + 2 <= M``: the row and its ``m, ℓ``), blocks of
    rows are read once and written once (``n_q·n_k`` reads and writes).
    Otherwise two passes over column chunks: one for the online ``m, ℓ``, one
    that writes ``P`` (``2·n_q·n_k`` reads, ``n_q·n_k`` writes).
    """
    M = fm.capacity
    if n_k + 2 <= M:
        b = min(n_q, M // (n_k + 2))
        for rows in _steps(n_q, b):
            s = fm.load("S_rows", hbm, "S", rows)
            m = fm.put("m", s.amax(dim=1))
            s.sub_(m.unsqueeze(1)).exp_()  # in place: S_rows becomes exp(S - m)
            l = fm.put("l", s.sum(dim=1))  # noqa: E741
            s.div_(l.unsqueeze(1))
            fm.store("S_rows", hbm, "P", rows)
            fm.free("S_rows", "m", "l")
        return {"softmax": f"one pass, {b} rows at a time"}
    c = M - 2
    for r in range(n_q):
        row = slice(r, r + 1)
        m = fm.put("m", torch.full((1,), float("-inf"), dtype=hbm["S"].dtype))
        l = fm.put("l", torch.zeros(1, dtype=hbm["S"].dtype))  # noqa: E741
        for cols in _steps(n_k, c):  # pass 1: online max and normaliser
            s = fm.load("S_chunk", hbm, "S", row, cols)
            m_new = torch.maximum(m, s.amax(dim=1))
            l.mul_(torch.exp(m - m_new)).add_(s.sub_(m_new.unsqueeze(1)).exp_().sum(dim=1))
            m.copy_(m_new)
            fm.free("S_chunk")
        for cols in _steps(n_k, c):  # pass 2: P = exp(S - m) / ℓ
            s = fm.load("S_chunk", hbm, "S", row, cols)
            s.sub_(m.unsqueeze(1)).exp_().div_(l.unsqueeze(1))
            fm.store("S_chunk", hbm, "P", row, cols)
            fm.free("S_chunk")
        fm.free("m", "l")
    return {"softmax": f"two passes, chunks of {c} columns"}


def _stream_block_rows(M: int, n_rows: int, width: int, n_cols: int) -> tuple[int, int]:
    """Block sizes for ``C (n_rows x ·) = A Bᵀ`` with a row block of ``A`` resident.

    The row block (``b_r x width``), one block of ``B`` (``b_c x width``) and the
    result tile (``b_r x b_c``) must fit: ``b_r·w + b_c·w + b_r·b_c <= M``. The
    traffic depends only on the number of row blocks ``⌈n_rows / b_r⌉`` (``B``
    is read once per row block), so ``b_r`` is as large as ``b_c = 1`` allows,
    then evened out, and ``b_c`` takes the room left.
    """
    b_r = min(n_rows, (M - width) // (width + 1))
    b_r = math.ceil(n_rows / math.ceil(n_rows / b_r))
    b_c = min(n_cols, (M - b_r * width) // (width + b_r))
    return b_r, b_c


def standard_attention_io(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, M: int, *, scale: float | None = None
) -> IOResult:
    """Standard attention (Algorithm 0 of Dao et al.), blockwise so that it fits in ``M`` words.

    1. ``S = τ Q Kᵀ``: a row block ``Q_i`` stays resident while the blocks
       ``K_j`` stream past; each tile ``S_ij`` is written to slow memory.
    2. ``P = softmax(S)``: rows of ``S`` read, ``P`` written (:func:`_softmax_rows`).
    3. ``O = P V``: a row block ``O_i`` accumulates ``P_ij V_j`` in place while
       ``P_ij`` and ``V_j`` stream past, then is written.

    With ``M`` large enough to keep ``Q`` (and ``O``) in one row block the
    count is ``reads = 3Nd + 2N², writes = 2N² + Nd`` (``N_k = N``,
    ``d_v = d``); a smaller ``M`` re-reads ``K`` and ``V`` once per row block
    (and reads ``S`` twice when a row of ``S`` does not fit). Θ(Nd + N²) for
    ``M >= d²``. Needs ``M >= 2·max(d, d_v) + 1``.
    """
    _check_single_head(q, k, v, M, "standard_attention_io")
    (n_q, d), n_k, d_v = q.shape, k.shape[0], v.shape[1]
    if M < 2 * max(d, d_v) + 1:
        raise ValueError(
            f"standard_attention_io: M = {M} is too small; one row of Q and of K (or of O and V) and one "
            f"entry must fit, M >= 2*max(d, d_v) + 1 = {2 * max(d, d_v) + 1}"
        )
    tau = resolve_scale(scale, d)
    hbm = SlowMemory(q=q, k=k, v=v)
    hbm.allocate("S", (n_q, n_k), dtype=q.dtype)
    hbm.allocate("P", (n_q, n_k), dtype=q.dtype)
    hbm.allocate("O", (n_q, d_v), dtype=q.dtype)
    fm = FastMemory(M)

    b_r, b_c = _stream_block_rows(M, n_q, d, n_k)  # 1. S = τ Q Kᵀ
    for rows in _steps(n_q, b_r):
        q_i = fm.load("Q_i", hbm, "q", rows)
        for cols in _steps(n_k, b_c):
            k_j = fm.load("K_j", hbm, "k", cols)
            fm.put("S_ij", tau * (q_i @ k_j.T))
            fm.store("S_ij", hbm, "S", rows, cols)
            fm.free("K_j", "S_ij")
        fm.free("Q_i")
    schedule = {"S=QK^T": (b_r, b_c)}

    schedule.update(_softmax_rows(fm, hbm, n_q, n_k))  # 2. P = softmax(S)

    b_r, b_c = _stream_block_rows(M, n_q, d_v, n_k)  # 3. O = P V
    for rows in _steps(n_q, b_r):
        o_i = fm.put("O_i", torch.zeros(rows.stop - rows.start, d_v, dtype=q.dtype))
        for cols in _steps(n_k, b_c):
            p_ij = fm.load("P_ij", hbm, "P", rows, cols)
            v_j = fm.load("V_j", hbm, "v", cols)
            o_i.addmm_(p_ij, v_j)
            fm.free("P_ij", "V_j")
        fm.store("O_i", hbm, "O", rows)
        fm.free("O_i")
    schedule["O=PV"] = (b_r, b_c)
    return IOResult(hbm["O"].clone(), hbm.reads, hbm.writes, fm.peak, schedule)


# ----------------------------------------------------------------------------- FlashAttention


def paper_block_sizes(M: int, d: int) -> tuple[int, int]:
    """Algorithm 1's choice (Dao et al. 2022): ``B_c = ⌈M / 4d⌉``, ``B_r = min(⌈M / 4d⌉, d)``."""
    b_c = math.ceil(M / (4 * d))
    return b_c, min(b_c, d)


def flash_forward_footprint(b_c: int, b_r: int, d: int, d_v: int) -> int:
    """Most words resident in :func:`flash_attention_io` with blocks ``(B_c, B_r)``.

    ``K_j, V_j`` (``B_c(d + d_v)``) + ``Q_i, O_i, ℓ_i, m_i`` + ``S_ij`` while
    ``S_ij`` is computed; then ``Q_i`` is freed and ``m̃, ℓ̃, m^new, ℓ^new``
    appear: ``B_c(d + d_v) + B_r B_c + B_r·max(d + d_v + 2, d_v + 6)``.
    """
    return b_c * (d + d_v) + b_r * b_c + b_r * max(d + d_v + 2, d_v + 6)


def flash_backward_footprint(b_c: int, b_r: int, d: int, d_v: int) -> int:
    """Most words resident in :func:`flash_attention_backward_io` with blocks ``(B_c, B_r)``.

    ``K_j, V_j, dK̃_j, dṼ_j`` (``2B_c(d + d_v)``) throughout; at the loads
    ``Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i`` and ``S_ij``; later ``P_ij`` and ``dP_ij``
    together while ``O_i, ℓ_i, m_i`` are gone and ``D_i`` is there.
    """
    base = 2 * b_c * (d + d_v)
    at_loads = b_r * (2 * d + 2 * d_v + 2) + b_r * b_c
    at_dp = b_r * (2 * d + d_v + 1) + 2 * b_r * b_c
    return base + max(at_loads, at_dp)


def _fit_blocks(M: int, d: int, n_q: int, n_k: int, footprint) -> tuple[int, int]:
    """The paper's ``(B_c, B_r)``, shrunk until the schedule fits in ``M``.

    ``B_r`` shrinks first: the traffic depends on ``B_c`` alone (through the
    number ``T_c = ⌈N_k / B_c⌉`` of passes over ``Q, O, ℓ, m``), so the counts
    stay those of the paper's block sizes whenever shrinking ``B_r`` suffices.
    """
    b_c, b_r = paper_block_sizes(M, d)
    b_c, b_r = min(b_c, n_k), min(b_r, n_q)
    while footprint(b_c, b_r) > M:
        if b_r > 1:
            b_r -= 1
        else:
            b_c -= 1
    return b_c, b_r


def _resolve_blocks(M, d, d_v, n_q, n_k, block_c, block_r, footprint, name) -> dict:
    if footprint(1, 1) > M:
        raise ValueError(
            f"{name}: M = {M} is too small for d = {d}, d_v = {d_v}: even blocks of one row "
            f"(B_c = B_r = 1) need {footprint(1, 1)} words (Algorithm 1 asks M >= 4d; the tile and row "
            f"statistics add a few words)"
        )
    for label, b in (("block_c", block_c), ("block_r", block_r)):
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ValueError(f"{name}: {label} must be a positive int or None, got {b!r}")
    paper = paper_block_sizes(M, d)
    if block_c is None and block_r is None:
        b_c, b_r = _fit_blocks(M, d, n_q, n_k, footprint)
    else:  # given sizes are used as they are: the fast memory refuses them if they do not fit
        b_c = paper[0] if block_c is None else block_c
        b_r = min(b_c, d) if block_r is None else block_r
    return {"B_c": b_c, "B_r": b_r, "paper (B_c, B_r)": paper}


def _flash_forward(hbm: SlowMemory, fm: FastMemory, n_q: int, n_k: int, b_c: int, b_r: int, tau: float) -> None:
    """Algorithm 1 of Dao et al. on ``hbm`` (inputs q, k, v; outputs O, l, m), line by line."""
    for cols in _steps(n_k, b_c):  # line 5: for 1 <= j <= T_c
        k_j = fm.load("K_j", hbm, "k", cols)  # line 6
        fm.load("V_j", hbm, "v", cols)
        for rows in _steps(n_q, b_r):  # line 7: for 1 <= i <= T_r
            q_i = fm.load("Q_i", hbm, "q", rows)  # line 8
            o_i = fm.load("O_i", hbm, "O", rows)
            l_i = fm.load("l_i", hbm, "l", rows)
            m_i = fm.load("m_i", hbm, "m", rows)
            s = fm.put("S_ij", tau * (q_i @ k_j.T))  # line 9
            fm.free("Q_i")
            m_t = fm.put("m~_ij", s.amax(dim=1))  # line 10
            p = s.sub_(m_t.unsqueeze(1)).exp_()  # P~_ij overwrites S_ij
            l_t = fm.put("l~_ij", p.sum(dim=1))
            m_new = fm.put("m_new", torch.maximum(m_i, m_t))  # line 11
            l_new = fm.put("l_new", torch.exp(m_i - m_new) * l_i + torch.exp(m_t - m_new) * l_t)
            # line 12: O_i <- diag(l_new)^-1 (diag(l_i) e^{m_i - m_new} O_i + e^{m~ - m_new} P~ V_j)
            o_i.mul_((l_i * torch.exp(m_i - m_new)).unsqueeze(1))
            p.mul_(torch.exp(m_t - m_new).unsqueeze(1))
            o_i.addmm_(p, fm["V_j"]).div_(l_new.unsqueeze(1))
            fm.store("O_i", hbm, "O", rows)
            fm.store("l_new", hbm, "l", rows)  # line 13
            fm.store("m_new", hbm, "m", rows)
            fm.free("O_i", "l_i", "m_i", "S_ij", "m~_ij", "l~_ij", "m_new", "l_new")
        fm.free("K_j", "V_j")


def flash_attention_io(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    M: int,
    *,
    block_c: int | None = None,
    block_r: int | None = None,
    scale: float | None = None,
) -> IOResult:
    """FlashAttention forward (Algorithm 1 of Dao et al. 2022) in the two-level model.

    Outer loop over key/value blocks ``K_j, V_j`` (``B_c`` rows), inner loop over
    query blocks (``B_r`` rows): load ``Q_i, O_i, ℓ_i, m_i``, compute ``S_ij``,
    update the statistics, write ``O_i, ℓ_i, m_i`` back. Counts, with
    ``T_c = ⌈N_k / B_c⌉``: ``reads = N_k(d + d_v) + T_c·N(d + d_v + 2)``,
    ``writes = T_c·N(d_v + 2)``, i.e. Θ(N²d²/M) for ``B_c`` ∝ ``M/d``.

    Block sizes: the paper's Algorithm 1 chooses ``B_c = ⌈M/4d⌉`` and
    ``B_r = min(⌈M/4d⌉, d)`` (:func:`paper_block_sizes`), which fits the four
    blocks ``Q_i, K_j, V_j, O_i`` in ``M`` but not also ``S_ij`` and the row
    statistics. This fast memory counts those too, so by default ``B_r`` (then,
    for tiny ``M``, ``B_c``) is shrunk until everything fits
    (:func:`flash_forward_footprint`). Since the traffic depends on ``B_c``
    only, the counts equal those of the paper's block sizes whenever shrinking
    ``B_r`` suffices. ``block_c``/``block_r`` given explicitly are used as they
    are, and the fast memory raises :class:`FastMemoryOverflow` if they do not fit.
    Needs ``M >= flash_forward_footprint(1, 1, d, d_v)`` (``4d + 3`` for ``d_v = d``).
    """
    _check_single_head(q, k, v, M, "flash_attention_io")
    (n_q, d), n_k, d_v = q.shape, k.shape[0], v.shape[1]

    def footprint(b_c: int, b_r: int) -> int:
        return flash_forward_footprint(b_c, b_r, d, d_v)

    schedule = _resolve_blocks(M, d, d_v, n_q, n_k, block_c, block_r, footprint, "flash_attention_io")
    hbm = SlowMemory(q=q, k=k, v=v)
    hbm.allocate("O", (n_q, d_v), dtype=q.dtype)  # line 2: O = 0, ℓ = 0, m = -inf in HBM
    hbm.allocate("l", (n_q,), dtype=q.dtype)
    hbm.allocate("m", (n_q,), fill=float("-inf"), dtype=q.dtype)
    fm = FastMemory(M)
    _flash_forward(hbm, fm, n_q, n_k, schedule["B_c"], schedule["B_r"], resolve_scale(scale, d))
    return IOResult(hbm["O"].clone(), hbm.reads, hbm.writes, fm.peak, schedule)


def flash_attention_backward_io(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    M: int,
    *,
    block_c: int | None = None,
    block_r: int | None = None,
    scale: float | None = None,
) -> IOResult:
    """FlashAttention backward with recomputation (Algorithm 4 of Dao et al., no dropout).

    Slow memory starts with ``Q, K, V, dO`` and the forward's ``O, ℓ, m``
    (produced by :func:`flash_attention_io` on a separate memory; only the
    backward's traffic is counted). For each ``K_j, V_j`` (outer), with
    ``dK̃_j, dṼ_j`` accumulating on chip, and each query block (inner): load
    ``Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i``; ``P_ij = diag(ℓ_i)⁻¹ exp(S_ij - m_i)``;
    ``dṼ_j += P_ijᵀ dO_i``; ``dP_ij = dO_i V_jᵀ``; ``D_i = rowsum(dO_i ∘ O_i)``;
    ``dS_ij = P_ij ∘ (dP_ij - D_i)``; write ``dQ_i += τ dS_ij K_j``;
    ``dK̃_j += τ dS_ijᵀ Q_i``; finally write ``dK_j, dV_j``. Counts:
    ``reads = N_k(d + d_v) + T_c·N(2d + 2d_v + 2)``,
    ``writes = T_c·N·d + N_k(d + d_v)``: Θ(N²d²/M).

    Returns ``IOResult`` whose ``output`` is ``(dq, dk, dv)``. Block sizes as in
    :func:`flash_attention_io` (the paper's, ``B_r`` then ``B_c`` shrunk to fit,
    :func:`flash_backward_footprint`).
    """
    _check_single_head(q, k, v, M, "flash_attention_backward_io")
    (n_q, d), n_k, d_v = q.shape, k.shape[0], v.shape[1]
    if tuple(dout.shape) != (n_q, d_v):
        raise ValueError(f"flash_attention_backward_io: expected dout of shape {(n_q, d_v)}, got {tuple(dout.shape)}")

    def footprint(b_c: int, b_r: int) -> int:
        return flash_backward_footprint(b_c, b_r, d, d_v)

    schedule = _resolve_blocks(M, d, d_v, n_q, n_k, block_c, block_r, footprint, "flash_attention_backward_io")
    b_c, b_r = schedule["B_c"], schedule["B_r"]
    tau = resolve_scale(scale, d)

    fwd = SlowMemory(q=q, k=k, v=v)  # the forward pass, on its own memory
    fwd.allocate("O", (n_q, d_v), dtype=q.dtype)
    fwd.allocate("l", (n_q,), dtype=q.dtype)
    fwd.allocate("m", (n_q,), fill=float("-inf"), dtype=q.dtype)
    fwd_blocks = _fit_blocks(M, d, n_q, n_k, lambda c, r: flash_forward_footprint(c, r, d, d_v))
    _flash_forward(fwd, FastMemory(M), n_q, n_k, *fwd_blocks, tau)

    hbm = SlowMemory(q=q, k=k, v=v, dO=dout, O=fwd["O"], l=fwd["l"], m=fwd["m"])
    hbm.allocate("dQ", (n_q, d), dtype=q.dtype)  # line 4: dQ = 0, dK = 0, dV = 0 in HBM
    hbm.allocate("dK", (n_k, d), dtype=q.dtype)
    hbm.allocate("dV", (n_k, d_v), dtype=q.dtype)
    fm = FastMemory(M)
    for cols in _steps(n_k, b_c):  # line 5
        k_j = fm.load("K_j", hbm, "k", cols)  # line 6
        v_j = fm.load("V_j", hbm, "v", cols)
        dk_j = fm.put("dK~_j", torch.zeros_like(k_j))  # line 7
        dv_j = fm.put("dV~_j", torch.zeros_like(v_j))
        for rows in _steps(n_q, b_r):  # line 8
            q_i = fm.load("Q_i", hbm, "q", rows)  # line 9
            o_i = fm.load("O_i", hbm, "O", rows)
            do_i = fm.load("dO_i", hbm, "dO", rows)
            dq_i = fm.load("dQ_i", hbm, "dQ", rows)
            l_i = fm.load("l_i", hbm, "l", rows)
            m_i = fm.load("m_i", hbm, "m", rows)
            s = fm.put("S_ij", tau * (q_i @ k_j.T))  # line 10
            p = s.sub_(m_i.unsqueeze(1)).exp_().div_(l_i.unsqueeze(1))  # line 12: P_ij overwrites S_ij
            fm.free("l_i", "m_i")
            d_i = fm.put("D_i", (do_i * o_i).sum(dim=1))  # line 17
            fm.free("O_i")
            dv_j.addmm_(p.T, do_i)  # line 14
            dp = fm.put("dP_ij", do_i @ v_j.T)  # line 15
            fm.free("dO_i")
            ds = dp.sub_(d_i.unsqueeze(1)).mul_(p)  # line 18: dS_ij overwrites dP_ij
            fm.free("S_ij", "D_i")
            dq_i.addmm_(ds, k_j, alpha=tau)  # line 19
            fm.store("dQ_i", hbm, "dQ", rows)
            dk_j.addmm_(ds.T, q_i, alpha=tau)  # line 20
            fm.free("Q_i", "dQ_i", "dP_ij")
        fm.store("dK~_j", hbm, "dK", cols)  # line 22
        fm.store("dV~_j", hbm, "dV", cols)
        fm.free("K_j", "V_j", "dK~_j", "dV~_j")
    grads = (hbm["dQ"].clone(), hbm["dK"].clone(), hbm["dV"].clone())
    return IOResult(grads, hbm.reads, hbm.writes, fm.peak, schedule)


# ----------------------------------------------------------------------------- small fast memory (M < d²)


def small_cache_attention_io(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, M: int, *, scale: float | None = None
) -> IOResult:
    """Attention for a fast memory smaller than ``d²`` (Saha & Ye 2024): Θ(N²d/√M).

    The standard algorithm with both matrix products done by blocked matrix
    multiplication in square ``b x b`` tiles, ``b = ⌊√(M/3)⌋`` (an output tile
    accumulates in place while tiles of the two factors stream past, so
    ``3b² <= M``), cutting along ``d`` too:

    1. ``S = τ Q Kᵀ``: each ``b x b`` tile of ``S`` reads ``2b·d`` words and is
       written once: ``≈ 2N²d/b`` reads.
    2. ``P = softmax(S)``, as in :func:`standard_attention_io`: Θ(N²).
    3. ``O = P V``: each ``b x b`` tile of ``O`` reads ``2b·N`` words: ``≈ 2N²d_v/b``.

    For ``M < d²`` the ``N²d/√M`` terms dominate the Θ(N²) of step 2 and this
    matches Saha & Ye's lower bound Ω(min(N²d²/M, N²d/√M)); FlashAttention
    (Θ(N²d²/M)) is worse there by a factor ``d/√M``. Needs ``M >= 3``.
    """
    _check_single_head(q, k, v, M, "small_cache_attention_io")
    (n_q, d), n_k, d_v = q.shape, k.shape[0], v.shape[1]
    if M < 3:
        raise ValueError(f"small_cache_attention_io: M = {M} is too small; three 1x1 tiles need M >= 3")
    tau = resolve_scale(scale, d)
    tile = math.isqrt(M // 3)
    hbm = SlowMemory(q=q, k=k, v=v)
    hbm.allocate("S", (n_q, n_k), dtype=q.dtype)
    hbm.allocate("P", (n_q, n_k), dtype=q.dtype)
    hbm.allocate("O", (n_q, d_v), dtype=q.dtype)
    fm = FastMemory(M)

    def blocked_matmul(a: str, b: str, b_transposed: bool, out: str, n: int, m: int, inner: int, alpha: float):
        """``out (n x m) = alpha · a (n x inner) @ b``, with ``b`` stored as ``(m x inner)`` if transposed."""
        for rows in _steps(n, tile):
            for cols in _steps(m, tile):
                c = fm.put("C_tile", torch.zeros(rows.stop - rows.start, cols.stop - cols.start, dtype=q.dtype))
                for ks in _steps(inner, tile):
                    a_t = fm.load("A_tile", hbm, a, rows, ks)
                    if b_transposed:
                        c.addmm_(a_t, fm.load("B_tile", hbm, b, cols, ks).T)
                    else:
                        c.addmm_(a_t, fm.load("B_tile", hbm, b, ks, cols))
                    fm.free("A_tile", "B_tile")
                c.mul_(alpha)
                fm.store("C_tile", hbm, out, rows, cols)
                fm.free("C_tile")

    blocked_matmul("q", "k", True, "S", n_q, n_k, d, tau)  # 1. S = τ Q Kᵀ
    schedule = {"tile": tile, **_softmax_rows(fm, hbm, n_q, n_k)}  # 2. P = softmax(S)
    blocked_matmul("P", "v", False, "O", n_q, d_v, n_k, 1.0)  # 3. O = P V
    return IOResult(hbm["O"].clone(), hbm.reads, hbm.writes, fm.peak, schedule)


# ----------------------------------------------------------------------------- bounds and plots


def io_bounds(N: int, d: int, M: int) -> dict[str, float]:
    """The asymptotic I/O counts (constants dropped), in words.

    ``standard``: ``N·d + N²``; ``flash``: ``N²d²/M``; ``small_cache``:
    ``N²d/√M``; ``lower_bound``: ``min(N²d²/M, N²d/√M)`` (Saha & Ye), which is
    the FlashAttention term for ``M >= d²`` and the small-cache term below.
    """
    flash = N * N * d * d / M
    small = N * N * d / math.sqrt(M)
    return {
        "standard": float(N * d + N * N),
        "flash": float(flash),
        "small_cache": float(small),
        "lower_bound": float(min(flash, small)),
    }


def _loglog_slope(xs: list[float], ys: list[float]) -> float:
    lx = torch.tensor(xs, dtype=torch.float64).log()
    ly = torch.tensor(ys, dtype=torch.float64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def plot_io_vs_memory(N: int, d: int, Ms: list[int], ax: plt.Axes | None = None, *, seed: int = 0) -> plt.Axes:
    """Measured words moved vs fast-memory size ``M`` (log-log), with the asymptotic bounds.

    Runs :func:`standard_attention_io`, :func:`flash_attention_io` and
    :func:`small_cache_attention_io` on random ``(N, d)`` inputs for each ``M``
    where the algorithm fits and plots ``reads + writes``. Dashed: the
    :func:`io_bounds` shape of each algorithm, scaled to meet its measured
    curve at its middle point (the bounds drop constants; the slopes are what
    to compare); dotted black: the lower bound without constants. The title
    states FlashAttention's fitted slope for ``M <= N·d`` (beyond, one key
    block holds all of ``K`` and the count stops falling) and where it drops
    below standard attention. Keep ``N`` small (a few hundred): every run is simulated.
    """
    import matplotlib.pyplot as plt

    Ms = sorted({int(m) for m in Ms})
    if not Ms or Ms[0] < 3:
        raise ValueError(f"Ms must be a non-empty list of fast-memory sizes >= 3, got {Ms!r}")
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(N, d, generator=g) for _ in range(3))
    runs = {  # label: (simulator, smallest M it runs with, io_bounds key, colour)
        "standard": (standard_attention_io, 2 * d + 1, "standard", "tab:red"),
        "FlashAttention": (flash_attention_io, flash_forward_footprint(1, 1, d, d), "flash", "tab:blue"),
        "small cache (blocked matmul)": (small_cache_attention_io, 3, "small_cache", "tab:green"),
    }
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    measured: dict[str, tuple[list[int], list[int]]] = {}
    for label, (fn, min_m, key, color) in runs.items():
        xs = [m for m in Ms if m >= min_m]
        if not xs:
            continue
        ys = [fn(q, k, v, m).total for m in xs]
        measured[label] = (xs, ys)
        ax.loglog(xs, ys, "o-", color=color, label=f"{label} (measured)")
        mid = len(xs) // 2
        c = ys[mid] / io_bounds(N, d, xs[mid])[key]
        ax.loglog(
            xs, [c * io_bounds(N, d, m)[key] for m in xs], "--", color=color, alpha=0.5, label=f"{key} bound x {c:.3g}"
        )
    ax.loglog(Ms, [io_bounds(N, d, m)["lower_bound"] for m in Ms], "k:", alpha=0.6, label="lower bound (no constants)")
    ax.axvline(d * d, color="grey", lw=0.8)
    ax.text(d * d, ax.get_ylim()[0], " M = d²", color="grey", va="bottom")
    ax.set_xlabel("fast memory M (words)")
    ax.set_ylabel("words moved (reads + writes)")
    fx, fy = measured.get("FlashAttention", ([], []))
    fit = [(m, y) for m, y in zip(fx, fy) if m <= N * d]
    slope = f"∝ M^{_loglog_slope(*zip(*fit)):.2f}" if len(fit) >= 2 else "(too few points to fit)"
    std = dict(zip(*measured.get("standard", ([], []))))
    better = [m for m, y in zip(fx, fy) if m in std and y < std[m]]
    where = f"below standard from M = {better[0]}" if better else "never below standard here"
    ax.set_title(f"N={N}, d={d}: FlashAttention I/O {slope}, {where}", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def plot_tile_schedule(
    n_q: int, n_k: int, block_q: int, block_k: int, causal: bool = False, ax: plt.Axes | None = None
) -> plt.Axes:
    """Which ``(query block, key block)`` tiles the tiled loops compute, mask or skip.

    The classification is :func:`companion.attention.flash.tile_kind`, the one
    :func:`~companion.attention.flash.flash_attention` uses: blue tiles are
    computed in full, orange ones computed with the causal mask, grey ones
    skipped. Queries run down, keys across, as in the score matrix ``S``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    for name, val in (("n_q", n_q), ("n_k", n_k), ("block_q", block_q), ("block_k", block_k)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * min(2.0, max(0.5, n_q / n_k))))
    colors = {"full": "tab:blue", "partial": "tab:orange", "skipped": "lightgrey"}
    counts = dict.fromkeys(colors, 0)
    for q0 in range(0, n_q, block_q):
        q1 = min(q0 + block_q, n_q)
        for k0 in range(0, n_k, block_k):
            k1 = min(k0 + block_k, n_k)
            kind = tile_kind(q0, q1, k0, k1, causal)
            counts[kind] += 1
            ax.add_patch(Rectangle((k0, q0), k1 - k0, q1 - q0, facecolor=colors[kind], edgecolor="white", lw=1))
    if causal:
        ax.plot([0, min(n_q, n_k)], [0, min(n_q, n_k)], color="black", lw=1)
    ax.set_xlim(0, n_k)
    ax.set_ylim(n_q, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("key index j")
    ax.set_ylabel("query index i")
    total = sum(counts.values())
    ax.set_title(
        f"{total - counts['skipped']} of {total} tiles computed "
        f"({counts['partial']} masked), {counts['skipped']} skipped",
        fontsize=10,
    )
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in colors.items()],
        loc="upper right",
        fontsize=8,
    )
    return ax
