"""Plausible wrong answers for chapter 02: each must lose its exercise's points (tests/test_graders.py)."""

WRONG_ANSWERS = {
    "rope_frequencies": {
        # RoFormer's i runs 1..d/2 with exponent -2(i-1)/d; counting from 1 with -2i/d shifts every pair
        "index_from_one": '''
def rope_frequencies(dim, base=10000.0):
    if dim % 2:
        raise ValueError("dim must be even")
    i = torch.arange(1, dim // 2 + 1, dtype=torch.float64)
    return base ** (-2.0 * i / dim)
''',
        "missing_factor_two": '''
def rope_frequencies(dim, base=10000.0):
    if dim % 2:
        raise ValueError("dim must be even")
    i = torch.arange(dim // 2, dtype=torch.float64)
    return base ** (-i / dim)
''',
        "positive_exponent": '''
def rope_frequencies(dim, base=10000.0):
    if dim % 2:
        raise ValueError("dim must be even")
    i = torch.arange(dim // 2, dtype=torch.float64)
    return base ** (2.0 * i / dim)
''',
        # the Hugging Face one-liner, left in float32
        "float32_result": '''
def rope_frequencies(dim, base=10000.0):
    if dim % 2:
        raise ValueError("dim must be even")
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
''',
        "no_odd_check": '''
def rope_frequencies(dim, base=10000.0):
    i = torch.arange(dim // 2, dtype=torch.float64)
    return base ** (-2.0 * i / dim)
''',
    },
    "rope_cos_sin": {
        "swapped": '''
def rope_cos_sin(positions, dim, base=10000.0):
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    angles = positions.to(dtype)[..., None] * rope_frequencies(dim, base).to(dtype)
    return angles.sin(), angles.cos()
''',
        # theta kept in half precision "to save memory": integer positions times a float16 tensor stay float16
        "half_precision_angles": '''
def rope_cos_sin(positions, dim, base=10000.0):
    theta = rope_frequencies(dim, base).half()
    angles = positions[..., None] * theta
    return angles.cos().float(), angles.sin().float()
''',
        # only works for 1-D positions
        "outer_product": '''
def rope_cos_sin(positions, dim, base=10000.0):
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    angles = torch.outer(positions.to(dtype), rope_frequencies(dim, base).to(dtype))
    return angles.cos(), angles.sin()
''',
        # full-width table as in the half-split code path, not (..., dim/2)
        "full_width_table": '''
def rope_cos_sin(positions, dim, base=10000.0):
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    angles = positions.to(dtype)[..., None] * rope_frequencies(dim, base).to(dtype)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()
''',
        "always_float32": '''
def rope_cos_sin(positions, dim, base=10000.0):
    angles = positions.float()[..., None] * rope_frequencies(dim, base).float()
    return angles.cos(), angles.sin()
''',
    },
    "apply_rope_interleaved": {
        # rotates by -m theta
        "sin_sign_error": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    a, b = xc[..., 0::2], xc[..., 1::2]
    return torch.stack((a * cos + b * sin, -a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)
''',
        "half_split_pairing": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    h = x.shape[-1] // 2
    a, b = xc[..., :h], xc[..., h:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).to(x.dtype)
''',
        # right pairs in, but the result written back in the half-split layout
        "concatenated_not_interleaved": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    a, b = xc[..., 0::2], xc[..., 1::2]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).to(x.dtype)
''',
        # angles computed in the activations' dtype: bfloat16 cannot hold position 4001
        "angles_in_input_dtype": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    cos, sin = rope_cos_sin(positions.to(x.dtype), x.shape[-1], base)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
''',
        "returns_float32": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    a, b = xc[..., 0::2], xc[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
''',
        "ignores_positions": '''
def apply_rope_interleaved(x, positions=None, base=10000.0):
    positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    xc = x.to(compute)
    a, b = xc[..., 0::2], xc[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)
''',
    },
    "relative_score": {
        # e^{i(n - m) theta}: the key's position minus the query's
        "distance_sign_flipped": '''
def relative_score(q, k, r, base=10000.0):
    zq = torch.complex(q[..., 0::2], q[..., 1::2])
    zk = torch.complex(k[..., 0::2], k[..., 1::2])
    phase = -torch.as_tensor(r).to(q.dtype)[..., None] * rope_frequencies(q.shape[-1], base).to(q.dtype)
    return (zq * zk.conj() * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).real
''',
        "no_conjugate": '''
def relative_score(q, k, r, base=10000.0):
    zq = torch.complex(q[..., 0::2], q[..., 1::2])
    zk = torch.complex(k[..., 0::2], k[..., 1::2])
    phase = torch.as_tensor(r).to(q.dtype)[..., None] * rope_frequencies(q.shape[-1], base).to(q.dtype)
    return (zq * zk * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).real
''',
        "half_split_pairs": '''
def relative_score(q, k, r, base=10000.0):
    h = q.shape[-1] // 2
    zq = torch.complex(q[..., :h], q[..., h:])
    zk = torch.complex(k[..., :h], k[..., h:])
    phase = torch.as_tensor(r).to(q.dtype)[..., None] * rope_frequencies(q.shape[-1], base).to(q.dtype)
    return (zq * zk.conj() * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).real
''',
        "abs_not_real": '''
def relative_score(q, k, r, base=10000.0):
    zq = torch.complex(q[..., 0::2], q[..., 1::2])
    zk = torch.complex(k[..., 0::2], k[..., 1::2])
    phase = torch.as_tensor(r).to(q.dtype)[..., None] * rope_frequencies(q.shape[-1], base).to(q.dtype)
    return (zq * zk.conj() * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).abs()
''',
        "float32_phase": '''
def relative_score(q, k, r, base=10000.0):
    zq = torch.complex(q[..., 0::2], q[..., 1::2])
    zk = torch.complex(k[..., 0::2], k[..., 1::2])
    phase = (torch.as_tensor(r).float()[..., None] * rope_frequencies(q.shape[-1], base).float()).to(q.dtype)
    return (zq * zk.conj() * torch.polar(torch.ones_like(phase), phase)).sum(dim=-1).real
''',
    },
    "rotate_half": {
        "sign_on_wrong_half": '''
def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((x[..., h:], -x[..., :h]), dim=-1)
''',
        # GPT-J's rotate_every_two: the interleaved pairing
        "rotate_every_two": '''
def rotate_half(x):
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
''',
        "halves_not_swapped": '''
def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., :h], x[..., h:]), dim=-1)
''',
    },
    "apply_rope_half_split": {
        # the angle table interleaved (GPT-J layout) while the pairs are half-split
        "repeat_interleave_table": '''
def apply_rope_half_split(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    xc = x.to(compute)
    return (xc * cos + rotate_half(xc) * sin).to(x.dtype)
''',
        "minus_sin": '''
def apply_rope_half_split(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions.to(compute), x.shape[-1], base)
    cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    xc = x.to(compute)
    return (xc * cos - rotate_half(xc) * sin).to(x.dtype)
''',
        "interleaved_pairing": '''
def apply_rope_half_split(x, positions=None, base=10000.0):
    return apply_rope_interleaved(x, positions, base)
''',
        "angles_in_input_dtype": '''
def apply_rope_half_split(x, positions=None, base=10000.0):
    if positions is None:
        positions = torch.arange(x.shape[-2])
    cos, sin = rope_cos_sin(positions.to(x.dtype), x.shape[-1], base)
    cos, sin = torch.cat((cos, cos), dim=-1).to(x.dtype), torch.cat((sin, sin), dim=-1).to(x.dtype)
    return x * cos + rotate_half(x) * sin
''',
    },
    "interleaved_to_half_split_weights": {
        # one permutation over all heads' rows, as if there were a single head
        "global_permutation": '''
def interleaved_to_half_split_weights(w, n_heads):
    rows = w.shape[0]
    perm = torch.cat((torch.arange(0, rows, 2), torch.arange(1, rows, 2)))
    return w[perm]
''',
        # half-split -> interleaved: the inverse permutation
        "inverse_permutation": '''
def interleaved_to_half_split_weights(w, n_heads):
    rows, d_model = w.shape
    head_dim = rows // n_heads
    perm = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2))).argsort()
    return w.reshape(n_heads, head_dim, d_model)[:, perm, :].reshape(rows, d_model)
''',
        "permutes_columns": '''
def interleaved_to_half_split_weights(w, n_heads):
    d_model = w.shape[1]
    perm = torch.cat((torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)))
    return w[:, perm]
''',
    },
    "cached_rope_attention": {
        # every chunk rotated as if it started the sequence
        "missing_offset": '''
def cached_rope_attention(q, k, v, cache):
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(s)
    q = apply_rope_half_split(q, positions)
    k_all = torch.cat((k_cache, apply_rope_half_split(k, positions)), dim=-2)
    v_all = torch.cat((v_cache, v), dim=-2)
    scores = q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.arange(t + s)[None, :] > torch.arange(t, t + s)[:, None]
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
''',
        "rotates_values": '''
def cached_rope_attention(q, k, v, cache):
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(t, t + s)
    q = apply_rope_half_split(q, positions)
    k_all = torch.cat((k_cache, apply_rope_half_split(k, positions)), dim=-2)
    v_all = torch.cat((v_cache, apply_rope_half_split(v, positions)), dim=-2)
    scores = q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.arange(t + s)[None, :] > positions[:, None]
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
''',
        # causal mask aligned at the top left, as for a square matrix
        "top_left_mask": '''
def cached_rope_attention(q, k, v, cache):
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(t, t + s)
    q = apply_rope_half_split(q, positions)
    k_all = torch.cat((k_cache, apply_rope_half_split(k, positions)), dim=-2)
    v_all = torch.cat((v_cache, v), dim=-2)
    scores = q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1])
    keep = torch.ones(s, t + s, dtype=torch.bool).tril()
    weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
''',
        # the cache already holds rotated keys: rotating all of it again turns old keys twice
        "rerotates_cache": '''
def cached_rope_attention(q, k, v, cache):
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(t, t + s)
    q = apply_rope_half_split(q, positions)
    k_all = apply_rope_half_split(torch.cat((k_cache, k), dim=-2))
    v_all = torch.cat((v_cache, v), dim=-2)
    scores = q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.arange(t + s)[None, :] > positions[:, None]
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
''',
        "no_scale": '''
def cached_rope_attention(q, k, v, cache):
    k_cache, v_cache = cache
    t, s = k_cache.shape[-2], q.shape[-2]
    positions = torch.arange(t, t + s)
    q = apply_rope_half_split(q, positions)
    k_all = torch.cat((k_cache, apply_rope_half_split(k, positions)), dim=-2)
    v_all = torch.cat((v_cache, v), dim=-2)
    scores = q @ k_all.transpose(-1, -2)
    future = torch.arange(t + s)[None, :] > positions[:, None]
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v_all, (k_all, v_all)
''',
    },
    "decay_bound": {
        # S_0 .. S_{d/2-1} instead of S_1 .. S_{d/2}
        "exclusive_partial_sums": '''
def decay_bound(r, dim, base=10000.0):
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    terms = torch.polar(torch.ones_like(phase), phase)
    partial = terms.cumsum(dim=-1) - terms
    return partial.abs().sum(dim=-1) / (dim // 2)
''',
        "not_normalised": '''
def decay_bound(r, dim, base=10000.0):
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    return torch.polar(torch.ones_like(phase), phase).cumsum(dim=-1).abs().sum(dim=-1)
''',
        # |S_{d/2}| only: the last partial sum, not the sum of all of them
        "last_partial_sum_only": '''
def decay_bound(r, dim, base=10000.0):
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    return torch.polar(torch.ones_like(phase), phase).sum(dim=-1).abs()
''',
        # |e^{i r theta}| = 1 inside the partial sums: no decay at all
        "abs_inside_partial_sums": '''
def decay_bound(r, dim, base=10000.0):
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    return torch.polar(torch.ones_like(phase), phase).abs().cumsum(dim=-1).sum(dim=-1) / (dim // 2)
''',
        "cosines_only": '''
def decay_bound(r, dim, base=10000.0):
    phase = r.to(torch.float64)[..., None] * rope_frequencies(dim, base)
    return torch.cos(phase).cumsum(dim=-1).abs().sum(dim=-1) / (dim // 2)
''',
    },
    "scaled_frequencies": {
        "linear_multiplies": '''
def scaled_frequencies(dim, base, factor, method):
    if method == "linear":
        return rope_frequencies(dim, base) * factor
    if method == "ntk":
        return rope_frequencies(dim, base * factor ** (dim / (dim - 2)))
    raise ValueError(method)
''',
        # base * s: the slowest pair is divided by s^((d-2)/d), not by s
        "ntk_base_times_s": '''
def scaled_frequencies(dim, base, factor, method):
    if method == "linear":
        return rope_frequencies(dim, base) / factor
    if method == "ntk":
        return rope_frequencies(dim, base * factor)
    raise ValueError(method)
''',
        "ntk_exponent_inverted": '''
def scaled_frequencies(dim, base, factor, method):
    if method == "linear":
        return rope_frequencies(dim, base) / factor
    if method == "ntk":
        return rope_frequencies(dim, base * factor ** ((dim - 2) / dim))
    raise ValueError(method)
''',
        # NTK applied as a uniform division, like PI
        "ntk_same_as_linear": '''
def scaled_frequencies(dim, base, factor, method):
    if method in ("linear", "ntk"):
        return rope_frequencies(dim, base) / factor
    raise ValueError(method)
''',
        "no_error_for_unknown_method": '''
def scaled_frequencies(dim, base, factor, method):
    if method == "ntk":
        return rope_frequencies(dim, base * factor ** (dim / (dim - 2)))
    return rope_frequencies(dim, base) / factor
''',
    },
}
