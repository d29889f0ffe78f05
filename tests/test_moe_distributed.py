"""Expert parallelism over torch.distributed: 2 gloo processes match the single-process layer.

The workers run in a subprocess under a hard timeout, so a hung collective can never
hang the suite; each rank holds half the experts and its own tokens, and writes its
output, which the test compares with companion.moe.moe_ffn on the same tokens.

One process group runs every case in turn (one spawn, a few seconds):

* ``random``: random router, 20 and 27 tokens; both ranks send to both.
* ``one_sided``: the router sends every token to rank 0's experts, so neither rank
  sends anything to rank 1, and rank 1 runs its experts on zero rows (the all-to-all
  exchanges empty chunks both ways).
* ``empty_rank``: rank 1 holds no tokens at all (x of shape ``(0, d)``) and sends
  nothing; rank 0's tokens still reach rank 1's experts and come back.
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
D, D_FF, E, WORLD = 16, 32, 8, 2
CASES = ("random", "one_sided", "empty_rank")

WORKER = textwrap.dedent(
    """
    import sys, datetime
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from companion.moe import TorchDistComm, expert_parallel_moe_ffn
    sys.path.insert(0, sys.argv[4])
    from test_moe_distributed import CASES, E, make_case

    def work(rank, world, port, out_dir):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=30))
        try:
            for case in CASES:
                p, xs = make_case(case)
                x = xs[rank]
                per = E // world
                sl = slice(rank * per, (rank + 1) * per)
                comm = TorchDistComm()
                y, info = expert_parallel_moe_ffn(x, p["router_weight"], p["w_gate"][sl], p["w_up"][sl],
                                                  p["w_down"][sl], comm, k=2)
                torch.save({"x": x, "y": y, "info": info, "bytes": comm.bytes_sent}, f"{out_dir}/{case}_rank{rank}.pt")
        finally:
            dist.destroy_process_group()

    if __name__ == "__main__":
        world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        mp.spawn(work, args=(world, port, out_dir), nprocs=world, join=True)
    """
)

def make_case(case: str) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Parameters and each rank's tokens for one case (the workers import this very function)."""
    from companion.moe import init_moe_params

    p = init_moe_params(D, D_FF, E, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xs = [torch.randn(20 + 7 * r, D, generator=torch.Generator().manual_seed(10 + r), dtype=torch.float64)
          for r in range(WORLD)]
    if case == "one_sided":  # feature 0 is 5 on every token; experts 4..7 (rank 1) lose by 5 * 20 = 100
        for x in xs:
            x[:, 0] = 5.0
        p["router_weight"][: E // 2, 0] = 10.0
        p["router_weight"][E // 2:, 0] = -10.0
    elif case == "empty_rank":
        xs[1] = xs[1][:0]
    elif case != "random":
        raise ValueError(f"unknown case {case!r}")
    return p, xs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    out = tmp_path_factory.mktemp("moe_gloo")
    script = out / "worker.py"
    script.write_text(WORKER)
    try:
        proc = subprocess.run([sys.executable, str(script), str(WORLD), str(free_port()), str(out),
                               str(Path(__file__).resolve().parent)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the 2-process gloo run did not finish in 120 s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", CASES)
def test_two_gloo_ranks_match_single_process(gloo_run, case):
    from companion.moe import moe_ffn

    p, xs = make_case(case)
    outs = [torch.load(gloo_run / f"{case}_rank{rank}.pt") for rank in range(WORLD)]
    for rank, out in enumerate(outs):
        torch.testing.assert_close(out["x"], xs[rank])
        want, _ = moe_ffn(xs[rank], **p, k=2, dispatch="loop")
        assert out["y"].shape == want.shape == (xs[rank].shape[0], D)
        torch.testing.assert_close(out["y"], want)
        assert sum(out["info"]["sent_rows"]) == 2 * xs[rank].shape[0]
    # what rank r sent to rank s is what rank s received from rank r
    for r in range(WORLD):
        for s in range(WORLD):
            assert outs[r]["info"]["sent_rows"][s] == outs[s]["info"]["received_rows"][r]
    assert sum(sum(o["info"]["received_rows"]) for o in outs) == 2 * sum(x.shape[0] for x in xs)
    if case == "one_sided":
        assert [o["info"]["sent_rows"][1] for o in outs] == [0, 0]  # nobody sends to rank 1
        assert outs[1]["info"]["received_rows"] == [0, 0]
        # bytes: rank 1 sends its 2 * 27 assignments (16 float64 and an int64 id each) to rank 0, which sends
        # their outputs back; rank 0 sends nothing in the first all-to-all
        assert outs[1]["bytes"] == 2 * 27 * (D + 1) * 8 and outs[0]["bytes"] == 2 * 27 * D * 8
    if case == "empty_rank":
        assert outs[1]["info"]["sent_rows"] == [0, 0] and outs[1]["y"].shape == (0, D)
        assert outs[1]["info"]["received_rows"][0] > 0  # rank 1's experts still serve rank 0's tokens
