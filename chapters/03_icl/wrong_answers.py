"""Plausible wrong answers for chapter 03: each must lose its exercise's points (tests/test_graders.py)."""

WRONG_ANSWERS = {
    "make_prompt": {
        # label first, as in some papers' (y, x) layouts: the construction then reads the wrong coordinate
        "label_first": '''
def make_prompt(X, y, x_query):
    context = torch.cat((y.unsqueeze(-1), X), dim=-1)
    query = torch.cat((torch.zeros_like(x_query[..., :1]), x_query), dim=-1)
    return torch.cat((context, query.unsqueeze(-2)), dim=-2)
''',
        "query_first": '''
def make_prompt(X, y, x_query):
    context = torch.cat((X, y.unsqueeze(-1)), dim=-1)
    query = torch.cat((x_query, torch.zeros_like(x_query[..., :1])), dim=-1)
    return torch.cat((query.unsqueeze(-2), context), dim=-2)
''',
        # an "unknown" label filled with 1 instead of 0
        "query_label_one": '''
def make_prompt(X, y, x_query):
    context = torch.cat((X, y.unsqueeze(-1)), dim=-1)
    query = torch.cat((x_query, torch.ones_like(x_query[..., :1])), dim=-1)
    return torch.cat((context, query.unsqueeze(-2)), dim=-2)
''',
        # assumes exactly one batch axis and float32
        "one_batch_axis_only": '''
def make_prompt(X, y, x_query):
    b, n, d = X.shape
    Z = torch.zeros(b, n + 1, d + 1)
    Z[:, :n, :d] = X
    Z[:, :n, d] = y
    Z[:, n, :d] = x_query
    return Z
''',
    },
    "gd_step": {
        "no_one_over_n": '''
def gd_step(w, X, y, eta):
    residual = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    return w - eta * (X.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
''',
        "ascent_sign": '''
def gd_step(w, X, y, eta):
    n = X.shape[-2]
    residual = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    return w + (eta / n) * (X.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
''',
        # forgets the 1/2 in L = ||Xw - y||^2 / (2n): gradient 2/n X^T (Xw - y)
        "two_over_n": '''
def gd_step(w, X, y, eta):
    n = X.shape[-2]
    residual = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    return w - (2 * eta / n) * (X.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
''',
        # n taken from the feature axis
        "n_is_d": '''
def gd_step(w, X, y, eta):
    n = X.shape[-1]
    residual = (X @ w.unsqueeze(-1)).squeeze(-1) - y
    return w - (eta / n) * (X.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
''',
    },
    "gd_prediction": {
        "one_step_too_many": '''
def gd_prediction(X, y, x_query, eta, steps):
    w = torch.zeros_like(x_query)
    for _ in range(steps + 1):
        w = gd_step(w, X, y, eta)
    return (w * x_query).sum(-1)
''',
        "one_step_too_few": '''
def gd_prediction(X, y, x_query, eta, steps):
    w = torch.zeros_like(x_query)
    for _ in range(1, steps):
        w = gd_step(w, X, y, eta)
    return (w * x_query).sum(-1)
''',
        # predicts at the last context example instead of the query
        "predicts_last_example": '''
def gd_prediction(X, y, x_query, eta, steps):
    w = torch.zeros_like(x_query)
    for _ in range(steps):
        w = gd_step(w, X, y, eta)
    return (w * X[..., -1, :]).sum(-1)
''',
        # every step from w = 0 again: always the one-step answer
        "restarts_each_step": '''
def gd_prediction(X, y, x_query, eta, steps):
    w = torch.zeros_like(x_query)
    out = w
    for _ in range(steps):
        out = gd_step(w, X, y, eta)
    return (out * x_query).sum(-1)
''',
    },
    "lsa_layer": {
        # the query is a key and a value too
        "query_in_keys_values": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    K, V, Q = Z @ W_K.T, Z @ W_V.T, Z @ W_Q.T
    return Z + (Q @ (K.transpose(-1, -2) @ V)) @ P.T / n
''',
        "divides_by_n_plus_one": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    context = Z[..., :n, :]
    K, V, Q = context @ W_K.T, context @ W_V.T, Z @ W_Q.T
    return Z + (Q @ (K.transpose(-1, -2) @ V)) @ P.T / (n + 1)
''',
        "no_residual": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    context = Z[..., :n, :]
    K, V, Q = context @ W_K.T, context @ W_V.T, Z @ W_Q.T
    return (Q @ (K.transpose(-1, -2) @ V)) @ P.T / n
''',
        # P applied as e @ P: the transpose of P e
        "P_transposed": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    context = Z[..., :n, :]
    K, V, Q = context @ W_K.T, context @ W_V.T, Z @ W_Q.T
    return Z + (Q @ (K.transpose(-1, -2) @ V)) @ P / n
''',
        # W e read as e @ W in row form (no transpose): uses W_K^T, W_Q^T, W_V^T instead of the weights given
        "weights_transposed": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    context = Z[..., :n, :]
    K, V, Q = context @ W_K, context @ W_V, Z @ W_Q
    return Z + (Q @ (K.transpose(-1, -2) @ V)) @ P.T / n
''',
        # only the query token is updated
        "query_only": '''
def lsa_layer(Z, P, W_K, W_Q, W_V):
    n = Z.shape[-2] - 1
    context = Z[..., :n, :]
    K, V, Q = context @ W_K.T, context @ W_V.T, Z[..., n:, :] @ W_Q.T
    out = Z.clone()
    out[..., n:, :] = Z[..., n:, :] + (Q @ (K.transpose(-1, -2) @ V)) @ P.T / n
    return out
''',
    },
    "gd_construction": {
        # value +y_i: the layer then ADDS the prediction and moves residuals the wrong way
        "value_sign_plus": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    W_K = torch.zeros(D, D, dtype=dtype)
    W_K[:d, :d] = torch.eye(d, dtype=dtype)
    W_V = torch.zeros(D, D, dtype=dtype)
    W_V[d, d] = 1.0
    return eta * torch.eye(D, dtype=dtype), W_K, W_K.clone(), W_V
''',
        # keys and queries read the label too: the query is unaffected (its label is 0), the context tokens are not
        "keys_read_labels": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    W_V = torch.zeros(D, D, dtype=dtype)
    W_V[d, d] = -1.0
    return eta * torch.eye(D, dtype=dtype), torch.eye(D, dtype=dtype), torch.eye(D, dtype=dtype), W_V
''',
        # W_V = -I moves the x slots as well
        "value_minus_identity": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    W_K = torch.zeros(D, D, dtype=dtype)
    W_K[:d, :d] = torch.eye(d, dtype=dtype)
    return eta * torch.eye(D, dtype=dtype), W_K, W_K.clone(), -torch.eye(D, dtype=dtype)
''',
        # eta spread over the d input dimensions
        "P_eta_over_d": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    W_K = torch.zeros(D, D, dtype=dtype)
    W_K[:d, :d] = torch.eye(d, dtype=dtype)
    W_V = torch.zeros(D, D, dtype=dtype)
    W_V[d, d] = -1.0
    return (eta / d) * torch.eye(D, dtype=dtype), W_K, W_K.clone(), W_V
''',
        # von Oswald et al.'s P = (eta / N) I, with their N = 10, on top of this chapter's 1/n inside the layer:
        # the step is divided by the prompt length twice
        "P_eta_over_N_twice": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    N = 10
    W_K = torch.zeros(D, D, dtype=dtype)
    W_K[:d, :d] = torch.eye(d, dtype=dtype)
    W_V = torch.zeros(D, D, dtype=dtype)
    W_V[d, d] = -1.0
    return (eta / N) * torch.eye(D, dtype=dtype), W_K, W_K.clone(), W_V
''',
        "ignores_dtype": '''
def gd_construction(d, eta, dtype=torch.float32):
    D = d + 1
    W_K = torch.zeros(D, D)
    W_K[:d, :d] = torch.eye(d)
    W_V = torch.zeros(D, D)
    W_V[d, d] = -1.0
    return eta * torch.eye(D), W_K, W_K.clone(), W_V
''',
    },
    "icl_prediction": {
        "positive_readout": '''
def icl_prediction(X, y, x_query, weights, loops=1):
    Z = make_prompt(X, y, x_query)
    for _ in range(loops):
        Z = lsa_layer(Z, *weights)
    return Z[..., -1, -1]
''',
        # each loop recomputes from the ORIGINAL prompt and only carries the query over: T copies of step one
        "context_not_updated": '''
def icl_prediction(X, y, x_query, weights, loops=1):
    Z0 = make_prompt(X, y, x_query)
    Z = Z0.clone()
    for _ in range(loops):
        out = lsa_layer(torch.cat((Z0[..., :-1, :], Z[..., -1:, :]), dim=-2), *weights)
        Z = torch.cat((Z0[..., :-1, :], out[..., -1:, :]), dim=-2)
    return -Z[..., -1, -1]
''',
        "always_one_loop": '''
def icl_prediction(X, y, x_query, weights, loops=1):
    Z = lsa_layer(make_prompt(X, y, x_query), *weights)
    return -Z[..., -1, -1]
''',
        # reads the last context token's slot (its residual), not the query's
        "reads_last_context_token": '''
def icl_prediction(X, y, x_query, weights, loops=1):
    Z = make_prompt(X, y, x_query)
    for _ in range(loops):
        Z = lsa_layer(Z, *weights)
    return -Z[..., -2, -1]
''',
    },
    "optimal_one_step": {
        # E[S^2] taken as n^2 I + n d I: forgets the Gaussian fourth moment's extra n
        "eta_n_over_n_plus_d": '''
def optimal_one_step(n, d, noise_var=0.0):
    eta = n / (n + d + noise_var)
    return float(eta), float(d * (1 - eta))
''',
        "ignores_noise": '''
def optimal_one_step(n, d, noise_var=0.0):
    eta = n / (n + d + 1)
    return float(eta), float(d * (d + 1) / (n + d + 1))
''',
        # "E[S/n] = I so eta = 1"
        "eta_one": '''
def optimal_one_step(n, d, noise_var=0.0):
    eta = 1.0
    return eta, float(d * (1 - 2 * eta + eta ** 2 * (n + d + 1 + noise_var) / n))
''',
        # noise_var read as a standard deviation and squared
        "noise_var_as_std": '''
def optimal_one_step(n, d, noise_var=0.0):
    eta = n / (n + d + 1 + noise_var ** 2)
    return float(eta), float(d * (1 - eta))
''',
        # risk as 1/2 MSE
        "half_risk": '''
def optimal_one_step(n, d, noise_var=0.0):
    eta = n / (n + d + 1 + noise_var)
    return float(eta), float(d * (1 - eta) / 2)
''',
    },
    "ridge_prediction": {
        # normal equations with lam = 0: singular for n < d
        "normal_equations_only": '''
def ridge_prediction(X, y, x_query, lam=0.0):
    A = X.transpose(-1, -2) @ X + lam * torch.eye(X.shape[-1], dtype=X.dtype)
    w = torch.linalg.solve(A, X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    return (w * x_query).sum(-1)
''',
        # kernel form X^T (X X^T + lam I)^{-1} y: fine for n <= d, singular for n > d at lam = 0
        "kernel_form_only": '''
def ridge_prediction(X, y, x_query, lam=0.0):
    K = X @ X.transpose(-1, -2) + lam * torch.eye(X.shape[-2], dtype=X.dtype)
    alpha = torch.linalg.solve(K, y.unsqueeze(-1))
    w = (X.transpose(-1, -2) @ alpha).squeeze(-1)
    return (w * x_query).sum(-1)
''',
        # lam scaled by n (the 1/(2n) loss convention leaking into ridge)
        "lam_times_n": '''
def ridge_prediction(X, y, x_query, lam=0.0):
    n = X.shape[-2]
    if lam == 0:
        w = (torch.linalg.pinv(X) @ y.unsqueeze(-1)).squeeze(-1)
    else:
        A = X.transpose(-1, -2) @ X + n * lam * torch.eye(X.shape[-1], dtype=X.dtype)
        w = torch.linalg.solve(A, X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    return (w * x_query).sum(-1)
''',
        "ignores_lam": '''
def ridge_prediction(X, y, x_query, lam=0.0):
    w = (torch.linalg.pinv(X) @ y.unsqueeze(-1)).squeeze(-1)
    return (w * x_query).sum(-1)
''',
    },
    "contraction_factor": {
        # singular values of X instead of eigenvalues of X^T X
        "singular_values": '''
def contraction_factor(X, eta):
    n = X.shape[-2]
    s = torch.linalg.svdvals(X)
    return (1 - eta * s / n).abs().amax(-1)
''',
        "no_one_over_n": '''
def contraction_factor(X, eta):
    lam = torch.linalg.eigvalsh(X.transpose(-1, -2) @ X)
    return (1 - eta * lam).abs().amax(-1)
''',
        # only the slow direction: forgets that a large step overshoots the fast one
        "smallest_eigenvalue_only": '''
def contraction_factor(X, eta):
    n = X.shape[-2]
    lam = torch.linalg.eigvalsh(X.transpose(-1, -2) @ X)
    return 1 - eta * lam[..., 0] / n
''',
        # n taken from the feature axis, as in gd_step's n_is_d
        "n_is_d": '''
def contraction_factor(X, eta):
    n = X.shape[-1]
    lam = torch.linalg.eigvalsh(X.transpose(-1, -2) @ X)
    return (1 - eta * lam / n).abs().amax(-1)
''',
        # the n x n Gram matrix: zero eigenvalues when n > d give a factor of 1
        "gram_of_rows": '''
def contraction_factor(X, eta):
    n = X.shape[-2]
    lam = torch.linalg.eigvalsh(X @ X.transpose(-1, -2))
    return (1 - eta * lam / n).abs().amax(-1)
''',
    },
}
