"""Plausible wrong answers for chapter 00: each must lose its exercise's points (tests/test_graders.py).

Keys are the answer cells' grade ids; each value maps a short name to the whole
source of a wrong answer cell.
"""

WRONG_ANSWERS = {
    "softmax": {
        "no_max_subtraction": '''
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
''',
        "ignores_dim": '''
def softmax(x, dim=-1):
    m = x.amax(dim=-1, keepdim=True)
    e = torch.exp(x - m)
    return e / e.sum(dim=-1, keepdim=True)
''',
        "global_max": '''
def softmax(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)
''',
    },
    "causal_mask": {
        "diagonal_excluded": '''
def causal_mask(n):
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal=-1)
''',
        "transposed": '''
def causal_mask(n):
    return torch.ones(n, n, dtype=torch.bool).triu()
''',
        "float_mask": '''
def causal_mask(n):
    return torch.ones(n, n).tril()
''',
    },
    "random_tokens": {
        "global_generator": '''
def random_tokens(batch, seq_len, vocab_size, *, generator):
    return torch.randint(0, vocab_size, (batch, seq_len))
''',
        "upper_bound_off_by_one": '''
def random_tokens(batch, seq_len, vocab_size, *, generator):
    return torch.randint(0, vocab_size - 1, (batch, seq_len), generator=generator)
''',
        "transposed": '''
def random_tokens(batch, seq_len, vocab_size, *, generator):
    return torch.randint(0, vocab_size, (seq_len, batch), generator=generator)
''',
    },
}
