# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Rotary position embedding: rotations, relative position, decay and context extension
#
# **The question.** Attention is blind to order: permute the keys and values and every query gets the same answer.
# Rotary position embedding (RoPE), used by LLaMA, Mistral, Qwen, Gemma and most open models, adds order by
# *rotating* queries and keys. Why does a rotation make the score depend on the distance between two tokens, what
# does the frequency of each rotation do, how do models stretch it to contexts longer than they were trained on, and
# what can it not buy?
#
# This chapter answers with one identity, one bound and one experiment:
#
# * **rotations and complex numbers**: a rotation of a 2-D pair is a multiplication by $e^{i\phi}$; RoPE turns the
#   $d/2$ pairs of a query or key by angles proportional to its position (Su et al. 2021);
# * the **relative-position property** $\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle$, proved and
#   checked to $10^{-6}$ on thousands of position pairs;
# * the **two pairings** in use (interleaved vs half-split) and how to convert weights between them, and the
#   **KV cache**, where positions no longer start at 0;
# * the **long-term decay bound** of RoFormer, next to what random queries and keys actually do;
# * **context extension** (position interpolation, NTK-aware scaling, YaRN) and a tiny model trained on short
#   sequences and tested on long ones, with RoPE, learned absolute positions and no positions at all;
# * the **circuit bound**: a constant-depth RoPE transformer stays in $\mathsf{TC}^0$.
#
# You will build the frequencies, the rotation in both pairings, the relative score, the weight conversion, attention
# with a KV cache, the decay bound and two context-extension scalings.

# %% tags=["locked"] grade_id="setup"
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import companion.rope as cr
from companion import get_device, is_reduced, require_version, scaled
from companion.testing import call_quietly, check_close, check_dtype, check_shape, ok

require_version("0.1")
torch.set_num_threads(1)  # every tensor here is small: one thread is as fast and is immune to a busy machine

# %% [markdown]
# ## 1. Rotations of a pair are multiplications by $e^{i\phi}$
#
# Identify a pair $(a, b) \in \mathbb{R}^2$ with the complex number $z = a + ib$. The rotation by an angle $\phi$,
# $$R(\phi)\begin{pmatrix} a \\ b \end{pmatrix} = \begin{pmatrix} \cos\phi & -\sin\phi \\ \sin\phi & \cos\phi
#   \end{pmatrix}\begin{pmatrix} a \\ b \end{pmatrix}, \qquad\text{is}\qquad z \mapsto z\, e^{i\phi}.$$
# Three facts do all the work in this chapter: rotations keep lengths; they compose by adding angles,
# $R(\alpha)^\top R(\beta) = R(\beta - \alpha)$; and the dot product of two pairs is
# $\langle z_1, z_2 \rangle = \mathrm{Re}(z_1 \bar z_2)$. Hence
# $\langle R(\alpha) z_1, R(\beta) z_2\rangle = \mathrm{Re}(z_1 \bar z_2\, e^{i(\alpha - \beta)})$ depends on the two
# angles only through their difference. Checked on numbers:

# %%
def rotation(phi: float) -> torch.Tensor:
    c, s = math.cos(phi), math.sin(phi)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


u, w = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
as_complex = torch.complex(u[0], u[1]) * torch.polar(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))
assert torch.allclose(torch.stack((as_complex.real, as_complex.imag)), rotation(0.7) @ u)  # rotation = times e^{i phi}
assert torch.allclose(rotation(0.4).T @ rotation(1.1), rotation(0.7))  # angles subtract
dots = [((rotation(a) @ u) @ (rotation(a - 0.9) @ w)).item() for a in (0.0, 1.0, 2.5, 40.0)]
print(f"<R(a) u, R(a - 0.9) w> for four values of a: {[round(x, 6) for x in dots]}")

# %% [markdown]
# **RoPE** (Su et al. 2021, RoFormer, §3.2–3.4) groups the $d$ coordinates of a query or key into $d/2$ pairs and
# turns pair $i$ of the vector at position $m$ by the angle $m\theta_i$, with
# $$\theta_i = \text{base}^{-2(i-1)/d}, \qquad i = 1, \dots, d/2, \qquad \text{base} = 10000 \quad\text{(RoFormer eq. 15).}$$
# Code counts pairs from 0, so $\theta_i = \text{base}^{-2i/d}$ for $i = 0, \dots, d/2 - 1$: the same numbers. Pair 0
# turns one radian per token; the last pair turns $\text{base}^{-(d-2)/d} \approx 1/\text{base}$ radians per token, so
# its **wavelength** $\lambda_i = 2\pi/\theta_i$ is tens of thousands of tokens. Writing $\theta$ with $i$ from 1 and
# the exponent $-2i/d$ (mixing the two conventions) shifts every frequency by one pair: the classic off-by-one.
#
# **Exercise 1 (2 points).** Write `rope_frequencies(dim, base=10000.0)` returning $\theta_0, \dots, \theta_{d/2-1}$
# as a float64 tensor of shape `(dim // 2,)`. Raise a `ValueError` when `dim` is odd (RoPE rotates pairs).

# %% tags=["solution"] grade_id="rope_frequencies"
def rope_frequencies(dim: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/dim) for i = 0..dim/2-1: float64, shape (dim/2,)."""
    ### BEGIN SOLUTION
    if dim % 2:
        raise ValueError(f"RoPE rotates pairs of coordinates: dim must be even, got {dim}")
    i = torch.arange(dim // 2, dtype=torch.float64)
    return base ** (-2.0 * i / dim)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_rope_frequencies" points=2
theta = call_quietly(rope_frequencies, 8)
check_close("rope_frequencies(8)", theta, torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64),
            hint="theta_i = base^(-2i/d) with i = 0..d/2-1: the first pair turns 1 radian per token")
check_close("rope_frequencies(128, base=500)", call_quietly(rope_frequencies, 128, 500.0),
            cr.inv_freq(128, 500.0, dtype=torch.float64), hint="use the base argument; return float64")
_raised = False
try:
    rope_frequencies(7)
except ValueError:
    _raised = True
assert _raised, "rope_frequencies(7) must raise ValueError: an odd dim cannot be split into pairs"
ok("rope_frequencies gives 1, 0.1, 0.01, 0.001 for d = 8 and RoFormer's frequencies for d = 128")
### BEGIN HIDDEN TESTS
for _d, _b in ((2, 10000.0), (64, 10000.0), (128, 500000.0), (96, 10000.0), (16, 500.0)):
    _got = call_quietly(rope_frequencies, _d, _b)
    _want = torch.tensor([_b ** (-2 * (_i - 1) / _d) for _i in range(1, _d // 2 + 1)], dtype=torch.float64)
    check_close(f"rope_frequencies({_d}, base={_b:g})", _got, _want,
                hint="RoFormer's i runs 1..d/2 with exponent -2(i-1)/d; from 0 it is -2i/d")
### END HIDDEN TESTS

# %% [markdown]
# **Precision.** The angle $m\theta_i$ must be computed in float32 or float64, never in the bfloat16 or float16 of
# the activations. bfloat16 keeps 8 significant bits: it cannot represent the position 257, and near $m = 4000$ it
# rounds positions to multiples of 16, so the fastest pair's angle is off by several radians:

# %%
for m in (257, 4010):
    stored = torch.tensor(float(m)).to(torch.bfloat16).item()
    print(f"position {m} in bfloat16 is {stored:g}: the angle m*theta_0 is off by {abs(m - stored):g} rad")

# %% [markdown]
# **Exercise 2 (2 points).** Write `rope_cos_sin(positions, dim, base=10000.0)`: for a tensor of positions of any
# shape (integer or floating), return `(cos, sin)` of the angles $m\theta_i$, each of shape
# `positions.shape + (dim // 2,)`. Compute the angles in float64 when `positions` is float64 and in float32 otherwise,
# and return that dtype. Use your `rope_frequencies`.

# %% tags=["solution"] grade_id="rope_cos_sin"
def rope_cos_sin(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m * theta_i for every position m: each of shape positions.shape + (dim/2,)."""
    ### BEGIN SOLUTION
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    angles = positions.to(dtype)[..., None] * rope_frequencies(dim, base).to(dtype)
    return angles.cos(), angles.sin()
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_rope_cos_sin" points=2
cos, sin = call_quietly(rope_cos_sin, torch.arange(3), 4)
_angles = torch.tensor([[0.0, 0.0], [1.0, 0.01], [2.0, 0.02]], dtype=torch.float64)
check_close("cos for positions 0, 1, 2 (d = 4)", cos, _angles.cos().float(), hint="return float32 for integer positions")
check_close("sin for positions 0, 1, 2 (d = 4)", sin, _angles.sin().float(), hint="sin of m * theta_i; not swapped with cos")
cos, sin = call_quietly(rope_cos_sin, torch.arange(6).reshape(2, 3), 8)
check_shape("cos for positions of shape (2, 3)", cos, (2, 3, 4))
cos, sin = call_quietly(rope_cos_sin, torch.arange(3, dtype=torch.float64), 4)
check_close("cos for float64 positions", cos, _angles.cos(), hint="float64 positions give float64 angles")
_far = torch.arange(4000, 4016)
cos, sin = call_quietly(rope_cos_sin, _far, 16)
_ref = _far.double()[:, None] * cr.inv_freq(16, dtype=torch.float64)
check_close("sin at positions 4000..4015", sin, _ref.sin().float(), atol=2e-3, rtol=0,
            hint="compute the angles in float32 (or float64), not in float16/bfloat16")
ok("rope_cos_sin: values, shapes (..., d/2), float32/float64, and accurate angles at position 4000")
### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(20)
_pos = torch.randint(0, 8192, (3, 1, 7), generator=_g)
_c, _s = call_quietly(rope_cos_sin, _pos, 64, 500000.0)
_ref = _pos.double()[..., None] * cr.inv_freq(64, 500000.0, dtype=torch.float64)
check_close("cos, positions of shape (3, 1, 7), d = 64, base 5e5", _c, _ref.cos().float(), atol=2e-3, rtol=0)
check_close("sin, positions of shape (3, 1, 7), d = 64, base 5e5", _s, _ref.sin().float(), atol=2e-3, rtol=0)
_pos64 = torch.rand(5, 4, generator=_g, dtype=torch.float64) * 20000
_c, _s = call_quietly(rope_cos_sin, _pos64, 32)
_ref = _pos64[..., None] * cr.inv_freq(32, dtype=torch.float64)
check_close("cos for real float64 positions up to 20000", _c, _ref.cos())
check_close("sin for real float64 positions up to 20000", _s, _ref.sin())
_c, _s = call_quietly(rope_cos_sin, torch.tensor(5), 2)
check_close("sin for a 0-d position", _s, torch.tensor([math.sin(5.0)]))
### END HIDDEN TESTS

# %% [markdown]
# ### Explore: one pair, turning with position
#
# Pair $i$ of a vector at position $m$ is the pair at position 0 turned by $m\theta_i$. The fastest pair
# ($i = 0$, one radian per token) has gone round more than once by $m = 7$; the slowest pairs of a 64-dimensional head
# barely move in a thousand tokens. The static figure first, then the widget (position $m$ and pair index $i$).

# %%
def show_pair(m: int = 10, pair: int = 0, dim: int = 64, base: float = 10000.0) -> None:
    theta_i = cr.inv_freq(dim, base, dtype=torch.float64)[pair].item()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    cr.plot_rotation(m, theta_i, ax=ax, pair=(1.0, 0.3))
    ax.set_title(f"pair {pair}: θ = {theta_i:.3g} rad/token, at m = {m} turned {m * theta_i / (2 * math.pi):.2f} turns",
                 fontsize=10)
    plt.show()
    plt.close(fig)


show_pair(10, 0)

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets

widgets.interact(
    show_pair,
    m=widgets.IntSlider(value=10, min=0, max=200, step=1, continuous_update=False),
    pair=widgets.IntSlider(value=0, min=0, max=31, step=1, continuous_update=False),
    dim=widgets.fixed(64),
    base=widgets.fixed(10000.0),
);

# %% [markdown]
# ## 2. RoPE on a whole vector: the interleaved pairing
#
# RoFormer pairs neighbouring coordinates, $(x_{2i}, x_{2i+1})$, and applies the rotation without building the
# sparse $d \times d$ matrix $R^d_{\Theta,m}$ (RoFormer §3.4.2):
# $$\begin{aligned} y_{2i} &= x_{2i}\cos m\theta_i - x_{2i+1}\sin m\theta_i,\\
#   y_{2i+1} &= x_{2i}\sin m\theta_i + x_{2i+1}\cos m\theta_i. \end{aligned}$$
# This **interleaved** layout is RoFormer's, GPT-J's (`rotate_every_two`) and that of Meta's original LLaMA code,
# which views the pairs as $d/2$ complex numbers and multiplies by $e^{im\theta_i}$.
#
# **Exercise 3 (3 points).** Write `apply_rope_interleaved(x, positions=None, base=10000.0)` for `x` of shape
# `(..., seq, dim)`. `positions` (default `torch.arange(seq)`) holds the position of each row and broadcasts against
# `x.shape[:-1]`: shape `(seq,)`, or `(batch, 1, seq)` for per-sequence positions of a `(batch, heads, seq, dim)`
# input. Compute in float64 when `x` is float64 and in float32 otherwise (convert the positions to that dtype before
# calling `rope_cos_sin`, and `x` too), and cast the result back to `x.dtype` once, at the end.

# %% tags=["solution"] grade_id="apply_rope_interleaved"
def apply_rope_interleaved(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of x (..., seq, dim) by positions * theta_i; same shape and dtype as x."""
    ### BEGIN SOLUTION
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    a, b = xc[..., 0::2], xc[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_apply_rope_interleaved" points=3
_x = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)  # one row, d = 4: theta = (1, 0.01)
_want = torch.tensor([[math.cos(1), math.sin(1), -math.sin(0.01), math.cos(0.01)]], dtype=torch.float64)
check_close("(1, 0, 0, 1) at position 1", call_quietly(apply_rope_interleaved, _x, torch.tensor([1])), _want,
            hint="(a, b) -> (a cos - b sin, a sin + b cos); pairs are (x0, x1) and (x2, x3)")
_g = torch.Generator().manual_seed(21)
x = torch.randn(3, 6, 8, generator=_g, dtype=torch.float64)
check_close("default positions", call_quietly(apply_rope_interleaved, x), cr.apply_rope(x, interleaved=True))
x = torch.randn(2, 4, 5, 8, generator=_g, dtype=torch.float64)
_pos = torch.arange(100, 105)
check_close("positions 100..104", call_quietly(apply_rope_interleaved, x, _pos),
            cr.apply_rope(x, _pos, interleaved=True), hint="use the positions you are given")
check_close("positions 100..104, base 500", call_quietly(apply_rope_interleaved, x, _pos, 500.0),
            cr.apply_rope(x, _pos, base=500.0, interleaved=True), hint="pass base on to rope_cos_sin")
_pos = torch.tensor([[[0, 1, 2, 3, 4]], [[50, 51, 52, 53, 54]]])  # (batch, 1, seq)
check_close("per-sequence positions (2, 1, 5)", call_quietly(apply_rope_interleaved, x, _pos),
            cr.apply_rope(x, _pos, interleaved=True))
_xb = torch.randn(1, 2, 8, 16, generator=_g).to(torch.bfloat16)
_pos = torch.arange(4000, 4008)
check_close("bfloat16 input at positions 4000..4007", call_quietly(apply_rope_interleaved, _xb, _pos),
            cr.apply_rope(_xb, _pos, interleaved=True), atol=2e-2, rtol=2e-2,
            hint="compute angles and products in float32, then cast back to bfloat16 once")
ok("apply_rope_interleaved: the rotation, offsets, per-sequence positions and bfloat16 inputs")
### BEGIN HIDDEN TESTS
for _shape, _b in (((7, 2), 10000.0), ((2, 3, 11, 64), 500.0), ((1, 2, 2, 5, 32), 500000.0)):
    _x = torch.randn(_shape, generator=_g, dtype=torch.float64)
    _pos = torch.randint(0, 20000, (_shape[-2],), generator=_g)
    check_close(f"x of shape {_shape}, base {_b:g}", call_quietly(apply_rope_interleaved, _x, _pos, _b),
                cr.apply_rope(_x, _pos, base=_b, interleaved=True))
_x = torch.randn(2, 3, 9, 32, generator=_g)
_pos = torch.arange(9000, 9009)
_got = call_quietly(apply_rope_interleaved, _x, _pos)
check_close("float32 x at positions 9000..9008", _got, cr.apply_rope(_x.double(), _pos, interleaved=True).float(),
            atol=1e-2, rtol=0)
for _dt in (torch.float16, torch.bfloat16):
    _x = torch.randn(2, 6, 64, generator=_g).to(_dt)
    _pos = torch.arange(3000, 3006)
    _got = call_quietly(apply_rope_interleaved, _x, _pos)
    check_dtype(f"output for {_dt} input", _got, _dt)
    check_close(f"{_dt} input at positions 3000..3005", _got.float(),
                cr.apply_rope(_x.float(), _pos, interleaved=True), atol=3e-2, rtol=2e-2)
### END HIDDEN TESTS

# %% [markdown]
# The same rotation in the paper's complex form (RoFormer eq. 12, `companion.rope.apply_rope_complex`, which does what
# Meta's LLaMA code does with `torch.view_as_complex` and `torch.polar`) agrees with yours to rounding:

# %%
_g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, 64, 32, generator=_g, dtype=torch.float64)
diff = (apply_rope_interleaved(x) - cr.apply_rope_complex(x, interleaved=True)).abs().max().item()
print(f"real form vs complex form, float64: largest difference below 1e-12: {diff < 1e-12}")
print(f"norms preserved: {torch.allclose(apply_rope_interleaved(x).norm(dim=-1), x.norm(dim=-1))}")

# %% [markdown]
# ## 3. The relative-position property
#
# **Proposition (Su et al. 2021, RoFormer eq. 16).** Let $R_{\Theta,m}$ be the block-diagonal matrix whose $i$-th
# $2\times 2$ block is $R(m\theta_i)$. For all $q, k \in \mathbb{R}^d$ and positions $m, n$,
# $$\langle R_{\Theta,m}\, q,\ R_{\Theta,n}\, k\rangle = q^\top R_{\Theta,n-m}\, k
#   = \mathrm{Re}\sum_{i=0}^{d/2-1} \tilde q_i\, \overline{\tilde k_i}\, e^{i(m-n)\theta_i},$$
# where $\tilde q_i = q_{2i} + i\,q_{2i+1}$ and $\tilde k_i = k_{2i} + i\,k_{2i+1}$. With $q = W_q x_m$ and
# $k = W_k x_n$ the score is $x_m^\top W_q^\top R_{\Theta,n-m} W_k x_n$: it depends on the positions only through
# $m - n$.
#
# *Proof.* Blocks multiply blockwise, and $R(m\theta_i)^\top R(n\theta_i) = R(-m\theta_i)R(n\theta_i) = R((n-m)\theta_i)$,
# so $R_{\Theta,m}^\top R_{\Theta,n} = R_{\Theta,n-m}$. In complex form pair $i$ contributes
# $\mathrm{Re}\big[(\tilde q_i e^{im\theta_i})\,\overline{(\tilde k_i e^{in\theta_i})}\big]
#   = \mathrm{Re}\big[\tilde q_i \overline{\tilde k_i}\, e^{i(m-n)\theta_i}\big]$. $\square$
#
# **Exercise 4 (3 points).** Write `relative_score(q, k, r, base=10000.0)`: the right-hand side above, for
# `q, k` of shape `(..., d)` (interleaved pairs) and distances `r` $= m - n$ (a tensor broadcasting against
# `q.shape[:-1]`), returning the broadcast shape in the dtype of `q` (float64 in the tests). Use your
# `rope_frequencies`; keep every step in float64.

# %% tags=["solution"] grade_id="relative_score"
def relative_score(q: torch.Tensor, k: torch.Tensor, r: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Re sum_i q~_i conj(k~_i) exp(i r theta_i): the RoPE score of q at position m and k at n, r = m - n."""
    ### BEGIN SOLUTION
    zq = torch.complex(q[..., 0::2], q[..., 1::2])
    zk = torch.complex(k[..., 0::2], k[..., 1::2])
    phase = torch.as_tensor(r).to(q.dtype)[..., None] * rope_frequencies(q.shape[-1], base).to(q.dtype)
    return (zq * zk.conj() * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).real
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_relative_score" points=3
_e0, _e1 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
check_close("q = (1, 0), k = (1, 0), r = 1", call_quietly(relative_score, _e0, _e0, torch.tensor(1)),
            torch.tensor(math.cos(1.0), dtype=torch.float64))
check_close("q = (1, 0), k = (0, 1), r = 1", call_quietly(relative_score, _e0, _e1, torch.tensor(1)),
            torch.tensor(math.sin(1.0), dtype=torch.float64),
            hint="<R_m q, R_n k> = Re(q~ conj(k~) e^{i(m-n)theta}): conjugate k, and r = m - n (query minus key)")
_g = torch.Generator().manual_seed(22)
q, k = torch.randn(2, 16, generator=_g, dtype=torch.float64)
m, n = torch.randint(0, 5000, (2, 200), generator=_g)
_direct = (cr.apply_rope(q.expand(200, 1, 16), m[:, None], interleaved=True)
           * cr.apply_rope(k.expand(200, 1, 16), n[:, None], interleaved=True)).sum(-1).squeeze(-1)
check_close("relative_score(q, k, m - n) for 200 pairs (m, n)", call_quietly(relative_score, q, k, m - n), _direct,
            hint="Re, not abs; interleaved pairs (2i, 2i+1); float64 throughout")
_direct = (cr.apply_rope(q.expand(200, 1, 16), m[:, None], base=500.0, interleaved=True)
           * cr.apply_rope(k.expand(200, 1, 16), n[:, None], base=500.0, interleaved=True)).sum(-1).squeeze(-1)
check_close("the same with base 500", call_quietly(relative_score, q, k, m - n, 500.0), _direct)
ok("relative_score equals <R_m q, R_n k> for 200 random position pairs")
### BEGIN HIDDEN TESTS
_q, _k = torch.randn(2, 300, 64, generator=_g, dtype=torch.float64)
_m, _n = torch.randint(0, 20000, (2, 300), generator=_g)
_direct = (cr.apply_rope(_q[:, None], _m[:, None], base=500.0, interleaved=True)
           * cr.apply_rope(_k[:, None], _n[:, None], base=500.0, interleaved=True)).sum(-1).squeeze(-1)
check_close("300 rows of q and k, d = 64, base 500, positions up to 20000",
            call_quietly(relative_score, _q, _k, _m - _n, 500.0), _direct, atol=1e-6, rtol=0)
_r = torch.tensor([[-7, 0, 3], [100, -2500, 19999]])
_got = call_quietly(relative_score, _q[0], _k[0], _r)
check_shape("relative_score for r of shape (2, 3)", _got, (2, 3))
_want = (cr.apply_rope(_q[0].expand(6, 1, 64), _r.reshape(6, 1), interleaved=True) * _k[0]).sum(-1).reshape(2, 3)
check_close("negative and large distances", _got, _want, atol=1e-6, rtol=0)
### END HIDDEN TESTS

# %% [markdown]
# ### See it: to $10^{-6}$ over thousands of position pairs
#
# Take a query and a key, place them at random positions $m, n < 20\,000$, rotate them with your
# `apply_rope_interleaved` and compare the score with the score of the same pair shifted so that the key sits at
# position 0, and with your `relative_score`. In float64 all three agree far below $10^{-6}$; in float32 the angles
# themselves carry errors of order $m \cdot 2^{-24}$ radians:

# %%
_g = torch.Generator().manual_seed(1)
pairs = 2000
q, k = torch.randn(2, 128, generator=_g, dtype=torch.float64)
m, n = torch.randint(0, 20000, (2, pairs), generator=_g)


def rope_score(q, k, m, n):
    qm = apply_rope_interleaved(q.expand(len(m), 1, -1), m[:, None])
    kn = apply_rope_interleaved(k.expand(len(n), 1, -1), n[:, None])
    return (qm * kn).sum(-1).squeeze(-1)


score = rope_score(q, k, m, n)
shifted = rope_score(q, k, m - n, torch.zeros_like(n))
closed_form = relative_score(q, k, m - n)
err_shift = (score - shifted).abs().max().item()
err_formula = (score - closed_form).abs().max().item()
err_fp32 = (rope_score(q.float(), k.float(), m, n).double() - score).abs().max().item()
print(f"{pairs} pairs, d = 128, float64: |score(m, n) - score(m - n, 0)| < 1e-6: {err_shift < 1e-6}; "
      f"|score - relative_score| < 1e-6: {err_formula < 1e-6}")
print(f"the scores vary with m - n (std {score.std().item():.1f}), so the check is not vacuous")
print(f"same check in float32: largest error of order 1e{round(math.log10(err_fp32))}")

# %% [markdown]
# ### See it: scores that depend only on $m - n$
#
# Rotate one query and one key to every position $m, n < 48$ and draw the score matrix. With RoPE it is constant along
# every diagonal (a Toeplitz matrix); with the sinusoidal vectors of Vaswani et al. (2017) *added* to the same $q$ and
# $k$, it is not: the score also depends on where the pair sits.

# %%
seq = 48
_g = torch.Generator().manual_seed(3)
q, k = torch.randn(2, 32, generator=_g, dtype=torch.float64)
pos = torch.arange(seq)
S_rope = cr.apply_rope(q.expand(seq, 32), pos, interleaved=True) @ cr.apply_rope(k.expand(seq, 32), pos, interleaved=True).T
angles = pos[:, None].double() * cr.inv_freq(32, dtype=torch.float64)
sinusoid = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2) * 2.0  # Vaswani et al., scaled to |q|
S_add = (q + sinusoid) @ (k + sinusoid).T
toeplitz = lambda S: max((S.diagonal(o) - S.diagonal(o)[0]).abs().max().item() for o in range(-seq + 1, seq))
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, S, name in ((axes[0], S_rope, "RoPE"), (axes[1], S_add, "added sinusoidal positions")):
    image = ax.imshow(S, cmap="RdBu_r", interpolation="nearest")
    ax.set_xlabel("key position n")
    ax.set_ylabel("query position m")
    ax.set_title(f"{name}: spread along a diagonal {toeplitz(S):.2g}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="score q_m · k_n")
fig.suptitle("RoPE scores are constant along diagonals (they depend on m − n only); added positions are not")
fig.tight_layout()
plt.show()
plt.close(fig)

# %% [markdown]
# ## 4. Two pairings, one rotation
#
# GPT-NeoX and Hugging Face's Llama pair coordinate $i$ with coordinate $i + d/2$ instead. With
# $x = (x_1, x_2)$ split into halves and $\mathrm{rotate\_half}(x) = (-x_2, x_1)$,
# $$y = x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin, \qquad \cos = (\cos m\theta_0, \dots, \cos m\theta_{d/2-1},
#   \cos m\theta_0, \dots, \cos m\theta_{d/2-1}),$$
# and $\sin$ likewise: each half of the angle table is repeated, not interleaved. Pair $i$ still turns by $m\theta_i$;
# only the memory layout differs. The two pairings are **not interchangeable**: a model trained with one gives wrong
# scores under the other, unless its weights are permuted.
#
# **Exercise 5 (2 points).** Write `rotate_half(x)` for `x` of shape `(..., d)`: return $(-x_2, x_1)$ where $x_1$ is
# the first half of the last axis and $x_2$ the second.

# %% tags=["solution"] grade_id="rotate_half"
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last axis, x1 and x2 its two halves."""
    ### BEGIN SOLUTION
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_rotate_half" points=2
check_close("rotate_half([1, 2, 3, 4, 5, 6])", call_quietly(rotate_half, torch.arange(1.0, 7.0)),
            torch.tensor([-4.0, -5.0, -6.0, 1.0, 2.0, 3.0]), hint="(x1, x2) -> (-x2, x1): minus sign on the second half, moved first")
_g = torch.Generator().manual_seed(23)
x = torch.randn(2, 3, 8, generator=_g)
check_close("rotate_half twice is -x", call_quietly(rotate_half, call_quietly(rotate_half, x)), -x)
check_close("rotate_half of a (2, 3, 8) tensor", call_quietly(rotate_half, x), torch.cat((-x[..., 4:], x[..., :4]), -1),
            hint="halves of the last axis, not pairs of neighbours")
ok("rotate_half swaps the halves with a minus sign on the new first half")
### BEGIN HIDDEN TESTS
for _shape in ((2,), (5, 4), (2, 3, 4, 64)):
    _x = torch.randn(_shape, generator=_g, dtype=torch.float64)
    _h = _shape[-1] // 2
    check_close(f"rotate_half of shape {_shape}", call_quietly(rotate_half, _x), torch.cat((-_x[..., _h:], _x[..., :_h]), -1))
_xb = torch.randn(3, 16, generator=_g).to(torch.bfloat16)
check_dtype("rotate_half of bfloat16", call_quietly(rotate_half, _xb), torch.bfloat16)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 6 (3 points).** Write `apply_rope_half_split(x, positions=None, base=10000.0)`: the half-split pairing,
# with the same conventions as Exercise 3 (default positions, broadcasting, float32/float64 compute, one cast back),
# using `rope_cos_sin` and `rotate_half`.

# %% tags=["solution"] grade_id="apply_rope_half_split"
def apply_rope_half_split(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (i, i + dim/2) of x (..., seq, dim) by positions * theta_i; same shape and dtype as x."""
    ### BEGIN SOLUTION
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    xc = x.to(compute)
    return (xc * cos + rotate_half(xc) * sin).to(x.dtype)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_apply_rope_half_split" points=3
_x = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)  # pairs (x0, x2) = (1, 0) and (x1, x3) = (0, 1)
_want = torch.tensor([[math.cos(1), -math.sin(0.01), math.sin(1), math.cos(0.01)]], dtype=torch.float64)
check_close("(1, 0, 0, 1) at position 1", call_quietly(apply_rope_half_split, _x, torch.tensor([1])), _want,
            hint="x * cat(cos, cos) + rotate_half(x) * cat(sin, sin): repeat the halves, do not interleave")
_g = torch.Generator().manual_seed(24)
x = torch.randn(3, 6, 8, generator=_g, dtype=torch.float64)
check_close("default positions", call_quietly(apply_rope_half_split, x), cr.apply_rope(x))
check_close("positions 100..105, base 500", call_quietly(apply_rope_half_split, x, torch.arange(100, 106), 500.0),
            cr.apply_rope(x, torch.arange(100, 106), base=500.0), hint="use the positions and base you are given")
x = torch.randn(2, 4, 5, 8, generator=_g, dtype=torch.float64)
_pos = torch.tensor([[[0, 1, 2, 3, 4]], [[50, 51, 52, 53, 54]]])
check_close("per-sequence positions (2, 1, 5)", call_quietly(apply_rope_half_split, x, _pos), cr.apply_rope(x, _pos))
_xb = torch.randn(1, 2, 8, 16, generator=_g).to(torch.bfloat16)
_pos = torch.arange(4000, 4008)
check_close("bfloat16 input at positions 4000..4007", call_quietly(apply_rope_half_split, _xb, _pos),
            cr.apply_rope(_xb, _pos), atol=2e-2, rtol=2e-2, hint="angles in float32, one cast back to bfloat16")
ok("apply_rope_half_split: the rotation, per-sequence positions and bfloat16 inputs")
### BEGIN HIDDEN TESTS
for _shape, _b in (((7, 2), 10000.0), ((2, 3, 11, 64), 500.0), ((1, 2, 2, 5, 32), 500000.0)):
    _x = torch.randn(_shape, generator=_g, dtype=torch.float64)
    _pos = torch.randint(0, 20000, (_shape[-2],), generator=_g)
    check_close(f"x of shape {_shape}, base {_b:g}", call_quietly(apply_rope_half_split, _x, _pos, _b),
                cr.apply_rope(_x, _pos, base=_b))
for _dt in (torch.float16, torch.bfloat16):
    _x = torch.randn(2, 6, 64, generator=_g).to(_dt)
    _pos = torch.arange(3000, 3006)
    _got = call_quietly(apply_rope_half_split, _x, _pos)
    check_dtype(f"output for {_dt} input", _got, _dt)
    check_close(f"{_dt} input at positions 3000..3005", _got.float(), cr.apply_rope(_x.float(), _pos),
                atol=3e-2, rtol=2e-2)
### END HIDDEN TESTS

# %% [markdown]
# Mixing the two pairings silently changes every score. The same $q$ and $k$, rotated with the two layouts:

# %%
_g = torch.Generator().manual_seed(4)
q, k = torch.randn(2, 1, 16, 64, generator=_g, dtype=torch.float64)
S_inter = apply_rope_interleaved(q) @ apply_rope_interleaved(k).transpose(-1, -2)
S_half = apply_rope_half_split(q) @ apply_rope_half_split(k).transpose(-1, -2)
print(f"scores, interleaved vs half-split on the same q, k: largest difference {(S_inter - S_half).abs().max().item():.1f} "
      f"(scores have std {S_inter.std().item():.1f})")

# %% [markdown]
# **Converting weights.** Let $\pi = (0, 2, 4, \dots, d-2, 1, 3, \dots, d-1)$. Coordinate $j$ of the half-split vector
# is coordinate $\pi_j$ of the interleaved one, so pair $(2i, 2i+1)$ lands on $(i, i + d/2)$ and
# $$\mathrm{half\_split}(x_{\pi}) = \mathrm{interleaved}(x)_{\pi}.$$
# A permutation applied to both $q$ and $k$ leaves $q\cdot k$ unchanged, so a model trained with the interleaved
# pairing runs under half-split code if the *output rows* of $W_q$ and $W_k$ are permuted by $\pi$, head by head. This
# is what Hugging Face's LLaMA conversion script does (`convert_llama_weights_to_hf.py`, its `permute`:
# `w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2)`). $W_v$ is not rotated and stays as it is.
#
# **Exercise 7 (3 points).** Write `interleaved_to_half_split_weights(w, n_heads)`. `w` has shape
# `(n_heads * head_dim, d_model)`: the weight of a query or key projection (`q = x @ w.T`), whose rows
# `h * head_dim ... (h + 1) * head_dim - 1` produce head `h`, trained with the interleaved pairing. Return the weight
# that gives the same attention scores under the half-split pairing.

# %% tags=["solution"] grade_id="interleaved_to_half_split_weights"
def interleaved_to_half_split_weights(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the output rows of w (n_heads * head_dim, d_model), head by head, for the half-split pairing."""
    ### BEGIN SOLUTION
    rows, d_model = w.shape
    head_dim = rows // n_heads
    perm = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    return w.reshape(n_heads, head_dim, d_model)[:, perm, :].reshape(rows, d_model)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_interleaved_to_half_split_weights" points=3
def _head_scores(x, w_q, w_k, n_heads, rope):
    """Scores (n_heads, seq, seq) of x (seq, d_model) through w_q, w_k with the given rope function."""
    q = (x @ w_q.T).reshape(x.shape[0], n_heads, -1).transpose(0, 1)
    k = (x @ w_k.T).reshape(x.shape[0], n_heads, -1).transpose(0, 1)
    return rope(q) @ rope(k).transpose(-1, -2)


_inter = lambda t: cr.apply_rope(t, interleaved=True)
_half = lambda t: cr.apply_rope(t, interleaved=False)
_g = torch.Generator().manual_seed(25)
for _heads, _hd, _dm in ((1, 8, 8), (2, 8, 12)):
    x = torch.randn(10, _dm, generator=_g, dtype=torch.float64)
    w_q, w_k = torch.randn(2, _heads * _hd, _dm, generator=_g, dtype=torch.float64)
    _new_q = call_quietly(interleaved_to_half_split_weights, w_q, _heads)
    _new_k = call_quietly(interleaved_to_half_split_weights, w_k, _heads)
    check_shape("converted weight", _new_q, w_q.shape)
    check_close(f"scores after conversion ({_heads} head(s) of dim {_hd}, d_model {_dm})",
                _head_scores(x, _new_q, _new_k, _heads, _half), _head_scores(x, w_q, w_k, _heads, _inter),
                hint="permute the rows (outputs), not the columns; pi = (0, 2, 4, ..., 1, 3, 5, ...), within each head")
ok("converted weights give the interleaved model's scores under half-split RoPE, with one and two heads")
### BEGIN HIDDEN TESTS
for _heads, _hd, _dm in ((4, 16, 24), (3, 2, 5), (2, 32, 64)):
    _x = torch.randn(12, _dm, generator=_g, dtype=torch.float64)
    _wq, _wk = torch.randn(2, _heads * _hd, _dm, generator=_g, dtype=torch.float64)
    _nq = call_quietly(interleaved_to_half_split_weights, _wq, _heads)
    _nk = call_quietly(interleaved_to_half_split_weights, _wk, _heads)
    check_close(f"scores, {_heads} heads of dim {_hd}, d_model {_dm}", _head_scores(_x, _nq, _nk, _heads, _half),
                _head_scores(_x, _wq, _wk, _heads, _inter))
    _perm = cr.interleaved_to_half_split_permutation(_hd)
    check_close(f"converted rows, {_heads} heads of dim {_hd}", _nq,
                _wq.reshape(_heads, _hd, _dm)[:, _perm].reshape(_heads * _hd, _dm))
### END HIDDEN TESTS

# %% [markdown]
# ## 5. The KV cache: positions that do not start at 0
#
# When a model generates, each step feeds only the new token(s); the keys and values of earlier tokens come from a
# **KV cache**. Keys are cached *after* rotation, so each is rotated once, at its own position. The new tokens sit at
# positions $T, T+1, \dots$ where $T$ is the number of cached tokens: forgetting this offset rotates every new token as
# if it were at the start of the sequence, and the scores silently become those of a different distance. Two more
# details: the causal mask is aligned at the *bottom right* (new token $T + j$ sees keys $0, \dots, T+j$), and values
# are never rotated.
#
# **Exercise 8 (3 points).** Write `cached_rope_attention(q, k, v, cache)`. `q, k, v` of shape `(..., s, d)` are the
# unrotated projections of $s$ new tokens; `cache = (k_cache, v_cache)`, each `(..., T, d)`, holds the *rotated* keys
# and the values of the $T$ earlier tokens ($T$ may be 0). Rotate `q` and `k` with your half-split RoPE at positions
# $T, \dots, T + s - 1$, append to the cache, and return `(out, (k_cache_new, v_cache_new))` where `out` `(..., s, d)`
# is causal softmax attention of the new queries over all $T + s$ keys with scale $1/\sqrt d$.

# %% tags=["solution"] grade_id="cached_rope_attention"
def cached_rope_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]):
    """Causal RoPE attention of s new tokens over T cached ones plus themselves; returns (out, new cache)."""
    ### BEGIN SOLUTION
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(t, t + s)
    q = apply_rope_half_split(q, positions)
    k_all = torch.cat((k_cache, apply_rope_half_split(k, positions)), dim=-2)
    v_all = torch.cat((v_cache, v), dim=-2)
    scores = q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.arange(t + s)[None, :] > positions[:, None]
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_cached_rope_attention" points=3
def _decode(q, k, v, chunks):
    """Run cached_rope_attention over consecutive chunks of the sequence; return outputs and final cache."""
    cache = (q.new_zeros(*q.shape[:-2], 0, q.shape[-1]), q.new_zeros(*q.shape[:-2], 0, q.shape[-1]))
    outs, start = [], 0
    for size in chunks:
        out, cache = call_quietly(cached_rope_attention, q[..., start:start + size, :], k[..., start:start + size, :],
                                  v[..., start:start + size, :], cache)
        outs.append(out)
        start += size
    return torch.cat(outs, dim=-2), cache


_g = torch.Generator().manual_seed(26)
q, k, v = torch.randn(3, 2, 9, 8, generator=_g, dtype=torch.float64)
_want = F.scaled_dot_product_attention(cr.apply_rope(q), cr.apply_rope(k), v, is_causal=True)
out, cache = _decode(q, k, v, [9])
check_close("one chunk of 9 tokens, empty cache", out, _want, hint="causal mask, scale 1/sqrt(d), rotate q and k (not v)")
out, cache = _decode(q, k, v, [4, 3, 1, 1])
check_close("prefill 4, then a chunk of 3, then 2 single tokens", out, _want,
            hint="new tokens sit at positions T..T+s-1; the mask lets token T+j see keys 0..T+j")
check_close("the cached keys are the rotated keys", cache[0], cr.apply_rope(k), hint="cache keys after rotation, once")
check_close("the cached values are the values", cache[1], v, hint="values are never rotated")
ok("chunked decoding with a KV cache reproduces full causal RoPE attention")
### BEGIN HIDDEN TESTS
_q, _k, _v = torch.randn(3, 2, 3, 17, 16, generator=_g, dtype=torch.float64)
_want = F.scaled_dot_product_attention(cr.apply_rope(_q), cr.apply_rope(_k), _v, is_causal=True)
for _chunks in ([1] * 17, [10, 1, 1, 5], [2, 15], [16, 1]):
    _out, _cache = _decode(_q, _k, _v, _chunks)
    check_close(f"decoding in chunks {_chunks}", _out, _want)
    check_close(f"cached keys after chunks {_chunks}", _cache[0], cr.apply_rope(_k))
_q, _k, _v = torch.randn(3, 1, 12, 32, generator=_g)
_out, _ = _decode(_q, _k, _v, [5, 1, 6])
check_close("float32 inputs", _out, F.scaled_dot_product_attention(cr.apply_rope(_q), cr.apply_rope(_k), _v, is_causal=True),
            atol=1e-5, rtol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# What the missing offset costs: decode the last token of a 200-token sequence as if it were at position 0. Its scores
# are those of distances $-n$ instead of $199 - n$:

# %%
_g = torch.Generator().manual_seed(5)
q, k, v = torch.randn(3, 1, 200, 64, generator=_g, dtype=torch.float64)
full = F.scaled_dot_product_attention(apply_rope_half_split(q), apply_rope_half_split(k), v, is_causal=True)
cache = (apply_rope_half_split(k[:, :199]), v[:, :199])
good, _ = cached_rope_attention(q[:, 199:], k[:, 199:], v[:, 199:], cache)
bad_q = apply_rope_half_split(q[:, 199:], torch.tensor([0]))  # the bug: position 0
bad_k = torch.cat((cache[0], apply_rope_half_split(k[:, 199:], torch.tensor([0]))), dim=-2)
bad = torch.softmax(bad_q @ bad_k.transpose(-1, -2) / 8.0, dim=-1) @ torch.cat((cache[1], v[:, 199:]), dim=-2)
print(f"last token with the offset: matches the full pass: {torch.allclose(good, full[:, 199:])}; "
      f"without it: output off by {(bad - full[:, 199:]).norm().item() / full[:, 199:].norm().item():.0%} of its norm")

# %% [markdown]
# ## 6. Long-term decay: a bound, and what the scores actually do
#
# Write the score as $\mathrm{Re}\sum_{i=0}^{d/2-1} h_i e^{ir\theta_i}$ with $h_i = \tilde q_i \overline{\tilde k_i}$
# and $r = m - n$. RoFormer (§3.4.3) sums by parts (Abel summation): with the partial sums
# $S_j = \sum_{k=0}^{j-1} e^{ir\theta_k}$ ($S_0 = 0$) and $h_{d/2} = 0$,
# $$\Big|\sum_{i=0}^{d/2-1} h_i e^{ir\theta_i}\Big| = \Big|\sum_{i=0}^{d/2-1} S_{i+1}(h_{i+1} - h_i)\Big|
#   \le \Big(\max_i |h_{i+1} - h_i|\Big) \sum_{j=1}^{d/2} |S_j| .$$
# The paper plots the **relative upper bound** $\frac{1}{d/2}\sum_{j=1}^{d/2} |S_j|$ (its Figure 2) and reads it as
# "the score decays as the distance grows". At $r = 0$ every $|S_j| = j$, so it equals $(d/2 + 1)/2$.
#
# **Exercise 9 (2 points).** Write `decay_bound(r, dim, base=10000.0)` returning the relative upper bound for a tensor
# of distances `r` of any shape, as float64 of the same shape. Use your `rope_frequencies`.

# %% tags=["solution"] grade_id="decay_bound"
def decay_bound(r: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(1/(d/2)) sum_{j=1}^{d/2} |S_j|, S_j = sum_{k<j} exp(i r theta_k): float64, the shape of r."""
    ### BEGIN SOLUTION
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    partial = torch.polar(torch.ones_like(phase), phase).cumsum(dim=-1)  # S_1 .. S_{d/2}
    return partial.abs().sum(dim=-1) / (dim // 2)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_decay_bound" points=2
check_close("decay_bound(0, 128)", call_quietly(decay_bound, torch.tensor(0.0), 128),
            torch.tensor(32.5, dtype=torch.float64), hint="at r = 0, |S_j| = j for j = 1..d/2: the mean is (d/2 + 1)/2")
_r = torch.tensor([0, 5, 10, 50, 100, 250, 1000, 4000])
check_close("decay_bound at r = 0, 5, ..., 4000 (d = 128)", call_quietly(decay_bound, _r, 128),
            cr.rope_decay_bound(_r, 128), hint="sum of |partial sums| S_1..S_{d/2}, divided by d/2")
check_close("decay_bound, d = 64, base 500", call_quietly(decay_bound, _r, 64, 500.0), cr.rope_decay_bound(_r, 64, 500.0))
check_shape("decay_bound for r of shape (2, 3)", call_quietly(decay_bound, torch.zeros(2, 3), 16), (2, 3))
ok("decay_bound: 32.5 at r = 0 and RoFormer's curve for d = 128")
### BEGIN HIDDEN TESTS
_r = torch.linspace(0, 20000, 37, dtype=torch.float64).reshape(37, 1) + torch.tensor([0.0, 0.5])
for _d, _b in ((64, 500.0), (128, 500000.0), (2, 10000.0), (32, 10000.0)):
    check_close(f"decay_bound, d = {_d}, base {_b:g}, real distances up to 20000", call_quietly(decay_bound, _r, _d, _b),
                cr.rope_decay_bound(_r, _d, _b))
### END HIDDEN TESTS

# %% [markdown]
# The bound depends on $q$ and $k$ only through the factor $\max_i|h_{i+1} - h_i|$, which it leaves out. What does the
# score itself do? Two cases with standard Gaussian vectors in $d = 128$:
#
# * **independent** $q, k$: $\mathbb{E}[h_i] = 0$, so the expected score is $0$ at *every* distance;
# * **correlated**, $q = k$: $\mathbb{E}[h_i] = \mathbb{E}|\tilde q_i|^2 = 2$, so the expected score is
#   $\sum_i 2\cos(r\theta_i)$: it does decay.
#
# Barbero et al. (2024, "Round and Round We Go! What makes Rotary Positional Encodings useful?", arXiv 2410.06205)
# argue that decay is unlikely to be the core reason RoPE helps: studying Gemma 7B they find the highest frequencies
# used to build robust positional attention patterns, and the lowest frequencies, which barely turn, preferred
# overall, which they suspect carry semantic information. Below: the bound for three bases (500, $10^4$ and the $5\cdot 10^5$ of
# Llama 3), and the two expected scores (exact, lines; Monte Carlo, dots):

# %%
r_show = torch.tensor([0, 10, 100, 1000])
theta = cr.inv_freq(128, 10000.0, dtype=torch.float64)
exact = 2 * torch.cos(r_show[:, None].double() * theta).sum(-1)
_g = torch.Generator().manual_seed(6)
samples = 4000
x = torch.randn(samples, 1, 128, generator=_g, dtype=torch.float64)
y = torch.randn(samples, 1, 128, generator=_g, dtype=torch.float64)
mc_corr = torch.stack([(cr.apply_rope(x, torch.tensor([int(r)]), interleaved=True) * x).sum(-1).mean() for r in r_show])
mc_ind = torch.stack([(cr.apply_rope(x, torch.tensor([int(r)]), interleaved=True) * y).sum(-1).mean() for r in r_show])
for r, e, c, i in zip(r_show.tolist(), exact.tolist(), mc_corr.tolist(), mc_ind.tolist()):
    print(f"r = {r:5d}: bound {decay_bound(torch.tensor(float(r)), 128).item():5.1f} | expected score q = k: "
          f"{e:6.1f} (Monte Carlo {c:6.1f}) | q, k independent: 0 (Monte Carlo {i:5.1f})")
assert (mc_corr - exact).abs().max() < 3 and mc_ind.abs().max() < 1

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 4.2))
cr.plot_decay([500, 10000, 500000], 128, 4000, ax=axes[0])
axes[0].set_xscale("symlog", linthresh=10)
axes[0].set_xlim(0, 4000)
axes[0].set_title("The bound decays, not monotonically (base 1e4: 4.5 at r = 1000, 5.0 at r = 4000)", fontsize=10)
r = torch.unique(torch.logspace(0, math.log10(4000), 400).round()).double()
r = torch.cat((torch.zeros(1, dtype=torch.float64), r))
for base in (500, 10000, 500000):
    th = cr.inv_freq(128, base, dtype=torch.float64)
    axes[1].plot(r, 2 * torch.cos(r[:, None] * th).sum(-1), lw=1.2, label=f"q = k, base {base:g}")
axes[1].scatter(r_show, mc_corr, color="k", zorder=3, s=18, label="Monte Carlo, q = k, base 1e4")
axes[1].scatter(r_show, mc_ind, color="tab:red", marker="x", zorder=3, label="Monte Carlo, q, k independent")
axes[1].axhline(0, color="tab:red", lw=1, ls="--", label="q, k independent: 0 for every base")
axes[1].set_xscale("symlog", linthresh=10)
axes[1].set_xlim(0, 4000)
axes[1].set_xlabel("relative distance m − n (tokens)")
axes[1].set_ylabel("expected score E[q_m · k_n], d = 128")
axes[1].set_title("Expected scores decay only when q and k are correlated (128 → 86 → 61 → 20)", fontsize=10)
axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.tight_layout()
plt.show()
plt.close(fig)

# %% [markdown]
# ## 7. Context extension: change the frequencies
#
# A model trained on $L$ tokens has seen pair $i$ turned by at most $L\theta_i$. A pair whose wavelength
# $\lambda_i = 2\pi/\theta_i$ exceeds $L$ never completed a turn in training: past $L$ it shows the model angles it has
# never seen. Three recipes run a model on $L' = sL$ tokens by changing $\theta_i$ (checked against Hugging Face's
# `modeling_rope_utils.py` in the companion's tests):
#
# * **Position interpolation** (PI; Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language Models
#   via Positional Interpolation", arXiv 2306.15595): squeeze positions into the trained range, $m \mapsto m/s$, i.e.
#   $\theta'_i = \theta_i / s$ for every pair. No angle leaves the trained range, but neighbouring tokens become $s$
#   times harder to tell apart.
# * **NTK-aware scaling** (bloc97, 2023, a Reddit post restated in the YaRN paper): enlarge the base,
#   $\text{base}' = \text{base}\cdot s^{d/(d-2)}$, so $\theta'_i = \theta_i\, s^{-2i/(d-2)}$: the fastest pair is untouched
#   and the slowest is divided by exactly $s$.
# * **YaRN** (Peng, Quesnelle, Fan, Shippole 2023, "YaRN: Efficient Context Window Extension of Large Language Models",
#   arXiv 2309.00071): with $r_i = L/\lambda_i$ the number of turns pair $i$ makes in $L$ tokens, keep pairs with
#   $r_i > \beta$, interpolate like PI pairs with $r_i < \alpha$, and blend in between with a ramp $\gamma_i$:
#   $\theta'_i = (1 - \gamma_i)\theta_i/s + \gamma_i\theta_i$ ($\alpha = 1$, $\beta = 32$ for LLaMA). It also
#   multiplies the logits by $1/t$ with $\sqrt{1/t} = 0.1\ln s + 1$.
#
# **Exercise 10 (2 points).** Write `scaled_frequencies(dim, base, factor, method)` returning the float64 $\theta'_i$,
# shape `(dim // 2,)`, for `method="linear"` (PI) and `method="ntk"`, with $s$ = `factor`. Raise a `ValueError` for any
# other method. Use your `rope_frequencies`.

# %% tags=["solution"] grade_id="scaled_frequencies"
def scaled_frequencies(dim: int, base: float, factor: float, method: str) -> torch.Tensor:
    """theta'_i after extending the context by s = factor: 'linear' (PI) or 'ntk' (NTK-aware base)."""
    ### BEGIN SOLUTION
    if method == "linear":
        return rope_frequencies(dim, base) / factor
    if method == "ntk":
        return rope_frequencies(dim, base * factor ** (dim / (dim - 2)))
    raise ValueError(f"unknown method {method!r}: expected 'linear' or 'ntk'")
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_scaled_frequencies" points=2
check_close("linear, d = 8, s = 4", call_quietly(scaled_frequencies, 8, 10000.0, 4.0, "linear"),
            torch.tensor([0.25, 0.025, 0.0025, 0.00025], dtype=torch.float64), hint="PI divides every theta_i by s")
_ntk = call_quietly(scaled_frequencies, 8, 10000.0, 4.0, "ntk")
check_close("ntk, d = 8, s = 4: the fastest pair is kept", _ntk[0], torch.tensor(1.0, dtype=torch.float64))
check_close("ntk, d = 8, s = 4: the slowest pair is divided by s", _ntk[-1], torch.tensor(0.001 / 4, dtype=torch.float64),
            hint="base' = base * s^(d/(d-2)); theta'_i = base'^(-2i/d)")
check_close("ntk, d = 128, s = 4", call_quietly(scaled_frequencies, 128, 10000.0, 4.0, "ntk"),
            cr.inv_freq(128, 10000.0, cr.NTKScaling(4.0), dtype=torch.float64))
_raised = False
try:
    scaled_frequencies(8, 10000.0, 4.0, "yarn")
except ValueError:
    _raised = True
assert _raised, "scaled_frequencies(..., method='yarn') must raise ValueError (only 'linear' and 'ntk')"
ok("scaled_frequencies: PI divides every frequency by s; NTK keeps the fastest pair and divides the slowest by s")
### BEGIN HIDDEN TESTS
for _d, _b, _s in ((64, 10000.0, 8.0), (128, 500000.0, 2.0), (16, 500.0, 32.0), (32, 10000.0, 1.0)):
    check_close(f"linear, d = {_d}, base {_b:g}, s = {_s:g}", call_quietly(scaled_frequencies, _d, _b, _s, "linear"),
                cr.inv_freq(_d, _b, cr.LinearScaling(_s), dtype=torch.float64))
    check_close(f"ntk, d = {_d}, base {_b:g}, s = {_s:g}", call_quietly(scaled_frequencies, _d, _b, _s, "ntk"),
                cr.inv_freq(_d, _b, cr.NTKScaling(_s), dtype=torch.float64))
### END HIDDEN TESTS

# %% [markdown]
# What each recipe does to each pair, for a LLaMA-like head ($d = 128$, base $10^4$, $L = 2048$, $s = 4$):
# $\theta'_i/\theta_i = 1$ keeps a pair, $1/s$ interpolates it.

# %%
fig, ax = plt.subplots(figsize=(7.5, 4))
cr.plot_frequencies(128, 10000.0, {"PI (linear), s = 4": cr.LinearScaling(4.0), "NTK-aware, s = 4": cr.NTKScaling(4.0),
                                   "YaRN, s = 4, L = 2048": cr.YaRNScaling(4.0, original_max_position_embeddings=2048)}, ax=ax)
wavelength = 2 * math.pi / cr.inv_freq(128, 10000.0, dtype=torch.float64)
ax.axvline(int((wavelength <= 2048).sum()) - 0.5, color="0.5", ls=":", lw=1)
ax.text(int((wavelength <= 2048).sum()) + 0.5, 0.4, "pairs right of here never\nturn once in 2048 tokens", fontsize=8)
plt.show()
plt.close(fig)
print(f"d = 128, base 1e4: {int((wavelength > 2048).sum())} of 64 pairs have a wavelength longer than L = 2048")

# %% [markdown]
# ## 8. Experiment: train short, test long
#
# **Task (copy with offset).** Random tokens from a vocabulary of 16; at position $t$ the model must output the token
# at $t - 3$. Only *relative* position says where to look. **Model** (`companion.rope.PositionTaskModel`): token
# embedding ($d = 32$), one causal attention head, unembedding; nothing else, so the position encoding is the model's
# only source of order. Three encodings:
#
# * **RoPE** on $q$ and $k$ (half-split, base $10^4$);
# * **learned absolute** position vectors added to the token embeddings (a table of 512; rows past the training length
#   are never trained and keep their small random initial values);
# * **NoPE**: no position encoding; only the causal mask breaks the symmetry.
#
# Each is trained with Adam on fresh batches of 64 sequences of $L = 32$ tokens, then tested on sequences of 256. At
# full scale: three seeds per encoding, 300 steps each (nine models, about 10 to 20 s on one CPU core in all); under
# `TM_SCALE=reduced` one seed and 120 steps.

# %% tags=["nbval-ignore-output"]
import time

train_len, test_len, offset = 32, 256, 3
seeds = scaled(full=[0, 1, 2], reduced=[0])
steps = scaled(full=300, reduced=120)
start = time.perf_counter()
models = {enc: [cr.train_copy_offset(enc, steps=steps, seq_len=train_len, offset=offset, seed=seed,
                                     progress=not is_reduced())[0] for seed in seeds] for enc in cr.ENCODINGS}
print(f"trained {3 * len(seeds)} models for {steps} steps each in {time.perf_counter() - start:.0f} s")

# %%
def accuracy(model, scaling=None):
    """Per-position accuracy on 256 fresh sequences of test_len tokens, with an optional RoPE scaling."""
    model.scaling = cr.resolve_scaling(scaling)
    acc = cr.copy_offset_accuracy(model, test_len, offset=offset)
    model.scaling = None
    return acc


s = test_len / train_len
variants = {"RoPE": ("rope", None), "RoPE + PI": ("rope", cr.LinearScaling(s)), "RoPE + NTK": ("rope", cr.NTKScaling(s)),
            "RoPE + YaRN": ("rope", cr.YaRNScaling(s, original_max_position_embeddings=train_len)),
            "learned absolute": ("absolute", None), "NoPE": ("nope", None)}
wavelengths = 2 * math.pi / cr.inv_freq(32, dtype=torch.float64)
gamma = cr.yarn_ramp(32, 10000.0, variants["RoPE + YaRN"][1])
print(f"d = 32, L = {train_len}: {int((wavelengths > train_len).sum())} of 16 pairs have a wavelength longer than L; "
      f"YaRN keeps {int((gamma == 1).sum())} pair(s), blends {int(((gamma > 0) & (gamma < 1)).sum())}, "
      f"interpolates {int((gamma == 0).sum())}")
per_position = {}
print(f"accuracy (mean over {len(seeds)} seed(s); chance 1/16 = 0.06), tested on {test_len} tokens, s = {s:g}")
for name, (enc, scaling) in variants.items():
    accs = torch.stack([accuracy(m, scaling) for m in models[enc]])
    per_position[name] = accs.mean(0)
    short, beyond = accs[:, offset:train_len].mean(1), accs[:, train_len:].mean(1)
    print(f"{name:>17s}: positions < {train_len}: {short.mean():.2f}   positions {train_len}..{test_len - 1}: "
          f"{beyond.mean():.2f} (seeds {beyond.min():.2f}..{beyond.max():.2f})")

# %% [markdown]
# At full scale (three seeds) the run above gives: RoPE and learned absolute positions solve the task on the 32
# trained positions (accuracy 1.00). Past them, **learned absolute** positions fall to chance at once (0.06): the
# untrained rows of the table are noise. **RoPE** keeps working for a while and then fades in steps (0.34 on positions
# 32 to 255, 0.24 to 0.45 across seeds): the pattern "three tokens back" is the same at every position, but scores
# against keys *more than 32 tokens away* involve angles of the slow pairs that training never produced, and some of
# those far keys win. **NoPE** never learns the task (0.21 on the trained positions, where a short prefix makes
# guessing easier; 0.10 beyond). Rescaling RoPE's frequencies at test time by $s = 8$, without retraining: **PI**
# destroys the short-range pattern (a distance of 3 becomes 3/8; 0.10 even on the trained positions), **NTK** helps
# (0.69), and **YaRN**, which keeps the fastest pair, blends the next two and interpolates the 13 slow pairs whose
# wavelength exceeds $L$, restores most of it (0.92). The per-position accuracy:

# %%
fig, ax = plt.subplots(figsize=(9, 4))
positions = torch.arange(test_len)
for name in ("RoPE", "RoPE + YaRN", "RoPE + PI", "learned absolute", "NoPE"):
    ax.plot(positions, per_position[name], lw=1.2, label=name)
ax.axvline(train_len - 0.5, color="k", ls="--", lw=1)
ax.text(train_len + 2, 0.45, "training length", fontsize=8)
ax.axhline(1 / 16, color="0.5", ls=":", lw=1, label="chance (1/16)")
ax.set_xlabel("position t in the test sequence")
ax.set_ylabel("accuracy at position t")
ax.set_ylim(-0.02, 1.02)
ax.set_title("Past the trained length, absolute collapses at once, RoPE fades, RoPE + YaRN holds", fontsize=10)
ax.legend(fontsize=8, loc="center right")
plt.show()
plt.close(fig)

# %% [markdown]
# **Attention heatmaps** of the first seed's models on one sequence of 128 tokens (YaRN with $s = 4$ here). The RoPE head
# attends three tokens back, a diagonal, on the trained positions and beyond them until far keys start to compete; with
# YaRN the diagonal holds to the end. The absolute head's diagonal stops at the training length (dashed lines).

# %%
tokens, _ = cr.copy_offset_batch(1, 128, offset=offset, generator=torch.Generator().manual_seed(7))
panels = (("RoPE", models["rope"][0], None), ("RoPE + YaRN, s = 4", models["rope"][0],
          cr.YaRNScaling(4.0, original_max_position_embeddings=train_len)), ("learned absolute", models["absolute"][0], None))
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
with torch.no_grad():
    for ax, (name, model, scaling) in zip(axes, panels):
        model.scaling = scaling
        weights, _ = model.attention(tokens)
        model.scaling = None
        on_target = weights[0, torch.arange(offset, 128), torch.arange(0, 128 - offset)]
        cr.plot_attention(weights[0], ax=ax, mark=train_len,
                          title=f"{name}: mean weight on t − 3 beyond L = {on_target[train_len - offset:].mean():.2f}")
fig.suptitle("The diagonal three tokens back: absolute loses it at L, RoPE is distracted by far keys, YaRN keeps it")
fig.tight_layout()
plt.show()
plt.close(fig)

# %% [markdown]
# How this compares with the papers: PI, NTK and YaRN were designed for *fine-tuned* LLMs (PI reports extending LLaMA
# to 32768 tokens within 1000 fine-tuning steps; YaRN claims 10× fewer tokens and 2.5× fewer steps than earlier
# methods). Here nothing is fine-tuned, and a one-head model is all the model there is; the qualitative ranking (PI
# hurts short-range precision, YaRN preserves it) is the one YaRN's paper argues for.
#
# ## 9. What RoPE cannot buy: a circuit bound
#
# **Theorem (Chen, Li, Liang, Long, Shi, Song 2024, "Circuit Complexity Bounds for RoPE-based Transformer
# Architecture", arXiv 2411.07602; EMNLP 2025, with J. Zhang).** Let $n$ be the input length. A RoPE-based transformer
# with $\mathrm{poly}(n)$-bit precision, $O(1)$ layers and hidden dimension $d \le O(n)$ can be simulated by a uniform
# $\mathsf{TC}^0$ circuit family (constant depth, polynomial size, threshold gates). Hence, unless
# $\mathsf{TC}^0 = \mathsf{NC}^1$, it cannot solve the arithmetic formula evaluation problem or the Boolean formula
# value problem. (The step from the first sentence to the second uses that both problems are $\mathsf{NC}^1$-hard; for
# the Boolean formula value problem this is Buss 1987.)
#
# The proof places each piece in $\mathsf{TC}^0$: the trigonometric functions of $m\theta_i$ to $\mathrm{poly}(n)$
# bits, the matrix products of the rotations, softmax attention, the MLP and layer norm, then composes a constant
# number of layers. It extends to RoPE what was known for softmax transformers (Merrill & Sabharwal 2023, arXiv
# 2207.00729, log precision; Chiang 2025, arXiv 2409.13629, $\mathrm{poly}(n)$ precision).
#
# **What it says:** rotating queries and keys does not lift a constant-depth transformer above $\mathsf{TC}^0$;
# position information, however encoded, is not depth. **What it does not say:** (1) it is conditional:
# $\mathsf{TC}^0 \neq \mathsf{NC}^1$ is believed but unproven; (2) it is asymptotic: a fixed model may evaluate all
# formulas up to some size; (3) it says nothing about what training finds: copying at an offset is a trivial
# circuit, yet in section 8 a trained RoPE head did not generalise to longer inputs without help; (4) it is about one
# forward pass: with chain of thought, constant-depth transformers can evaluate such formulas step by step (Feng et al.
# 2023, arXiv 2305.15408), the subject of chapter 04.
#
# The precision assumption is generous: a position needs only $\log_2 n$ bits, and the theorem allows
# $\mathrm{poly}(n)$. In practice the binding constraint is the float format the angle is computed in, the pitfall of
# Exercise 2. The first integer position each format cannot store:

# %%
for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
    bits = round(-math.log2(torch.finfo(dtype).eps))  # stored significand bits
    first = 2 ** (bits + 1) + 1
    stored = torch.tensor(first, dtype=torch.float64).to(dtype).double().item() if dtype != torch.float64 else None
    shown = "2^53 + 1" if dtype == torch.float64 else f"{first:,} (stored as {stored:,.0f})"
    print(f"{str(dtype):>15s}: {bits + 1:2d} significant bits; first position it cannot hold: {shown}")

# %% [markdown]
# ## 10. Scale it: RoPE kernels on this device
#
# RoPE is elementwise: the cost is memory traffic, reading $x$ and writing $y$. The companion has three
# implementations: `apply_rope` recomputes the angles on every call (about ten elementwise kernels),
# `RotaryEmbedding` reads cos/sin from a cache, and `apply_rope_complex` is the complex-number form (the baseline of
# Meta's LLaMA code). On a CUDA GPU the fused Triton kernel `apply_rope_triton` computes the angles in registers and
# moves only $x$ and $y$. `benchmarks/rope.py` reports the ratios in full; here is one shape on the current device.

# %% tags=["nbval-ignore-output"]
import time

device = get_device()
shape = scaled(full=(2, 8, 1024, 128), reduced=(1, 8, 256, 128))
x = torch.randn(shape, device=device)
pos = torch.arange(shape[-2], device=device)
rot = cr.RotaryEmbedding(shape[-1]).to(device)


def best_of(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


with torch.no_grad():
    times = {"apply_rope": best_of(lambda: cr.apply_rope(x, pos)), "RotaryEmbedding": best_of(lambda: rot(x, pos)),
             "apply_rope_complex": best_of(lambda: cr.apply_rope_complex(x, pos))}
    if device.type == "cuda" and cr.HAS_TRITON:
        times["apply_rope_triton"] = best_of(lambda: cr.apply_rope_triton(x, pos))
gbytes = 2 * x.numel() * x.element_size() / 1e9
print(f"{device}, x of shape {tuple(shape)}, float32:")
for name, t in times.items():
    print(f"  {name:>18s}: {t * 1e3:7.2f} ms ({gbytes / t:6.1f} GB/s of the 2 * numel * 4 bytes a fused kernel moves)")

# %% [markdown]
# ## Limits and pitfalls
#
# * **Two pairings.** Interleaved $(2i, 2i+1)$ (RoFormer, GPT-J, Meta's LLaMA code) and half-split $(i, i + d/2)$
#   (GPT-NeoX, Hugging Face Llama) are the same rotation in different layouts; weights trained with one need the row
#   permutation of Exercise 7 to run with the other. Nothing fails loudly if you forget.
# * **Rotate $q$ and $k$, never $v$.** The relative property lives in $q \cdot k$; a rotated value carries absolute
#   position into the output.
# * **KV cache offset.** New tokens sit at positions $T, T+1, \dots$; cache keys after rotation; align the causal mask
#   at the bottom right.
# * **Angles in float32 (or float64).** bfloat16 cannot hold position 257; float32 angle errors grow like
#   $m\cdot 2^{-24}$ radians.
# * **$\theta$ index off by one.** RoFormer counts pairs from 1 with exponent $-2(i-1)/d$; code counts from 0 with
#   $-2i/d$. Mixing them shifts every frequency.
# * **Decay is a bound, not a behaviour.** The relative upper bound falls with distance (not monotonically); the
#   expected score of independent $q, k$ is 0 at every distance.
# * **RoPE does not extrapolate by itself.** A model sees, for the slow pairs, only the angles its training length
#   produces; PI, NTK and YaRN change the frequencies, and are meant to be followed by fine-tuning.
# * **The circuit bound is conditional and asymptotic**, and says nothing about learning.
#
# ## References
#
# * J. Su, Y. Lu, S. Pan, A. Murtadha, B. Wen, Y. Liu, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
#   2021, arXiv:2104.09864 (eqs. 12–16, §3.4.2, §3.4.3 and its Figure 2).
# * S. Chen, S. Wong, L. Chen, Y. Tian, "Extending Context Window of Large Language Models via Positional
#   Interpolation", 2023, arXiv:2306.15595.
# * bloc97, "NTK-Aware Scaled RoPE", Reddit r/LocalLLaMA, June 2023.
# * B. Peng, J. Quesnelle, H. Fan, E. Shippole, "YaRN: Efficient Context Window Extension of Large Language Models",
#   2023, arXiv:2309.00071.
# * F. Barbero, A. Vitvitskyi, C. Perivolaropoulos, R. Pascanu, P. Veličković, "Round and Round We Go! What makes
#   Rotary Positional Encodings useful?", 2024, arXiv:2410.06205 (ICLR 2025).
# * B. Chen, X. Li, Y. Liang, J. Long, Z. Shi, Z. Song, "Circuit Complexity Bounds for RoPE-based Transformer
#   Architecture", 2024, arXiv:2411.07602 (EMNLP 2025).
# * W. Merrill, A. Sabharwal, "The Parallelism Tradeoff: Limitations of Log-Precision Transformers", 2023,
#   arXiv:2207.00729; D. Chiang, "Transformers in Uniform TC⁰", 2025, arXiv:2409.13629.
# * G. Feng, B. Zhang, Y. Gu, H. Ye, D. He, L. Wang, "Towards Revealing the Mystery behind Chain of Thought: A
#   Theoretical Perspective", 2023, arXiv:2305.15408.
# * A. Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762 (sinusoidal positions).
#
# ## What you can now do
#
# * Compute RoPE's frequencies and angles, in a precision that holds at long positions.
# * Implement RoPE in both pairings, convert a model's weights from one to the other, and explain why $v$ is not rotated.
# * Prove that RoPE scores depend only on $m - n$, and check it numerically to $10^{-6}$.
# * Run RoPE attention with a KV cache: offset positions, cached rotated keys, a bottom-right causal mask.
# * Compute RoFormer's decay bound and say what it does and does not imply about attention scores.
# * Explain what PI, NTK-aware scaling and YaRN do to each frequency, and when a model trained short fails long.
# * State the circuit bound for RoPE transformers precisely, with its conditions and what it leaves open.
