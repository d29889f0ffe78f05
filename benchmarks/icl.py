"""Benchmark: the looped LSA construction vs explicit gradient descent, time per prompt.

Run: ``python benchmarks/icl.py`` (one to three minutes on one CPU core, depending on how busy the machine is; a GPU
table too when CUDA is present).

Recorded output of the defaults on an otherwise idle 2-core AMD EPYC machine (2026-12-08)::

    # CPU, float32, batch 4096 prompts, d = 10, 1 threads, load 0.92, best of 7; ratios against explicit GD (gd_predict)

       n   T | gd us/prompt | lsa us/prompt  lsa/gd | quadratic us  quad/gd
    -----------------------------------------------------------------------
      20   1 |        0.769 |         8.600   11.18 |        8.806    11.45
      20   4 |        0.939 |        17.755   18.90 |       17.891    19.05
      20  16 |        1.738 |        70.076   40.31 |       71.284    41.01
      80   1 |        2.210 |        24.240   10.97 |       42.426    19.20
      80   4 |        2.575 |        69.200   26.87 |      154.276    59.91
      80  16 |        3.292 |       270.744   82.24 |      629.296   191.15

    # load average (1 min) at the end: 0.97

And two consecutive runs on a shared 2-core CPU that other jobs kept busy (time per
prompt in microseconds and the ratio to explicit GD; the header and footer lines are the script's own)::

    # CPU, float32, batch 4096 prompts, d = 10, 1 threads, load 10.95, best of 7; ratios against explicit GD (gd_predict)

       n   T | gd us/prompt | lsa us/prompt  lsa/gd | quadratic us  quad/gd
    -----------------------------------------------------------------------
      20   1 |        0.756 |        10.061   13.30 |       10.846    14.34
      20   4 |        2.184 |        46.432   21.26 |       46.575    21.33
      20  16 |        2.753 |       151.706   55.10 |      149.837    54.42
      80   1 |        3.231 |        46.306   14.33 |      105.589    32.68
      80   4 |        4.609 |       126.846   27.52 |      375.470    81.46
      80  16 |        5.020 |       859.634  171.25 |     1685.534   335.79

    # CPU, float32, batch 4096 prompts, d = 10, 1 threads, load 8.16, best of 7; ratios against explicit GD (gd_predict)

       n   T | gd us/prompt | lsa us/prompt  lsa/gd | quadratic us  quad/gd
    -----------------------------------------------------------------------
      20   1 |        1.769 |        17.224    9.74 |       20.787    11.75
      20   4 |        1.373 |        50.731   36.95 |       48.425    35.27
      20  16 |        2.240 |       139.724   62.37 |      176.941    78.99
      80   1 |        2.392 |        38.075   15.92 |       81.093    33.91
      80   4 |        4.421 |       166.676   37.70 |      352.151    79.66
      80  16 |        4.746 |       665.189  140.16 |     1457.878   307.17

    # load average (1 min) at the end: 8.38

(The first run predates the footer line; its load fell from 10.95 to 8.29 during the run.) Read these with care: at a
load average of 8 to 11 on 2 cores every process gets a fraction of a core, the best of 7 still varies by up to 2x
between runs (n = 20, T = 4: 21x and 37x), and the small, overhead-bound settings suffer most. An earlier recording
at load ~4 (2.95x at n = 20, T = 1; 40x at n = 80, T = 16) did not reproduce under heavier load (a reviewer measured
11.5x for the first). What is robust: the looped LSA is one to two orders of magnitude slower per prompt than explicit
GD, the gap grows with T and n (the transformer moves n + 1 tokens through every loop, GD one vector), and the
quadratic order loses a further 2x to 3x at n = 80 (the idle run above: 11x to 82x for the linear order). No GPU was available
when these were recorded; GPU numbers have not been measured.

Both compute the same number, the prediction after ``T`` GD steps on ``L(w) = 1/(2n) ||X w - y||^2``
(checked to 1e-4 relative before timing):

* ``gd``: ``companion.icl.gd_predict``, the named baseline: ``X^T X`` and ``X^T y`` once, then ``T`` batched
  ``(d x d) @ d`` updates, ``O(n d^2 + T d^2)`` per prompt;
* ``lsa``: ``icl_predict(looped_gd(d, eta, T), ...)``: builds the ``(n + 1, d + 1)`` prompt and runs the
  LSA layer ``T`` times in the associative order ``Q (K^T V)``, ``O(T n d^2)`` per prompt: the transformer
  carries every context token's residual through every loop, where GD keeps one vector ``w``;
* ``lsa-quadratic``: the same layer in the order ``(Q K^T) V``, ``O(T n^2 d)``: what softmax attention must do.

Best of ``--repeats`` after a warm-up, variants taking turns, under ``torch.no_grad()``; ratios are against
``gd``. On a GPU times are medians of ``triton.testing.do_bench`` when Triton is present, else CUDA events.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from companion.icl import gd_predict, icl_predict, looped_gd, sample_icl_batch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--n", type=int, nargs="+", default=[20, 80])
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--loops", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: these tensors are small, and one thread times steadily on a busy "
                        "machine; 0 keeps PyTorch's default)")
    return p.parse_args(argv)


def variants(X, y, xq, d: int, T: int, eta: float) -> dict[str, Callable[[], torch.Tensor]]:
    model = looped_gd(d, eta, T, dtype=X.dtype).to(X.device)
    return {
        "gd": lambda: gd_predict(X, y, xq, eta=eta, steps=T),
        "lsa": lambda: icl_predict(model, X, y, xq),
        "lsa-quadratic": lambda: icl_predict(model, X, y, xq, order="quadratic"),
    }


def check(vs: dict[str, Callable[[], torch.Tensor]]) -> None:
    ref = vs["gd"]()
    for name, fn in vs.items():
        out = fn()
        err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        assert err < 1e-4, f"{name} differs from gd by {err:.2e} (relative)"


def cpu_best(vs: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    best = dict.fromkeys(vs, float("inf"))
    for fn in vs.values():
        fn()
    for _ in range(repeats):
        for name, fn in vs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def gpu_median(vs: dict[str, Callable[[], torch.Tensor]]) -> dict[str, float]:
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    out = {}
    for name, fn in vs.items():
        if do_bench is not None:
            out[name] = do_bench(fn) / 1e3
        else:
            fn()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(20):
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            out[name] = sorted(times)[len(times) // 2]
    return out


def table(device: torch.device, args: argparse.Namespace) -> None:
    header = (f"{'n':>4} {'T':>3} | {'gd us/prompt':>12} | {'lsa us/prompt':>13} {'lsa/gd':>7} | "
              f"{'quadratic us':>12} {'quad/gd':>8}")
    print(header)
    print("-" * len(header))
    for n in args.n:
        X, y, xq, _, _ = sample_icl_batch(args.batch, n, args.d, generator=torch.Generator().manual_seed(0))
        X, y, xq = X.to(device), y.to(device), xq.to(device)
        eta = n / (n + args.d)  # the best constant step for Gaussian X (Marchenko-Pastur edges)
        for T in args.loops:
            vs = variants(X, y, xq, args.d, T, eta)
            with torch.no_grad():
                check(vs)
                t = cpu_best(vs, args.repeats) if device.type == "cpu" else gpu_median(vs)
            per = {k: v / args.batch * 1e6 for k, v in t.items()}
            print(f"{n:>4} {T:>3} | {per['gd']:12.3f} | {per['lsa']:13.3f} {t['lsa'] / t['gd']:7.2f} | "
                  f"{per['lsa-quadratic']:12.3f} {t['lsa-quadratic'] / t['gd']:8.2f}")


def load_average() -> float:
    """The 1-minute load average (NaN where the OS does not report one): how busy the machine was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"# CPU, float32, batch {args.batch} prompts, d = {args.d}, {torch.get_num_threads()} threads, "
          f"load {load_average():.2f}, best of {args.repeats}; ratios against explicit GD (gd_predict)\n")
    table(torch.device("cpu"), args)
    print(f"\n# load average (1 min) at the end: {load_average():.2f}")
    if not torch.cuda.is_available():
        print("\nicl.py: no CUDA device available; GPU table skipped.")
        return 0
    print(f"\n# {torch.cuda.get_device_name()} | torch {torch.__version__} | float32, medians\n")
    table(torch.device("cuda"), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
