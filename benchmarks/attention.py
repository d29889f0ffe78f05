"""Benchmark: tiled ``flash_attention`` (pure PyTorch) against SDPA and the naive reference, on the CPU.

Run: ``python benchmarks/attention.py`` (under a minute on 2 idle cores).

1. Forward time, float32, ``batch·heads = 8``, ``d = 64``, ``n`` in 1024, 2048, 4096:
   ``flash_attention`` against ``scaled_dot_product_attention`` (PyTorch's
   default CPU kernel, itself a fused flash kernel, and the math backend, which
   materialises the score matrix) and against ``naive_attention``. Best of
   ``--repeats`` runs after one warm-up, the variants taking turns, under
   ``torch.no_grad()``; then flash against SDPA again with one thread each.
   Target: flash within 3x of SDPA at ``n = 4096``.
2. Peak memory at ``n = 8192``: each variant runs in a fresh subprocess, which
   creates the inputs, warms the kernels up on a tiny input, takes its resident
   set size as the baseline (resetting the peak, on Linux), runs the variant
   once and reads the peak resident set size (``VmHWM``, or ``ru_maxrss`` where
   ``/proc`` is missing). The difference is the memory the call itself needed.
   Target: flash below 10% of naive.

Timings on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from companion.attention import flash_attention, naive_attention  # noqa: E402

BATCH, HEADS, DIM = 2, 4, 64


def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(BATCH, HEADS, n, DIM, generator=g) for _ in range(3))


def sdpa_math(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


VARIANTS: dict[str, Callable] = {
    "flash": flash_attention,
    "sdpa": F.scaled_dot_product_attention,
    "sdpa_math": sdpa_math,
    "naive": naive_attention,
}


def best_times(fns: dict[str, Callable], args: tuple, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` runs of each function, after one warm-up each; the runs take turns,
    so a burst of load elsewhere on the machine hits every variant alike."""
    best = dict.fromkeys(fns, float("inf"))
    with torch.no_grad():
        for fn in fns.values():
            fn(*args)
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(*args)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def timing_table(sizes: list[int], repeats: int) -> None:
    print(f"forward time, float32, (batch, heads, n, d) = ({BATCH}, {HEADS}, n, {DIM}), best of {repeats}")
    print(
        f"{'n':>6} {'flash s':>9} {'sdpa s':>9} {'math s':>9} {'naive s':>9}  "
        f"{'flash/sdpa':>10} {'flash/math':>10} {'flash/naive':>11}"
    )
    for n in sizes:
        t = best_times(VARIANTS, inputs(n), repeats)
        print(
            f"{n:>6} {t['flash']:9.3f} {t['sdpa']:9.3f} {t['sdpa_math']:9.3f} {t['naive']:9.3f}  "
            f"{t['flash'] / t['sdpa']:10.2f} {t['flash'] / t['sdpa_math']:10.2f} {t['flash'] / t['naive']:11.2f}"
        )


def single_thread_row(n: int, repeats: int) -> None:
    """The same comparison with one thread each: the tile loop's small ops gain little from a second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = best_times({"flash": flash_attention, "sdpa": F.scaled_dot_product_attention}, inputs(n), repeats)
        t_flash, t_sdpa = t["flash"], t["sdpa"]
    finally:
        torch.set_num_threads(threads)
    print(f"{n:>6} {t_flash:9.3f} {t_sdpa:9.3f} {'':>9} {'':>9}  {t_flash / t_sdpa:10.2f}   <- one thread each")


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(variant: str, n: int) -> None:
    """In a fresh process: the baseline RSS, then the peak RSS during one call; prints both in KiB.

    On Linux the high-water mark is reset just before the call (``/proc/self/clear_refs``),
    so the peak is that of the call alone; elsewhere ``ru_maxrss`` before and after
    (which can only under-report the call if an earlier peak, e.g. from imports, was higher).
    """
    fn = VARIANTS[variant]
    with torch.no_grad():
        q, k, v = inputs(n)
        fn(*(t[..., :64, :] for t in (q, k, v)))  # load the kernels on a tiny input
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
            before, method = _proc_status_kib("VmRSS"), "VmHWM"
        except OSError:
            before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        out = fn(q, k, v)
        after = _proc_status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert out.shape == q.shape
    print(before, after, method)


def peak_extra_mib(variant: str, n: int) -> tuple[float, str]:
    res = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--mem-n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after, method = res.stdout.split()
    return (int(after) - int(before)) / 1024, method


def memory_table(n: int) -> None:
    extra, methods = {}, set()
    for name in ("naive", "flash"):
        extra[name], method = peak_extra_mib(name, n)
        methods.add(method)
    how = f"a fresh process each; peak RSS ({'/'.join(methods)}) - baseline"
    print(f"\npeak memory of one forward call at n = {n} ({how})")
    n_by_n = BATCH * HEADS * n * n * 4 / 2**20
    io = 4 * BATCH * HEADS * n * DIM * 4 / 2**20
    print(f"  naive_attention : {extra['naive']:9.1f} MiB   (one n x n float32 score matrix: {n_by_n:.0f} MiB)")
    print(f"  flash_attention : {extra['flash']:9.1f} MiB   (q, k, v, out together: {io:.0f} MiB)")
    print(f"  flash / naive   : {extra['flash'] / extra['naive']:9.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mem-n", type=int, default=8192)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-single-thread", action="store_true")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mem_n)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    timing_table(args.sizes, args.repeats)
    if not args.skip_single_thread and torch.get_num_threads() > 1:
        single_thread_row(max(args.sizes), args.repeats)
    if not args.skip_memory:
        memory_table(args.mem_n)


if __name__ == "__main__":
    main()
