"""Expert parallelism over torch.distributed: 2 gloo processes match the single-process layer.

The workers run in a subprocess under a hard timeout, so a hung collective can never
hang the suite; each rank holds half the experts and its own tokens, and writes its
output, which the test compares with companion.moe.moe_ffn on the same tokens.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys, datetime
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from companion.moe import TorchDistComm, expert_parallel_moe_ffn, init_moe_params

    def work(rank, world, port, out_dir):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=30))
        try:
            p = init_moe_params(16, 32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            x = torch.randn(20 + 7 * rank, 16, generator=torch.Generator().manual_seed(10 + rank), dtype=torch.float64)
            per = 8 // world
            sl = slice(rank * per, (rank + 1) * per)
            comm = TorchDistComm()
            y, info = expert_parallel_moe_ffn(x, p["router_weight"], p["w_gate"][sl], p["w_up"][sl], p["w_down"][sl],
                                              comm, k=2)
            torch.save({"x": x, "y": y, "info": info, "bytes": comm.bytes_sent}, f"{out_dir}/rank{rank}.pt")
        finally:
            dist.destroy_process_group()

    if __name__ == "__main__":
        world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        mp.spawn(work, args=(world, port, out_dir), nprocs=world, join=True)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_single_process(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    try:
        proc = subprocess.run([sys.executable, str(script), "2", str(free_port()), str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the 2-process gloo run did not finish in 120 s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from companion.moe import init_moe_params, moe_ffn

    p = init_moe_params(16, 32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    total_rows = 0
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        want, _ = moe_ffn(out["x"], **p, k=2, dispatch="loop")
        torch.testing.assert_close(out["y"], want)
        assert sum(out["info"]["sent_rows"]) == 2 * out["x"].shape[0]
        total_rows += sum(out["info"]["received_rows"])
    assert total_rows == 2 * (20 + 27)
