"""companion.runtime and companion.orientation against independent references."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import companion
from companion import orientation, runtime
from companion.testing import call_within, check_close, check_shape


def test_scaled_reads_the_switch(monkeypatch):
    monkeypatch.delenv("TM_SCALE", raising=False)
    assert runtime.scaled(full=100, reduced=10) == 100
    monkeypatch.setenv("TM_SCALE", "reduced")
    assert runtime.scaled(full=100, reduced=10) == 10 and runtime.is_reduced()
    monkeypatch.setenv("TM_SCALE", "tiny")
    with pytest.raises(ValueError, match="TM_SCALE must be one of"):
        runtime.scaled(full=1, reduced=0)


def test_seed_everything_reproduces_and_returns_a_generator():
    g = runtime.seed_everything(7)
    a = torch.rand(3)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(7)))
    with pytest.raises(TypeError):
        runtime.seed_everything(1.5)


def test_get_device(monkeypatch):
    monkeypatch.setenv("TM_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA was requested"):
            runtime.get_device("cuda")


def test_require_version():
    major_minor = ".".join(companion.__version__.split(".")[:2])
    runtime.require_version(major_minor)
    with pytest.raises(RuntimeError, match="pip install -e"):
        runtime.require_version("99.0")


def _softmax_reference(row: list[float]) -> list[float]:
    """Plain Python, math.fsum: independent of torch."""
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = math.fsum(e)
    return [v / s for v in e]


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_plain_python(dim):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30 + 500
    got = orientation.softmax(x, dim=dim)
    xt = x if dim == 0 else x.T
    ref = torch.tensor([_softmax_reference(col) for col in xt.T.tolist()], dtype=torch.float64)
    ref = ref.T if dim == 0 else ref
    check_close("softmax", got, ref, atol=1e-12, rtol=1e-12)


def test_softmax_masked_entries_and_integer_input():
    out = orientation.softmax(torch.tensor([0.0, float("-inf"), 0.0]))
    assert out.tolist() == [0.5, 0.0, 0.5]
    with pytest.raises(TypeError, match="floating-point"):
        orientation.softmax(torch.tensor([1, 2]))


def test_causal_mask_matches_definition():
    n = 6
    ref = torch.tensor([[j <= i for j in range(n)] for i in range(n)])
    check_close("causal_mask", orientation.causal_mask(n), ref)
    with pytest.raises(ValueError):
        orientation.causal_mask(-1)


def test_random_tokens_uses_only_its_generator():
    state = torch.get_rng_state()
    a = orientation.random_tokens(3, 4, 9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())
    check_shape("tokens", a, (3, 4))
    assert torch.equal(a, orientation.random_tokens(3, 4, 9, generator=torch.Generator().manual_seed(1)))
    counts = torch.bincount(orientation.random_tokens(50, 100, 4, generator=torch.Generator().manual_seed(2)).flatten())
    assert counts.numel() == 4 and counts.min() > 1100


def test_plot_softmax_temperature_titles_the_finding():
    import matplotlib.pyplot as plt

    ax = orientation.plot_softmax_temperature(torch.tensor([1.0, 0.0]), 1.0)
    assert ax.get_title().startswith("T = 1")
    assert len(ax.patches) == 2
    plt.close(ax.figure)
    with pytest.raises(ValueError):
        orientation.plot_softmax_temperature(torch.tensor([1.0]), 0.0)


def test_check_close_messages():
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got \(3, 2\) \(same sizes in another order"):
        check_close("x", torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(AssertionError, match="expected dtype torch.float32, got torch.float64"):
        check_close("x", torch.zeros(2, dtype=torch.float64), torch.zeros(2))
    with pytest.raises(AssertionError, match="largest difference 1 at index \\(1,\\)"):
        check_close("x", torch.tensor([0.0, 1.0]), torch.zeros(2))
    with pytest.raises(AssertionError, match="non-finite value nan"):
        check_close("x", torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(AssertionError, match="expected a torch.Tensor, got list"):
        check_close("x", [1.0], torch.zeros(1))


def test_call_within_returns_raises_and_stops_a_loop():
    import signal
    import time

    assert call_within(5, lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ValueError):
        call_within(5, int, "not a number")

    def forever():
        while True:
            try:
                time.sleep(0.01)
            except Exception:  # a student's broad except must not swallow the time limit
                pass

    start = time.perf_counter()
    with pytest.raises(AssertionError, match=r"forever\(\) did not return within 0.2 s"):
        call_within(0.2, forever)
    assert time.perf_counter() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the timer is cleared
    with pytest.raises(AssertionError, match=r"stuck\('\(0&1', limit=3\) did not return"):
        call_within(0.2, stuck, "(0&1", limit=3)


def stuck(s, limit):
    while True:
        pass
