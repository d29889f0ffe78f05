"""Benchmark: batched circuit evaluation, and the round count of tree contraction.

Run: ``python benchmarks/circuits.py`` (under 10 s on 2 idle CPU cores without a GPU; longer under load).

1. Throughput, input vectors per second, of :meth:`Circuit.evaluate` (torch, one
   matrix product of true-input counts and one comparison per level of the DAG, the
   whole batch at once) against the
   baseline :meth:`Circuit.evaluate_loop` (a Python loop over vectors, and inside
   it over gates), for the 64-input majority circuit (one gate) and two larger
   circuits: the depth-2 threshold parity of 64 bits (97 gates) and the 32-bit
   adder (751 gates, depth 5). The ratio is torch / loop. On a CUDA GPU the torch
   path is also timed there (same code, tensors on the GPU).
2. ``evaluate_formula_parallel``: rounds against length for random, balanced and
   caterpillar formulas up to 10^5 symbols, next to floor(log2 leaves) and the
   formula's depth (the number of chain-of-thought steps, and of rounds a
   level-by-level evaluator needs).

Timings on a shared machine are noisy: the load average is printed with them.

Reference numbers (torch 2.13.0+cpu, 2-core AMD EPYC with AVX-512, no GPU; whole run 7.5 s wall).
Default settings, 2 threads, load average 2.16::

                       circuit  gates depth |       loop   torch cpu    ratio
           majority, 64 inputs      1     1 |   1.41e+05    2.62e+07     186x
       parity (TC0), 64 inputs     97     2 |   6.84e+03    1.19e+06     173x
            adder, 2 x 32 bits    751     5 |    1.7e+03     1.4e+05      82x

``--threads 1``, load average 1.89: 1.44e+05 / 1.91e+07 (133x), 6.24e+03 / 9.69e+05 (155x),
2.24e+03 / 7.83e+04 (35x). A second 2-thread run a minute later, load 1.76: 210x, 179x, 67x: the
ratios move by about 15 % from run to run. Table 2 of that run (rounds are exact, times are not)::

           shape   symbols  leaves rounds log2 len   depth     time
          random    105124   25000     14     16.7      42     87ms
        balanced    104935   25000     14     16.7      21    174ms
     caterpillar    102499   25000     14     16.6   24999     80ms

(rounds 3, 6, 9, 13, 14 for 10, 100, 1000, 10 000, 25 000 leaves, for every shape; times below 5 ms
up to 1000 leaves, 28 to 113 ms at 10 000.)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from companion.circuits import (  # noqa: E402
    adder_circuit,
    evaluate_formula,
    evaluate_formula_parallel,
    formula_depth,
    majority_circuit,
    parity_circuit,
    sized_formula,
)


def best_of(fn, repeats: int, sync=None) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(batch: int, loop_batch: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    circuits = {
        "majority, 64 inputs": majority_circuit(64),
        "parity (TC0), 64 inputs": parity_circuit(64, "tc0"),
        "adder, 2 x 32 bits": adder_circuit(32),
    }
    cuda = torch.cuda.is_available()
    print(f"1. circuit evaluation, input vectors per second (torch batch {batch}, loop batch {loop_batch})")
    header = f"{'circuit':>26s} {'gates':>6s} {'depth':>5s} | {'loop':>10s} {'torch cpu':>11s} {'ratio':>8s}"
    print(header + (f" | {'torch cuda':>11s} {'ratio':>8s}" if cuda else ""))
    for name, c in circuits.items():
        x = torch.rand(batch, c.n_inputs, generator=g) < 0.5
        small = x[:loop_batch]
        assert torch.equal(c.evaluate(small), torch.tensor(c.evaluate_loop(small), dtype=torch.bool))
        t_loop = best_of(lambda: c.evaluate_loop(small), max(1, repeats // 3)) / loop_batch
        t_cpu = best_of(lambda: c.evaluate(x), repeats) / batch
        row = (f"{name:>26s} {c.size:6d} {c.depth:5d} | {1 / t_loop:10.3g} {1 / t_cpu:11.3g} "
               f"{t_loop / t_cpu:7.0f}x")
        if cuda:
            xg = x.cuda()
            t_gpu = best_of(lambda: c.evaluate(xg), repeats, torch.cuda.synchronize) / batch
            row += f" | {1 / t_gpu:11.3g} {t_loop / t_gpu:7.0f}x"
        print(row)
    if not cuda:
        print("   (no CUDA device: GPU column skipped)")


def rounds_table(max_symbols: int) -> None:
    g = torch.Generator().manual_seed(1)
    print("\n2. evaluate_formula_parallel: rounds vs length (rounds = floor(log2 leaves); depth = CoT steps)")
    print(f"{'shape':>12s} {'symbols':>9s} {'leaves':>7s} {'rounds':>6s} {'log2 len':>8s} {'depth':>7s} {'time':>8s}")
    leaves_list = [n for n in (10, 100, 1000, 10_000, 25_000) if 4 * n <= max_symbols * 1.1]
    for shape in ("random", "balanced", "caterpillar"):
        for leaves in leaves_list:
            s = sized_formula(leaves, generator=g, shape=shape)
            start = time.perf_counter()
            value, rounds = evaluate_formula_parallel(s)
            elapsed = time.perf_counter() - start
            assert value == evaluate_formula(s) and rounds == int(math.floor(math.log2(leaves)))
            print(f"{shape:>12s} {len(s):9d} {leaves:7d} {rounds:6d} {math.log2(len(s)):8.1f} "
                  f"{formula_depth(s):7d} {elapsed * 1e3:6.0f}ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--loop-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-symbols", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}\n")
    throughput(args.batch, args.loop_batch, args.repeats)
    rounds_table(args.max_symbols)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
