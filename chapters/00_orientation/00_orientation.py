# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Orientation: how this course works
#
# *Transformer Mechanics* teaches how transformers work from the theory side: every theorem comes with
# code you can run, measure and break. This short chapter shows the machinery every later chapter uses,
# and asks you to write three small functions that the rest of the course takes for granted:
# a numerically stable softmax, a causal mask and a seeded token sampler.
#
# **The question this chapter answers:** when you change a cell, how do you know you got it right,
# and how will the grader know?
#
# Each chapter follows the same spine:
#
# 1. **Motivation**: one real question the mechanism answers.
# 2. **Definitions and theorems**, stated precisely, with the paper (title, year, arXiv id) that proves them.
# 3. **Build it**: graded exercises that assemble the mechanism step by step.
# 4. **See it**: experiments that reproduce the papers' claims at CPU scale, with plots and a widget.
# 5. **Scale it**: the companion package's fast implementation measured against PyTorch's own.
# 6. **Limits and pitfalls**, **References**, and a list of what you can now do.

# %% [markdown]
# ## Setup
#
# The next cell is *locked*: the grader puts it back exactly as it is before grading, so editing it
# changes nothing. It imports PyTorch, the course's companion package and the checks the test cells use.
# `require_version` stops with a clear message if your installed `companion` is not the version this
# chapter was written for (the fix is `git pull` and `pip install -e .`).

# %% tags=["locked"] grade_id="setup"
import math

import matplotlib.pyplot as plt
import torch

import companion
from companion import get_device, require_version, scaled, seed_everything
from companion.orientation import plot_softmax_temperature
from companion.testing import call_quietly, check_close, check_dtype, check_shape, cmp, ok

require_version("0.1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# %% [markdown]
# ## How exercises work
#
# An exercise is a pair of cells. The **answer cell** holds a function with its docstring and the line
# `raise NotImplementedError()`: replace that line with your code. The **test cell** below it is read-only
# and carries the points. It holds
#
# * **visible tests**, which you can read and run as often as you like; their messages say what is wrong
#   ("expected shape (4, 4), got (4, 5)");
# * **hidden tests**, which you do not see. They run when your notebook is graded and decide the grade: they
#   try the inputs where plausible wrong answers differ from right ones (large values, another axis,
#   an off-by-one, the wrong dtype).
#
# A test cell earns all its points when it runs without an error and prints nothing on stderr, and none
# otherwise. Passing the visible tests is necessary, not sufficient.
#
# **Check yourself before you submit.** In JupyterLab press *Validate* in the notebook toolbar, or run
# `python -m grading validate course/00_orientation/00_orientation.ipynb` in a terminal: it runs the whole
# notebook from a fresh kernel and lists each exercise as passed or failed. Restart the kernel and run all
# cells before you validate: a notebook that only works because of a cell you have since deleted fails
# when graded.

# %% [markdown]
# ## Exercise 1: a softmax that does not overflow (3 points)
#
# For a vector $x \in \mathbb{R}^n$,
# $$\mathrm{softmax}(x)_i = \frac{e^{x_i}}{\sum_{j=1}^n e^{x_j}}.$$
# For any constant $c$, $\mathrm{softmax}(x - c) = \mathrm{softmax}(x)$: the factor $e^{-c}$ cancels
# between numerator and denominator. Floating point does not share this indifference. In float32,
# $e^{x}$ overflows to `inf` once $x > 88.7$, and `inf / inf` is `nan`:

# %%
x = torch.tensor([1000.0, 1001.0, 1002.0])
naive = torch.exp(x) / torch.exp(x).sum()
print("naive softmax of [1000, 1001, 1002]:", [str(v) for v in naive.tolist()])
print("largest float32 exponent before overflow: %.1f" % math.log(torch.finfo(torch.float32).max))

# %% [markdown]
# Choosing $c = m = \max_j x_j$ fixes it: every exponent $x_i - m \le 0$, so every $e^{x_i - m} \in (0, 1]$,
# and the largest term is exactly 1, so the denominator is at least 1. This is the form every attention
# implementation uses, and chapter 01's *online* softmax keeps this running maximum while it streams
# over blocks of keys.
#
# Write `softmax(x, dim=-1)` for a tensor of any shape, normalising along `dim`. Keep the input's dtype.
# Entries equal to `-inf` (masked positions, as in Exercise 2) must get probability exactly 0.
# Use `amax(dim=..., keepdim=True)` so the maximum broadcasts back against `x`. Do not call
# `torch.softmax` or `torch.nn.functional.softmax`: the point is to build it.

# %% tags=["solution"] grade_id="softmax"
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax of ``x`` along ``dim``; same shape and dtype as ``x``."""
    ### BEGIN SOLUTION
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_softmax" points=3
x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
out = call_quietly(softmax, x)
check_close("softmax(x)", out, torch.softmax(x, dim=-1))
check_close("row sums of softmax(x)", out.sum(dim=-1), torch.ones(2), hint="normalise along the last axis")
ok("softmax matches torch.softmax on a small input and its rows sum to 1")
### BEGIN HIDDEN TESTS
_big = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -999.0, -998.0]])
check_close("softmax of large logits", call_quietly(softmax, _big), torch.softmax(_big, dim=-1),
            hint="subtract each row's own maximum before exp")
_g = torch.Generator().manual_seed(1)
_x3 = torch.randn(2, 3, 4, generator=_g, dtype=torch.float64) * 5
for _dim in (0, 1, 2, -1, -2):
    check_close(f"softmax(x, dim={_dim})", call_quietly(softmax, _x3, dim=_dim), torch.softmax(_x3, dim=_dim),
                hint="normalise along the axis `dim`, not always the last one")
_masked = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf"), 2.0, 2.0]])
check_close("softmax with -inf entries", call_quietly(softmax, _masked), torch.softmax(_masked, dim=-1),
            hint="-inf must give probability 0")
### END HIDDEN TESTS

# %% [markdown]
# A friendly self-check while you build: `cmp` prints whether two tensors are exactly or approximately equal
# and their largest difference. Only rounded numbers are printed: printing whole tensors gives output that
# changes with the BLAS library and the number of threads.

# %%
cmp("softmax", softmax(torch.tensor([3.0, 1.0, 0.2])), torch.softmax(torch.tensor([3.0, 1.0, 0.2]), dim=-1))

# %% [markdown]
# ## Exercise 2: the causal mask (2 points)
#
# A language model predicts token $i$ from tokens $1, \dots, i$ only. In attention, query $i$ may look at
# key $j$ exactly when $j \le i$. The **causal mask** is the boolean matrix $M \in \{0,1\}^{n \times n}$
# with $M_{ij} = [\,j \le i\,]$: lower-triangular, diagonal included (a token sees itself).
# Applying it means setting the disallowed scores to $-\infty$ before the softmax, so they get probability 0.
#
# Write `causal_mask(n)` returning a `torch.bool` tensor of shape `(n, n)` that is `True` where attention is
# allowed. Useful: `torch.ones`, `torch.tril` and their `diagonal` argument.

# %% tags=["solution"] grade_id="causal_mask"
def causal_mask(n: int) -> torch.Tensor:
    """Boolean ``(n, n)`` mask, True where query ``i`` may attend to key ``j``, i.e. ``j <= i``."""
    ### BEGIN SOLUTION
    return torch.ones(n, n, dtype=torch.bool).tril()
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_causal_mask" points=2
m = call_quietly(causal_mask, 4)
check_shape("causal_mask(4)", m, (4, 4))
check_dtype("causal_mask(4)", m, torch.bool)
check_close("first row of causal_mask(4)", m[0], torch.tensor([True, False, False, False]),
            hint="query 0 sees only key 0")
ok("causal_mask(4) has the right shape, dtype and first row")
### BEGIN HIDDEN TESTS
for _n in (1, 2, 3, 7, 16):
    _ref = torch.ones(_n, _n).tril().bool()
    check_close(f"causal_mask({_n})", call_quietly(causal_mask, _n), _ref,
                hint="True on and below the diagonal: a token sees itself and the past")
### END HIDDEN TESTS

# %% [markdown]
# With the mask and the softmax together, each row of causal attention weights is a probability distribution
# over the past only:

# %%
scores = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
weights = softmax(scores.masked_fill(~causal_mask(5), float("-inf")))
assert torch.allclose(weights.sum(-1), torch.ones(5))
assert (weights.triu(diagonal=1) == 0).all()
print("row sums all 1, weights above the diagonal all 0; first row puts weight %.1f on token 0" % weights[0, 0])

# %% [markdown]
# ## Seeding: the same numbers every time
#
# Every experiment in this course is seeded, so a figure you see is the figure you get. There are two ways:
#
# * `seed_everything(seed)` seeds Python's, NumPy's and PyTorch's global generators at once (do this at the
#   top of an experiment);
# * better, pass an explicit `torch.Generator` to every random call. Then a function's output depends on
#   its arguments alone, not on what else ran before it in the notebook.

# %%
seed_everything(0)
a = torch.rand(3)
seed_everything(0)
b = torch.rand(3)
assert torch.equal(a, b)
g1, g2 = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
print("same seed, same numbers: True")

# %% [markdown]
# ## Exercise 3: a seeded token sampler (3 points)
#
# Chapters train small models on synthetic token sequences. Write
# `random_tokens(batch, seq_len, vocab_size, *, generator)` returning a `torch.long` tensor of shape
# `(batch, seq_len)` whose entries are independent and uniform on $\{0, 1, \dots, \text{vocab\_size} - 1\}$,
# drawn **only** from `generator`: the global generator must be left untouched, and the same generator state
# must give the same tokens. Mind `torch.randint`'s upper bound: it is exclusive.

# %% tags=["solution"] grade_id="random_tokens"
def random_tokens(batch: int, seq_len: int, vocab_size: int, *, generator: torch.Generator) -> torch.Tensor:
    """Uniform token ids in ``[0, vocab_size)``, shape ``(batch, seq_len)``, dtype long, from ``generator`` only."""
    ### BEGIN SOLUTION
    return torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
    ### END SOLUTION


# %% tags=["tests"] grade_id="test_random_tokens" points=3
t = call_quietly(random_tokens, 2, 5, 7, generator=torch.Generator().manual_seed(0))
check_shape("random_tokens(2, 5, 7)", t, (2, 5))
check_dtype("random_tokens(2, 5, 7)", t, torch.long)
assert int(t.min()) >= 0 and int(t.max()) < 7, f"tokens must lie in [0, 7), got min {int(t.min())}, max {int(t.max())}"
t2 = call_quietly(random_tokens, 2, 5, 7, generator=torch.Generator().manual_seed(0))
check_close("random_tokens with the same seed twice", t2, t, hint="draw every number from `generator`")
ok("random_tokens has the right shape, dtype and range, and is reproducible from its generator")
### BEGIN HIDDEN TESTS
_state = torch.get_rng_state()
_big = call_quietly(random_tokens, 100, 200, 5, generator=torch.Generator().manual_seed(3))
assert torch.equal(_state, torch.get_rng_state()), "random_tokens changed the global RNG: pass generator= to the random call"
check_shape("random_tokens(100, 200, 5)", _big, (100, 200))
_counts = torch.bincount(_big.flatten()).tolist()
assert len(_counts) == 5 and min(_counts) > 0.85 * 4000, (
    f"token counts {_counts} for vocab_size=5 over 20000 draws: every id 0..4 should appear about 4000 times"
)
_other = call_quietly(random_tokens, 100, 200, 5, generator=torch.Generator().manual_seed(4))
assert not torch.equal(_big, _other), "different seeds gave identical tokens"
### END HIDDEN TESTS

# %% [markdown]
# ## Devices: CPU by default, GPU when there is one
#
# `get_device()` returns `cuda` when PyTorch sees a GPU and `cpu` otherwise; set the environment variable
# `TM_DEVICE=cpu` to force the CPU. Every chapter runs on a 2-core CPU; cells that need a GPU say so and fall
# back or skip cleanly without one.

# %% tags=["nbval-ignore-output"]
device = get_device()
print("this notebook runs on:", device)

# %% [markdown]
# ## See it: temperature and the softmax
#
# Dividing logits by a temperature $T$ before the softmax sharpens the distribution when $T < 1$ (towards
# the arg-max, entropy falls to 0) and flattens it when $T > 1$ (towards uniform, entropy rises to $\log n$).
# Each chapter's plots come from a pure plotting function in the companion package; the notebook calls it
# once for a static figure and again from a widget.

# %%
logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for ax, temperature in zip(axes, (0.3, 1.0, 5.0)):
    plot_softmax_temperature(logits, temperature, ax=ax)
fig.suptitle("Low temperature sharpens the softmax, high temperature flattens it")
fig.tight_layout()
plt.show()
plt.close(fig)

# %% [markdown]
# Move the slider (the figure redraws when you release it):

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets


def _show(temperature: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    plot_softmax_temperature(logits, temperature, ax=ax)
    plt.show()
    plt.close(fig)


widgets.interact(
    _show,
    temperature=widgets.FloatLogSlider(value=1.0, base=10, min=-1.5, max=1.5, step=0.05, continuous_update=False),
);

# %% [markdown]
# ## Scale it: your softmax against PyTorch's
#
# Each chapter ends by measuring the companion's fast implementation against PyTorch's own, on the device at
# hand. Here the comparison is your three-line softmax against the fused `torch.softmax` kernel. Timings
# depend on the machine, so this cell's output is not compared when the notebook is tested.
#
# Heavy experiments read one switch, `TM_SCALE`: `full` by default, `reduced` when a notebook is graded or
# validated, so grading stays fast. `scaled(full=..., reduced=...)` picks the size.

# %% tags=["nbval-ignore-output"]
import time

rows = scaled(full=4096, reduced=256)
big = torch.randn(rows, 1024, device=device)


def _best_time(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(big)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


ours, theirs = _best_time(softmax), _best_time(lambda t: torch.softmax(t, dim=-1))
print(f"{rows} x 1024 on {device}: our softmax takes {ours / theirs:.1f}x the time of torch.softmax")

# %% [markdown]
# Three separate passes over memory (max, exp, sum) cost more than one fused kernel: this is the whole story
# of chapter 01, where FlashAttention fuses the softmax into the attention computation so the $n \times n$
# score matrix never travels to slow memory.
#
# ## Limits and pitfalls
#
# * Subtracting the maximum prevents overflow but not underflow: with logits spread over more than about 100
#   (float32), small probabilities become exactly 0. Work with log-probabilities (`logsumexp`) when you need them.
# * A row that is masked entirely is all `-inf`; its maximum is `-inf` and `-inf - (-inf)` is `nan`. Chapter 01's
#   causal tiles meet this case and must skip such blocks.
# * Seeds make a run reproducible on one machine and library version; results printed to many digits can still
#   differ across BLAS libraries and thread counts, so the course asserts in cells and prints rounded numbers.
# * A test cell that prints to stderr (a warning, a progress bar) scores 0 in nbgrader even when its asserts
#   pass; the course's checks record warnings instead of printing them.
#
# ## References
#
# * J. Bridle, "Probabilistic Interpretation of Feedforward Classification Network Outputs" (1990): the softmax.
# * M. Milakov, N. Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867 (chapter 01).
# * A. Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762: causal masking in the decoder.
# * nbgrader documentation, "Autograding" and "Validating": how test cells earn points.
#
# ## What you can now do
#
# * Solve an exercise, read its visible test messages, and validate the notebook before submitting.
# * Explain why softmax subtracts the maximum, and what a fully masked row does.
# * Build and apply a causal mask.
# * Write random code whose output depends only on an explicit generator.
# * Pick the device and the experiment scale with `get_device()` and `scaled()`.
