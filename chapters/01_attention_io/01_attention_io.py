# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Attention I/O tiling: online softmax, FlashAttention and the limits of data movement
#
# **The question.** Attention over $N$ tokens computes an $N \times N$ score matrix. On a GPU the arithmetic is
# cheap; moving that matrix between the large, slow memory (HBM) and the small, fast on-chip memory (SRAM) is
# not. How few words must an exact attention algorithm move, and which algorithm achieves it?
#
# This chapter answers with a model, two algorithms, a theorem and its matching lower bound:
#
# * the **two-level memory model**: a fast memory of $M$ words, a slow memory of unbounded size; cost = words moved;
# * the **online softmax** (Milakov & Gimelshein 2018), which lets attention stream over keys in blocks;
# * **FlashAttention** (Dao et al. 2022) forward and backward, which never writes the score matrix to slow memory;
# * its I/O complexity $\Theta(N^2 d^2 / M)$ and why that is optimal when $M \ge d^2$ (Saha & Ye 2024), with a
#   better algorithm below $d^2$.
#
# You will build the online softmax, a tiled forward pass, causal tile skipping, the tiled backward pass and the
# I/O accounting of a schedule, then check every claim on an executable memory simulator.

# %% tags=["locked"] grade_id="setup"
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from companion import get_device, require_version, scaled, seed_everything
from companion.attention import flash_attention, naive_attention
from companion.attention import io as attn_io
from companion.memory import largest_tensor, peak_tensor_bytes
from companion.testing import call_quietly, check_close, check_dtype, check_shape, cmp, ok

require_version("0.1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# %% [markdown]
# ## 1. The model: slow memory, fast memory, words moved
#
# **Two-level memory model.** A slow memory holds the inputs $Q, K, V \in \mathbb{R}^{N \times d}$ and receives
# the output $O \in \mathbb{R}^{N \times d}$. A fast memory holds at most $M$ words (one word = one number). Arithmetic
# happens only on words in fast memory. The **I/O cost** of an algorithm is the number of words it reads from and
# writes to slow memory. On a GPU, slow memory is HBM and fast memory is a streaming multiprocessor's SRAM
# (around 100–200 KB, so $M$ of the order of $10^4$ to $10^5$ words); $M$ counts words, not bytes.
#
# **Standard attention** (Algorithm 0 of Dao et al.) computes $S = QK^\top$ blockwise and writes $S$ to slow memory,
# reads it back to compute $P = \mathrm{softmax}(S)$ row by row and writes $P$, then reads $P$ and $V$ to compute
# $O = PV$. Each of those steps moves the $N^2$ entries of $S$ or $P$ through slow memory.
#
# **Theorem (Dao et al. 2022, Theorem 2).** Let $N$ be the sequence length, $d$ the head dimension and $M$ the size
# of fast memory with $d \le M \le Nd$. Standard attention performs $\Theta(Nd + N^2)$ slow-memory accesses;
# FlashAttention performs $\Theta(N^2 d^2 M^{-1})$.
#
# For $d = 64$ and $M = 10^5$, $d^2/M \approx 0.04$: up to constant factors, FlashAttention moves about 25 times
# fewer words than the $N^2$ of standard attention. Section 9 measures those constants, which turn out to matter.
# The rest of the chapter makes each piece of the statement concrete.

# %% [markdown]
# ## 2. Online softmax
#
# Attention needs, for each query, $\mathrm{softmax}(s)_j = e^{s_j - m}/\ell$ with $m = \max_j s_j$ and
# $\ell = \sum_j e^{s_j - m}$. Both statistics seem to need the whole row before anything can be normalised. The
# **online normaliser** (Milakov & Gimelshein 2018, Algorithm 3) computes them in one pass: start from
# $m_0 = -\infty$, $\ell_0 = 0$ and for each new value $x_j$
# $$m_j = \max(m_{j-1}, x_j), \qquad \ell_j = \ell_{j-1}\, e^{m_{j-1} - m_j} + e^{x_j - m_j}.$$
# The factor $e^{m_{j-1} - m_j} \le 1$ re-expresses the old sum relative to the new maximum. The same update works
# for a *block* of values at once: replace $x_j$ by the block's maximum and $e^{x_j - m_j}$ by
# $\sum_{x \in \text{block}} e^{x - m_j}$.
#
# **Exercise 1 (3 points).** Write `online_softmax_stats(blocks)`. It receives an *iterator* of 1-D tensors (the
# blocks of one row, in order; you see each block once) and returns the pair `(m, l)` as 0-d tensors with
# $m = \max$ of all values and $\ell = \sum e^{x - m}$. Blocks may contain `-inf` (masked entries), and a leading
# block may be entirely `-inf`: then $e^{m_{j-1} - m_j}$ is $e^{-\infty - (-\infty)}$, which is `nan` in floating
# point. Handle it (no `nan` may appear; if every value is `-inf`, return $m = -\infty$, $\ell = 0$). There is at
# least one block. Return tensors of the blocks' dtype.

# %% tags=["solution"] grade_id="online_softmax_stats"
def online_softmax_stats(blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over ``blocks`` (1-D tensors); returns 0-d tensors ``(m, l)``: max and sum of exp(x - m)."""
    ### BEGIN SOLUTION
    m = l = None
    for block in blocks:
        if m is None:
            m = torch.tensor(float("-inf"), dtype=block.dtype)
            l = torch.tensor(0.0, dtype=block.dtype)
        m_new = torch.maximum(m, block.max())
        if torch.isinf(m_new) and m_new < 0:  # everything so far is -inf: nothing to add yet
            continue
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum()
        m = m_new
    return m, l
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_online_softmax_stats" points=3
_x = torch.tensor([0.5, -1.0, 3.0, 2.0, 7.0, -2.0, 1.0])
m, l = call_quietly(online_softmax_stats, iter(_x.split(3)))
check_close("m", m, _x.max())
check_close("l", l, torch.exp(_x - _x.max()).sum(), hint="rescale the old sum by exp(m_old - m_new) before adding")
_x = torch.tensor([float("-inf"), float("-inf"), 1.0, 2.0])
m, l = call_quietly(online_softmax_stats, iter(_x.split(2)))
check_close("l when the first block is all -inf", l, torch.exp(_x - 2.0).sum(),
            hint="a block of only -inf must not turn the running sum into nan")
ok("online_softmax_stats gives the max and the normaliser of a row in blocks, also after a fully masked block")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(0)
for _n, _b in ((1, 1), (10, 3), (64, 64), (100, 7)):
    _x = torch.randn(_n, generator=_g, dtype=torch.float64) * 10 - 30
    _m, _l = call_quietly(online_softmax_stats, iter(_x.split(_b)))
    check_close(f"m (n={_n}, block={_b})", _m, _x.max(), hint="start the running max at -inf, not 0")
    check_close(f"l (n={_n}, block={_b})", _l, torch.exp(_x - _x.max()).sum(),
                hint="l = l * exp(m_old - m_new) + sum(exp(block - m_new))")
_inf = float("-inf")
_x = torch.tensor([_inf, _inf, _inf, 2.0, _inf, 1.0, 900.0, _inf])
_m, _l = call_quietly(online_softmax_stats, iter(_x.split(3)))
check_close("m with -inf blocks", _m, torch.tensor(900.0))
check_close("l with -inf blocks", _l, torch.exp(_x - 900.0).sum(),
            hint="a block of only -inf must not turn the running sum into nan")
_m, _l = call_quietly(online_softmax_stats, iter(torch.full((4,), float("-inf")).split(2)))
check_close("(m, l) of an all -inf row", torch.stack([_m, _l]), torch.tensor([float("-inf"), 0.0]))
_m, _l = call_quietly(online_softmax_stats, iter(torch.randn(10, generator=_g).split(4)))
check_dtype("l for float32 blocks", _l, torch.float32)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. One tile of attention
#
# FlashAttention applies the online softmax to a whole block of queries at once. For a block of $B_r$ queries
# it keeps, per query row, the running max $m$ and normaliser $\ell$, and an **unnormalised** output accumulator
# $\tilde O = \sum_j e^{s_j - m} v_j$ (shape $B_r \times d$). A new tile of scores $S \in \mathbb{R}^{B_r \times B_c}$
# against a block of values $V_j \in \mathbb{R}^{B_c \times d}$ updates
# $$m' = \max(m, \mathrm{rowmax}\,S),\quad \alpha = e^{m - m'},\quad P = e^{S - m'},\quad
#   \ell' = \alpha\,\ell + \mathrm{rowsum}\,P,\quad \tilde O' = \alpha\,\tilde O + P V_j .$$
# Both $\ell$ and $\tilde O$ must be rescaled by $\alpha$: forget one and the output is silently wrong. At the end,
# $O = \tilde O / \ell$ and the **logsumexp** $L = m + \log \ell$ is all the backward pass needs (FlashAttention-2,
# Dao 2023, §3.1.1, normalises only once at the end like this; the original FlashAttention renormalised $O$ after
# every tile).
#
# **Exercise 2 (3 points).** Write `online_softmax_update(m, l, acc, scores, v)` for shapes
# `m, l: (..., Br)`, `acc: (..., Br, d)`, `scores: (..., Br, Bc)`, `v: (..., Bc, d)`, returning
# `(m_new, l_new, acc_new)`. Rows whose scores are all `-inf` so far must stay at `m = -inf, l = 0, acc = 0`
# without `nan` (this happens in causal attention).

# %% tags=["solution"] grade_id="online_softmax_update"
def online_softmax_update(m, l, acc, scores, v):
    """One tile: fold ``scores`` (..., Br, Bc) and ``v`` (..., Bc, d) into the running (m, l, acc)."""
    ### BEGIN SOLUTION
    m_new = torch.maximum(m, scores.amax(dim=-1))
    safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)  # all -inf so far: nothing to add
    alpha = torch.exp(m - safe)
    p = torch.exp(scores - safe.unsqueeze(-1))
    l_new = alpha * l + p.sum(dim=-1)
    acc_new = alpha.unsqueeze(-1) * acc + p @ v
    return m_new, l_new, acc_new
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_online_softmax_update" points=3
_g = torch.Generator().manual_seed(1)
_s = torch.randn(4, 10, generator=_g, dtype=torch.float64)
_v = torch.randn(10, 3, generator=_g, dtype=torch.float64)
m = torch.full((4,), float("-inf"), dtype=torch.float64)
l = torch.zeros(4, dtype=torch.float64)
acc = torch.zeros(4, 3, dtype=torch.float64)
for _cols in (slice(0, 6), slice(6, 10)):
    m, l, acc = call_quietly(online_softmax_update, m, l, acc, _s[:, _cols], _v[_cols])
check_shape("acc", acc, (4, 3))
check_close("acc / l after two tiles", acc / l.unsqueeze(-1), torch.softmax(_s, -1) @ _v,
            hint="rescale both l and acc by exp(m_old - m_new)")
_masked = torch.full((1, 3), float("-inf"), dtype=torch.float64)
m1, l1, acc1 = call_quietly(online_softmax_update, torch.full((1,), float("-inf"), dtype=torch.float64),
                            torch.zeros(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                            _masked, _v[:3])
assert not torch.isnan(acc1).any() and not torch.isnan(l1).any(), "a fully masked row produced nan"
ok("two tiles of online softmax give softmax(S) @ V; a fully masked row stays at l = 0 without nan")
### BEGIN HIDDEN TESTS
_s = torch.randn(2, 3, 5, 12, generator=_g, dtype=torch.float64) * 20
_v = torch.randn(2, 3, 12, 4, generator=_g, dtype=torch.float64)
_s[..., 0, :7] = float("-inf")  # row 0: first tile fully masked
_m = torch.full((2, 3, 5), float("-inf"), dtype=torch.float64)
_l = torch.zeros(2, 3, 5, dtype=torch.float64)
_acc = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
_m, _l, _acc = call_quietly(online_softmax_update, _m, _l, _acc, _s[..., :7], _v[..., :7, :])
assert not torch.isnan(_acc).any() and not torch.isnan(_l).any(), "a fully masked tile produced nan"
check_close("l of a fully masked row", _l[..., 0], torch.zeros(2, 3, dtype=torch.float64))
_m, _l, _acc = call_quietly(online_softmax_update, _m, _l, _acc, _s[..., 7:], _v[..., 7:, :])
check_close("acc / l with leading dims", _acc / _l.unsqueeze(-1), torch.softmax(_s, -1) @ _v,
            hint="exp(m_old - m_new), not exp(m_new - m_old); reduce over the last axis")
check_close("m after both tiles", _m, _s.amax(-1))
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The tiled forward pass
#
# Split $Q$ into blocks of `block_q` rows and $K, V$ into blocks of `block_k` rows. For each query block, start
# from $m = -\infty$, $\ell = 0$, $\tilde O = 0$, fold in every key block with Exercise 2, then normalise. No
# tensor larger than `block_q × block_k` scores is ever formed, and the last block of each may be shorter
# ($N$ need not be a multiple of the block size).
#
# **Exercise 3 (3 points).** Write `tiled_attention(q, k, v, block_q=16, block_k=16)` for `q: (..., n_q, d)`,
# `k, v: (..., n_k, d)`, non-causal, with the usual scale $1/\sqrt d$, using your `online_softmax_update`. Return
# `(out, lse)` with `out: (..., n_q, d)` and the logsumexp `lse: (..., n_q)` of the *scaled* scores. The test checks
# that no tensor larger than a `block_q × block_k` tile (or the `n × d` inputs and output) is ever formed.

# %% tags=["solution"] grade_id="tiled_attention"
def tiled_attention(q, k, v, block_q: int = 16, block_k: int = 16):
    """Non-causal attention by tiles; returns ``(out, lse)``, shapes (..., n_q, d) and (..., n_q)."""
    ### BEGIN SOLUTION
    scale = q.shape[-1] ** -0.5
    n_q, n_k = q.shape[-2], k.shape[-2]
    outs, lses = [], []
    for i in range(0, n_q, block_q):
        qi = q[..., i:i + block_q, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, n_k, block_k):
            s = (qi @ k[..., j:j + block_k, :].transpose(-1, -2)) * scale
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j + block_k, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_tiled_attention" points=3
_g = torch.Generator().manual_seed(2)
q, k, v = (torch.randn(2, 40, 8, generator=_g, dtype=torch.float64) for _ in range(3))
out, lse = call_quietly(tiled_attention, q, k, v, block_q=16, block_k=16)
check_close("out", out, F.scaled_dot_product_attention(q, k, v), hint="scale the scores by 1/sqrt(d)")
check_close("lse", lse, torch.logsumexp(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1), hint="lse = m + log(l)")
_, numel, shape = call_quietly(largest_tensor, tiled_attention, q, k, v, block_q=16, block_k=16)
assert numel <= 2 * q.numel(), f"a tensor of shape {shape} was formed: the n x n scores must never exist, only tiles"
ok("tiled_attention matches scaled_dot_product_attention with n = 40, blocks of 16, without an n x n tensor")
### BEGIN HIDDEN TESTS
for _nq, _nk, _bq, _bk in ((1, 1, 16, 16), (7, 33, 4, 8), (65, 17, 64, 5), (30, 30, 30, 30)):
    _q = torch.randn(2, 3, _nq, 5, generator=_g, dtype=torch.float64)
    _k = torch.randn(2, 3, _nk, 5, generator=_g, dtype=torch.float64)
    _v = torch.randn(2, 3, _nk, 5, generator=_g, dtype=torch.float64)
    _out, _lse = call_quietly(tiled_attention, _q, _k, _v, block_q=_bq, block_k=_bk)
    check_close(f"out (n_q={_nq}, n_k={_nk}, blocks {_bq}x{_bk})", _out, F.scaled_dot_product_attention(_q, _k, _v),
                hint="cover the last, shorter block; scale by 1/sqrt(d)")
    check_close(f"lse (n_q={_nq}, n_k={_nk})", _lse, torch.logsumexp(_q @ _k.transpose(-1, -2) / math.sqrt(5), -1))
_q, _k, _v = (torch.randn(96, 4, generator=_g, dtype=torch.float64) for _ in range(3))
_, _numel, _shape = call_quietly(largest_tensor, tiled_attention, _q, _k, _v, block_q=8, block_k=8)
assert _numel <= 2 * 96 * 4, f"n=96, d=4, blocks 8x8: a tensor of shape {_shape} was formed; only tiles may be"
_q32 = torch.randn(50, 16, generator=_g)
_o32, _ = call_quietly(tiled_attention, _q32, _q32, _q32, block_q=16, block_k=16)
check_dtype("out for float32 inputs", _o32, torch.float32)
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Causal attention: skip what is masked
#
# With a causal mask, query $i$ sees keys $j \le i$ (PyTorch's `is_causal=True` convention, aligned at the top
# left). A tile of query rows $[q_0, q_1)$ and key columns $[k_0, k_1)$ falls in one of three kinds:
#
# * **skip**: every key comes after every query ($k_0 > q_1 - 1$): the tile is fully masked; computing it wastes
#   work and, with $m = -\infty$ rows, invites `nan`;
# * **full**: every key comes at or before every query ($k_1 - 1 \le q_0$): no mask needed;
# * **partial**: the diagonal crosses the tile: apply the mask inside it.
#
# For long sequences about half of all tiles are skipped, which is where FlashAttention-2's causal speed-up comes
# from (Dao 2023, §3.1.1).
#
# **Exercise 4 (2 points).** Write `causal_tile_kind(q0, q1, k0, k1)` returning `"skip"`, `"full"` or
# `"partial"` for the half-open ranges of query rows `[q0, q1)` and key columns `[k0, k1)`.

# %% tags=["solution"] grade_id="causal_tile_kind"
def causal_tile_kind(q0: int, q1: int, k0: int, k1: int) -> str:
    """Kind of the tile rows [q0, q1) x columns [k0, k1) under the causal mask j <= i."""
    ### BEGIN SOLUTION
    if k0 > q1 - 1:
        return "skip"
    if k1 - 1 <= q0:
        return "full"
    return "partial"
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_causal_tile_kind" points=2
assert call_quietly(causal_tile_kind, 0, 4, 4, 8) == "skip", "keys 4..7 all come after queries 0..3"
assert call_quietly(causal_tile_kind, 4, 8, 0, 4) == "full", "keys 0..3 all come before queries 4..7"
assert call_quietly(causal_tile_kind, 0, 4, 0, 4) == "partial", "a diagonal tile needs the mask"
ok("causal_tile_kind classifies the three basic tiles")
### BEGIN HIDDEN TESTS
for _q0, _q1, _k0, _k1 in ((0, 5, 5, 9), (3, 9, 0, 4), (0, 1, 0, 1), (4, 8, 7, 12), (4, 8, 8, 12), (10, 13, 0, 11),
                           (10, 13, 0, 10), (10, 13, 0, 12), (2, 3, 2, 3), (0, 16, 15, 16)):
    _mask = torch.ones(13 + 16, 13 + 16).tril().bool()[_q0:_q1, _k0:_k1]
    _want = "skip" if not _mask.any() else "full" if _mask.all() else "partial"
    _got = call_quietly(causal_tile_kind, _q0, _q1, _k0, _k1)
    assert _got == _want, f"tile rows [{_q0}, {_q1}) x cols [{_k0}, {_k1}): expected {_want!r}, got {_got!r}"
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 5 (3 points).** Write `causal_tiled_attention(q, k, v, block_q=16, block_k=16)` for `n_q == n_k`:
# like Exercise 3, but never call `online_softmax_update` on a `"skip"` tile, and mask a `"partial"` tile by
# setting scores with $j > i$ to `-inf` before the update. Return `(out, lse)`. The grader counts your calls to
# `online_softmax_update`: it must be exactly the number of tiles that are not skipped.

# %% tags=["solution"] grade_id="causal_tiled_attention"
def causal_tiled_attention(q, k, v, block_q: int = 16, block_k: int = 16):
    """Causal (j <= i) attention by tiles, fully masked tiles skipped; returns ``(out, lse)``."""
    ### BEGIN SOLUTION
    scale = q.shape[-1] ** -0.5
    n = q.shape[-2]
    outs, lses = [], []
    for i in range(0, n, block_q):
        i1 = min(i + block_q, n)
        qi = q[..., i:i1, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, n, block_k):
            j1 = min(j + block_k, n)
            kind = causal_tile_kind(i, i1, j, j1)
            if kind == "skip":
                continue
            s = (qi @ k[..., j:j1, :].transpose(-1, -2)) * scale
            if kind == "partial":
                rows = torch.arange(i, i1).unsqueeze(-1)
                cols = torch.arange(j, j1).unsqueeze(0)
                s = s.masked_fill(cols > rows, float("-inf"))
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j1, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_causal_tiled_attention" points=3
_g = torch.Generator().manual_seed(3)
q, k, v = (torch.randn(37, 8, generator=_g, dtype=torch.float64) for _ in range(3))
out, lse = call_quietly(causal_tiled_attention, q, k, v, block_q=16, block_k=16)
assert not torch.isnan(out).any(), "nan in the output: a fully masked tile or row reached the softmax"
check_close("out", out, F.scaled_dot_product_attention(q, k, v, is_causal=True), hint="mask j > i with -inf")
_causal_scores = (q @ k.T / math.sqrt(8)).masked_fill(~torch.ones(37, 37).tril().bool(), float("-inf"))
check_close("lse", lse, torch.logsumexp(_causal_scores, -1), hint="lse = m + log(l) over the allowed keys only")
_real_update, _calls = online_softmax_update, []


def online_softmax_update(*args):  # noqa: F811 - counts your calls, then runs your function
    _calls.append(1)
    return _real_update(*args)


try:
    call_quietly(causal_tiled_attention, q, k, v, block_q=16, block_k=16)
finally:
    online_softmax_update = _real_update
assert len(_calls) == 6, f"n=37, 16x16 blocks: 9 tiles, 3 fully masked; you called online_softmax_update {len(_calls)} times, expected 6"
ok("causal_tiled_attention matches scaled_dot_product_attention(is_causal=True) and skips the 3 masked tiles")
### BEGIN HIDDEN TESTS
_real_update = online_softmax_update
_calls = []


def online_softmax_update(m, l, acc, scores, v):  # noqa: F811 - counts the student's calls, then delegates
    _calls.append(tuple(scores.shape[-2:]))
    return _real_update(m, l, acc, scores, v)


try:
    for _n, _bq, _bk in ((37, 16, 16), (20, 4, 8), (33, 8, 4), (5, 16, 16), (64, 16, 16)):
        _q, _k, _v = (torch.randn(2, _n, 6, generator=_g, dtype=torch.float64) for _ in range(3))
        _calls.clear()
        _out, _lse = call_quietly(causal_tiled_attention, _q, _k, _v, block_q=_bq, block_k=_bk)
        check_close(f"causal out (n={_n}, blocks {_bq}x{_bk})", _out,
                    F.scaled_dot_product_attention(_q, _k, _v, is_causal=True),
                    hint="keep j <= i (the diagonal is allowed)")
        _scores = _q @ _k.transpose(-1, -2) / math.sqrt(6)
        _scores = _scores.masked_fill(~torch.ones(_n, _n).tril().bool(), float("-inf"))
        check_close(f"causal lse (n={_n})", _lse, torch.logsumexp(_scores, -1))
        _needed = sum(1 for _i in range(0, _n, _bq) for _j in range(0, _n, _bk) if _j <= min(_i + _bq, _n) - 1)
        assert len(_calls) == _needed, (
            f"n={_n}, blocks {_bq}x{_bk}: {len(_calls)} calls to online_softmax_update, expected {_needed} "
            "(skip the fully masked tiles, compute all the others)"
        )
finally:
    online_softmax_update = _real_update
### END HIDDEN TESTS

# %% [markdown]
# ## 6. The backward pass, tile by tile
#
# With $S = c\,QK^\top$ ($c = 1/\sqrt d$), $P = \mathrm{softmax}(S)$ and $O = PV$, the gradients given
# $dO = \partial \mathcal{L}/\partial O$ are
# $$dV = P^\top dO,\quad dP = dO\,V^\top,\quad dS_{ij} = P_{ij}\,(dP_{ij} - D_i),\quad D_i = \sum_k dO_{ik} O_{ik},
#   \quad dQ = c\, dS\, K,\quad dK = c\, dS^\top Q .$$
# The identity $D_i = \sum_j P_{ij} dP_{ij} = \mathrm{rowsum}(dO \circ O)_i$ is what makes a tiled backward
# possible: $D$ needs only $O$ and $dO$, not a whole row of $P$. FlashAttention's backward (Dao et al. 2022,
# Appendix B; FlashAttention-2 Algorithm 2) keeps no $P$ from the forward pass: it **recomputes** each tile
# $P_{ij} = \exp(S_{ij} - L_i)$ from the saved logsumexp $L$, spending extra FLOPs to save $N^2$ words of I/O.
#
# **Exercise 6 (3 points).** Write `attention_backward_tile(q, k, v, do, lse, delta, scale)` for one tile:
# `q, do: (..., Br, d)`, `k, v: (..., Bc, d)`, `lse, delta: (..., Br)`. Return the tile's contributions
# `(dq, dk, dv)` with the shapes of `q`, `k`, `v`.

# %% tags=["solution"] grade_id="attention_backward_tile"
def attention_backward_tile(q, k, v, do, lse, delta, scale):
    """Contributions of one (query block, key block) tile to dq, dk, dv, recomputing P from lse."""
    ### BEGIN SOLUTION
    p = torch.exp(scale * (q @ k.transpose(-1, -2)) - lse.unsqueeze(-1))
    dv = p.transpose(-1, -2) @ do
    dp = do @ v.transpose(-1, -2)
    ds = p * (dp - delta.unsqueeze(-1))
    dq = scale * (ds @ k)
    dk = scale * (ds.transpose(-1, -2) @ q)
    return dq, dk, dv
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_attention_backward_tile" points=3
def _reference_grads(q, k, v, do, causal=False):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out.backward(do)
    return out.detach(), q.grad, k.grad, v.grad


_g = torch.Generator().manual_seed(4)
q, k, v, do = (torch.randn(6, 4, generator=_g, dtype=torch.float64) for _ in range(4))
out, dq_ref, dk_ref, dv_ref = _reference_grads(q, k, v, do)
lse = torch.logsumexp(q @ k.T / 2.0, dim=-1)
delta = (do * out).sum(-1)
dq, dk, dv = call_quietly(attention_backward_tile, q, k, v, do, lse, delta, 0.5)
check_shape("dk", dk, k.shape)
check_close("dv", dv, dv_ref, hint="dV = P^T dO")
check_close("dq", dq, dq_ref, hint="dS = P * (dP - D); dQ = scale * dS K")
check_close("dk", dk, dk_ref, hint="dK = scale * dS^T Q")
ok("one tile covering the whole matrix gives autograd's dq, dk, dv")
### BEGIN HIDDEN TESTS
_q, _do = (torch.randn(2, 3, 5, 8, generator=_g, dtype=torch.float64) for _ in range(2))
_k, _v = (torch.randn(2, 3, 7, 8, generator=_g, dtype=torch.float64) * 2 for _ in range(2))
_out, _dq, _dk, _dv = _reference_grads(_q, _k, _v, _do)
_lse = torch.logsumexp(_q @ _k.transpose(-1, -2) / math.sqrt(8), dim=-1)
_delta = (_do * _out).sum(-1)
_r = call_quietly(attention_backward_tile, _q, _k, _v, _do, _lse, _delta, 8 ** -0.5)
for _name, _got, _want in zip(("dq", "dk", "dv"), _r, (_dq, _dk, _dv)):
    check_close(f"{_name} (batch, heads, 5 queries, 7 keys)", _got, _want,
                hint="recompute P = exp(scale * q k^T - lse); keep the scale in dq and dk")
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 7 (3 points).** Write `tiled_attention_backward(q, k, v, out, do, lse, block_q=16, block_k=16)`,
# non-causal with scale $1/\sqrt d$ as in Exercise 3: compute $D = \mathrm{rowsum}(dO \circ O)$ once, then loop over all tiles and **accumulate** each
# tile's contributions from Exercise 6 into `dq`, `dk`, `dv`. Return `(dq, dk, dv)`.

# %% tags=["solution"] grade_id="tiled_attention_backward"
def tiled_attention_backward(q, k, v, out, do, lse, block_q: int = 16, block_k: int = 16):
    """Gradients of non-causal attention by tiles, from the forward's ``out`` and ``lse``."""
    ### BEGIN SOLUTION
    scale = q.shape[-1] ** -0.5
    delta = (do * out).sum(dim=-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for j in range(0, k.shape[-2], block_k):
        kj, vj = k[..., j:j + block_k, :], v[..., j:j + block_k, :]
        for i in range(0, q.shape[-2], block_q):
            rows = slice(i, i + block_q)
            tq, tk, tv = attention_backward_tile(
                q[..., rows, :], kj, vj, do[..., rows, :], lse[..., rows], delta[..., rows], scale
            )
            dq[..., rows, :] += tq
            dk[..., j:j + block_k, :] += tk
            dv[..., j:j + block_k, :] += tv
    return dq, dk, dv
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_tiled_attention_backward" points=3
_g = torch.Generator().manual_seed(5)
q, k, v, do = (torch.randn(40, 8, generator=_g, dtype=torch.float64) for _ in range(4))
out, dq_ref, dk_ref, dv_ref = _reference_grads(q, k, v, do)
lse = torch.logsumexp(q @ k.T / math.sqrt(8), dim=-1)
dq, dk, dv = call_quietly(tiled_attention_backward, q, k, v, out, do, lse, block_q=16, block_k=16)
check_close("dv", dv, dv_ref, hint="accumulate (+=) over tiles")
check_close("dk", dk, dk_ref)
check_close("dq", dq, dq_ref, hint="D = rowsum(dO * O), computed once from the full rows")
ok("tiled_attention_backward matches autograd with n = 40, blocks of 16")
### BEGIN HIDDEN TESTS
for _nq, _nk, _bq, _bk in ((7, 19, 4, 8), (33, 5, 16, 2), (1, 1, 16, 16)):
    _q, _do = (torch.randn(2, _nq, 6, generator=_g, dtype=torch.float64) for _ in range(2))
    _k, _v = (torch.randn(2, _nk, 6, generator=_g, dtype=torch.float64) for _ in range(2))
    _out, _dq, _dk, _dv = _reference_grads(_q, _k, _v, _do)
    _lse = torch.logsumexp(_q @ _k.transpose(-1, -2) / math.sqrt(6), dim=-1)
    _r = call_quietly(tiled_attention_backward, _q, _k, _v, _out, _do, _lse, block_q=_bq, block_k=_bk)
    for _name, _got, _want in zip(("dq", "dk", "dv"), _r, (_dq, _dk, _dv)):
        check_close(f"{_name} (n_q={_nq}, n_k={_nk}, blocks {_bq}x{_bk})", _got, _want,
                    hint="cover ragged last blocks; accumulate; D = rowsum(dO * O)")
### END HIDDEN TESTS

# %% [markdown]
# ## 7. Counting the I/O of a schedule
#
# FlashAttention's Algorithm 1 (Dao et al. 2022, §3.1) chooses block sizes from the fast-memory size,
# $B_c = \lceil M/4d \rceil$ key/value rows and $B_r = \min(\lceil M/4d \rceil, d)$ query rows, so that a key
# block and a value block ($B_c d$ words each) and a query and an output block ($B_r d$ each) take about $M$ words
# together. (The ceiling can overshoot $M$ slightly, and the $B_r \times B_c$ tile $S_{ij}$ and the row statistics
# are not counted: the simulator shrinks $B_r$ when a schedule would not fit, which does not change the count
# below.) It then runs
# **outer over key/value blocks**, **inner over query blocks**:
#
# 1. for each of the $T_c = \lceil N/B_c \rceil$ key/value blocks $j$: read $K_j$ and $V_j$;
# 2. for each query block $i$: read $Q_i$, $O_i$, $\ell_i$, $m_i$; compute $S_{ij}$ and the online update in fast
#    memory; write $O_i$, $\ell_i$, $m_i$ back.
#
# Every key and value is read once ($2Nd$ words) and there are $T_c$ passes over $Q, O, \ell, m$. With
# $B_c \propto M/d$, $T_c \propto Nd/M$ and the total is $\Theta(N^2d^2/M)$: this is the proof of Theorem 2.
#
# **Exercise 8 (2 points).** Write `flash_forward_io(N, d, block_c)` returning `(reads, writes)`: the exact numbers
# of words that the schedule above reads from and writes to slow memory, for $N$ queries and keys, head dimension
# $d$ (values also of width $d$), key/value blocks of `block_c` rows (the last may be shorter). Two accounting rules:
# initialising $O = 0$, $\ell = 0$, $m = -\infty$ in slow memory costs nothing, and every pass, the first included,
# reads $Q_i, O_i, \ell_i, m_i$ and writes $O_i, \ell_i, m_i$. Your numbers must match the simulator in
# `companion.attention.io`, which moves real tensors and counts every word.

# %% tags=["solution"] grade_id="flash_forward_io"
def flash_forward_io(N: int, d: int, block_c: int) -> tuple[int, int]:
    """Words (read, written) by FlashAttention's Algorithm 1 schedule with key/value blocks of ``block_c`` rows."""
    ### BEGIN SOLUTION
    t_c = math.ceil(N / block_c)
    reads = 2 * N * d + t_c * (2 * N * d + 2 * N)  # K, V once; Q, O, l, m once per key block
    writes = t_c * (N * d + 2 * N)  # O, l, m once per key block
    return reads, writes
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_flash_forward_io" points=2
_r, _w = call_quietly(flash_forward_io, 64, 8, 16)
assert (_r, _w) == (5632, 2560), (
    f"N=64, d=8, block_c=16 (T_c = 4 passes): expected (reads, writes) = (5632, 2560), got ({_r}, {_w})"
)
_r, _w = call_quietly(flash_forward_io, 50, 8, 16)
assert (_r, _w) == (4400, 2000), (
    f"N=50, d=8, block_c=16 (the last key block has 2 rows, T_c = 4): expected (4400, 2000), got ({_r}, {_w})"
)
ok("flash_forward_io counts N=64 and N=50 (a ragged last block) correctly")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(6)
for _N, _d, _bc in ((50, 4, 16), (33, 8, 5), (16, 2, 16), (70, 6, 64)):
    _q, _k, _v = (torch.randn(_N, _d, generator=_g, dtype=torch.float64) for _ in range(3))
    _sim = attn_io.flash_attention_io(_q, _k, _v, M=10**6, block_c=_bc, block_r=min(_bc, _d))
    _got = call_quietly(flash_forward_io, _N, _d, _bc)
    assert tuple(_got) == (_sim.reads, _sim.writes), (
        f"N={_N}, d={_d}, block_c={_bc}: you count {tuple(_got)}, the simulator moved "
        f"({_sim.reads}, {_sim.writes}); T_c = ceil(N / block_c) passes, the last block may be short"
    )
### END HIDDEN TESTS

# %% [markdown]
# The query block size $B_r$ does not appear: each pass over the query blocks reads all of $Q, O, \ell, m$ once,
# however it is cut. Only the number of passes, $T_c$, depends on the schedule. That is why Algorithm 1 makes
# $B_c$ as large as fast memory allows.
#
# **Exercise 9 (2 points).** Write `choose_block_sizes(M, d)` returning Algorithm 1's `(block_c, block_r)`:
# $B_c = \lceil M/4d \rceil$, $B_r = \min(\lceil M/4d \rceil, d)$. Raise a `ValueError` when $M < 4d$, where not
# even one row each of $K_j, V_j, Q_i, O_i$ fits.

# %% tags=["solution"] grade_id="choose_block_sizes"
def choose_block_sizes(M: int, d: int) -> tuple[int, int]:
    """Algorithm 1's ``(B_c, B_r)`` for fast memory of ``M`` words and head dimension ``d``."""
    ### BEGIN SOLUTION
    if M < 4 * d:
        raise ValueError(f"fast memory of M={M} words cannot hold one row of K, V, Q and O (needs M >= 4d = {4 * d})")
    b_c = math.ceil(M / (4 * d))
    return b_c, min(b_c, d)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_choose_block_sizes" points=2
assert tuple(call_quietly(choose_block_sizes, 4096, 64)) == (16, 16), "M=4096, d=64: ceil(4096/256) = 16"
assert tuple(call_quietly(choose_block_sizes, 1000, 64)) == (4, 4), "M=1000, d=64: ceil(1000/256) = 4, not 3"
_raised = False
try:
    choose_block_sizes(200, 64)
except ValueError:
    _raised = True
assert _raised, "M=200 < 4d=256 must raise ValueError"
ok("choose_block_sizes rounds up and refuses M < 4d")
### BEGIN HIDDEN TESTS
for _M, _d in ((1000, 64), (65536, 64), (100_000, 128), (256, 64), (257, 64), (20, 5)):
    _want = attn_io.paper_block_sizes(_M, _d)
    _got = tuple(call_quietly(choose_block_sizes, _M, _d))
    assert _got == _want, f"M={_M}, d={_d}: expected (block_c, block_r) = {_want}, got {_got} (ceil, then min with d)"
_raised = False
try:
    choose_block_sizes(100, 64)
except ValueError:
    _raised = True
assert _raised, "choose_block_sizes must raise ValueError when M < 4d (tried M=100, d=64)"
### END HIDDEN TESTS

# %% [markdown]
# ## 8. See it: exactness, for any $N$
#
# The companion's `flash_attention` is the tiled algorithm above, vectorised over batch and heads, as a
# `torch.autograd.Function` whose backward is itself a tiled recomputation pass. It must agree with PyTorch's
# `scaled_dot_product_attention` in output and in all three gradients, for sequence lengths that are not
# multiples of the block size, causal or not, and with $n_q \ne n_k$:

# %%
seed_everything(0)
worst = 0.0
shapes = scaled(full=((1, 1, False), (65, 65, True), (130, 77, False), (200, 200, True)),
                reduced=((1, 1, False), (65, 65, True), (70, 37, False)))
for n_q, n_k, causal in shapes:
    q, k, v = (torch.randn(2, 3, n, 32, dtype=torch.float64, requires_grad=True) for n in (n_q, n_k, n_k))
    do = torch.randn(2, 3, n_q, 32, dtype=torch.float64)
    ours = torch.autograd.grad(flash_attention(q, k, v, causal=causal, block_q=64, block_k=64), (q, k, v), do)
    ref_out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    theirs = torch.autograd.grad(ref_out, (q, k, v), do)
    out_diff = (flash_attention(q, k, v, causal=causal) - ref_out).abs().max().item()
    worst = max([worst, out_diff] + [(a - b).abs().max().item() for a, b in zip(ours, theirs)])
print(f"largest difference from SDPA over outputs and gradients (float64): below 1e-12: {worst < 1e-12}")

# %% [markdown]
# Causal tiles: with square blocks, the tiles strictly above the diagonal are skipped and only the diagonal
# tiles need a mask. The fraction skipped tends to one half as $N$ grows.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
attn_io.plot_tile_schedule(256, 256, 64, 64, causal=True, ax=axes[0])
attn_io.plot_tile_schedule(200, 200, 32, 48, causal=True, ax=axes[1])
fig.tight_layout()
plt.show()
plt.close(fig)

# %% [markdown]
# ## 9. See it: words moved against fast-memory size
#
# The simulator in `companion.attention.io` holds a slow memory and a fast memory of $M$ words that **refuses**
# to hold more (it raises). Each algorithm moves real blocks between the two, computes the real output (equal
# to attention) and counts every word. Three schedules:
#
# * standard attention (Algorithm 0): $S$ and $P$ go through slow memory, $\Theta(Nd + N^2)$ whatever $M$;
# * FlashAttention (Algorithm 1, the paper's block sizes): $\Theta(N^2d^2/M)$;
# * the small-cache algorithm of Saha & Ye (2024, Theorem 3.5): square tiles of side $\approx\sqrt{M/4}$, writing
#   $\exp(QK^\top)$ to slow memory like standard attention but multiplying blockwise, $O(N^2 d/\sqrt M)$.
#
# **Theorem (Saha & Ye 2024, Theorem 3.1).** For attention computed with standard (not fast) matrix
# multiplication, the I/O complexity in the two-level model is $\Theta(\min(N^2d^2/M,\ N^2d/\sqrt M))$. The two
# terms meet at $M = d^2$: above it FlashAttention is optimal, below it the small-cache algorithm is.

# %%
N_sim, d_sim = scaled(full=(128, 32), reduced=(64, 16))
Ms = [m for m in (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096) if 8 * d_sim <= m <= N_sim * d_sim]
fig, ax = plt.subplots(figsize=(7, 4.5))
attn_io.plot_io_vs_memory(N_sim, d_sim, Ms, ax=ax)
plt.show()
plt.close(fig)

# %% [markdown]
# The slopes on the log-log plot are the exponents of $M$. Fitting them on the measured counts:

# %%
def fitted_slope(Ms, counts):
    x = torch.log(torch.tensor(Ms, dtype=torch.float64))
    y = torch.log(torch.tensor(counts, dtype=torch.float64))
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(N_sim, d_sim, generator=g, dtype=torch.float64) for _ in range(3))
above = [m for m in Ms if m >= d_sim**2 and m <= N_sim * d_sim // 2]
below = [m for m in Ms if m < d_sim**2]
flash_counts = [attn_io.flash_attention_io(q, k, v, m).total for m in above]
small_counts = [attn_io.small_cache_attention_io(q, k, v, m).total for m in below]
print(f"FlashAttention, M >= d^2: slope {fitted_slope(above, flash_counts):.1f} (theory -1)")
print(f"small-cache,   M <  d^2: slope {fitted_slope(below, small_counts):.1f} (theory -1/2)")

# %% [markdown]
# The fitted slopes are close to the asymptotic exponents but not equal at this small size: terms that do not
# shrink with $M$ (FlashAttention's $2Nd$ reads of $K$ and $V$, the small-cache algorithm's $\Theta(N^2)$ softmax
# pass) and the ceilings in the block sizes bend the curves.

# %% [markdown]
# **The constants matter.** Theorem 2 hides them. For $N = 1024$, $d = 64$ (graded runs use a smaller problem, so
# their numbers differ), your `flash_forward_io` gives the
# exact count of Algorithm 1 with the paper's block sizes, next to the simulator's count for standard attention
# (which also depends a little on $M$: with less fast memory it re-reads more):

# %%
N_big, d_big = scaled(full=(1024, 64), reduced=(256, 32))
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(N_big, d_big, generator=g, dtype=torch.float64) for _ in range(3))
print(f"N = {N_big}, d = {d_big} (d^2 = {d_big**2}); words moved, in millions")
for M in (1024, 4096, 16384, 65536):
    b_c, _ = choose_block_sizes(M, d_big)
    r, w = flash_forward_io(N_big, d_big, b_c)
    standard = attn_io.standard_attention_io(q, k, v, M).total
    print(f"M = {M:6d}: standard {standard / 1e6:6.2f}   FlashAttention {(r + w) / 1e6:6.2f}")

# %% [markdown]
# In the full run, with $M = 1024$ words (so $M < d^2 = 4096$), FlashAttention moves several times *more* words than standard
# attention, at $M = d^2$ still about twice as many; it wins only once $M$ is a few times $d^2$ (about five times
# fewer words at $M = 16d^2$). Real GPUs have $M \gg d^2$ for $d \le 128$, which is why
# FlashAttention is fast in practice, and why the theory's regime boundary $M = d^2$ is not a footnote.
#
# ## 10. Why no algorithm can do better: the pebble game
#
# Lower bounds on data movement use the **red-blue pebble game** of Hong & Kung (1981). The computation is a DAG;
# a red pebble on a vertex means its value is in fast memory (at most $M$ red pebbles), a blue pebble means it is
# in slow memory. Moves: load (blue → red), store (red → blue), compute (place red on a vertex whose inputs are
# red), delete. The I/O cost is the number of loads and stores. The key lemma (Hong & Kung, Lemma 3.1) says: if
# every way of cutting the DAG into segments, each of which can be computed with $2M$ values "at hand", needs at
# least $P$ segments, then at least $M(P - 1)$ I/Os are necessary. For the product of two $n \times n$ matrices
# this gives $\Omega(n^3/\sqrt M)$ (Hong & Kung, Corollary 6.2, for the standard algorithm).
#
# Saha & Ye apply this to attention. With $M \ge d^2$, each segment can contain only $O(M^2/d)$ of the $N^2 d$
# products $q_{ik}k_{jk}$ (their Lemma 3.3), so there are $\Omega(N^2d^2/M^2)$ segments and $\Omega(N^2d^2/M)$ I/Os:
# FlashAttention is optimal (Lemma 3.4). Below $d^2$, attention contains the matrix products $QK^\top$ and $PV$,
# and the matrix-multiplication bound gives $\Omega(N^2d/\sqrt M)$ (Theorem 3.7), matched by their square-tiling
# algorithm. For $M \ge d^2$ the bound even holds against fast matrix multiplication, in a model where inputs live
# in a finite field (Theorem 4.8). What is *not* known: a tight bound below $d^2$ when fast matrix multiplication
# is allowed.
#
# The same picture holds for the **backward pass**: Li, Liang, Shi, Song et al. (2024, arXiv 2410.09397) state
# $\Theta(\min\{(N^2d^2 + Nd^3)/M,\ (N^2d + Nd^2)/\sqrt M\})$ for standard matrix multiplication, with the same
# crossover at $M = d^2$.
#
# **What Dao et al.'s own lower bound says.** Proposition 3 of the FlashAttention paper states only that no exact
# algorithm achieves $o(N^2d^2/M)$ for *all* $M$ in $[d, Nd]$; its proof uses $M = \Theta(Nd)$, where reading the
# input is already that expensive. The per-$M$ statement above is Saha & Ye's.

# %% [markdown]
# ## 11. See it: memory
#
# Standard attention keeps the $N \times N$ score and probability matrices alive; the tiled algorithm keeps one
# `block_q × block_k` tile at a time plus $O(Nd)$ for inputs, output and statistics. `peak_tensor_bytes` records
# the peak bytes of tensors a function allocates (it watches every PyTorch operator):

# %%
d_mem = 64
ns = scaled(full=[256, 512, 1024, 2048], reduced=[256, 512])
naive_peak, flash_peak = [], []
for n in ns:
    q, k, v = (torch.randn(1, n, d_mem) for _ in range(3))
    naive_peak.append(peak_tensor_bytes(naive_attention, q, k, v)[1] / 2**20)
    flash_peak.append(peak_tensor_bytes(flash_attention, q, k, v)[1] / 2**20)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(ns, naive_peak, "o-", label="naive_attention")
ax.loglog(ns, flash_peak, "s-", label="flash_attention (64 x 64 tiles)")
ax.set_xlabel("sequence length N")
ax.set_ylabel("peak tensor memory (MiB)")
ax.set_title("Naive memory grows as N^2, tiled as N")
ax.legend()
plt.show()
plt.close(fig)
print(f"at N = {ns[-1]}: tiled uses {flash_peak[-1] / naive_peak[-1]:.0%} of naive's peak memory")

# %% [markdown]
# ## 12. Explore: fast memory and block sizes
#
# Choose $M$ and see the schedule Algorithm 1 runs: its block sizes, the tiles it visits and the words it moves.
# Override the key/value block size `block_c` (0 keeps Algorithm 1's choice) to see that the count depends on it
# alone. The static figure first, then the widget.

# %%
def show_schedule(M: int, N: int = 256, d: int = 16, causal: bool = False, block_c: int = 0) -> None:
    b_c, b_r = choose_block_sizes(M, d)
    if block_c:
        b_c = block_c
    reads, writes = flash_forward_io(N, d, b_c)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    attn_io.plot_tile_schedule(N, N, b_r, b_c, causal=causal, ax=ax)
    ax.set_title(f"M = {M}: B_c = {b_c}, B_r = {b_r}; {reads + writes:,} words moved")
    plt.show()
    plt.close(fig)


show_schedule(1024)

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets

widgets.interact(
    show_schedule,
    M=widgets.IntSlider(value=1024, min=64, max=4096, step=64, continuous_update=False),
    N=widgets.fixed(256),
    d=widgets.IntSlider(value=16, min=4, max=32, step=4, continuous_update=False),
    causal=widgets.Checkbox(value=False),
    block_c=widgets.IntSlider(value=0, min=0, max=128, step=4, continuous_update=False),
);

# %% [markdown]
# ## 13. Scale it: the companion against PyTorch's own kernel
#
# Wall-clock time on a CPU says nothing about HBM traffic: a CPU has caches, not a programmer-managed SRAM, and
# PyTorch's CPU kernel is a fused C++ loop. What the tiled Python implementation buys on a CPU is memory: it
# never allocates the $N \times N$ matrix. On a GPU the companion's Triton kernel
# (`companion.attention.triton_flash_attention`) implements the same schedule in fast memory; the benchmark
# scripts `benchmarks/attention.py` (CPU) and `benchmarks/attention_gpu.py` (GPU, TFLOP/s against SDPA's
# FlashAttention backend) report the ratios. Expect the pure-PyTorch version to take a few times as long as PyTorch's
# fused CPU kernel (it pays Python overhead per tile) while using a small fraction of naive attention's memory.

# %% tags=["nbval-ignore-output"]
import time

device = get_device()
n_time = scaled(full=1024, reduced=256)
q, k, v = (torch.randn(2, 4, n_time, 64, device=device) for _ in range(3))


def best_of(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


t_sdpa = best_of(lambda: F.scaled_dot_product_attention(q, k, v))
t_flash = best_of(lambda: flash_attention(q, k, v))
print(f"{device}, batch*heads = 8, N = {n_time}, d = 64: companion flash_attention takes "
      f"{t_flash / t_sdpa:.1f}x the time of scaled_dot_product_attention")
if device.type == "cuda":
    from companion.attention import triton_flash_attention

    qh, kh, vh = (t.half() for t in (q, k, v))
    t_triton = best_of(lambda: triton_flash_attention(qh, kh, vh))
    t_sdpa_h = best_of(lambda: F.scaled_dot_product_attention(qh, kh, vh))
    print(f"Triton kernel, fp16: {t_sdpa_h / t_triton:.2f}x the speed of SDPA")

# %% [markdown]
# ## Limits and pitfalls
#
# * **$M$ counts words, not bytes**, and Theorem 2 needs $d \le M \le Nd$; Algorithm 1 needs $M \ge 4d$ to hold one
#   row each of $K_j, V_j, Q_i, O_i$.
# * **Constants hide behind $\Theta$.** Below $M \approx d^2$ FlashAttention moves more words than standard
#   attention (section 9); its advantage on GPUs comes from $M \gg d^2$.
# * **The running max starts at $-\infty$**, and $e^{-\infty - (-\infty)}$ is `nan`: a fully masked tile or row must
#   be skipped or guarded (Exercises 1, 2, 5).
# * **Rescale both $\ell$ and $\tilde O$** when the max changes; forgetting one gives plausible, wrong numbers.
# * **Causal conventions differ** when $n_q \ne n_k$: PyTorch's `is_causal` aligns the mask at the top left,
#   FlashAttention-2's kernels at the bottom right (useful for decoding with a KV cache).
# * **CPU time is not HBM traffic.** The simulator counts words exactly; timings on a CPU measure something else.
# * **Lower bounds are for a model.** Saha & Ye's tight bound assumes standard matrix multiplication below $d^2$;
#   with fast matrix multiplication that regime is open.
#
# ## References
#
# * T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135 (Algorithms 0 and 1, Theorem 2, Proposition 3, Theorem 5).
# * T. Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691 (deferred normalisation, logsumexp, causal block skipping).
# * M. Milakov, N. Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867.
# * B. Saha, C. Ye, "The I/O Complexity of Attention, or How Optimal is Flash Attention?", 2024, arXiv:2402.07443
#   (Theorems 3.1, 3.5, 3.7, 4.8).
# * X. Li, Y. Liang, Z. Shi, Z. Song et al., "Fine-grained Attention I/O Complexity: Comprehensive Analysis for
#   Backward Passes", 2024, arXiv:2410.09397.
# * J.-W. Hong, H. T. Kung, "I/O complexity: The red-blue pebble game", STOC 1981.
#
# ## What you can now do
#
# * Derive and implement the online softmax, for a row and for a tile, without `nan` on masked input.
# * Write a tiled attention forward pass that matches `scaled_dot_product_attention` for any $N$, and its causal
#   version that skips fully masked tiles.
# * Derive the attention gradients, recompute $P$ from the logsumexp and write the tiled backward pass.
# * Count the words an attention schedule moves in the two-level model and choose block sizes from $M$.
# * State when FlashAttention is I/O-optimal ($M \ge d^2$), what does better below, and what the lower bounds assume.
