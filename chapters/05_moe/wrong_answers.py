"""Plausible wrong answers for chapter 05: each must lose its exercise's points (tests/test_graders.py)."""

WRONG_ANSWERS = {
    "route_topk": {
        # softmax over the token axis
        "softmax_over_tokens": '''
def route_topk(router_logits, k, renormalize=True):
    probs = torch.softmax(router_logits, dim=0)
    weights, experts = probs.topk(k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts
''',
        # always renormalises (ignores the Switch convention)
        "always_renormalize": '''
def route_topk(router_logits, k, renormalize=True):
    weights, experts = router_logits.topk(k, dim=-1)
    return torch.softmax(weights, dim=-1), experts
''',
        # never renormalises
        "never_renormalize": '''
def route_topk(router_logits, k, renormalize=True):
    probs = torch.softmax(router_logits, dim=-1)
    return probs.topk(k, dim=-1)
''',
        # returns the raw logits of the chosen experts as weights
        "logits_as_weights": '''
def route_topk(router_logits, k, renormalize=True):
    weights, experts = router_logits.topk(k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts
''',
        # smallest k instead of largest
        "smallest_k": '''
def route_topk(router_logits, k, renormalize=True):
    probs = torch.softmax(router_logits, dim=-1)
    weights, experts = probs.topk(k, dim=-1, largest=False)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts
''',
    },
    "load_balancing_loss": {
        # f counted from the top-1 only
        "top1_counts": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    f = F.one_hot(probs.argmax(-1), n_experts).sum(0).to(probs.dtype) / n_tokens
    return n_experts * (f * probs.mean(dim=0)).sum()
''',
        # soft f = P (differentiable, but a different loss: E * sum P^2)
        "soft_f": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    P = probs.mean(dim=0)
    return n_experts * k * (P * P).sum()
''',
        # missing the factor E
        "missing_E": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    experts = probs.topk(k, dim=-1).indices
    f = F.one_hot(experts, n_experts).sum(dim=(0, 1)).to(probs.dtype) / n_tokens
    return (f * probs.mean(dim=0)).sum()
''',
        # f normalised by k (a different convention from the one asked)
        "f_divided_by_k": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    experts = probs.topk(k, dim=-1).indices
    f = F.one_hot(experts, n_experts).sum(dim=(0, 1)).to(probs.dtype) / (n_tokens * k)
    return n_experts * (f * probs.mean(dim=0)).sum()
''',
        # P from the router logits' softmax over tokens
        "P_over_tokens": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    experts = probs.topk(k, dim=-1).indices
    f = F.one_hot(experts, n_experts).sum(dim=(0, 1)).to(probs.dtype) / n_tokens
    P = torch.softmax(router_logits, dim=0).sum(dim=0) / n_experts
    return n_experts * (f * P).sum()
''',
        # right value, but computed without gradient ("f has no gradient" applied to the whole loss)
        "no_gradient": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    with torch.no_grad():
        probs = torch.softmax(router_logits, dim=-1)
        experts = probs.topk(k, dim=-1).indices
        f = F.one_hot(experts, n_experts).sum(dim=(0, 1)).to(probs.dtype) / n_tokens
        return n_experts * (f * probs.mean(dim=0)).sum()
''',
        # gradient through f as well (straight-through: f's value, P's gradient added to it)
        "gradient_through_f": '''
def load_balancing_loss(router_logits, k):
    n_tokens, n_experts = router_logits.shape
    probs = torch.softmax(router_logits, dim=-1)
    experts = probs.topk(k, dim=-1).indices
    P = probs.mean(dim=0)
    f = F.one_hot(experts, n_experts).sum(dim=(0, 1)).to(probs.dtype) / n_tokens
    f = f + k * (P - P.detach())
    return n_experts * (f * P).sum()
''',
    },
    "router_z_loss": {
        "not_squared": '''
def router_z_loss(router_logits):
    return torch.logsumexp(router_logits, dim=-1).mean()
''',
        "sum_not_mean": '''
def router_z_loss(router_logits):
    return torch.logsumexp(router_logits, dim=-1).pow(2).sum()
''',
        "max_instead_of_logsumexp": '''
def router_z_loss(router_logits):
    return router_logits.max(dim=-1).values.pow(2).mean()
''',
        "logsumexp_over_tokens": '''
def router_z_loss(router_logits):
    return torch.logsumexp(router_logits, dim=0).pow(2).mean()
''',
        # overflows in float32 for large logits
        "naive_exp": '''
def router_z_loss(router_logits):
    return torch.log(torch.exp(router_logits).sum(dim=-1)).pow(2).mean()
''',
    },
    "expert_capacity": {
        "floor": '''
def expert_capacity(n_tokens, n_experts, k, capacity_factor):
    return int(capacity_factor * n_tokens * k / n_experts)
''',
        "forgets_k": '''
def expert_capacity(n_tokens, n_experts, k, capacity_factor):
    return int(math.ceil(round(capacity_factor * n_tokens / n_experts, 9)))
''',
        # no rounding before the ceiling: 1.1 * 100 * 1 / 10 = 11.000000000000002 -> 12 (visible test) and
        # 1.1 * 200 * 2 / 4 = 110.00000000000001 -> 111 (hidden); 1.25 * 512 / 8 is exactly 80.0
        "no_rounding": '''
def expert_capacity(n_tokens, n_experts, k, capacity_factor):
    return math.ceil(capacity_factor * n_tokens * k / n_experts)
''',
        "python_round": '''
def expert_capacity(n_tokens, n_experts, k, capacity_factor):
    return round(capacity_factor * n_tokens * k / n_experts)
''',
    },
    "capacity_keep_mask": {
        # off by one: keeps C + 1
        "off_by_one": '''
def capacity_keep_mask(experts, n_experts, capacity):
    if capacity is None:
        return torch.ones(experts.shape, dtype=torch.bool)
    flat = experts.reshape(-1)
    position = (F.one_hot(flat, n_experts).cumsum(dim=0) - 1).gather(1, flat[:, None])
    return (position <= capacity).reshape(experts.shape)
''',
        # GShard's order: all first choices before second choices
        "choice_major_order": '''
def capacity_keep_mask(experts, n_experts, capacity):
    if capacity is None:
        return torch.ones(experts.shape, dtype=torch.bool)
    flat = experts.t().reshape(-1)
    position = (F.one_hot(flat, n_experts).cumsum(dim=0) - 1).gather(1, flat[:, None])
    return (position < capacity).reshape(experts.t().shape).t()
''',
        # counts tokens per expert over the whole batch: drops everything of an overloaded expert
        "drop_whole_expert": '''
def capacity_keep_mask(experts, n_experts, capacity):
    if capacity is None:
        return torch.ones(experts.shape, dtype=torch.bool)
    load = torch.bincount(experts.reshape(-1), minlength=n_experts)
    return load[experts] <= capacity
''',
        # keeps the last C instead of the first C
        "last_come_first_served": '''
def capacity_keep_mask(experts, n_experts, capacity):
    if capacity is None:
        return torch.ones(experts.shape, dtype=torch.bool)
    flat = experts.reshape(-1).flip(0)
    position = (F.one_hot(flat, n_experts).cumsum(dim=0) - 1).gather(1, flat[:, None])
    return (position < capacity).reshape(-1).flip(0).reshape(experts.shape)
''',
    },
    "expected_drop_fraction": {
        # Poisson approximation of the binomial
        "poisson": '''
def expected_drop_fraction(n_tokens, n_experts, capacity):
    lam = n_tokens / n_experts
    total = 0.0
    for n in range(capacity + 1, n_tokens + 1):
        total += math.exp(-lam + n * math.log(lam) - math.lgamma(n + 1)) * (n - capacity)
    return n_experts * total / n_tokens
''',
        # math.comb times float powers: right for small T, OverflowError at T = 4096
        "comb_overflows": '''
def expected_drop_fraction(n_tokens, n_experts, capacity):
    p = 1.0 / n_experts
    total = 0.0
    for n in range(capacity + 1, n_tokens + 1):
        total += math.comb(n_tokens, n) * p ** n * (1 - p) ** (n_tokens - n) * (n - capacity)
    return n_experts * total / n_tokens
''',
        # per expert, not summed over the E experts
        "missing_E": '''
def expected_drop_fraction(n_tokens, n_experts, capacity):
    p = 1.0 / n_experts
    total = 0.0
    for n in range(capacity + 1, n_tokens + 1):
        total += math.comb(n_tokens, n) * p ** n * (1 - p) ** (n_tokens - n) * (n - capacity)
    return total / n_tokens
''',
        # probability that an expert overflows, not the expected excess
        "overflow_probability": '''
def expected_drop_fraction(n_tokens, n_experts, capacity):
    p = 1.0 / n_experts
    return sum(math.comb(n_tokens, n) * p ** n * (1 - p) ** (n_tokens - n) for n in range(capacity + 1, n_tokens + 1))
''',
        # off by one in the excess
        "excess_plus_one": '''
def expected_drop_fraction(n_tokens, n_experts, capacity):
    p = 1.0 / n_experts
    total = 0.0
    for n in range(capacity + 1, n_tokens + 1):
        log_pmf = (math.lgamma(n_tokens + 1) - math.lgamma(n + 1) - math.lgamma(n_tokens - n + 1)
                   + n * math.log(p) + (n_tokens - n) * math.log1p(-p))
        total += math.exp(log_pmf) * (n - capacity + 1)
    return n_experts * total / n_tokens
''',
    },
    "moe_ffn_loop": {
        # forgets the router weights
        "no_gate_weights": '''
def moe_ffn_loop(x, router_weight, w_gate, w_up, w_down, k=2, capacity_factor=None):
    n_tokens, n_experts = x.shape[0], router_weight.shape[0]
    weights, experts = route_topk(x @ router_weight.t(), k)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    y = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = ((experts == e) & keep).nonzero(as_tuple=True)
        xe = x[token]
        out = (F.silu(xe @ w_gate[e].t()) * (xe @ w_up[e].t())) @ w_down[e].t()
        y = y.index_add(0, token, out)
    return y
''',
        # silu on the up branch instead of the gate branch
        "silu_on_up": '''
def moe_ffn_loop(x, router_weight, w_gate, w_up, w_down, k=2, capacity_factor=None):
    n_tokens, n_experts = x.shape[0], router_weight.shape[0]
    weights, experts = route_topk(x @ router_weight.t(), k)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    y = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = ((experts == e) & keep).nonzero(as_tuple=True)
        xe = x[token]
        out = ((xe @ w_gate[e].t()) * F.silu(xe @ w_up[e].t())) @ w_down[e].t()
        y = y.index_add(0, token, out * weights[token, slot, None])
    return y
''',
        # ignores the capacity
        "ignores_capacity": '''
def moe_ffn_loop(x, router_weight, w_gate, w_up, w_down, k=2, capacity_factor=None):
    n_experts = router_weight.shape[0]
    weights, experts = route_topk(x @ router_weight.t(), k)
    y = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = (experts == e).nonzero(as_tuple=True)
        xe = x[token]
        out = (F.silu(xe @ w_gate[e].t()) * (xe @ w_up[e].t())) @ w_down[e].t()
        y = y.index_add(0, token, out * weights[token, slot, None])
    return y
''',
        # renormalises the weights over the kept assignments only
        "renormalize_after_drops": '''
def moe_ffn_loop(x, router_weight, w_gate, w_up, w_down, k=2, capacity_factor=None):
    n_tokens, n_experts = x.shape[0], router_weight.shape[0]
    weights, experts = route_topk(x @ router_weight.t(), k)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    weights = weights * keep
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    y = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = ((experts == e) & keep).nonzero(as_tuple=True)
        xe = x[token]
        out = (F.silu(xe @ w_gate[e].t()) * (xe @ w_up[e].t())) @ w_down[e].t()
        y = y.index_add(0, token, out * weights[token, slot, None])
    return y
''',
        # fancy-index assignment: a token's second expert overwrites the first
        "assign_not_add": '''
def moe_ffn_loop(x, router_weight, w_gate, w_up, w_down, k=2, capacity_factor=None):
    n_tokens, n_experts = x.shape[0], router_weight.shape[0]
    weights, experts = route_topk(x @ router_weight.t(), k)
    capacity = None if capacity_factor is None else expert_capacity(n_tokens, n_experts, k, capacity_factor)
    keep = capacity_keep_mask(experts, n_experts, capacity)
    y = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = ((experts == e) & keep).nonzero(as_tuple=True)
        xe = x[token]
        out = (F.silu(xe @ w_gate[e].t()) * (xe @ w_up[e].t())) @ w_down[e].t()
        y[token] = out * weights[token, slot, None]
    return y
''',
    },
    "sort_by_expert": {
        # dropped assignments left in
        "keeps_dropped": '''
def sort_by_expert(experts, keep, n_experts):
    k = experts.shape[1]
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_experts)
    return order // k, order % k, counts
''',
        # flat index returned as the token index
        "flat_index_as_token": '''
def sort_by_expert(experts, keep, n_experts):
    k = experts.shape[1]
    flat, flat_keep = experts.reshape(-1), keep.reshape(-1)
    key = torch.where(flat_keep, flat, torch.full_like(flat, n_experts))
    counts = torch.bincount(flat[flat_keep], minlength=n_experts)
    order = torch.argsort(key, stable=True)[: int(counts.sum())]
    return order, order % k, counts
''',
        # counts include the dropped assignments
        "counts_include_dropped": '''
def sort_by_expert(experts, keep, n_experts):
    k = experts.shape[1]
    flat, flat_keep = experts.reshape(-1), keep.reshape(-1)
    key = torch.where(flat_keep, flat, torch.full_like(flat, n_experts))
    order = torch.argsort(key, stable=True)[: int(flat_keep.sum())]
    return order // k, order % k, torch.bincount(flat, minlength=n_experts)
''',
        # counts only as long as the largest expert id present
        "bincount_without_minlength": '''
def sort_by_expert(experts, keep, n_experts):
    k = experts.shape[1]
    flat, flat_keep = experts.reshape(-1), keep.reshape(-1)
    key = torch.where(flat_keep, flat, torch.full_like(flat, n_experts))
    counts = torch.bincount(flat[flat_keep])
    order = torch.argsort(key, stable=True)[: int(counts.sum())]
    return order // k, order % k, counts
''',
    },
    "expert_choice_route": {
        # softmax over the token axis (keep this name short: the grader's paths include it)
        "token_axis": '''
def expert_choice_route(router_logits, capacity):
    scores = torch.softmax(router_logits, dim=0)
    return scores.t().topk(capacity, dim=-1)
''',
        "transposed_output": '''
def expert_choice_route(router_logits, capacity):
    scores = torch.softmax(router_logits, dim=-1)
    w, t = scores.topk(capacity, dim=0)
    return w, t
''',
        "logits_as_scores": '''
def expert_choice_route(router_logits, capacity):
    w, t = router_logits.t().topk(capacity, dim=-1)
    return torch.softmax(router_logits, dim=-1).t().gather(1, t) * 0 + w, t
''',
        # scores normalised over the chosen tokens
        "renormalized_over_chosen": '''
def expert_choice_route(router_logits, capacity):
    scores = torch.softmax(router_logits, dim=-1)
    w, t = scores.t().topk(capacity, dim=-1)
    return w / w.sum(-1, keepdim=True), t
''',
    },
    "rows_to_ranks": {
        "round_robin": '''
def rows_to_ranks(experts, keep, n_experts, world_size):
    return torch.bincount(experts[keep] % world_size, minlength=world_size)
''',
        "ignores_keep": '''
def rows_to_ranks(experts, keep, n_experts, world_size):
    return torch.bincount(experts.reshape(-1) // (n_experts // world_size), minlength=world_size)
''',
        # counts tokens with at least one expert on the rank, not assignments
        "counts_tokens": '''
def rows_to_ranks(experts, keep, n_experts, world_size):
    owner = experts // (n_experts // world_size)
    hit = F.one_hot(owner, world_size).mul(keep[..., None]).amax(dim=1)
    return hit.sum(0)
''',
        "per_expert_counts": '''
def rows_to_ranks(experts, keep, n_experts, world_size):
    return torch.bincount(experts[keep], minlength=n_experts)
''',
    },
}
