"""Plausible wrong answers for chapter 01: each must lose its exercise's points (tests/test_graders.py)."""

WRONG_ANSWERS = {
    "online_softmax_stats": {
        "no_rescale": '''
def online_softmax_stats(blocks):
    m = torch.tensor(float("-inf"), dtype=torch.float64)
    l = torch.tensor(0.0, dtype=torch.float64)
    for block in blocks:
        m_new = torch.maximum(m, block.max().to(m.dtype))
        l = l + torch.exp(block - m_new).sum()
        m = m_new
    return m.to(block.dtype), l.to(block.dtype)
''',
        "max_starts_at_zero": '''
def online_softmax_stats(blocks):
    m = l = None
    for block in blocks:
        if m is None:
            m = torch.tensor(0.0, dtype=block.dtype)
            l = torch.tensor(0.0, dtype=block.dtype)
        m_new = torch.maximum(m, block.max())
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum()
        m = m_new
    return m, l
''',
        "float64_result": '''
def online_softmax_stats(blocks):
    m = torch.tensor(float("-inf"), dtype=torch.float64)
    l = torch.tensor(0.0, dtype=torch.float64)
    for block in blocks:
        block = block.double()
        m_new = torch.maximum(m, block.max())
        if torch.isneginf(m_new):
            continue
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum()
        m = m_new
    return m, l
''',
        "nan_on_masked_block": '''
def online_softmax_stats(blocks):
    m = l = None
    for block in blocks:
        if m is None:
            m = torch.tensor(float("-inf"), dtype=block.dtype)
            l = torch.tensor(0.0, dtype=block.dtype)
        m_new = torch.maximum(m, block.max())
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum()
        m = m_new
    return m, l
''',
    },
    "online_softmax_update": {
        "acc_not_rescaled": '''
def online_softmax_update(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(dim=-1))
    safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
    alpha = torch.exp(m - safe)
    p = torch.exp(scores - safe.unsqueeze(-1))
    return m_new, alpha * l + p.sum(-1), acc + p @ v
''',
        "inverted_rescale": '''
def online_softmax_update(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(dim=-1))
    safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
    alpha = torch.exp(torch.where(torch.isneginf(m), torch.zeros_like(m), safe - m))
    p = torch.exp(scores - safe.unsqueeze(-1))
    return m_new, alpha * l + p.sum(-1), alpha.unsqueeze(-1) * acc + p @ v
''',
        "nan_when_fully_masked": '''
def online_softmax_update(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(dim=-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new.unsqueeze(-1))
    return m_new, alpha * l + p.sum(-1), alpha.unsqueeze(-1) * acc + p @ v
''',
    },
    "tiled_attention": {
        "missing_scale": '''
def tiled_attention(q, k, v, block_q=16, block_k=16):
    outs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        qi = q[..., i:i + block_q, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, k.shape[-2], block_k):
            s = qi @ k[..., j:j + block_k, :].transpose(-1, -2)
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j + block_k, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, -2), torch.cat(lses, -1)
''',
        "drops_last_ragged_block": '''
def tiled_attention(q, k, v, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    outs, lses = [], []
    n_full = (k.shape[-2] // block_k) * block_k or k.shape[-2]
    for i in range(0, q.shape[-2], block_q):
        qi = q[..., i:i + block_q, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, n_full, block_k):
            s = (qi @ k[..., j:j + block_k, :].transpose(-1, -2)) * scale
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j + block_k, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, -2), torch.cat(lses, -1)
''',
        "full_score_matrix": '''
def tiled_attention(q, k, v, block_q=16, block_k=16):
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)
''',
        "lse_is_max": '''
def tiled_attention(q, k, v, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    outs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        qi = q[..., i:i + block_q, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, k.shape[-2], block_k):
            s = (qi @ k[..., j:j + block_k, :].transpose(-1, -2)) * scale
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j + block_k, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m)
    return torch.cat(outs, -2), torch.cat(lses, -1)
''',
    },
    "causal_tile_kind": {
        "diagonal_tile_skipped": '''
def causal_tile_kind(q0, q1, k0, k1):
    if k0 >= q1 - 1:
        return "skip"
    if k1 - 1 <= q0:
        return "full"
    return "partial"
''',
        "full_off_by_one": '''
def causal_tile_kind(q0, q1, k0, k1):
    if k0 > q1 - 1:
        return "skip"
    if k1 <= q0 + 1 + 1:
        return "full"
    return "partial"
''',
    },
    "causal_tiled_attention": {
        "no_skipping": '''
def causal_tiled_attention(q, k, v, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    n = q.shape[-2]
    outs, lses = [], []
    for i in range(0, n, block_q):
        i1 = min(i + block_q, n)
        qi = q[..., i:i1, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, n, block_k):
            j1 = min(j + block_k, n)
            s = (qi @ k[..., j:j1, :].transpose(-1, -2)) * scale
            rows = torch.arange(i, i1).unsqueeze(-1)
            cols = torch.arange(j, j1).unsqueeze(0)
            s = s.masked_fill(cols > rows, float("-inf"))
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j1, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, -2), torch.cat(lses, -1)
''',
        "diagonal_masked": '''
def causal_tiled_attention(q, k, v, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    n = q.shape[-2]
    outs, lses = [], []
    for i in range(0, n, block_q):
        i1 = min(i + block_q, n)
        qi = q[..., i:i1, :]
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros_like(qi)
        for j in range(0, n, block_k):
            j1 = min(j + block_k, n)
            kind = causal_tile_kind(i, i1, j, j1)
            if kind == "skip":
                continue
            s = (qi @ k[..., j:j1, :].transpose(-1, -2)) * scale
            rows = torch.arange(i, i1).unsqueeze(-1)
            cols = torch.arange(j, j1).unsqueeze(0)
            s = s.masked_fill(cols >= rows, float("-inf"))
            m, l, acc = online_softmax_update(m, l, acc, s, v[..., j:j1, :])
        outs.append(acc / l.unsqueeze(-1))
        lses.append(m + torch.log(l))
    return torch.cat(outs, -2), torch.cat(lses, -1)
''',
    },
    "attention_backward_tile": {
        "no_scale_in_dq": '''
def attention_backward_tile(q, k, v, do, lse, delta, scale):
    p = torch.exp(scale * (q @ k.transpose(-1, -2)) - lse.unsqueeze(-1))
    dv = p.transpose(-1, -2) @ do
    ds = p * (do @ v.transpose(-1, -2) - delta.unsqueeze(-1))
    return ds @ k, scale * (ds.transpose(-1, -2) @ q), dv
''',
        "forgot_delta": '''
def attention_backward_tile(q, k, v, do, lse, delta, scale):
    p = torch.exp(scale * (q @ k.transpose(-1, -2)) - lse.unsqueeze(-1))
    dv = p.transpose(-1, -2) @ do
    ds = p * (do @ v.transpose(-1, -2))
    return scale * (ds @ k), scale * (ds.transpose(-1, -2) @ q), dv
''',
        "dv_without_transpose": '''
def attention_backward_tile(q, k, v, do, lse, delta, scale):
    p = torch.exp(scale * (q @ k.transpose(-1, -2)) - lse.unsqueeze(-1))
    ds = p * (do @ v.transpose(-1, -2) - delta.unsqueeze(-1))
    return scale * (ds @ k), scale * (ds.transpose(-1, -2) @ q), p @ do
''',
    },
    "tiled_attention_backward": {
        "delta_from_do_only": '''
def tiled_attention_backward(q, k, v, out, do, lse, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    delta = do.sum(dim=-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for j in range(0, k.shape[-2], block_k):
        for i in range(0, q.shape[-2], block_q):
            r = slice(i, i + block_q)
            tq, tk, tv = attention_backward_tile(q[..., r, :], k[..., j:j + block_k, :], v[..., j:j + block_k, :],
                                                 do[..., r, :], lse[..., r], delta[..., r], scale)
            dq[..., r, :] += tq
            dk[..., j:j + block_k, :] += tk
            dv[..., j:j + block_k, :] += tv
    return dq, dk, dv
''',
        "overwrites_instead_of_accumulating": '''
def tiled_attention_backward(q, k, v, out, do, lse, block_q=16, block_k=16):
    scale = q.shape[-1] ** -0.5
    delta = (do * out).sum(dim=-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for j in range(0, k.shape[-2], block_k):
        for i in range(0, q.shape[-2], block_q):
            r = slice(i, i + block_q)
            tq, tk, tv = attention_backward_tile(q[..., r, :], k[..., j:j + block_k, :], v[..., j:j + block_k, :],
                                                 do[..., r, :], lse[..., r], delta[..., r], scale)
            dq[..., r, :] = tq
            dk[..., j:j + block_k, :] += tk
            dv[..., j:j + block_k, :] += tv
    return dq, dk, dv
''',
    },
    "flash_forward_io": {
        "q_read_once": '''
def flash_forward_io(N, d, block_c):
    t_c = math.ceil(N / block_c)
    return 3 * N * d + t_c * (N * d + 2 * N), t_c * (N * d + 2 * N)
''',
        "floor_passes": '''
def flash_forward_io(N, d, block_c):
    t_c = N // block_c
    return 2 * N * d + t_c * (2 * N * d + 2 * N), t_c * (N * d + 2 * N)
''',
    },
    "choose_block_sizes": {
        "floor": '''
def choose_block_sizes(M, d):
    if M < 4 * d:
        raise ValueError("M < 4d")
    b = M // (4 * d)
    return b, min(b, d)
''',
        "swapped": '''
def choose_block_sizes(M, d):
    if M < 4 * d:
        raise ValueError("M < 4d")
    b = math.ceil(M / (4 * d))
    return min(b, d), b
''',
        "no_check": '''
def choose_block_sizes(M, d):
    b = max(1, math.ceil(M / (4 * d)))
    return b, min(b, d)
''',
    },
}
