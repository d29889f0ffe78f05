"""companion.attention against independent references.

Flash attention (forward and tiled backward) against
``torch.nn.functional.scaled_dot_product_attention`` and autograd; the I/O model
against hand-derived counts, its own capacity limit, and the asymptotic slopes
of Dao et al. (2022) and Saha & Ye (2024).
"""

from __future__ import annotations

import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import companion.attention as attn
from companion.attention import (
    FastMemory,
    FastMemoryOverflow,
    IOResult,
    flash_attention,
    flash_attention_backward_io,
    flash_attention_forward,
    flash_attention_io,
    io_bounds,
    naive_attention,
    online_softmax_update,
    plot_io_vs_memory,
    plot_tile_schedule,
    small_cache_attention_io,
    standard_attention_io,
    tile_kind,
)
from companion.attention import flash as flash_module
from companion.attention.io import flash_backward_footprint, flash_forward_footprint, paper_block_sizes

TOL64 = dict(atol=1e-10, rtol=1e-9)
TOL32 = dict(atol=2e-5, rtol=1e-4)


def _qkv(n_q, n_k, d=16, d_v=None, lead=(2, 3), dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    shapes = ((*lead, n_q, d), (*lead, n_k, d), (*lead, n_k, d_v or d))
    return tuple(torch.randn(s, generator=g, dtype=dtype).requires_grad_(grad) for s in shapes)


def _sdpa_and_grads(fn, q, k, v, dout, **kw):
    out = fn(q, k, v, **kw)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


# ----------------------------------------------------------------------------- flash_attention parity


CASES = [  # (n_q, n_k, block_q, block_k)
    *[(n, n, bq, bk) for n in (1, 7, 65, 130) for bq, bk in ((16, 16), (32, 64))],
    (64, 64, 64, 64),  # exact multiple of the block
    (65, 65, 64, 16),  # block_q > block_k: rows fully masked inside a partial tile
    (7, 65, 16, 32),  # n_q < n_k
    (130, 33, 32, 16),  # n_q > n_k
    (65, 130, 64, 64),
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n_q,n_k,block_q,block_k", CASES)
def test_flash_matches_sdpa_output_and_grads_float64(n_q, n_k, block_q, block_k, causal):
    q, k, v = _qkv(n_q, n_k, d=16, d_v=8)
    dout = torch.randn(2, 3, n_q, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = _sdpa_and_grads(F.scaled_dot_product_attention, q, k, v, dout, is_causal=causal)
    got = _sdpa_and_grads(flash_attention, q, k, v, dout, causal=causal, block_q=block_q, block_k=block_k)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert not torch.isnan(a).any(), name
        torch.testing.assert_close(a, b, **TOL64, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("causal", [False, True])
def test_flash_matches_sdpa_float32_and_custom_scale(causal):
    q, k, v = _qkv(130, 130, d=32, dtype=torch.float32)
    dout = torch.randn_like(q)
    want = _sdpa_and_grads(F.scaled_dot_product_attention, q, k, v, dout, is_causal=causal, scale=0.3)
    got = _sdpa_and_grads(flash_attention, q, k, v, dout, causal=causal, scale=0.3, block_q=32, block_k=16)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, **TOL32)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3), (2, 1, 2)])
def test_flash_any_leading_dims(lead):
    q, k, v = _qkv(33, 33, d=8, lead=lead)
    torch.testing.assert_close(
        flash_attention(q, k, v, causal=True, block_q=16, block_k=16),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        **TOL64,
    )


def test_flash_bfloat16_accumulates_in_float32():
    q, k, v = _qkv(70, 70, d=16, dtype=torch.bfloat16, grad=False)
    out = flash_attention(q, k, v, causal=True, block_q=32, block_k=32)
    assert out.dtype == torch.bfloat16
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_gradcheck(causal):
    q, k, v = _qkv(5, 5, d=3, lead=(1, 2))
    fn = lambda q, k, v: flash_attention(q, k, v, causal=causal, block_q=2, block_k=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))
    q, k, v = _qkv(3, 5, d=2, lead=(2,))  # n_q != n_k
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_forward_returns_logsumexp():
    q, k, v = _qkv(40, 50, d=8, grad=False)
    for causal in (False, True):
        out, lse = flash_attention_forward(q, k, v, causal=causal, block_q=16, block_k=16)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(8)
        if causal:
            s = s.masked_fill(~torch.ones(40, 50, dtype=torch.bool).tril(), float("-inf"))
        torch.testing.assert_close(lse, torch.logsumexp(s, dim=-1), **TOL64)
        torch.testing.assert_close(out, naive_attention(q, k, v, causal=causal), **TOL64)


def test_naive_attention_matches_sdpa():
    q, k, v = _qkv(9, 13, d=4, d_v=6, grad=False)
    torch.testing.assert_close(naive_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL64)
    torch.testing.assert_close(
        naive_attention(q, k, v, causal=True, scale=2.0),
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=2.0),
        **TOL64,
    )


# ----------------------------------------------------------------------------- the online softmax step


def test_online_softmax_update_folds_tiles_into_softmax():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 4, 10, generator=g, dtype=torch.float64)  # (batch, bq, n_k)
    v = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    m = torch.full((2, 4), float("-inf"), dtype=torch.float64)
    l, acc = torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, 3, dtype=torch.float64)  # noqa: E741
    for lo, hi in ((0, 3), (3, 4), (4, 10)):
        m, l, acc = online_softmax_update(m, l, acc, s[..., lo:hi], v[:, lo:hi])  # noqa: E741
    torch.testing.assert_close(acc / l.unsqueeze(-1), torch.softmax(s, -1) @ v, **TOL64)
    torch.testing.assert_close(m + l.log(), torch.logsumexp(s, -1), **TOL64)


@pytest.mark.parametrize("lead", [(2,), (2, 3)])
def test_online_softmax_update_inplace_matches_and_default_leaves_inputs_alone(lead):
    g = torch.Generator().manual_seed(1)
    m = torch.randn(*lead, 4, generator=g, dtype=torch.float64)
    l = torch.rand(*lead, 4, generator=g, dtype=torch.float64) + 1  # noqa: E741
    acc = torch.randn(*lead, 4, 3, generator=g, dtype=torch.float64)
    s = torch.randn(*lead, 4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, 5, 3, generator=g, dtype=torch.float64)
    copies = [t.clone() for t in (m, l, acc, s, v)]
    want = online_softmax_update(m, l, acc, s, v)
    assert all(torch.equal(a, b) for a, b in zip((m, l, acc, s, v), copies))
    got = online_softmax_update(m, l, acc, s, v, inplace=True)
    assert got[2] is acc
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL64)


def test_online_softmax_update_normaliser_in_a_ones_column():
    """l=None: with [V | 1] the last column of acc is ℓ, updated by the same matmul."""
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 4, 9, generator=g, dtype=torch.float64)
    v = torch.randn(3, 9, 2, generator=g, dtype=torch.float64)
    v1 = torch.cat([v, torch.ones(3, 9, 1, dtype=torch.float64)], dim=-1)
    m = torch.full((3, 4), float("-inf"), dtype=torch.float64)
    acc = torch.zeros(3, 4, 3, dtype=torch.float64)
    for lo, hi in ((0, 5), (5, 9)):
        m, l_none, acc = online_softmax_update(m, None, acc, s[..., lo:hi].clone(), v1[:, lo:hi], inplace=True)
        assert l_none is None
    torch.testing.assert_close(acc[..., :2] / acc[..., 2:], torch.softmax(s, -1) @ v, **TOL64)
    torch.testing.assert_close(m + acc[..., 2].log(), torch.logsumexp(s, -1), **TOL64)


def test_online_softmax_update_fully_masked_rows_give_no_nan():
    m = torch.full((1, 2), float("-inf"))
    l, acc = torch.zeros(1, 2), torch.zeros(1, 2, 3)  # noqa: E741
    masked = torch.full((1, 2, 4), float("-inf"))
    m, l, acc = online_softmax_update(m, l, acc, masked, torch.randn(1, 4, 3))  # noqa: E741
    assert torch.isneginf(m).all() and (l == 0).all() and (acc == 0).all()
    tile = torch.tensor([[[0.0, float("-inf")], [float("-inf"), float("-inf")]]])  # row 1 still all masked
    v = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    m, l, acc = online_softmax_update(m, l, acc, tile, v)  # noqa: E741
    assert not torch.isnan(acc).any() and not torch.isnan(l).any()
    torch.testing.assert_close(acc[0, 0] / l[0, 0], v[0, 0])
    assert l[0, 1] == 0 and (acc[0, 1] == 0).all()


def test_online_softmax_update_rejects_mismatched_shapes():
    m, l, acc = torch.zeros(2, 4), torch.ones(2, 4), torch.zeros(2, 4, 3)  # noqa: E741
    with pytest.raises(ValueError, match="scores_tile"):
        online_softmax_update(m, l, acc, torch.zeros(2, 5, 6), torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match=r"expected v_tile of shape \(2, 6, 3\)"):
        online_softmax_update(m, l, acc, torch.zeros(2, 4, 6), torch.zeros(2, 5, 3))


# ----------------------------------------------------------------------------- tiles, never n_q x n_k


class _RecordShapes(TorchDispatchMode):
    """Records the shape of every tensor every aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.shapes.append((str(func), tuple(t.shape)))
        return out


def _largest_intermediate(fn, n_q, n_k, d, causal):
    """Largest number of elements per (batch, head) of any tensor made in forward + backward."""
    q, k, v = _qkv(n_q, n_k, d=d, lead=(2,), dtype=torch.float32)
    rec = _RecordShapes()
    with rec:
        fn(q, k, v, causal).sum().backward()
    return max((math.prod(s[1:]) if len(s) > 1 else 1, op, s) for op, s in rec.shapes)


@pytest.mark.parametrize("causal", [False, True])
def test_no_n_by_n_tensor_in_forward_or_backward(causal):
    n_q, n_k, d, bq, bk = 256, 192, 4, 32, 16
    flash = lambda q, k, v, c: flash_attention(q, k, v, causal=c, block_q=bq, block_k=bk)  # noqa: E731
    numel, op, shape = _largest_intermediate(flash, n_q, n_k, d, causal)
    limit = max(n_q * d, n_k * d, bq * bk)  # inputs, outputs, one tile
    assert numel <= limit, f"{op} made a tensor of shape {shape}: more than O(n·d) + one tile"
    # the detector is not vacuous: the reference does build an n_q x n_k matrix
    naive = lambda q, k, v, c: naive_attention(q, k, v, causal=c)  # noqa: E731
    assert _largest_intermediate(naive, n_q, n_k, d, causal)[0] >= n_q * n_k


def test_saved_tensors_are_o_of_n_d():
    q, k, v = _qkv(100, 80, d=8, lead=(2,))
    saved: list[tuple[int, ...]] = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = flash_attention(q, k, v, causal=True, block_q=16, block_k=16)
    assert saved and all(s[-2:] != (100, 80) for s in saved), saved
    assert sorted(saved) == sorted([(2, 100, 8), (2, 80, 8), (2, 80, 8), (2, 100, 8), (2, 100)])
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_attention(q, k, v)
    assert any(s[-2:] == (100, 80) for s in saved)  # what flash avoids
    out.sum().backward()


def test_tiles_are_block_sized_and_causal_skips_masked_tiles(monkeypatch):
    """Every score tile is at most block_q x block_k; causal computes exactly the tiles tile_kind keeps."""
    tiles: list[tuple[int, ...]] = []
    real = flash_module.online_softmax_update

    def spy(m, l, acc, scores_tile, v_tile, **kw):  # noqa: E741
        tiles.append(tuple(scores_tile.shape))
        return real(m, l, acc, scores_tile, v_tile, **kw)

    monkeypatch.setattr(flash_module, "online_softmax_update", spy)
    n_q, n_k, bq, bk = 100, 70, 32, 16
    q, k, v = _qkv(n_q, n_k, d=4, lead=(3,), grad=False)
    for causal in (False, True):
        tiles.clear()
        out = flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), **TOL64)
        assert all(s[0] == 3 and s[1] <= bq and s[2] <= bk for s in tiles), tiles
        kinds = [
            tile_kind(i, min(i + bq, n_q), j, min(j + bk, n_k), causal)
            for i in range(0, n_q, bq)
            for j in range(0, n_k, bk)
        ]
        assert len(tiles) == sum(kind != "skipped" for kind in kinds)
    assert kinds.count("skipped") > 0 and kinds.count("partial") > 0


def test_tile_kind():
    assert tile_kind(0, 4, 8, 12, causal=False) == "full"
    assert tile_kind(0, 4, 4, 8, causal=True) == "skipped"  # keys 4..7 > queries 0..3
    assert tile_kind(4, 8, 0, 4, causal=True) == "full"
    assert tile_kind(4, 8, 4, 8, causal=True) == "partial"  # the diagonal block
    assert tile_kind(4, 8, 0, 5, causal=True) == "full"  # key 4 <= query 4


# ----------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((2, 5, 4), (2, 5, 3), (2, 5, 4)), r"q and k must have the same last dim.*\(\.\.\., n_k, 4\)"),
        (((2, 5, 4), (2, 6, 4), (2, 5, 4)), r"k and v must have the same sequence length.*\(\.\.\., 6, d_v\)"),
        (((2, 5, 4), (3, 5, 4), (3, 5, 4)), "same leading"),
        (((4,), (5, 4), (5, 4)), r"shape \(\.\.\., seq, dim\)"),
    ],
)
def test_flash_rejects_bad_shapes(shapes, match):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v)


def test_flash_rejects_bad_dtypes_and_options():
    q = torch.randn(4, 8)
    with pytest.raises(TypeError, match="floating dtype"):
        flash_attention(q, q.long(), q)
    with pytest.raises(TypeError, match="share a dtype"):
        flash_attention(q, q.double(), q)
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="block_q must be a positive int"):
            flash_attention(q, q, q, block_q=bad)
        with pytest.raises(ValueError, match="block_k must be a positive int"):
            flash_attention_forward(q, q, q, block_k=bad)
    with pytest.raises(TypeError, match="causal must be a bool"):
        flash_attention(q, q, q, causal=1)


# ----------------------------------------------------------------------------- the package


def test_package_imports_without_triton():
    code = (
        "import sys, companion.attention as a; "
        "assert 'triton' not in sys.modules and 'companion.attention.triton_kernel' not in sys.modules; "
        "assert 'triton_flash_attention' in dir(a)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(AttributeError, match="no attribute 'not_there'"):
        attn.not_there  # noqa: B018


# ----------------------------------------------------------------------------- the I/O model


def _single(n, d, d_v=None, n_k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_k = n if n_k is None else n_k
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n_k, d, generator=g, dtype=torch.float64),
        torch.randn(n_k, d_v or d, generator=g, dtype=torch.float64),
    )


def test_fast_memory_refuses_more_than_m_words():
    fm = FastMemory(10)
    fm.put("a", torch.zeros(8))
    with pytest.raises(FastMemoryOverflow, match=r"11 words resident, but M = 10"):
        fm.put("b", torch.zeros(3))
    assert fm.used == 8 and "b" not in fm
    fm.put("a", torch.zeros(10))  # replacing a block counts the new size only
    fm.free("a")
    assert fm.used == 0 and fm.peak == 10
    with pytest.raises(ValueError, match="positive int"):
        FastMemory(0)


@pytest.mark.parametrize(
    "M,reads,writes",
    [
        # N = 4, d = 2, M = 64: Q and O fit in one row block, a row of S fits.
        #   S = QKᵀ: read Q (8) + K once (8), write S (16)
        #   softmax: read S (16), write P (16)
        #   O = PV:  read P (16) + V once (8), write O (8)
        (64, 8 + 8 + 16 + 16 + 8, 16 + 16 + 8),
        # M = 5 = 2d + 1, the smallest: row blocks of one row (4·2 + 1·2 + 1·1 > 5), so K and V are read 4 times;
        # a row of S plus its m, ℓ (4 + 2 > 5) does not fit, so the softmax reads S twice.
        #   S: Q (8) + 4·K (32); softmax: 2·S (32); O: P (16) + 4·V (32)
        (5, 8 + 32 + 32 + 16 + 32, 16 + 16 + 8),
    ],
)
def test_standard_attention_io_counts_by_hand(M, reads, writes):
    q, k, v = _single(4, 2)
    res = standard_attention_io(q, k, v, M)
    assert isinstance(res, IOResult)
    assert (res.reads, res.writes, res.total) == (reads, writes, reads + writes)
    assert res.peak_words <= M
    torch.testing.assert_close(res.output, naive_attention(q, k, v), **TOL64)


def test_flash_attention_io_counts_by_hand():
    # N = 8, d = 2, B_c = 4, B_r = 2: T_c = 2 passes over the query blocks.
    #   reads:  K and V once (2·8·2 = 32) + per pass Q, O (2·8·2) and ℓ, m (2·8) = 48, twice: 32 + 96 = 128
    #   writes: per pass O (8·2) and ℓ, m (2·8) = 32, twice: 64
    q, k, v = _single(8, 2)
    res = flash_attention_io(q, k, v, 1000, block_c=4, block_r=2)
    assert (res.reads, res.writes) == (128, 64)
    torch.testing.assert_close(res.output, naive_attention(q, k, v), **TOL64)


@pytest.mark.parametrize("n,n_k,d,d_v,M", [(37, 37, 8, 8, 100), (20, 29, 4, 6, 300), (64, 64, 16, 16, 1024)])
def test_io_algorithms_compute_attention_within_m(n, n_k, d, d_v, M):
    q, k, v = _single(n, d, d_v, n_k)
    want = naive_attention(q, k, v)
    for fn in (standard_attention_io, flash_attention_io, small_cache_attention_io):
        res = fn(q, k, v, M)
        assert res.peak_words <= M, fn.__name__
        torch.testing.assert_close(res.output, want, **TOL64, msg=lambda m, f=fn: f"{f.__name__}: {m}")


def test_flash_attention_io_block_sizes_and_overflow():
    q, k, v = _single(64, 16)
    assert paper_block_sizes(256, 16) == (4, 4)
    # The paper's B_c = B_r = 4 fit Q_i, K_j, V_j, O_i in M = 256, not also S_ij and the row statistics:
    with pytest.raises(FastMemoryOverflow, match="M = 256"):
        flash_attention_io(q, k, v, 256, block_c=4, block_r=4)
    # The default keeps B_c = 4 and shrinks B_r, so it fits and moves exactly as many words as the paper's sizes.
    res = flash_attention_io(q, k, v, 256)
    assert res.schedule["B_c"] == 4 and res.schedule["B_r"] < 4 and res.peak_words <= 256
    paper = flash_attention_io(q, k, v, 10_000, block_c=4, block_r=4)
    assert (res.reads, res.writes) == (paper.reads, paper.writes)
    with pytest.raises(ValueError, match=r"M = 66 is too small.*need 67 words"):
        flash_attention_io(q, k, v, 66)  # 4d + 3 = 67
    with pytest.raises(ValueError, match="one head"):
        flash_attention_io(q[None], k[None], v[None], 1024)


@pytest.mark.parametrize("b_c,b_r", [(1, 1), (3, 2), (8, 5), (5, 8)])
def test_footprint_formulas_equal_measured_peaks(b_c, b_r):
    q, k, v = _single(b_r, 5, d_v=3, n_k=b_c)  # one tile: the peak is the footprint
    res = flash_attention_io(q, k, v, 10_000, block_c=b_c, block_r=b_r)
    assert res.peak_words == flash_forward_footprint(b_c, b_r, 5, 3)
    res = flash_attention_backward_io(q, k, v, torch.ones(b_r, 3, dtype=q.dtype), 10_000, block_c=b_c, block_r=b_r)
    assert res.peak_words == flash_backward_footprint(b_c, b_r, 5, 3)


def test_flash_backward_io_matches_autograd_and_counts():
    q, k, v = _single(40, 8, d_v=4, n_k=30)
    dout = torch.randn(40, 4, dtype=torch.float64)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    want = torch.autograd.grad(naive_attention(qg, kg, vg), (qg, kg, vg), dout)
    res = flash_attention_backward_io(q, k, v, dout, 400)
    for a, b in zip(res.output, want):
        torch.testing.assert_close(a, b, **TOL64)
    assert res.peak_words <= 400
    t_c, n, n_k, d, d_v = math.ceil(30 / res.schedule["B_c"]), 40, 30, 8, 4
    assert res.reads == n_k * (d + d_v) + t_c * n * (2 * d + 2 * d_v + 2)
    assert res.writes == t_c * n * d + n_k * (d + d_v)


def _slope(xs, ys):
    lx, ly = torch.tensor(xs, dtype=torch.float64).log(), torch.tensor(ys, dtype=torch.float64).log()
    return float(torch.linalg.lstsq(torch.stack([lx, torch.ones_like(lx)], 1), ly[:, None]).solution[0, 0])


def test_flash_io_scales_as_one_over_m():
    q, k, v = _single(256, 16)
    Ms = [256, 512, 1024, 2048, 4096]  # 16d ... Nd
    totals = [flash_attention_io(q, k, v, M).total for M in Ms]
    assert -1.2 <= _slope(Ms, totals) <= -0.8, totals


def test_small_cache_io_scales_as_one_over_sqrt_m_and_beats_flash_below_d_squared():
    q, k, v = _single(32, 64)
    Ms = [12, 48, 192, 768]  # all < d² = 4096; tiles b = 2, 4, 8, 16
    totals = [small_cache_attention_io(q, k, v, M).total for M in Ms]
    assert -0.6 <= _slope(Ms, totals) <= -0.4, totals
    assert totals[-1] < flash_attention_io(q, k, v, 768).total


def test_syllabus_reference_numbers():
    """N = 1024, d = 64 (the FlashAttention paper's GPT-2 setting): Algorithm 1 with the paper's B_c."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1024, 64, generator=g) for _ in range(3))
    for M, words in ((4096, 12_976_128), (16384, 3_342_336), (65536, 933_888)):
        res = flash_attention_io(q, k, v, M)
        assert res.total == words and res.peak_words <= M
        t_c = math.ceil(1024 / paper_block_sizes(M, 64)[0])  # = 2Nd + T_c·N(3d + 4)
        assert res.total == 2 * 1024 * 64 + t_c * 1024 * (3 * 64 + 4)
    # standard attention reaches 4N² + 4Nd ≈ 4.46M words once Q fits next to a row of K (M >= Nd + N + d)
    assert standard_attention_io(q, k, v, 2**17).total == 4 * 1024**2 + 4 * 1024 * 64 == 4_456_448


def test_io_bounds():
    b = io_bounds(1024, 64, 1024)
    assert b == {
        "standard": 1024 * 64 + 1024**2,
        "flash": 1024**2 * 64**2 / 1024,
        "small_cache": 1024**2 * 64 / 32,
        "lower_bound": 1024**2 * 64 / 32,
    }
    assert io_bounds(1024, 64, 16384)["lower_bound"] == io_bounds(1024, 64, 16384)["flash"]  # M >= d²


# ----------------------------------------------------------------------------- plots


def test_plot_io_vs_memory_returns_axes():
    ax = plot_io_vs_memory(32, 8, [12, 48, 192, 768])
    try:
        assert isinstance(ax, plt.Axes)
        assert "FlashAttention I/O" in ax.get_title() and ax.get_xscale() == "log"
    finally:
        plt.close(ax.figure)


def test_plot_tile_schedule_returns_axes():
    fig, given = plt.subplots()
    try:
        ax = plot_tile_schedule(100, 70, 32, 16, causal=True, ax=given)
        assert ax is given
        assert ax.get_title() == "16 of 20 tiles computed (5 masked), 4 skipped"
    finally:
        plt.close(fig)
    ax = plot_tile_schedule(64, 64, 16, 16)
    try:
        assert ax.get_title() == "16 of 16 tiles computed (0 masked), 0 skipped"
    finally:
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        plot_tile_schedule(8, 8, 0, 4)
