"""companion.moe against independent references: per-token Python loops, closed forms, brute force.

Every expected value here is computed without the code under test: routing by
sorting each token's probabilities in Python, capacity by a running counter per
expert, the layer by a per-token, per-choice loop in float64, the balancing
loss by explicit sums, the drop rate by Monte Carlo and by the syllabus numbers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import companion.moe as cm  # noqa: E402
from companion.moe import (  # noqa: E402
    DISPATCHES,
    HAS_GROUPED_MM,
    MoELayer,
    capacity_keep_mask,
    cluster_data,
    dense_swiglu,
    drop_fraction_uniform,
    expected_drop_fraction,
    expert_capacity,
    expert_choice_route,
    expert_parallel_moe_ffn,
    fuse_gate_up,
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


def ref_moe_autograd(x, router_weight, w_gate, w_up, w_down, k, capacity_factor):
    """Per token, per choice, with torch scalars so autograd flows: y, and the two losses by explicit sums.

    Routing decisions (which experts, which assignments fit) are made in Python on detached
    values; the weights p_e / Σ_top p are computed from the token's own softmax, so their
    gradient reaches the router. Losses: E Σ_e f_e P_e and mean_t (log Σ_e exp h_te)², token by token.
    """
    n_tokens, n_experts = x.shape[0], router_weight.shape[0]
    cap = None if capacity_factor is None else math.ceil(round(capacity_factor * n_tokens * k / n_experts, 9))
    used = [0] * n_experts
    rows, probs, lse = [], [], []
    for t in range(n_tokens):
        h = torch.stack([router_weight[e] @ x[t] for e in range(n_experts)])
        z = torch.exp(h - h.max().detach())
        p = z / z.sum()
        probs.append(p)
        lse.append(torch.log(z.sum()) + h.max().detach())
        top = sorted(range(n_experts), key=lambda e: -float(p[e].detach()))[:k]
        total = sum(p[e] for e in top)
        y_t = torch.zeros_like(x[t])
        for e in top:
            if cap is None or used[e] < cap:
                g = w_gate[e] @ x[t]
                y_t = y_t + (p[e] / total) * (w_down[e] @ (g * torch.sigmoid(g) * (w_up[e] @ x[t])))
            used[e] += 1
        rows.append(y_t)
    f = [sum(1 for p in probs if e in sorted(range(n_experts), key=lambda i: -float(p[i].detach()))[:k]) / n_tokens
         for e in range(n_experts)]
    balance = n_experts * sum(f[e] * sum(p[e] for p in probs) / n_tokens for e in range(n_experts))
    z_loss = sum(v * v for v in lse) / n_tokens
    return torch.stack(rows), balance, z_loss


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


def test_noisy_topk_formula_with_the_sampled_noise():
    """H = h + ε · softplus(h_noise), ε the generator's N(0, 1) draw; -inf outside each row's top k."""
    logits = torch.randn(12, 7, generator=gen(40), dtype=torch.float64)
    noise_logits = torch.randn(12, 7, generator=gen(41), dtype=torch.float64) * 2
    got = noisy_topk_logits(logits, noise_logits, 3, generator=gen(42))
    eps = torch.randn(12, 7, generator=gen(42), dtype=torch.float64)  # the same draw
    for t in range(12):
        row = [float(logits[t, e]) + float(eps[t, e]) * math.log1p(math.exp(float(noise_logits[t, e])))
               for e in range(7)]
        top = sorted(range(7), key=lambda e: -row[e])[:3]
        for e in range(7):
            if e in top:
                assert abs(float(got[t, e]) - row[e]) < 1e-12
            else:
                assert got[t, e] == float("-inf")
    with pytest.raises(ValueError, match="noise_logits must have shape"):
        noisy_topk_logits(logits, noise_logits[:, :3], 2)


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


def test_capacity_keep_mask_and_sort_by_expert_check_ids():
    ids = torch.tensor([[0, 2], [1, 3]])
    keep = torch.ones(2, 2, dtype=torch.bool)
    for fn in (lambda e: capacity_keep_mask(e, 4, 1),
               lambda e: sort_by_expert(e, torch.ones(e.shape, dtype=torch.bool), 4)):
        with pytest.raises(TypeError, match="integer expert ids"):
            fn(ids.float())
        with pytest.raises(TypeError, match="integer expert ids"):
            fn(ids.bool())
        with pytest.raises(ValueError, match=r"\[0, 4\).*from 1 to 4"):
            fn(ids + 1)
        with pytest.raises(ValueError, match=r"from -1 to 2"):
            fn(ids - 1)
        with pytest.raises(ValueError, match=r"shape \(tokens, k\)"):
            fn(ids.reshape(-1))
    with pytest.raises(ValueError, match="keep must be a bool tensor"):
        sort_by_expert(ids, keep[:1], 4)
    with pytest.raises(ValueError, match="keep must be a bool tensor"):
        sort_by_expert(ids, keep.int(), 4)
    with pytest.raises(ValueError, match="capacity must be None or a non-negative int"):
        capacity_keep_mask(ids, 4, -1)
    # int32 ids are accepted and give the int64 answers
    assert capacity_keep_mask(ids.int(), 4, 1).tolist() == capacity_keep_mask(ids, 4, 1).tolist()
    assert [t.tolist() for t in sort_by_expert(ids.int(), keep, 4)] == \
        [t.tolist() for t in sort_by_expert(ids, keep, 4)]


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


@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_dispatch_gradients_match_per_token_autograd_reference(capacity_factor):
    """Every dispatch's gradients (x, router, experts) equal those of a per-token float64 loop."""
    p = init_moe_params(6, 10, 4, generator=gen(43), dtype=torch.float64)
    x = torch.randn(14, 6, generator=gen(44), dtype=torch.float64)
    probe = torch.randn(14, 6, generator=gen(45), dtype=torch.float64)  # a generic linear functional of y

    def grads(fn):
        leaves = {n: t.clone().requires_grad_() for n, t in p.items()}
        xx = x.clone().requires_grad_()
        y, balance, z_loss = fn(xx, leaves)
        ((y * probe).sum() + 0.3 * balance + 0.1 * z_loss).backward()
        return [xx.grad] + [leaves[n].grad for n in p]

    want = grads(lambda xx, lv: ref_moe_autograd(xx, **lv, k=2, capacity_factor=capacity_factor))

    def ours(dispatch):
        def fn(xx, lv):
            y, stats = moe_ffn(xx, **lv, k=2, capacity_factor=capacity_factor, dispatch=dispatch)
            return y, stats["load_balancing_loss"], stats["z_loss"]
        return fn

    for dispatch in DISPATCHES:
        for name, a, b in zip(["x", *p], grads(ours(dispatch)), want):
            torch.testing.assert_close(a, b, msg=lambda m, n=name, d=dispatch: f"d/d{n}, dispatch {d}: {m}")


def test_fused_gate_up_layout_is_detected_and_gives_the_same_y():
    p = init_moe_params(8, 12, 4, generator=gen(46), dtype=torch.float64)
    x = torch.randn(30, 8, generator=gen(47), dtype=torch.float64)
    wg, wu = fuse_gate_up(p["w_gate"], p["w_up"])
    assert torch.equal(wg, p["w_gate"]) and torch.equal(wu, p["w_up"])
    fused = cm._fused_gate_up(wg, wu)
    assert fused is not None and torch.equal(fused, torch.cat([p["w_gate"], p["w_up"]], 1))
    assert cm._fused_gate_up(p["w_gate"], p["w_up"]) is None  # separate tensors
    assert cm._fused_gate_up(wu, wg) is None  # halves swapped
    assert cm._fused_gate_up(wg.clone(), wu) is None
    want = ref_moe(x, **p, k=2, capacity_factor=1.0)
    with torch.no_grad():
        y_fused, s_fused = moe_ffn(x, **{**p, "w_gate": wg, "w_up": wu}, k=2, capacity_factor=1.0)
        y_plain, s_plain = moe_ffn(x, **p, k=2, capacity_factor=1.0)
    assert s_fused["expert_matmul"] == "per-expert torch.mm, gate and up fused"
    assert s_plain["expert_matmul"] == "per-expert torch.mm"
    torch.testing.assert_close(y_fused, want)
    torch.testing.assert_close(y_plain, want)
    # with autograd the fused view is not used (it would send w_up's gradient to w_gate)
    wg_leaf, wu_leaf = wg.clone().requires_grad_(), wu.clone().requires_grad_()
    y, stats = moe_ffn(x, p["router_weight"], wg_leaf, wu_leaf, p["w_down"], k=2, capacity_factor=1.0)
    assert stats["expert_matmul"] == "per-expert torch.mm"
    torch.testing.assert_close(y, want)
    with pytest.raises(ValueError, match="w_gate and w_up must both have shape"):
        fuse_gate_up(p["w_gate"], p["w_up"][:, :5])


def test_moe_layer_holds_the_fused_layout_and_trains():
    layer = MoELayer(8, 16, 4, 2, seed=4)
    assert cm._fused_gate_up(layer.w_gate, layer.w_up) is not None
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(40, 8, generator=gen(48))
    for _ in range(3):
        y, stats = layer(x)
        opt.zero_grad()
        (y.square().mean() + 0.01 * stats["load_balancing_loss"]).backward()
        opt.step()
    assert cm._fused_gate_up(layer.w_gate, layer.w_up) is not None  # in-place updates keep the layout
    with torch.no_grad():
        y, stats = layer(x)
        want, _ = moe_ffn(x, layer.router_weight, layer.w_gate.clone(), layer.w_up.clone(), layer.w_down,
                          k=2, dispatch="loop")
    assert stats["expert_matmul"] == "per-expert torch.mm, gate and up fused"
    torch.testing.assert_close(y, want)
    double = MoELayer(8, 16, 4, 2, seed=4).double()  # .double() copies each tensor: unfused, same y
    with torch.no_grad():
        y, stats = double(x.double())
    assert stats["expert_matmul"] == "per-expert torch.mm"
    torch.testing.assert_close(y, ref_moe(x.double(), double.router_weight, double.w_gate, double.w_up,
                                          double.w_down, k=2, capacity_factor=None))


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_moe_ffn_with_no_tokens(dispatch):
    p = init_moe_params(8, 12, 4, generator=gen(49))
    y, stats = moe_ffn(torch.zeros(0, 8), **p, k=2, capacity_factor=1.25, dispatch=dispatch)
    assert y.shape == (0, 8) and stats["dropped_fraction"] == 0.0
    assert stats["tokens_per_expert"].tolist() == [0, 0, 0, 0]


def test_moe_ffn_reports_its_path_and_grouped_policy():
    p = init_moe_params(8, 12, 4, generator=gen(50))
    x = torch.randn(20, 8, generator=gen(51))
    for dispatch, path in (("loop", "loop"), ("einsum", "einsum"), ("sorted", "per-expert torch.mm")):
        _, stats = moe_ffn(x, **p, dispatch=dispatch)
        assert stats["expert_matmul"] == path and stats["grouped_mm_error"] is None
    # auto never picks the grouped kernel on the CPU; True forces it, False forbids it
    assert not cm._grouped_mm_wanted(x, None) and not cm._grouped_mm_wanted(x, False)
    if HAS_GROUPED_MM:
        assert cm._grouped_mm_wanted(x, True)
    with pytest.raises(TypeError, match="grouped_mm must be None, True or False"):
        moe_ffn(x, **p, grouped_mm="yes")


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="this torch has no torch._grouped_mm")
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_grouped_mm_path_on_cpu_matches_the_loop(capacity_factor):
    """torch._grouped_mm runs on the CPU in this torch (float32): forced, it must equal the loop, gradients too."""
    p = init_moe_params(16, 24, 6, generator=gen(52))
    x = torch.randn(50, 16, generator=gen(53))
    x[:, 0] = 3.0
    p["router_weight"][5, 0] = -30.0  # expert 5's logit is about -90: an empty group in the kernel
    p["w_gate"], p["w_up"] = fuse_gate_up(p["w_gate"], p["w_up"])
    with torch.no_grad():
        y, stats = moe_ffn(x, **p, k=2, capacity_factor=capacity_factor, grouped_mm=True)
        want, _ = moe_ffn(x, **p, k=2, capacity_factor=capacity_factor, dispatch="loop")
    assert stats["expert_matmul"] == "torch._grouped_mm" and stats["grouped_mm_error"] is None
    assert int(stats["kept_per_expert"][5]) == 0
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    grads = {}
    for mode in ("grouped", "loop"):
        leaves = {n: t.detach().clone().requires_grad_() for n, t in p.items()}
        xx = x.clone().requires_grad_()
        kw = {"grouped_mm": True} if mode == "grouped" else {"dispatch": "loop"}
        y, stats = moe_ffn(xx, **leaves, k=2, capacity_factor=capacity_factor, **kw)
        (y * torch.linspace(-1, 1, 16)).sum().backward()
        grads[mode] = [xx.grad] + [leaves[n].grad for n in p]
    for a, b in zip(grads["grouped"], grads["loop"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError):  # float64 is not a grouped_mm dtype: forced, the error is not hidden
        moe_ffn(x.double(), **{n: t.double() for n, t in p.items()}, grouped_mm=True)


def test_grouped_mm_failure_in_auto_mode_falls_back_and_says_so(monkeypatch):
    p = init_moe_params(8, 12, 4, generator=gen(54))
    x = torch.randn(20, 8, generator=gen(55))

    def broken(*args, **kwargs):
        raise RuntimeError("grouped kernel unavailable for this input\nsecond line")

    monkeypatch.setattr(cm, "_grouped_mm_wanted", lambda x, grouped_mm: True)
    monkeypatch.setattr(torch, "_grouped_mm", broken, raising=False)
    y, stats = moe_ffn(x, **p)
    assert stats["expert_matmul"] == "per-expert torch.mm"
    assert stats["grouped_mm_error"] == "RuntimeError: grouped kernel unavailable for this input"
    torch.testing.assert_close(y, moe_ffn(x, **p, dispatch="loop")[0])
    with pytest.raises(RuntimeError, match="grouped kernel unavailable"):
        moe_ffn(x, **p, grouped_mm=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here: the GPU path is untested)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_grouped_mm_path_on_cuda_matches_the_loop(dtype):
    p = {n: t.to("cuda", dtype) for n, t in init_moe_params(64, 128, 8, generator=gen(56)).items()}
    p["w_gate"], p["w_up"] = fuse_gate_up(p["w_gate"], p["w_up"])
    x = torch.randn(256, 64, generator=gen(57)).to("cuda", dtype)
    with torch.no_grad():
        y, stats = moe_ffn(x, **p, k=2)
        want, _ = moe_ffn(x, **p, k=2, dispatch="loop")
    if HAS_GROUPED_MM:  # ran, or tried and recorded why not
        assert stats["expert_matmul"] == "torch._grouped_mm" or stats["grouped_mm_error"]
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(y.float(), want.float(), atol=tol, rtol=tol)


def test_dense_swiglu_per_row_formula():
    wg = torch.randn(7, 5, generator=gen(58), dtype=torch.float64)
    wu = torch.randn(7, 5, generator=gen(59), dtype=torch.float64)
    wd = torch.randn(5, 7, generator=gen(60), dtype=torch.float64)
    x = torch.randn(9, 5, generator=gen(61), dtype=torch.float64)
    got = dense_swiglu(x, wg, wu, wd)
    for t in range(9):
        xt = x[t].tolist()
        g = [sum(wg[i, j].item() * xt[j] for j in range(5)) for i in range(7)]
        u = [sum(wu[i, j].item() * xt[j] for j in range(5)) for i in range(7)]
        h = [gi / (1 + math.exp(-gi)) * ui for gi, ui in zip(g, u)]
        want = [sum(wd[o, i].item() * h[i] for i in range(7)) for o in range(5)]
        assert max(abs(a - b) for a, b in zip(got[t].tolist(), want)) < 1e-12
    with torch.no_grad():  # the in-place no-grad branch gives the same numbers
        torch.testing.assert_close(dense_swiglu(x, wg, wu, wd), got)


def test_init_moe_params_shapes_scales_and_seed():
    p = init_moe_params(64, 256, 8, generator=gen(62))
    assert {n: tuple(t.shape) for n, t in p.items()} == {
        "router_weight": (8, 64), "w_gate": (8, 256, 64), "w_up": (8, 256, 64), "w_down": (8, 64, 256)}
    assert all(t.dtype == torch.float32 for t in p.values())
    for name, fan_in in (("router_weight", 64), ("w_gate", 64), ("w_up", 64), ("w_down", 256)):
        std = p[name].double().std().item()
        n = p[name].numel()
        assert abs(std * math.sqrt(fan_in) - 1) < 4 / math.sqrt(2 * n) + 0.01, (name, std)  # a few s.e. of the std
        assert abs(p[name].double().mean().item()) < 4 / math.sqrt(fan_in * n)
    again = init_moe_params(64, 256, 8, generator=gen(62))
    assert all(torch.equal(p[n], again[n]) for n in p)
    other = init_moe_params(64, 256, 8, generator=gen(63))
    assert not torch.equal(p["w_gate"], other["w_gate"])
    assert not torch.equal(p["w_gate"], p["w_up"])
    q = init_moe_params(64, 256, 8, generator=gen(62), dtype=torch.float64, router_std=0.0)
    assert q["router_weight"].abs().max() == 0 and q["w_up"].dtype == torch.float64


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


def exact_drop_fraction(n_tokens: int, n_experts: int, capacity: int) -> Fraction:
    """The same expectation in exact rational arithmetic: (E/T) Σ_{n>C} C(T, n) (E-1)^(T-n) (n - C) / E^T."""
    num = sum(math.comb(n_tokens, n) * (n_experts - 1) ** (n_tokens - n) * (n - capacity)
              for n in range(capacity + 1, n_tokens + 1))
    return Fraction(n_experts * num, n_tokens * n_experts ** n_tokens)


@pytest.mark.parametrize("n_tokens, n_experts", [(512, 8), (4096, 64)])
def test_expected_drop_fraction_equals_exact_rational_sum(n_tokens, n_experts):
    for cf in (1.0, 1.25, 1.5, 2.0):
        capacity = expert_capacity(n_tokens, n_experts, 1, cf)
        want = exact_drop_fraction(n_tokens, n_experts, capacity)
        got = expected_drop_fraction(n_tokens, n_experts, capacity)
        assert abs(got - float(want)) <= 1e-12 + 1e-9 * float(want), (n_tokens, n_experts, cf, got, float(want))


def test_expected_drop_fraction_values_and_the_syllabus_numbers():
    """The exact values the notebook prints, and how they compare with the syllabus (4.7%, 0.08%, 0; 5.0%, 0.12%, 0)."""
    exact = {(t, e, cf): expected_drop_fraction(t, e, expert_capacity(t, e, 1, cf))
             for t, e in ((512, 8), (4096, 64)) for cf in (1.0, 1.25, 2.0)}
    assert [expert_capacity(t, e, 1, cf) for t, e in ((512, 8), (4096, 64)) for cf in (1.0, 1.25, 2.0)] == \
        [64, 80, 128] * 2
    assert abs(exact[512, 8, 1.0] - 0.046585) < 5e-7
    assert abs(exact[512, 8, 1.25] - 0.00084419) < 5e-9
    assert abs(exact[4096, 64, 1.0] - 0.049412) < 5e-7
    assert abs(exact[4096, 64, 1.25] - 0.0012713) < 5e-8
    for t, e in ((512, 8), (4096, 64)):  # capacity factor 2: 64 tokens over the mean load of 64; tiny, not 0
        assert 0 < exact[t, e, 2.0] < 1e-12
    # T = 512, E = 8: the syllabus's 4.7%, 0.08% and 0 are the exact values rounded
    assert (round(100 * exact[512, 8, 1.0], 1), round(100 * exact[512, 8, 1.25], 2)) == (4.7, 0.08)
    # T = 4096, E = 64: exact 4.94% and 0.127%, not the syllabus's 5.0% and 0.12%; the Poisson limit (E -> infinity
    # at T/E = 64) gives 4.98% and 0.134%, which round to 5.0% and 0.13%
    assert (round(100 * exact[4096, 64, 1.0], 1), round(100 * exact[4096, 64, 1.25], 2)) == (4.9, 0.13)

    def poisson(mean: float, capacity: int) -> float:
        return sum(math.exp(n * math.log(mean) - mean - math.lgamma(n + 1)) * (n - capacity)
                   for n in range(capacity + 1, 1000)) / mean

    assert round(100 * poisson(64, 64), 1) == 5.0 and abs(poisson(64, 80) - 0.00134) < 1e-5
    # the two settings share the mean load 64; the wider binomial (variance 63 vs 56) drops more
    assert exact[4096, 64, 1.0] > exact[512, 8, 1.0] and exact[4096, 64, 1.25] > exact[512, 8, 1.25]


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


@pytest.mark.parametrize("case", ["one_sided", "empty_rank", "all_empty"])
def test_expert_parallel_threads_with_empty_chunks(case):
    """A rank that sends nothing to another, a rank with no tokens, no tokens at all: the single-process output."""
    p = init_moe_params(8, 16, 4, generator=gen(64), dtype=torch.float64)
    if case == "one_sided":  # feature 0 is 4 everywhere; experts 2, 3 (rank 1) lose by 80 logits
        p["router_weight"][:2, 0], p["router_weight"][2:, 0] = 10.0, -10.0

    def fn(comm):
        n = {"one_sided": 9 + comm.rank, "empty_rank": 12 * (1 - comm.rank), "all_empty": 0}[case]
        x = torch.randn(n, 8, generator=gen(200 + comm.rank), dtype=torch.float64)
        if case == "one_sided":
            x[:, 0] = 4.0
        sl = slice(2 * comm.rank, 2 * comm.rank + 2)
        y, info = expert_parallel_moe_ffn(x, p["router_weight"], p["w_gate"][sl], p["w_up"][sl], p["w_down"][sl],
                                          comm, k=2)
        return x, y, info

    results = run_threaded(2, fn)
    for x, y, _ in results:
        assert y.shape == x.shape
        torch.testing.assert_close(y, ref_moe(x, **p, k=2, capacity_factor=None))
    sent = [r[2]["sent_rows"] for r in results]
    if case == "one_sided":
        assert sent == [[18, 0], [20, 0]] and results[1][2]["received_rows"] == [0, 0]
    elif case == "empty_rank":
        assert sent[1] == [0, 0] and sum(results[1][2]["received_rows"]) == sent[0][1]
    else:
        assert sent == [[0, 0], [0, 0]]


def test_expert_parallel_checks_shapes():
    p = init_moe_params(8, 16, 4, generator=gen(65))

    def call(x, **over):
        args = {"router_weight": p["router_weight"], "w_gate": p["w_gate"][:2], "w_up": p["w_up"][:2],
                "w_down": p["w_down"][:2], **over}
        return run_threaded(2, lambda comm: expert_parallel_moe_ffn(x, comm=comm, **args))

    with pytest.raises(ValueError, match=r"x must have shape \(tokens, 8\).*got \(5, 7\)"):
        call(torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"x must have shape \(tokens, 8\).*got \(2, 5, 8\)"):
        call(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"w_up must have shape \(2, 16, 8\)"):
        call(torch.randn(5, 8), w_up=p["w_up"][:2, :8])
    with pytest.raises(ValueError, match=r"w_down must have shape \(2, 8, 16\)"):
        call(torch.randn(5, 8), w_down=p["w_gate"][:2])
    with pytest.raises(ValueError, match=r"each rank must hold 2 experts"):
        call(torch.randn(5, 8), w_gate=p["w_gate"][:1])


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


def test_plot_expert_load_draws_the_loads():
    """Bar heights are the kept and dropped assignments of a Python re-count; lines at T·k/E and C."""
    logits = torch.randn(64, 8, generator=gen(26), dtype=torch.float64) - 0.3 * torch.arange(8.0, dtype=torch.float64)
    for k, cf, temperature in ((2, 1.0, 0.5), (1, 1.25, 1.0), (2, None, 2.0)):
        fig, ax = plt.subplots()
        out = plot_expert_load(logits, k, cf, temperature=temperature, ax=ax)
        _, experts = ref_route(logits / temperature, k, True)
        cap = None if cf is None else math.ceil(round(cf * 64 * k / 8, 9))
        keep = ref_keep(experts, cap)
        kept = [sum(1 for t in range(64) for j in range(k) if experts[t][j] == e and keep[t][j]) for e in range(8)]
        dropped = [sum(1 for t in range(64) for j in range(k) if experts[t][j] == e and not keep[t][j])
                   for e in range(8)]
        assert out is ax and len(ax.patches) == 16
        blue, red = ax.patches[:8], ax.patches[8:]  # kept bars first, then dropped bars stacked on them
        assert all(matplotlib.colors.same_color(r.get_facecolor(), "tab:blue") for r in blue)
        assert all(matplotlib.colors.same_color(r.get_facecolor(), "tab:red") for r in red)
        assert [round(r.get_x() + r.get_width() / 2) for r in blue] == list(range(8))
        assert [round(r.get_height()) for r in blue] == kept
        assert [round(r.get_height()) for r in red] == dropped and [round(r.get_y()) for r in red] == kept
        assert sum(kept) + sum(dropped) == 64 * k
        levels = sorted(round(line.get_ydata()[0], 6) for line in ax.lines)
        assert levels == sorted([round(64 * k / 8, 6)] + ([cap] if cap is not None else []))
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
