"""companion.rope against independent references: complex multiplication, rotation matrices, HF's formulas.

Every expected value here is computed without the module under test: the
reference rotation is a naive complex multiplication written from RoFormer
§3.2.1 (θ_i = base^(-2(i-1)/d), i = 1..d/2, pairs viewed as complex numbers),
the scalings' expected frequencies are numbers computed with a transcription
of Hugging Face ``transformers/modeling_rope_utils.py`` (float32, as HF
computes them) and pasted in as literals, and the decay bound is checked
against its closed form at r = 0 and the Abel-summation inequality itself.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from companion.rope import (
    LinearScaling,
    NTKScaling,
    PositionTaskModel,
    RotaryEmbedding,
    YaRNScaling,
    apply_rope,
    apply_rope_complex,
    attention_factor,
    copy_offset_accuracy,
    copy_offset_batch,
    interleaved_to_half_split_permutation,
    inv_freq,
    plot_attention,
    plot_decay,
    plot_frequencies,
    plot_rotation,
    resolve_scaling,
    rope_angles,
    rope_decay_bound,
    train_copy_offset,
    yarn_ramp,
)

ROOT = Path(__file__).resolve().parent.parent
PAIRINGS = [False, True]
PAIRING_IDS = ["half-split", "interleaved"]


# ----------------------------------------------------------------------------------------
# The independent reference: pairs as complex numbers times e^{i m θ}
# ----------------------------------------------------------------------------------------


def reference_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0, interleaved: bool = False,
                   theta: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """RoFormer §3.2.1 (eq. 12) in float64: z_i = x_a + i x_b, z_i -> scale * z_i * exp(i m θ_i)."""
    d = x.shape[-1]
    if theta is None:
        theta = torch.tensor([base ** (-2 * (i - 1) / d) for i in range(1, d // 2 + 1)], dtype=torch.float64)
    x = x.to(torch.float64)
    if interleaved:
        z = torch.complex(x[..., 0::2], x[..., 1::2])
    else:
        z = torch.complex(x[..., : d // 2], x[..., d // 2:])
    m = positions.to(torch.float64)[..., None]
    y = z * torch.exp(1j * m * theta) * scale
    if interleaved:
        return torch.stack((y.real, y.imag), dim=-1).flatten(-2)
    return torch.cat((y.real, y.imag), dim=-1)


def rotation_matrix(m: float, d: int, base: float = 10000.0) -> torch.Tensor:
    """RoFormer eq. 15: block-diagonal R^d_{Θ,m} with 2x2 blocks [[cos, -sin], [sin, cos]] (interleaved pairs)."""
    R = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        t = m * base ** (-2 * i / d)
        R[2 * i, 2 * i], R[2 * i, 2 * i + 1] = math.cos(t), -math.sin(t)
        R[2 * i + 1, 2 * i], R[2 * i + 1, 2 * i + 1] = math.sin(t), math.cos(t)
    return R


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------
# Parity with the references
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("interleaved", PAIRINGS, ids=PAIRING_IDS)
@pytest.mark.parametrize("shape", [(7, 8), (2, 3, 11, 16), (1, 2, 2, 5, 64)], ids=["2d", "4d", "5d"])
def test_matches_complex_reference_float64(interleaved, shape):
    x = torch.randn(shape, generator=_gen(), dtype=torch.float64)
    pos = torch.arange(shape[-2])
    want = reference_rope(x, pos, interleaved=interleaved)
    torch.testing.assert_close(apply_rope(x, interleaved=interleaved), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(apply_rope_complex(x, interleaved=interleaved), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(RotaryEmbedding(shape[-1], interleaved=interleaved)(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interleaved", PAIRINGS, ids=PAIRING_IDS)
@pytest.mark.parametrize("base", [500.0, 10000.0, 500000.0])
def test_matches_complex_reference_float32_offset_positions(interleaved, base):
    x = torch.randn(2, 4, 9, 32, generator=_gen(1))
    pos = torch.arange(1000, 1009)
    want = reference_rope(x, pos, base=base, interleaved=interleaved)
    # float32 angles at m ~ 1000: |m θ| error <= ~1000 * 2^-24 rad
    for got in (apply_rope(x, pos, base=base, interleaved=interleaved),
                apply_rope_complex(x, pos, base=base, interleaved=interleaved),
                RotaryEmbedding(32, base=base, interleaved=interleaved)(x, pos)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0, atol=5e-4)


def test_matches_rotation_matrix_of_the_paper():
    d = 8
    x = torch.randn(5, d, generator=_gen(2), dtype=torch.float64)
    for m in (0, 1, 7, 123):
        want = x @ rotation_matrix(m, d).T  # each row rotated: R x
        got = apply_rope(x, torch.full((5,), m), interleaved=True)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # position 0 is the identity, in both pairings
    for interleaved in PAIRINGS:
        torch.testing.assert_close(apply_rope(x, torch.zeros(5, dtype=torch.long), interleaved=interleaved), x)


@pytest.mark.parametrize("interleaved", PAIRINGS, ids=PAIRING_IDS)
def test_per_batch_positions_broadcast(interleaved):
    x = torch.randn(3, 2, 6, 16, generator=_gen(3), dtype=torch.float64)
    pos = torch.randint(0, 4096, (3, 1, 6), generator=_gen(4))  # (batch, 1, seq): one row per batch element
    got = apply_rope(x, pos, interleaved=interleaved)
    torch.testing.assert_close(got, reference_rope(x, pos, interleaved=interleaved), rtol=0, atol=1e-10)
    got_mod = RotaryEmbedding(16, interleaved=interleaved)(x, pos)
    torch.testing.assert_close(got_mod, got, rtol=0, atol=1e-12)


def test_rotation_preserves_norms_and_is_differentiable():
    x = torch.randn(2, 5, 16, generator=_gen(5), dtype=torch.float64, requires_grad=True)
    y = apply_rope(x, torch.arange(50, 55))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, torch.arange(50, 55), interleaved=True), (x,))


# ----------------------------------------------------------------------------------------
# The relative-position property
# ----------------------------------------------------------------------------------------

SCALINGS = {
    "none": None,
    "linear": LinearScaling(4.0),
    "ntk": NTKScaling(4.0),
    "yarn": YaRNScaling(8.0, original_max_position_embeddings=512),
}


@pytest.mark.parametrize("scaling", list(SCALINGS.values()), ids=list(SCALINGS))
@pytest.mark.parametrize("interleaved", PAIRINGS, ids=PAIRING_IDS)
def test_score_depends_only_on_relative_position(interleaved, scaling):
    """q_m^T k_n = q_{m-n}^T k_0 for 500 random (m, n) pairs, to 1e-6 in float64 (RoFormer eq. 16)."""
    g = _gen(6)
    d, pairs = 64, 500
    q = torch.randn(d, generator=g, dtype=torch.float64).expand(pairs, 1, d)
    k = torch.randn(d, generator=g, dtype=torch.float64).expand(pairs, 1, d)
    m = torch.randint(0, 20000, (pairs, 1), generator=g)
    n = torch.randint(0, 20000, (pairs, 1), generator=g)
    kw = dict(interleaved=interleaved, scaling=scaling)
    score = (apply_rope(q, m, **kw) * apply_rope(k, n, **kw)).sum(-1)
    shifted = (apply_rope(q, m - n, **kw) * apply_rope(k, torch.zeros_like(n), **kw)).sum(-1)
    assert (score - shifted).abs().max().item() < 1e-6
    # and it does depend on m - n: the scores are not all alike
    assert score.std().item() > 0.1
    # the same through the module with its cache (float64 inputs bypass the float32 cache)
    rot = RotaryEmbedding(d, interleaved=interleaved, scaling=scaling)
    torch.testing.assert_close(rot(q, m), apply_rope(q, m, **kw), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Dtypes
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_keeps_dtype_and_angles_are_float32(dtype):
    x = torch.randn(2, 4, 8, 64, generator=_gen(7)).to(dtype)
    pos = torch.arange(4000, 4008)
    y = apply_rope(x, pos)
    assert y.dtype == dtype and y.shape == x.shape
    # computed in float32 and rounded once: exactly the float32 result, rounded
    assert torch.equal(y, apply_rope(x.float(), pos).to(dtype))
    assert torch.equal(RotaryEmbedding(64)(x, pos), y)
    # close to the float64 reference up to the output rounding
    want = reference_rope(x, pos)
    eps = torch.finfo(dtype).eps
    assert ((y.double() - want).abs() <= eps * want.abs() + 2e-3).all()
    # whereas angles computed in the input dtype are useless this far out (bf16 cannot hold 4001)
    theta = torch.tensor([10000.0 ** (-2 * i / 64) for i in range(32)])
    bad = (pos.to(dtype)[:, None] * theta.to(dtype)).float()
    assert (bad - pos[:, None] * theta.double()).abs().max().item() > 0.5


def test_rope_angles_dtype_and_shape():
    cos, sin = rope_angles(torch.arange(6, dtype=torch.int32).reshape(2, 3), 10)
    assert cos.shape == sin.shape == (2, 3, 5) and cos.dtype == torch.float32
    cos64, _ = rope_angles(torch.arange(6, dtype=torch.float64), 10)
    assert cos64.dtype == torch.float64
    cos16, _ = rope_angles(torch.arange(6, dtype=torch.float16), 10)
    assert cos16.dtype == torch.float32
    c, s = rope_angles(7, 8, dtype=torch.float64)  # an int n means arange(n)
    torch.testing.assert_close(c ** 2 + s ** 2, torch.ones(7, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32 or float64"):
        rope_angles(4, 8, dtype=torch.bfloat16)


def test_module_cast_to_half_keeps_float32_angles():
    rot = RotaryEmbedding(32)
    x = torch.randn(1, 2, 8, 32, generator=_gen(8)).to(torch.bfloat16)
    pos = torch.arange(3000, 3008)
    rot(x, pos)
    rot = rot.to(torch.bfloat16)  # casts the cos/sin buffers...
    assert rot.cos_cached.dtype == torch.bfloat16
    assert torch.equal(rot(x, pos), apply_rope(x, pos))  # ...and the next call rebuilds them in float32
    assert rot.cos_cached.dtype == torch.float32


# ----------------------------------------------------------------------------------------
# KV cache and the module's cache
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("interleaved", PAIRINGS, ids=PAIRING_IDS)
def test_offset_positions_equal_slicing_a_longer_sequence(interleaved):
    x = torch.randn(2, 3, 40, 16, generator=_gen(9))
    full = apply_rope(x, interleaved=interleaved)
    for t0, t1 in ((0, 1), (17, 18), (25, 40), (5, 29)):
        part = apply_rope(x[..., t0:t1, :], torch.arange(t0, t1), interleaved=interleaved)
        assert torch.equal(part, full[..., t0:t1, :])
    # token-by-token decoding through the module gives the prefill result
    rot = RotaryEmbedding(16, interleaved=interleaved)
    steps = [rot(x[..., t:t + 1, :], torch.tensor([t])) for t in range(40)]
    torch.testing.assert_close(torch.cat(steps, dim=-2), full, rtol=0, atol=1e-6)


def test_rotary_embedding_cache_grows_on_demand():
    rot = RotaryEmbedding(8)
    assert rot.cached_len == 0
    x = torch.randn(1, 5, 8, generator=_gen(10))
    rot(x)
    assert rot.cached_len == 5
    rot(x[:, :3], torch.arange(3))  # within the cache: no rebuild
    assert rot.cached_len == 5
    rot(x, torch.arange(96, 101))  # needs 101 > 2 * 5
    assert rot.cached_len == 101
    rot(x[:, :1], torch.tensor([101]))  # one more: doubles
    assert rot.cached_len == 202
    assert rot.cos_cached.shape == rot.sin_cached.shape == (202, 4)
    # non-persistent buffers: they follow .to() but are not in the state_dict
    assert {"cos_cached", "sin_cached", "inv_freq"} <= {n for n, _ in rot.named_buffers()}
    assert rot.state_dict() == {}
    # cached values are the direct ones
    torch.testing.assert_close(rot(x, torch.arange(150, 155)), apply_rope(x, torch.arange(150, 155)), rtol=0, atol=1e-6)
    # negative or fractional positions bypass the cache
    for pos in (torch.tensor([-3, -2, -1, 0, 1]), torch.linspace(0.5, 2.5, 5)):
        torch.testing.assert_close(rot(x, pos), apply_rope(x, pos), rtol=0, atol=1e-6)
    assert rot.cached_len == 202
    assert "cached_len=202" in repr(rot)


# ----------------------------------------------------------------------------------------
# Pairings
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 8, 64])
def test_permutation_converts_between_pairings(d):
    perm = interleaved_to_half_split_permutation(d)
    assert perm.tolist() == list(range(0, d, 2)) + list(range(1, d, 2))
    x = torch.randn(3, 10, d, generator=_gen(11), dtype=torch.float64)
    pos = torch.arange(100, 110)
    torch.testing.assert_close(apply_rope(x[..., perm], pos, interleaved=False),
                               apply_rope(x, pos, interleaved=True)[..., perm])
    inv = perm.argsort()
    torch.testing.assert_close(apply_rope(x[..., inv], pos, interleaved=True),
                               apply_rope(x, pos, interleaved=False)[..., inv])


def test_pairings_differ_without_the_permutation():
    q = torch.randn(1, 16, 32, generator=_gen(12), dtype=torch.float64)
    k = torch.randn(1, 16, 32, generator=_gen(13), dtype=torch.float64)
    scores = {il: apply_rope(q, interleaved=il) @ apply_rope(k, interleaved=il).transpose(-1, -2) for il in PAIRINGS}
    assert (scores[True] - scores[False]).abs().max().item() > 1.0
    # with permuted weights (here: permuted q and k) the scores agree
    perm = interleaved_to_half_split_permutation(32)
    s_perm = apply_rope(q[..., perm]) @ apply_rope(k[..., perm]).transpose(-1, -2)
    torch.testing.assert_close(s_perm, scores[True])


# ----------------------------------------------------------------------------------------
# Scalings against Hugging Face's formulas (values computed outside this module)
# ----------------------------------------------------------------------------------------

IDX_128 = [0, 1, 16, 17, 20, 28, 40, 41, 63]
# transformers.modeling_rope_utils._compute_linear_scaling_rope_parameters, dim 128, base 1e4, factor 4
HF_LINEAR_128 = [0.25, 0.2164910883, 0.02500000037, 0.02164910734, 0.01405853219, 0.004445698578,
                 0.0007905694656, 0.0006846049218, 2.886954826e-05]
# _compute_dynamic_ntk_parameters with factor 1, max_position_embeddings 2048, seq_len 4 * 2048
# (= static NTK-aware scaling with s = 4)
HF_NTK_128 = [1.0, 0.8471172452, 0.070322752, 0.05957161635, 0.03621344268, 0.009603239596, 0.001311413711,
              0.001110921032, 2.88695519e-05]
# _compute_yarn_parameters, factor 4, original_max_position_embeddings 2048, beta_fast 32, beta_slow 1, truncate
# (correction range (low, high) = (16, 41); attention_factor = 0.1 ln 4 + 1)
HF_YARN_128 = [1.0, 0.8659643531, 0.1000000015, 0.08399853855, 0.04948603362, 0.01138098817, 0.000885437883,
               0.0006846049218, 2.886954826e-05]
HF_YARN_128_ATTN = 1.138629436111989
IDX_64 = [0, 5, 10, 12, 15, 20, 31]
# _compute_yarn_parameters, dim 64, base 5e5, factor 8, original 4096: truncate=True (range (7, 16)) and False
HF_YARN_64 = [1.0, 0.1286873817, 0.01173031237, 0.003747619456, 0.0004735821276, 3.428102355e-05, 3.767322596e-07]
HF_YARN_64_NO_TRUNC = [1.0, 0.1286873817, 0.01201738231, 0.003782005282, 0.0004432899004, 3.428102355e-05,
                       3.767322596e-07]
HF_YARN_64_ATTN = 1.2079441541679836


def _close(got: torch.Tensor, want: list[float], rtol: float = 2e-6) -> None:
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=rtol, atol=0)


def test_unscaled_frequencies_follow_roformer():
    got = inv_freq(128, 10000.0, dtype=torch.float64)
    want = [10000.0 ** (-2 * (i - 1) / 128) for i in range(1, 65)]  # θ_i, i = 1..d/2
    _close(got, want, rtol=1e-12)
    assert inv_freq(128).dtype == torch.float32


def test_linear_scaling_matches_hf_and_divides_positions():
    for scaling in (LinearScaling(4.0), {"type": "linear", "factor": 4.0}, {"rope_type": "linear", "factor": 4}):
        _close(inv_freq(128, 10000.0, scaling)[IDX_128], HF_LINEAR_128)
        assert attention_factor(scaling) == 1.0
    # PI: f'(x, m) = f(x, m / s)
    x = torch.randn(2, 7, 32, generator=_gen(14), dtype=torch.float64)
    pos = torch.arange(0, 7000, 1000)
    torch.testing.assert_close(apply_rope(x, pos, scaling=LinearScaling(4.0)), apply_rope(x, pos / 4.0))


def test_ntk_scaling_matches_hf_and_bloc97():
    for scaling in (NTKScaling(4.0), {"type": "ntk", "factor": 4.0}):
        _close(inv_freq(128, 10000.0, scaling)[IDX_128], HF_NTK_128)
        assert attention_factor(scaling) == 1.0
    # bloc97: base' = base * s^(d/(d-2)); the fastest pair is kept, the slowest divided by exactly s
    theta = inv_freq(128, 10000.0, dtype=torch.float64)
    ntk = inv_freq(128, 10000.0, NTKScaling(4.0), dtype=torch.float64)
    base_prime = 10000.0 * 4.0 ** (128 / 126)
    _close(ntk, [base_prime ** (-2 * i / 128) for i in range(64)], rtol=1e-12)
    assert ntk[0].item() == theta[0].item() == 1.0
    assert math.isclose(ntk[-1].item(), theta[-1].item() / 4.0, rel_tol=1e-12)


def test_yarn_matches_hf():
    hf_style = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                "beta_fast": 32, "beta_slow": 1}
    for scaling in (YaRNScaling(4.0, 2048), hf_style):
        _close(inv_freq(128, 10000.0, scaling)[IDX_128], HF_YARN_128)
        assert math.isclose(attention_factor(scaling), HF_YARN_128_ATTN, rel_tol=1e-15)
    s64 = YaRNScaling(8.0, original_max_position_embeddings=4096)
    _close(inv_freq(64, 500000.0, s64)[IDX_64], HF_YARN_64)
    s64_nt = {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096, "truncate": False}
    _close(inv_freq(64, 500000.0, s64_nt)[IDX_64], HF_YARN_64_NO_TRUNC)
    assert math.isclose(attention_factor(s64), HF_YARN_64_ATTN, rel_tol=1e-15)
    assert attention_factor(YaRNScaling(4.0, attention_factor=1.5)) == 1.5
    assert attention_factor(YaRNScaling(1.0)) == 1.0  # no extension: no temperature


def test_yarn_ramp_regions_and_paper_vs_code():
    s = YaRNScaling(4.0, 2048)
    theta = inv_freq(128, 10000.0, dtype=torch.float64)
    yarn = inv_freq(128, 10000.0, s, dtype=torch.float64)
    # r_i = L θ_i / 2π: pairs with r > β = 32 keep θ, pairs with r < α = 1 are divided by s
    r = 2048 * theta / (2 * math.pi)
    torch.testing.assert_close(yarn[r > 32], theta[r > 32])
    torch.testing.assert_close(yarn[r < 1], theta[r < 1] / 4)
    code, paper = yarn_ramp(128, 10000.0, s), yarn_ramp(128, 10000.0, YaRNScaling(4.0, 2048, ramp="paper"))
    # the paper's γ is linear in r, the code's linear in the pair index: they agree at the ends only
    assert torch.equal(code[r > 33], paper[r > 33]) and torch.equal(code[r < 0.9], paper[r < 0.9])
    assert (code - paper).abs().max().item() > 0.3
    assert int((paper - 0.5).abs().argmin()) in (20, 21) and int((code - 0.5).abs().argmin()) in (28, 29)
    # attention factor multiplies cos and sin, hence q and k: the score by (0.1 ln s + 1)^2
    x = torch.randn(3, 32, generator=_gen(15), dtype=torch.float64)
    pos = torch.arange(3)
    want = reference_rope(x, pos, theta=inv_freq(32, 10000.0, s, dtype=torch.float64), scale=HF_YARN_128_ATTN)
    torch.testing.assert_close(apply_rope(x, pos, scaling=s), want)
    cos, sin = rope_angles(pos, 32, scaling=s, dtype=torch.float64)
    torch.testing.assert_close(cos ** 2 + sin ** 2, torch.full_like(cos, HF_YARN_128_ATTN ** 2))


def test_scaling_factor_one_is_the_identity():
    theta = inv_freq(64, dtype=torch.float64)
    for scaling in (LinearScaling(1.0), NTKScaling(1.0), YaRNScaling(1.0)):
        torch.testing.assert_close(inv_freq(64, 10000.0, scaling, dtype=torch.float64), theta)


def test_bad_scalings_raise():
    with pytest.raises(ValueError, match=">= 1"):
        LinearScaling(0.5)
    with pytest.raises(ValueError, match="unknown scaling type"):
        resolve_scaling({"type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="bad keys"):
        resolve_scaling({"type": "linear", "factor": 2.0, "beta_fast": 32})
    with pytest.raises(ValueError, match="one 'type'"):
        resolve_scaling({"factor": 2.0})
    with pytest.raises(TypeError):
        resolve_scaling(2.0)
    with pytest.raises(ValueError, match="alpha < beta"):
        YaRNScaling(2.0, alpha=40.0)
    with pytest.raises(ValueError, match="dim > 2"):
        inv_freq(2, 10000.0, NTKScaling(2.0))


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_odd_dim_raises_naming_the_shape():
    x = torch.randn(2, 3, 5, 7)
    for fn in (apply_rope, apply_rope_complex):
        with pytest.raises(ValueError, match=r"must be even: got x of shape \(2, 3, 5, 7\)"):
            fn(x)
    with pytest.raises(ValueError, match="even int"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="even int"):
        interleaved_to_half_split_permutation(5)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(2, 4, 6, 8)
    with pytest.raises(ValueError, match=r"do not broadcast to x.shape\[:-1\] = \(2, 4, 6\)"):
        apply_rope(x, torch.arange(5))
    with pytest.raises(ValueError, match=r"do not broadcast.*positions\[:, None, :\]"):
        apply_rope(x, torch.zeros(2, 6, dtype=torch.long))  # (batch, seq) against (batch, heads, seq, dim)
    with pytest.raises(ValueError, match=r"ambiguous.*positions\[:, None, :\]"):  # batch == heads broadcasts
        apply_rope(torch.randn(2, 2, 6, 8), torch.zeros(2, 6, dtype=torch.long))
    apply_rope(x, torch.zeros(1, 6, dtype=torch.long))  # a leading 1 is not ambiguous
    with pytest.raises(TypeError, match="offset"):
        apply_rope(x, 3)
    with pytest.raises(TypeError, match="integer or real"):
        apply_rope(x, torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(\.\.\., seq, dim\)"):
        apply_rope(torch.randn(8))
    with pytest.raises(TypeError, match="floating-point"):
        apply_rope(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., seq, 16\), got \(2, 4, 6, 8\)"):
        RotaryEmbedding(16)(x)


# ----------------------------------------------------------------------------------------
# Long-term decay (RoFormer §3.4.3)
# ----------------------------------------------------------------------------------------

DECAY_128 = {0: 32.5, 5: 20.8454, 10: 17.9541, 50: 12.6295, 100: 10.2273, 250: 6.5482, 1000: 4.4708, 4000: 5.0381}


def test_decay_bound_values():
    r = list(DECAY_128)
    got = rope_decay_bound(r, 128, 10000.0)
    torch.testing.assert_close(got, torch.tensor(list(DECAY_128.values()), dtype=torch.float64), rtol=0, atol=1e-4)
    # rounded to one decimal: 32.5, 20.8, 18.0, 12.6, 10.2, 6.5, 4.5, 5.0
    assert [round(v, 1) for v in got.tolist()] == [32.5, 20.8, 18.0, 12.6, 10.2, 6.5, 4.5, 5.0]
    assert got[-1] > got[-2]  # not monotone
    # r = 0: |S_j| = j, so (1/(d/2)) Σ j = (d/2 + 1)/2
    for d in (2, 16, 64, 128):
        assert math.isclose(rope_decay_bound(0, d).item(), (d // 2 + 1) / 2)
    assert math.isclose(rope_decay_bound(0, 128, normalize=False).item(), 64 * 65 / 2)
    assert rope_decay_bound(torch.zeros(2, 3), 8).shape == (2, 3)


def test_decay_bound_is_an_upper_bound_on_scores():
    """|Σ_i h_i e^{i r θ_i}| <= max_i |h_{i+1} - h_i| · Σ_j |S_j| (h_{d/2} = 0), for random q, k and r."""
    g = _gen(16)
    d = 64
    theta = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    r = torch.randint(0, 5000, (200,), generator=g).double()
    q = torch.complex(*torch.randn(2, 200, d // 2, generator=g, dtype=torch.float64))
    k = torch.complex(*torch.randn(2, 200, d // 2, generator=g, dtype=torch.float64))
    h = q * k.conj()
    lhs = (h * torch.exp(1j * r[:, None] * theta)).sum(-1).abs()
    h_ext = torch.cat((h, torch.zeros(200, 1, dtype=h.dtype)), dim=-1)
    max_dh = (h_ext[:, 1:] - h_ext[:, :-1]).abs().max(-1).values
    bound = max_dh * rope_decay_bound(r, d, normalize=False)
    assert (lhs <= bound + 1e-9).all()


# ----------------------------------------------------------------------------------------
# The train-short, test-long experiment
# ----------------------------------------------------------------------------------------


def test_copy_offset_batch():
    tokens, targets = copy_offset_batch(5, 12, vocab=7, offset=4, generator=_gen(30))
    assert tokens.shape == targets.shape == (5, 12) and tokens.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < 7
    assert (targets[:, :4] == -100).all()
    for t in range(4, 12):
        assert torch.equal(targets[:, t], tokens[:, t - 4])
    again, _ = copy_offset_batch(5, 12, vocab=7, offset=4, generator=_gen(30))
    assert torch.equal(tokens, again)
    for offset, n in ((0, 5), (5, 5)):
        with pytest.raises(ValueError, match="offset"):
            copy_offset_batch(2, n, offset=offset)


@pytest.mark.parametrize("encoding", ["rope", "absolute", "nope"])
def test_position_task_model_against_a_direct_computation(encoding):
    """The head's attention, recomputed from its weights with the complex reference rotation (half-split)."""
    torch.manual_seed(31)
    model = PositionTaskModel(encoding, vocab=9, dim=16, max_len=64)
    tokens = torch.randint(0, 9, (3, 20), generator=_gen(32))
    weights, v = model.attention(tokens)
    with torch.no_grad():
        h = model.embed.weight[tokens].double()
        if encoding == "absolute":
            h = h + model.pos.weight[:20].double()
        qkv = h @ model.qkv.weight.double().T + model.qkv.bias.double()
        q, k, v_ref = qkv.split(16, dim=-1)
        if encoding == "rope":
            q, k = reference_rope(q, torch.arange(20)), reference_rope(k, torch.arange(20))
        scores = q @ k.transpose(-1, -2) / 4.0
        scores = scores + torch.full((20, 20), float("-inf"), dtype=torch.float64).triu(1)
        want = scores.softmax(-1)
    torch.testing.assert_close(weights.double(), want, rtol=0, atol=1e-5)
    assert (weights.triu(1) == 0).all()  # causal
    torch.testing.assert_close(v.double(), v_ref, rtol=0, atol=1e-5)
    logits = model(tokens)
    assert logits.shape == (3, 20, 9)
    torch.testing.assert_close(logits, model.unembed(weights @ v))


def test_position_task_model_errors_and_scaling():
    with pytest.raises(ValueError, match="encoding must be one of"):
        PositionTaskModel("alibi")
    model = PositionTaskModel("absolute", max_len=8)
    with pytest.raises(ValueError, match="longer than the position table"):
        model(torch.zeros(1, 9, dtype=torch.long))
    rope = PositionTaskModel("rope", dim=16, scaling={"type": "linear", "factor": 2})
    assert rope.scaling == LinearScaling(2.0)
    tokens = torch.randint(0, 16, (2, 10), generator=_gen(33))
    w_scaled, _ = rope.attention(tokens)
    rope.scaling = None
    w_plain, _ = rope.attention(tokens)
    assert not torch.allclose(w_scaled, w_plain)


def test_train_copy_offset_is_seeded_and_reproduces_the_chapter_picture():
    """Short runs (the chapter's reduced scale): RoPE and absolute learn, NoPE does not; only RoPE survives length."""
    _, a = train_copy_offset("rope", steps=5, seed=3)
    _, b = train_copy_offset("rope", steps=5, seed=3)
    assert a == b and len(a) == 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest on a busy machine
    acc = {}
    try:
        for enc in ("rope", "absolute", "nope"):
            model, losses = train_copy_offset(enc, steps=120, seed=0)
            assert not model.training
            per_pos = copy_offset_accuracy(model, 128)
            assert per_pos.shape == (128,) and per_pos.dtype == torch.float64 and per_pos[:3].isnan().all()
            acc[enc] = (per_pos[3:32].mean().item(), per_pos[32:].mean().item())
            if enc == "rope":
                model.scaling = YaRNScaling(4.0, original_max_position_embeddings=32)
                acc["yarn"] = (0.0, copy_offset_accuracy(model, 128)[32:].mean().item())
    finally:
        torch.set_num_threads(threads)
    assert acc["rope"][0] > 0.95 and acc["absolute"][0] > 0.95 and acc["nope"][0] < 0.5
    assert acc["absolute"][1] < 0.15  # chance is 1/16
    assert acc["absolute"][1] < acc["rope"][1] < acc["yarn"][1]


# ----------------------------------------------------------------------------------------
# Figures and imports
# ----------------------------------------------------------------------------------------


def test_plots_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_rotation(5, 0.3)
    assert "1.5 rad" in ax.get_title()
    ax = plot_decay([500, 1e4, 5e5], 128, 1000)
    assert len(ax.get_lines()) == 3 and "halves by r" in ax.get_legend().get_texts()[0].get_text()
    ax = plot_frequencies(64, 1e4, [LinearScaling(4), NTKScaling(4), YaRNScaling(4, 512)])
    ys = [line.get_ydata() for line in ax.get_lines()]
    assert len(ys) == 3
    assert abs(ys[0][0] - 0.25) < 1e-9 and abs(ys[1][0] - 1.0) < 1e-9 and abs(ys[1][-1] - 0.25) < 1e-9
    ax = plot_frequencies(64, 1e4, {"PI": {"type": "linear", "factor": 2}}, relative=False)
    assert len(ax.get_lines()) == 2
    w = torch.eye(6)
    ax = plot_attention(w, title="identity", mark=3)
    assert ax.get_title() == "identity" and ax.get_xlabel() == "key position n"
    assert (ax.get_images()[0].get_array() == w.numpy()).all()
    with pytest.raises(ValueError, match="one \\(queries, keys\\) matrix"):
        plot_attention(torch.zeros(2, 3, 3))
    plt.close("all")


def test_import_does_not_import_triton():
    code = textwrap.dedent(
        """
        import sys
        import companion.rope as r
        assert "triton" not in sys.modules, "importing companion.rope imported triton"
        sys.modules["triton"] = None  # from here on `import triton` fails
        import torch
        r.apply_rope(torch.randn(3, 4))
        print(r.HAS_TRITON)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
