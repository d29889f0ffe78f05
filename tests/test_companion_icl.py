"""companion.icl against independent references: closed forms, explicit per-token sums, lstsq, Monte Carlo.

Each expected value is computed without the function under test: gradient descent against its closed form
``w_T = (I - (I - (eta/n) S)^T) S^{-1} X^T y`` (``S = X^T X``), the LSA layer against a per-token double
loop over von Oswald et al.'s eq. 5, ridge and min-norm OLS against ``torch.linalg.lstsq`` (``gelsd``, which
returns the minimum-norm solution), the risk formulas against Monte Carlo averages.
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from companion.icl import (  # noqa: E402
    LinearSelfAttention,
    LoopedTransformer,
    corner_map,
    effective_preconditioner,
    gaussian_gram_condition_number,
    gd_contraction,
    gd_lsa,
    gd_predict,
    icl_predict,
    iterate_map,
    looped_gd,
    lsa_masks,
    lsa_products,
    make_prompt,
    ols_risk_gaussian,
    one_step_risk_gaussian,
    optimal_eta_gaussian,
    plot_icl_loops,
    plot_lsa_matrices,
    ridge_predict,
    sample_icl_batch,
    sample_regression_tasks,
    train_lsa,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: on a busy 2-core machine two threads make each op ~10x slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gd_closed_form(X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, eta: float, T: int) -> torch.Tensor:
    """w_T = (I - (I - (eta/n) S)^T) S^{-1} X^T y for S = X^T X invertible (n >= d), one prompt."""
    n, d = X.shape
    S = X.T @ X
    M = torch.linalg.matrix_power(torch.eye(d, dtype=X.dtype) - (eta / n) * S, T)
    w = (torch.eye(d, dtype=X.dtype) - M) @ torch.linalg.solve(S, X.T @ y)
    return w @ xq


def lsa_by_hand(Z: torch.Tensor, P, WK, WQ, WV) -> torch.Tensor:
    """von Oswald et al. eq. 5 with 1/n, token by token: e_j + (1/n) P sum_i W_V e_i (W_K e_i)^T W_Q e_j."""
    n = Z.shape[0] - 1
    out = Z.clone()
    for j in range(n + 1):
        acc = torch.zeros(Z.shape[1], dtype=Z.dtype)
        for i in range(n):
            acc += (WV @ Z[i]) * float((WK @ Z[i]) @ (WQ @ Z[j]))
        out[j] = Z[j] + (P @ acc) / n
    return out


# ------------------------------------------------------------------------------------------ data


def test_sample_regression_tasks_shapes_labels_and_determinism():
    X, y, w = sample_regression_tasks(3, 7, 4, generator=gen(1))
    assert X.shape == (3, 7, 4) and y.shape == (3, 7) and w.shape == (3, 4)
    assert X.dtype == torch.float32
    torch.testing.assert_close(y, torch.einsum("bnd,bd->bn", X, w), atol=1e-5, rtol=1e-5)
    X2, y2, w2 = sample_regression_tasks(3, 7, 4, generator=gen(1))
    assert torch.equal(X, X2) and torch.equal(y, y2) and torch.equal(w, w2)
    Xu, _, _ = sample_regression_tasks(2, 500, 3, x_dist="uniform", generator=gen(2), dtype=F64)
    assert Xu.min() >= -1 and Xu.max() <= 1 and Xu.min() < -0.99 and Xu.max() > 0.99
    _, yn, _ = sample_regression_tasks(2, 5, 3, noise_std=0.5, generator=gen(3))
    Xn, _, wn = sample_regression_tasks(2, 5, 3, generator=gen(3))
    assert not torch.allclose(yn, torch.einsum("bnd,bd->bn", Xn, wn))


def test_condition_number_of_covariance():
    X, _, _ = sample_regression_tasks(1, 200_000, 5, condition_number=50.0, generator=gen(4), dtype=F64)
    cov = X[0].T @ X[0] / X.shape[1]
    eig = torch.linalg.eigvalsh(cov)
    assert abs(eig.max() / eig.min() / 50.0 - 1) < 0.05
    assert abs(eig.max().item() - 1) < 0.02  # largest eigenvalue 1


def test_sample_errors():
    with pytest.raises(ValueError, match="x_dist"):
        sample_regression_tasks(1, 2, 2, x_dist="cauchy")
    with pytest.raises(ValueError, match="condition_number"):
        sample_regression_tasks(1, 2, 2, condition_number=0.5)
    with pytest.raises(ValueError, match="d >= 2"):
        sample_regression_tasks(1, 4, 1, condition_number=10.0)  # one eigenvalue: no spectrum to skew
    X1, _, _ = sample_regression_tasks(1, 4, 1, condition_number=1.0, generator=gen(5))
    assert X1.shape == (1, 4, 1)
    with pytest.raises(ValueError, match="noise_std"):
        sample_icl_batch(1, 2, 2, noise_std=-0.1)
    with pytest.raises(TypeError):
        sample_icl_batch(1, 2, 2, nosie_std=0.1)  # a misspelt keyword is an error, not silently dropped
    X, y, xq, yq, w = sample_icl_batch(4, 6, 3, generator=gen(5))
    assert X.shape == (4, 6, 3) and y.shape == (4, 6) and xq.shape == (4, 3) and yq.shape == (4,)
    torch.testing.assert_close(yq, (xq * w).sum(-1))
    # noise goes into the context labels only; the query target stays <w, x_query>
    Xn, yn, xqn, yqn, wn = sample_icl_batch(4, 6, 3, noise_std=0.5, generator=gen(5), dtype=F64)
    torch.testing.assert_close(yqn, (xqn * wn).sum(-1))
    assert (yn - torch.einsum("bnd,bd->bn", Xn, wn)).abs().max() > 0.05


# ------------------------------------------------------------------------------------------ GD and ridge


@pytest.mark.parametrize("T", [0, 1, 2, 7])
def test_gd_predict_matches_closed_form(T):
    X, y, xq, _, _ = sample_icl_batch(5, 12, 4, generator=gen(6), dtype=F64)
    got = gd_predict(X, y, xq, eta=0.6, steps=T)
    want = torch.stack([gd_closed_form(X[b], y[b], xq[b], 0.6, T) for b in range(5)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_gd_one_step_is_eta_over_n_Xty_and_w0():
    X, y, xq, _, _ = sample_icl_batch(3, 9, 5, generator=gen(7), dtype=F64)
    w1 = (0.9 / 9) * torch.einsum("bnd,bn->bd", X, y)
    torch.testing.assert_close(gd_predict(X, y, xq, eta=0.9), (w1 * xq).sum(-1))
    w0 = torch.randn(3, 5, generator=gen(8), dtype=F64)
    w = w0 - (0.9 / 9) * torch.einsum("bnd,bn->bd", X, torch.einsum("bnd,bd->bn", X, w0) - y)
    torch.testing.assert_close(gd_predict(X, y, xq, eta=0.9, w0=w0), (w * xq).sum(-1))


def test_gd_predict_errors():
    X, y, xq, _, _ = sample_icl_batch(2, 4, 3, generator=gen(9))
    with pytest.raises(ValueError, match="y must have shape"):
        gd_predict(X, y[:, :3], xq, eta=0.1)
    with pytest.raises(ValueError, match="x_query"):
        gd_predict(X, y, xq[:, :2], eta=0.1)
    with pytest.raises(TypeError, match="floating"):
        gd_predict(X.long(), y, xq, eta=0.1)
    with pytest.raises(TypeError, match="one dtype"):
        gd_predict(X.double(), y, xq, eta=0.1)
    with pytest.raises(ValueError, match="w0 must have shape"):
        gd_predict(X, y, xq, eta=0.1, w0=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="w0 must have shape"):
        gd_predict(X, y, xq, eta=0.1, w0=torch.zeros(5, 3))
    with pytest.raises(TypeError, match="w0 must have the dtype"):
        gd_predict(X, y, xq, eta=0.1, w0=torch.zeros(3, dtype=F64))
    w0 = torch.tensor([0.3, -0.2, 0.5])  # (d,): one start for every prompt
    torch.testing.assert_close(gd_predict(X, y, xq, eta=0.1, steps=2, w0=w0),
                               gd_predict(X, y, xq, eta=0.1, steps=2, w0=w0.expand(2, 3)))


@pytest.mark.parametrize("n", [3, 8, 20])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_ridge_against_lstsq(n, lam):
    X, y, xq, _, _ = sample_icl_batch(4, n, 8, noise_std=0.3, generator=gen(10), dtype=F64)
    got = ridge_predict(X, y, xq, lam=lam)
    want = []
    for b in range(4):
        A = torch.cat((X[b], math.sqrt(lam) * torch.eye(8, dtype=F64))) if lam else X[b]
        rhs = torch.cat((y[b], torch.zeros(8, dtype=F64))) if lam else y[b]
        w = torch.linalg.lstsq(A, rhs.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
        want.append(w @ xq[b])
    torch.testing.assert_close(got, torch.stack(want), atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------------------------------ LSA


def test_make_prompt_layout():
    X, y, xq, _, _ = sample_icl_batch(2, 3, 4, generator=gen(11))
    Z = make_prompt(X, y, xq)
    assert Z.shape == (2, 4, 5)
    assert torch.equal(Z[:, :3, :4], X) and torch.equal(Z[:, :3, 4], y)
    assert torch.equal(Z[:, 3, :4], xq) and torch.equal(Z[:, 3, 4], torch.zeros(2))


@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_lsa_against_per_token_sum(order):
    layer = LinearSelfAttention(3, init_std=0.7, generator=gen(12), dtype=F64)
    Z = torch.randn(2, 6, 4, generator=gen(13), dtype=F64)  # query label slot nonzero: exclusion matters
    got = layer(Z, order=order)
    P, K, Q, V = (p.detach() for p in (layer.P, layer.W_K, layer.W_Q, layer.W_V))
    want = torch.stack([lsa_by_hand(Z[b], P, K, Q, V) for b in range(2)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_lsa_errors():
    layer = LinearSelfAttention(3)
    with pytest.raises(ValueError, match="shape"):
        layer(torch.zeros(2, 5, 3))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.zeros(2, 5, 4, dtype=F64))
    with pytest.raises(ValueError, match="order"):
        layer(torch.zeros(2, 5, 4), order="cubic")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (F64, 1e-12)])
def test_construction_is_one_gd_step(dtype, tol):
    X, y, xq, _, _ = sample_icl_batch(256, 10, 5, x_dist="uniform", generator=gen(14), dtype=dtype)
    got = icl_predict(gd_lsa(5, 1.3, dtype=dtype), X, y, xq)
    want = (1.3 / 10) * torch.einsum("bnd,bn,bd->b", X.to(F64), y.to(F64), xq.to(F64))  # closed form, float64
    torch.testing.assert_close(got.to(F64), want, atol=tol, rtol=0)
    torch.testing.assert_close(got, gd_predict(X, y, xq, eta=1.3, steps=1), atol=tol, rtol=0)


@pytest.mark.parametrize("T", [2, 5, 12])
def test_looped_construction_is_T_gd_steps(T):
    X, y, xq, _, _ = sample_icl_batch(64, 20, 5, generator=gen(15), dtype=F64)
    got = icl_predict(looped_gd(5, 0.8, T, dtype=F64), X, y, xq)
    want = torch.stack([gd_closed_form(X[b], y[b], xq[b], 0.8, T) for b in range(64)])
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # context tokens hold the residuals y_i - <w_T, x_i>
    Z = looped_gd(5, 0.8, T, dtype=F64)(make_prompt(X, y, xq))
    preds_ctx = torch.stack([torch.stack([gd_closed_form(X[b], y[b], X[b, i], 0.8, T) for i in range(20)])
                             for b in range(4)])
    torch.testing.assert_close(Z[:4, :20, -1], y[:4] - preds_ctx, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(Z[..., :-1], make_prompt(X, y, xq)[..., :-1])  # x slots untouched


def test_looped_float32_and_zero_loops():
    X, y, xq, _, _ = sample_icl_batch(128, 16, 6, generator=gen(16))
    got = icl_predict(looped_gd(6, 0.7, 6), X, y, xq)
    torch.testing.assert_close(got, gd_predict(X, y, xq, eta=0.7, steps=6), atol=1e-5, rtol=1e-5)
    assert torch.equal(icl_predict(LoopedTransformer(gd_lsa(6, 0.7), 0), X, y, xq), torch.zeros(128))
    with pytest.raises(ValueError, match="loops"):
        LoopedTransformer(gd_lsa(2, 0.1), -1)


def test_products_and_effective_preconditioner():
    layer = gd_lsa(4, 0.9, dtype=F64)
    pv, kq = lsa_products(layer)
    want_pv = torch.zeros(5, 5, dtype=F64)
    want_pv[4, 4] = -0.9
    torch.testing.assert_close(pv, want_pv)
    torch.testing.assert_close(effective_preconditioner(layer), 0.9 * torch.eye(4, dtype=F64))
    # a random layer: Gamma reproduces the label-odd part of its prediction, (f(X, y) - f(X, -y)) / 2
    rnd = LinearSelfAttention(3, init_std=0.5, generator=gen(17), dtype=F64)
    X, y, xq, _, _ = sample_icl_batch(8, 7, 3, generator=gen(18), dtype=F64)
    G = effective_preconditioner(rnd)
    want = torch.einsum("bn,bnd,de,be->b", y, X, G, xq) / 7
    with torch.no_grad():
        odd = (icl_predict(rnd, X, y, xq) - icl_predict(rnd, X, -y, xq)) / 2
    torch.testing.assert_close(odd, want, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------------------------------ theory


def test_optimal_eta_and_one_step_risk_monte_carlo():
    n, d, s2 = 10, 5, 0.25
    X, y, xq, yq, _ = sample_icl_batch(400_000, n, d, noise_std=math.sqrt(s2), generator=gen(19), dtype=F64)
    for eta in (0.3, optimal_eta_gaussian(n, d, s2), 1.0):
        mc = ((gd_predict(X, y, xq, eta=eta) - yq) ** 2).mean().item()
        assert abs(mc / one_step_risk_gaussian(n, d, eta, s2) - 1) < 0.02
    assert optimal_eta_gaussian(n, d, s2) == pytest.approx(n / (n + d + 1 + s2))
    assert one_step_risk_gaussian(n, d, optimal_eta_gaussian(n, d)) == pytest.approx(d * (d + 1) / (n + d + 1))


@pytest.mark.parametrize("n", [4, 16])
def test_ols_risk_monte_carlo(n):
    d, s2 = 10, 0.25
    X, y, xq, yq, _ = sample_icl_batch(100_000, n, d, noise_std=math.sqrt(s2), generator=gen(20), dtype=F64)
    mc = ((ridge_predict(X, y, xq, lam=0.0) - yq) ** 2).mean().item()
    assert abs(mc / ols_risk_gaussian(n, d, s2) - 1) < 0.05
    assert ols_risk_gaussian(d, d, s2) == math.inf


def test_gram_condition_number_and_contraction():
    X = torch.randn(1, 4 * 300, 300, generator=gen(21), dtype=F64)
    eig = torch.linalg.eigvalsh(X[0].T @ X[0])
    assert abs((eig.max() / eig.min()).item() / gaussian_gram_condition_number(4.0) - 1) < 0.1
    assert gaussian_gram_condition_number(4.0) == pytest.approx(9.0)
    Xs = torch.randn(6, 15, 4, generator=gen(22), dtype=F64)
    M = torch.eye(4, dtype=F64) - (0.7 / 15) * Xs.transpose(-1, -2) @ Xs
    torch.testing.assert_close(gd_contraction(Xs, 0.7), torch.linalg.matrix_norm(M, ord=2))
    with pytest.raises(ValueError, match="shape"):
        gd_contraction(torch.zeros(4, dtype=F64), 0.5)
    with pytest.raises(TypeError, match="floating"):
        gd_contraction(torch.zeros(3, 4, dtype=torch.long), 0.5)


# ------------------------------------------------------------------------------------------ training, fixed points


def _tuned_gd(X, y, xq, yq, steps: int) -> float:
    """1/2 MSE of `steps` GD steps at the best eta on a fine grid, from the closed form (independent of gd_predict):
    w_T = [I - (I - eta A)^T] A^{-1} b = sum_k C(T, k) (-1)^(k+1) eta^k A^(k-1) b, with A = X^T X / n, b = X^T y / n,
    so the prediction is a polynomial in eta whose coefficients are computed once."""
    n = X.shape[-2]
    A = X.transpose(-1, -2) @ X / n
    v = torch.einsum("bnd,bn->bd", X, y) / n
    coef = []
    for k in range(1, steps + 1):
        coef.append(math.comb(steps, k) * (-1) ** (k + 1) * (v * xq).sum(-1))  # x_q^T A^(k-1) b
        v = torch.einsum("bij,bj->bi", A, v)
    etas = torch.linspace(0.05, 2.5, 491, dtype=F64)
    preds = sum(c[None, :] * etas[:, None] ** (k + 1) for k, c in enumerate(coef))
    return (0.5 * ((preds - yq) ** 2).mean(-1)).min().item()


def _half_mse(model, X, y, xq, yq) -> float:
    with torch.no_grad():
        return 0.5 * ((icl_predict(model, X.float(), y.float(), xq.float()).double() - yq) ** 2).mean().item()


@pytest.mark.parametrize("seed", range(6))
def test_train_lsa_learns_one_gd_step_every_seed(seed):
    """The reviewer's setting (d = 5, n = 10, Gaussian, 150 steps, batch 256, lr 3e-2): seeds 0-5 used to give
    MSE/optimum 2.29, 1.02, 1.12, 1.02, 1.01, 1.02. Every seed must now land within 3% of tuned one-step GD."""
    model, hist = train_lsa(5, 10, steps=150, batch=256, lr=3e-2, x_dist="gaussian", seed=seed)
    assert len(hist) == 150 and sum(hist[-10:]) / 10 < 0.6 * sum(hist[:10]) / 10
    X, y, xq, yq, _ = sample_icl_batch(50_000, 10, 5, generator=gen(23), dtype=F64)
    slope = ((gd_predict(X, y, xq, eta=1.0) * yq).sum() / (gd_predict(X, y, xq, eta=1.0) ** 2).sum()).item()
    tuned = 0.5 * ((gd_predict(X, y, xq, eta=slope) - yq) ** 2).mean().item()  # exact best eta on this sample
    assert abs(tuned / (0.5 * one_step_risk_gaussian(10, 5, optimal_eta_gaussian(10, 5))) - 1) < 0.03
    assert _half_mse(model, X, y, xq, yq) < 1.03 * tuned
    eta = effective_preconditioner(model).trace().item() / 5
    assert abs(eta - optimal_eta_gaussian(10, 5)) < 0.05
    pv, kq = lsa_products(model)
    assert pv[5, :5].abs().max() == 0 and kq[5, :5].abs().max() == 0  # label_odd: the cross blocks stay zero


def test_train_lsa_reviewer_cases_n20():
    """d = 5, n = 20, seed 0 at the defaults used to stay at 1/2 MSE 1.80 (optimum ~0.58); 3 loops at 2.56, worse
    than the zero predictor (2.49). Now: one layer within 3% of tuned one-step GD, three loops far below it."""
    X, y, xq, yq, _ = sample_icl_batch(20_000, 20, 5, generator=gen(24), dtype=F64)
    one = _tuned_gd(X, y, xq, yq, 1)
    model, _ = train_lsa(5, 20, x_dist="gaussian", seed=0, steps=200, batch=256)
    assert _half_mse(model, X, y, xq, yq) < 1.03 * one
    looped, _ = train_lsa(5, 20, x_dist="gaussian", seed=0, loops=3, steps=200, batch=256)
    assert _half_mse(looped, X, y, xq, yq) < _tuned_gd(X, y, xq, yq, 3) < 0.5 * one


@pytest.mark.parametrize("seed", range(3))
def test_train_looped_lsa_learns_multistep_gd(seed):
    """Two loops, uniform x: the "pgd" family reaches tuned two-step GD (Gatmiry et al.'s global minimum) with an
    effective preconditioner ~ eta I; the "label_odd" layer, free to rewrite the x slots, beats it (GD++). Both
    beat the best one step."""
    d, n = 5, 10
    X, y, xq, yq, _ = sample_icl_batch(20_000, n, d, x_dist="uniform", generator=gen(25), dtype=F64)
    one, two = _tuned_gd(X, y, xq, yq, 1), _tuned_gd(X, y, xq, yq, 2)
    pgd, _ = train_lsa(d, n, loops=2, parameterization="pgd", steps=150, batch=256, seed=seed)
    odd, _ = train_lsa(d, n, loops=2, steps=150, batch=256, seed=seed)
    assert isinstance(pgd, LoopedTransformer) and pgd.loops == 2
    r_pgd, r_odd = _half_mse(pgd, X, y, xq, yq), _half_mse(odd, X, y, xq, yq)
    assert r_pgd < 1.03 * two and r_odd < two < one, (r_pgd, r_odd, two, one)
    G = effective_preconditioner(pgd.layer)
    assert (G - torch.diag(torch.diagonal(G))).abs().max() < 0.2 * torch.diagonal(G).min()
    pv, kq = lsa_products(pgd.layer)
    assert pv[:d].abs().max() == 0 and kq[d].abs().max() == 0 and kq[:, d].abs().max() == 0  # x slots never move


def test_train_lsa_errors():
    with pytest.raises(ValueError, match="loops must be >= 1"):
        train_lsa(3, 8, steps=2, batch=8, loops=0)
    with pytest.raises(ValueError, match="init_std"):
        train_lsa(3, 8, steps=2, batch=8, init_std=0.0)
    with pytest.raises(ValueError, match="parameterization"):
        train_lsa(3, 8, steps=2, batch=8, parameterization="diagonal")
    with pytest.raises(ValueError, match="clip"):
        train_lsa(3, 8, steps=2, batch=8, clip=-1.0)
    with pytest.raises(ValueError, match="steps"):
        train_lsa(3, 8, steps=0, batch=8)


def test_train_looped_is_deterministic():
    m1, h1 = train_lsa(3, 8, steps=5, batch=32, loops=2, seed=3)
    m2, h2 = train_lsa(3, 8, steps=5, batch=32, loops=2, seed=3)
    assert isinstance(m1, LoopedTransformer) and h1 == h2


def test_lsa_masks_label_odd_commutes_with_label_flip():
    """A "label_odd" layer maps S Z to S f(Z), S = diag(1, ..., 1, -1) (flip every label); a "full" one does not."""
    S = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64))
    Z = torch.randn(5, 7, 4, generator=gen(26), dtype=F64)
    for par, commutes in (("label_odd", True), ("full", False)):
        layer = LinearSelfAttention(3, init_std=0.6, generator=gen(27), dtype=F64)
        with torch.no_grad():
            for name, m in lsa_masks(3, par).items():
                getattr(layer, name).mul_(m.to(F64))
            gap = (layer(Z @ S) - layer(Z) @ S).abs().max().item()
        assert (gap < 1e-12) == commutes, (par, gap)
    with pytest.raises(ValueError, match="parameterization"):
        lsa_masks(3, "sparse")


@pytest.mark.parametrize("T", [1, 3])
def test_lsa_masks_pgd_is_preconditioned_gd(T):
    """A random layer in the "pgd" family, looped T times, is T steps of preconditioned GD computed here by hand:
    w <- w - (1/n) Gamma^T X^T (X w - y) with Gamma = -P_dd W_V,dd W_K,x^T W_Q,x (so y_hat_1 = y^T X Gamma x_q / n)."""
    d, n = 4, 9
    layer = LinearSelfAttention(d, init_std=0.7, generator=gen(28), dtype=F64)
    with torch.no_grad():
        for name, m in lsa_masks(d, "pgd").items():
            getattr(layer, name).mul_(m.to(F64))
    P, WK, WQ, WV = (p.detach() for p in (layer.P, layer.W_K, layer.W_Q, layer.W_V))
    Gamma = -P[d, d] * WV[d, d] * WK[:d, :d].T @ WQ[:d, :d]
    X, y, xq, _, _ = sample_icl_batch(6, n, d, generator=gen(29), dtype=F64)
    w = torch.zeros(6, d, dtype=F64)
    for _ in range(T):
        w = w - torch.einsum("ed,be->bd", Gamma, torch.einsum("bnd,bn->bd", X, torch.einsum("bnd,bd->bn", X, w) - y)) / n
    with torch.no_grad():
        got = icl_predict(LoopedTransformer(layer, T), X, y, xq)
    torch.testing.assert_close(got, (w * xq).sum(-1), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(effective_preconditioner(layer), Gamma, atol=1e-12, rtol=1e-12)


def test_corner_map_fixed_points():
    x0 = 1.7 * (2 * torch.rand(4096, 6, generator=gen(24), dtype=F64) - 1)
    x = iterate_map(corner_map, x0, 40)
    torch.testing.assert_close(x, torch.sign(x0))
    assert len({tuple(r.tolist()) for r in x}) == 2 ** 6
    for v in (-1.0, 0.0, 1.0):
        assert corner_map(torch.tensor(v)).item() == v


def test_plots_run():
    import matplotlib.pyplot as plt

    ax = plot_icl_loops(0.7, 5.0, 4, n=20, d=4, batch=16)
    assert len(ax.lines) == 3
    gd_line, lsa_line = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    X, y, xq, yq, _ = sample_icl_batch(16, 20, 4, condition_number=5.0, generator=gen(0), dtype=F64)
    for t in (0, 2, 4):  # the plotted GD errors are those of gd_predict, and the LSA line matches them
        want = ((gd_predict(X, y, xq, eta=0.7, steps=t) - yq) ** 2).median().item()
        assert gd_line[t] == pytest.approx(want, rel=1e-9) and lsa_line[t] == pytest.approx(want, rel=1e-9)
    axes = plot_lsa_matrices(gd_lsa(3, 0.5))
    assert len(axes) == 2
    plt.close("all")
