"""companion.moe against independent references: per-token Python loops, closed forms, brute force.

Every expected value here is computed without the code under test: routing by
sorting each token's probabilities in Python, capacity by a running counter per
expert, the layer by a per-token, per-choice loop in float64, the balancing
loss by explicit sums, the drop rate by Monte Carlo and by the syllabus numbers.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from companion.moe import (  # noqa: E402
    DISPATCHES,
    MoELayer,
    capacity_keep_mask,
    cluster_data,
    drop_fraction_uniform,
    expected_drop_fraction,
    expert_capacity,
    expert_choice_route,
    expert_parallel_moe_ffn,
    init_moe_params,
    load_balancing_loss,
    moe_ffn,
    noisy_topk_logits,
    plot_expert_load,
    route_topk,
    router_z_loss,
    run_threaded,
    sort_by_expert,
    swiglu_expert,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------


def ref_route(logits: torch.Tensor, k: int, renormalize: bool) -> tuple[list[list[float]], list[list[int]]]:
    weights, experts = [], []
    for row in logits.double().tolist():
        z = [math.exp(v - max(row)) for v in row]
        p = [v / sum(z) for v in z]
        top = sorted(range(len(p)), key=lambda e: -p[e])[:k]
        w = [p[e] for e in top]
        if renormalize:
            w = [v / sum(w) for v in w]
        weights.append(w)
        experts.append(top)
    return weights, experts


def ref_keep(experts: list[list[int]], capacity: int | None) -> list[list[bool]]:
    used: dict[int, int] = {}
    keep = []
    for row in experts:
        out = []
        for e in row:
            ok = capacity is None or used.get(e, 0) < capacity
            used[e] = used.get(e, 0) + 1
            out.append(ok)
        keep.append(out)
    return keep


def ref_moe(x, router_weight, w_gate, w_up, w_down, k, capacity_factor, renormalize=True) -> torch.Tensor:
    """Per token, per choice, float64: y_t = Σ_j kept w_tj · W_down (silu(W_gate x) * (W_up x))."""
    x, rw, wg, wu, wd = (t.double() for t in (x, router_weight, w_gate, w_up, w_down))
    n_tokens, n_experts = x.shape[0], rw.shape[0]
    weights, experts = ref_route(x @ rw.t(), k, renormalize)
    cap = None if capacity_factor is None else math.ceil(round(capacity_factor * n_tokens * k / n_experts, 9))
    keep = ref_keep(experts, cap)
    y = torch.zeros_like(x)
    for t in range(n_tokens):
        for j in range(k):
            if keep[t][j]:
                e = experts[t][j]
                h = F.silu(wg[e] @ x[t]) * (wu[e] @ x[t])
                y[t] += weights[t][j] * (wd[e] @ h)
    return y


# ----------------------------------------------------------------------------------------
# Routers and losses
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("renormalize", [True, False])
def test_route_topk_matches_sorting(k, renormalize):
    logits = torch.randn(40, 8, generator=gen(k), dtype=torch.float64)
    weights, experts = route_topk(logits, k, renormalize=renormalize)
    ref_w, ref_e = ref_route(logits, k, renormalize)
    assert weights.shape == experts.shape == (40, k) and experts.dtype == torch.int64
    assert experts.tolist() == ref_e
    torch.testing.assert_close(weights, torch.tensor(ref_w, dtype=torch.float64))


def test_route_topk_renormalized_is_mixtral_softmax_of_topk():
    logits = torch.randn(64, 8, generator=gen(1))
    weights, _ = route_topk(logits, 2)
    torch.testing.assert_close(weights, torch.softmax(logits.topk(2, dim=-1).values, dim=-1))


def test_load_balancing_loss_explicit_sums_and_extremes():
    logits = torch.randn(50, 6, generator=gen(2), dtype=torch.float64)
    for k in (1, 2, 3):
        _, experts = ref_route(logits, k, False)
        p = torch.softmax(logits, -1)
        f = [sum(e in row for row in experts) / 50 for e in range(6)]
        want = 6 * sum(f[e] * p[:, e].mean().item() for e in range(6))
        torch.testing.assert_close(load_balancing_loss(logits, k), torch.tensor(want, dtype=torch.float64))
    # perfect balance: k = 1 gives 1 (Switch), k gives k; collapse on one expert gives E
    eye = torch.eye(8, dtype=torch.float64).repeat(4, 1) * 50.0
    assert abs(load_balancing_loss(eye, 1).item() - 1.0) < 1e-9
    uniformish = torch.zeros(16, 4, dtype=torch.float64)
    uniformish[torch.arange(16), torch.arange(16) % 4] = 1e-9  # ties broken evenly, probabilities 1/4
    assert abs(load_balancing_loss(uniformish, 2).item() - 2.0) < 1e-6
    collapse = torch.zeros(32, 8, dtype=torch.float64)
    collapse[:, 3] = 60.0
    assert abs(load_balancing_loss(collapse, 1).item() - 8.0) < 1e-9


def test_load_balancing_loss_gradient_flows_through_probabilities_only():
    logits = torch.randn(30, 5, generator=gen(3), dtype=torch.float64, requires_grad=True)
    load_balancing_loss(logits, 2).backward()
    experts = logits.detach().topk(2, dim=-1).indices
    f = torch.bincount(experts.reshape(-1), minlength=5).double() / 30
    p = torch.softmax(logits.detach(), -1)
    # d/dh of 5 * sum_e f_e mean_t p_te, with f constant
    g_p = 5 * f / 30
    want = p * (g_p - (p * g_p).sum(-1, keepdim=True))
    torch.testing.assert_close(logits.grad, want.expand_as(p))


def test_router_z_loss_explicit():
    logits = torch.randn(20, 7, generator=gen(4), dtype=torch.float64) * 5
    want = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / 20
    torch.testing.assert_close(router_z_loss(logits), torch.tensor(want, dtype=torch.float64))


def test_expert_choice_brute_force():
    logits = torch.randn(30, 4, generator=gen(5), dtype=torch.float64)
    weights, tokens = expert_choice_route(logits, 7)
    p = torch.softmax(logits, -1)
    assert weights.shape == tokens.shape == (4, 7)
    for e in range(4):
        order = sorted(range(30), key=lambda t: -p[t, e].item())[:7]
        assert tokens[e].tolist() == order
        torch.testing.assert_close(weights[e], p[order, e])


def test_noisy_topk_keeps_k_finite_entries():
    logits = torch.randn(10, 6, generator=gen(6))
    h = noisy_topk_logits(logits, torch.zeros_like(logits), 2, generator=gen(7))
    assert (torch.isfinite(h).sum(-1) == 2).all()
    gates = torch.softmax(h, -1)
    torch.testing.assert_close(gates.sum(-1), torch.ones(10))
    # with softplus(noise_logits) -> 0 the noise vanishes and the top-2 is the plain top-2
    h0 = noisy_topk_logits(logits, torch.full_like(logits, -60.0), 2, generator=gen(8))
    assert torch.isfinite(h0).nonzero()[:, 1].reshape(10, 2).sort(-1).values.tolist() == \
        logits.topk(2, -1).indices.sort(-1).values.tolist()


# ----------------------------------------------------------------------------------------
# Capacity and sorting
# ----------------------------------------------------------------------------------------


def test_expert_capacity_formula():
    assert expert_capacity(512, 8, 1, 1.0) == 64
    assert expert_capacity(512, 8, 1, 1.25) == 80
    assert expert_capacity(100, 10, 1, 1.1) == 11  # not 12: 11.000000000000002 is rounded first
    assert expert_capacity(100, 8, 2, 1.0) == 25
    assert expert_capacity(10, 4, 1, 1.0) == 3  # ceil(2.5)
    with pytest.raises(ValueError):
        expert_capacity(10, 4, 1, 0.0)


@pytest.mark.parametrize("capacity", [None, 1, 3, 8])
def test_capacity_keep_mask_counter(capacity):
    _, experts = route_topk(torch.randn(60, 5, generator=gen(9)), 2)
    keep = capacity_keep_mask(experts, 5, capacity)
    assert keep.dtype == torch.bool and keep.tolist() == ref_keep(experts.tolist(), capacity)


def test_sort_by_expert_groups_kept_assignments_stably():
    _, experts = route_topk(torch.randn(50, 6, generator=gen(10)), 2)
    keep = capacity_keep_mask(experts, 6, 9)
    token, slot, counts = sort_by_expert(experts, keep, 6)
    want = [(t, j) for e in range(6) for t in range(50) for j in range(2) if experts[t, j] == e and keep[t, j]]
    assert list(zip(token.tolist(), slot.tolist())) == want
    assert counts.tolist() == [sum(1 for t, j in want if experts[t, j] == e) for e in range(6)]


# ----------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("capacity_factor", [None, 0.5, 1.0, 1.25])
@pytest.mark.parametrize("k", [1, 2])
def test_moe_ffn_matches_per_token_reference(dispatch, capacity_factor, k):
    p = init_moe_params(12, 20, 6, generator=gen(11), dtype=torch.float64)
    x = torch.randn(48, 12, generator=gen(12), dtype=torch.float64)
    y, stats = moe_ffn(x, **p, k=k, capacity_factor=capacity_factor, dispatch=dispatch)
    torch.testing.assert_close(y, ref_moe(x, **p, k=k, capacity_factor=capacity_factor))
    assert int(stats["tokens_per_expert"].sum()) == 48 * k
    dropped = 1 - int(stats["kept_per_expert"].sum()) / (48 * k)
    assert abs(stats["dropped_fraction"] - dropped) < 1e-12
    if capacity_factor is None:
        assert stats["dropped_fraction"] == 0 and stats["capacity"] is None
    else:
        assert stats["capacity"] == math.ceil(round(capacity_factor * 48 * k / 6, 9))
        assert int(stats["kept_per_expert"].max()) <= stats["capacity"]


def test_moe_ffn_without_renormalization():
    p = init_moe_params(8, 16, 4, generator=gen(13), dtype=torch.float64)
    x = torch.randn(20, 8, generator=gen(14), dtype=torch.float64)
    y, _ = moe_ffn(x, **p, k=2, renormalize=False, dispatch="sorted")
    torch.testing.assert_close(y, ref_moe(x, **p, k=2, capacity_factor=None, renormalize=False))


def test_dispatches_agree_on_gradients():
    p = init_moe_params(10, 16, 4, generator=gen(15), dtype=torch.float64)
    x = torch.randn(30, 10, generator=gen(16), dtype=torch.float64)
    grads = {}
    for dispatch in DISPATCHES:
        leaves = {n: t.clone().requires_grad_() for n, t in p.items()}
        xx = x.clone().requires_grad_()
        y, stats = moe_ffn(xx, **leaves, k=2, capacity_factor=1.0, dispatch=dispatch)
        (y.square().sum() + stats["load_balancing_loss"] + stats["z_loss"]).backward()
        grads[dispatch] = [xx.grad] + [leaves[n].grad for n in p]
    for dispatch in ("einsum", "sorted"):
        for a, b in zip(grads[dispatch], grads["loop"]):
            torch.testing.assert_close(a, b)


def test_top1_no_capacity_equals_single_expert_times_gate():
    """With k = 1 and no renormalisation, y_t = p_{e_t} · expert_{e_t}(x_t) (Switch eq. 2)."""
    p = init_moe_params(8, 12, 3, generator=gen(17), dtype=torch.float64)
    x = torch.randn(15, 8, generator=gen(18), dtype=torch.float64)
    y, _ = moe_ffn(x, **p, k=1, renormalize=False)
    probs = torch.softmax(x @ p["router_weight"].t(), -1)
    e = probs.argmax(-1)
    want = torch.stack([probs[t, e[t]] * swiglu_expert(x[t:t + 1], p["w_gate"][e[t]], p["w_up"][e[t]],
                                                       p["w_down"][e[t]])[0] for t in range(15)])
    torch.testing.assert_close(y, want)


def test_moe_ffn_errors():
    p = init_moe_params(8, 12, 4, generator=gen(19))
    x = torch.randn(10, 8, generator=gen(20))
    with pytest.raises(ValueError, match="x must have shape"):
        moe_ffn(x[None], **p)
    with pytest.raises(ValueError, match="w_down"):
        moe_ffn(x, **{**p, "w_down": p["w_down"].transpose(1, 2)})
    with pytest.raises(TypeError, match="dtype"):
        moe_ffn(x.double(), **p)
    with pytest.raises(ValueError, match="dispatch"):
        moe_ffn(x, **p, dispatch="scatter")
    with pytest.raises(ValueError, match="k must be"):
        moe_ffn(x, **p, k=5)
    with pytest.raises(ValueError, match="tokens, experts"):
        route_topk(torch.randn(3, 4, 5), 1)


def test_moe_layer_parameters_and_forward():
    layer = MoELayer(8, 16, 4, 2, capacity_factor=1.25, seed=3)
    names = {n: tuple(t.shape) for n, t in layer.named_parameters()}
    assert names == {"router_weight": (4, 8), "w_gate": (4, 16, 8), "w_up": (4, 16, 8), "w_down": (4, 8, 16)}
    x = torch.randn(2, 5, 8, generator=gen(21))
    y, stats = layer(x)
    want, _ = moe_ffn(x.reshape(-1, 8), layer.router_weight, layer.w_gate, layer.w_up, layer.w_down, k=2,
                      capacity_factor=1.25)
    torch.testing.assert_close(y, want.reshape(2, 5, 8))
    y.sum().backward()
    assert layer.router_weight.grad is not None and layer.w_down.grad is not None
    with pytest.raises(ValueError, match="MoELayer expects"):
        layer(torch.randn(3, 7))


# ----------------------------------------------------------------------------------------
# Drop rates: closed form, Monte Carlo, the syllabus numbers
# ----------------------------------------------------------------------------------------


def test_expected_drop_fraction_syllabus_numbers():
    assert abs(expected_drop_fraction(512, 8, 64) - 0.047) < 0.001
    assert abs(expected_drop_fraction(512, 8, 80) - 0.0008) < 0.0002
    assert expected_drop_fraction(512, 8, 128) < 1e-10
    assert abs(expected_drop_fraction(4096, 64, 64) - 0.050) < 0.001


def test_expected_drop_fraction_matches_monte_carlo_and_brute_force():
    mc = drop_fraction_uniform(512, 8, 1, 1.0, trials=300, generator=gen(22))
    assert abs(mc - expected_drop_fraction(512, 8, 64)) < 0.004
    # tiny case by enumeration: 3 tokens, 2 experts, capacity 1
    total = 0
    for choice in range(8):
        loads = [sum((choice >> t) & 1 == e for t in range(3)) for e in range(2)]
        total += sum(max(0, n - 1) for n in loads)
    assert abs(expected_drop_fraction(3, 2, 1) - total / 8 / 3) < 1e-12


# ----------------------------------------------------------------------------------------
# Expert parallelism (threads; the 2-process gloo run is in test_moe_distributed.py)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 4])
def test_expert_parallel_threads_match_single_process(world):
    p = init_moe_params(8, 16, 8, generator=gen(23), dtype=torch.float64)
    per = 8 // world

    def fn(comm):
        x = torch.randn(10 + 3 * comm.rank, 8, generator=gen(100 + comm.rank), dtype=torch.float64)
        sl = slice(comm.rank * per, (comm.rank + 1) * per)
        y, info = expert_parallel_moe_ffn(x, p["router_weight"], p["w_gate"][sl], p["w_up"][sl], p["w_down"][sl],
                                          comm, k=2)
        return x, y, info, comm.bytes_sent

    results = run_threaded(world, fn)
    for x, y, info, _ in results:
        torch.testing.assert_close(y, ref_moe(x, **p, k=2, capacity_factor=None))
        assert sum(info["sent_rows"]) == 2 * x.shape[0]
    total_received = sum(sum(r[2]["received_rows"]) for r in results)
    assert total_received == sum(2 * r[0].shape[0] for r in results)


def test_expert_parallel_rejects_uneven_sharding():
    p = init_moe_params(8, 16, 6, generator=gen(24))

    def fn(comm):
        return expert_parallel_moe_ffn(torch.randn(4, 8), p["router_weight"], p["w_gate"][:1], p["w_up"][:1],
                                       p["w_down"][:1], comm)

    with pytest.raises(ValueError, match="evenly"):
        run_threaded(4, fn)


# ----------------------------------------------------------------------------------------
# Data and plot
# ----------------------------------------------------------------------------------------


def test_cluster_data_structure():
    x, y, cluster, centers, features = cluster_data(200, n_clusters=3, dim=16, n_patches=5, generator=gen(25))
    assert x.shape == (200, 5, 16) and y.shape == cluster.shape == (200,)
    torch.testing.assert_close(torch.cat([centers, features]) @ torch.cat([centers, features]).t(), torch.eye(6),
                               atol=1e-5, rtol=0)
    # every sample carries beta * its centre and alpha * y * its feature in some patch
    proj_c = torch.einsum("npd,nd->np", x, centers[cluster]).max(1).values
    proj_v = torch.einsum("npd,nd->np", x, features[cluster] * y[:, None]).max(1).values
    assert (proj_c > 1.5).all() and (proj_v > 0.5).all()


def test_plot_expert_load_draws():
    fig, ax = plt.subplots()
    out = plot_expert_load(torch.randn(64, 8, generator=gen(26)), 2, 1.0, temperature=0.5, ax=ax)
    assert out is ax and len(ax.patches) == 16
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# Experiment helpers
# ----------------------------------------------------------------------------------------


def test_centred_cosine_explicit():
    from companion.moe import centred_cosine

    r = torch.randn(5, 12, generator=gen(27), dtype=torch.float64)
    c = torch.randn(3, 12, generator=gen(28), dtype=torch.float64)
    rc, cc = r - r.mean(0), c - c.mean(0)
    want = torch.tensor([[float(rc[m] @ cc[k] / rc[m].norm() / cc[k].norm()) for k in range(3)] for m in range(5)],
                        dtype=torch.float64)
    torch.testing.assert_close(centred_cosine(r, c), want)
    torch.testing.assert_close(centred_cosine(c, c).diagonal(), torch.ones(3, dtype=torch.float64))


def test_cluster_moe_forward_per_sample_loop():
    from companion.moe import cluster_moe_forward

    x = torch.randn(6, 3, 8, generator=gen(29), dtype=torch.float64)
    router = torch.randn(4, 8, generator=gen(30), dtype=torch.float64)
    experts = torch.randn(4, 5, 8, generator=gen(31), dtype=torch.float64)
    out, chosen = cluster_moe_forward(x, router, experts)
    for n in range(6):
        h = router @ x[n].sum(0)
        p = torch.softmax(h, 0)
        m = int(h.argmax())
        f = sum(float(experts[m, j] @ x[n, q]) ** 3 for j in range(5) for q in range(3))
        assert int(chosen[n]) == m
        assert abs(float(out[n]) - float(p[m]) * f) < 1e-9


def test_train_balance_collapses_without_the_loss_and_not_with_it():
    from companion.moe import train_balance

    free = train_balance(0.0, steps=150, record_every=50)
    held = train_balance(0.2, steps=150, record_every=50)
    assert free["loads"].shape == (4, 8) and int(free["loads"][-1].sum()) == 256
    assert free["balance_loss"][-1] > 2.0 and (free["loads"][-1] == 0).sum() >= 4
    assert held["balance_loss"][-1] < 1.2 and (held["loads"][-1] > 0).all()


def test_train_cluster_moe_single_expert_fails_mixture_succeeds():
    from companion.moe import train_cluster_moe

    single = train_cluster_moe(1, n_train=600, n_test=600, steps=120)
    mixture = train_cluster_moe(8, n_train=600, n_test=600, steps=120)
    assert single["accuracy"] < 0.85 and mixture["accuracy"] > 0.95
    assert mixture["cosine"][-1] > 0.8 > mixture["cosine"][0]
    assert int(mixture["dispatch"].sum()) == 600
