"""companion.memory.peak_tensor_bytes against sizes computed by hand."""

import torch

from companion.memory import peak_tensor_bytes


def test_counts_a_materialised_score_matrix():
    q = torch.randn(256, 32)

    def scores_then_reduce(q):
        s = q @ q.T  # 256 x 256 float32 = 262144 bytes
        return s.sum()

    _, peak = peak_tensor_bytes(scores_then_reduce, q)
    # the score matrix, plus at most a contiguous copy of q.T that matmul may make
    assert 256 * 256 * 4 <= peak <= 256 * 256 * 4 + 256 * 32 * 4 + 64


def test_freed_intermediates_do_not_accumulate_and_views_are_free():
    x = torch.randn(1000)

    def loop(x):
        y = x
        for _ in range(20):
            y = (y * 2).view(10, 100).view(1000)
        return y

    _, peak = peak_tensor_bytes(loop, x)
    assert peak == 2 * 1000 * 4  # at most the previous and the new y are alive at once


def test_largest_tensor_sees_a_score_matrix_but_not_tiles():
    from companion.memory import largest_tensor

    q = torch.randn(64, 8)
    _, numel, shape = largest_tensor(lambda q: (q @ q.T).softmax(-1) @ q, q)
    assert (numel, shape) == (64 * 64, (64, 64))
    _, numel, shape = largest_tensor(lambda q: torch.cat([(q[i:i + 16] @ q[:16].T) @ q[:16] for i in range(0, 64, 16)]), q)
    assert numel == 64 * 8 and shape == (64, 8)
