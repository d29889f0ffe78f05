"""Benchmark: RoPE implementations, on the CPU and (when there is one) on a CUDA GPU.

Run: ``python benchmarks/rope.py`` (about 15 s on 2 CPU cores without a GPU).

1. CPU, float32, ``x`` of shape ``(batch, heads, seq, dim)``: the eager
   ``apply_rope`` (angles recomputed on every call), ``RotaryEmbedding`` (cos/sin
   from its cache) and the naive complex form ``apply_rope_complex``
   (``view_as_complex`` · ``polar``), in both pairings. Best of ``--repeats``
   after one warm-up, the variants taking turns, under ``torch.no_grad()``; the
   ratio is complex / eager. The complex form can win on a CPU: for the
   interleaved pairing ``view_as_complex`` is free and the rotation is one
   complex multiply, one pass over memory, where the real form makes about
   seven elementwise passes (four products, a difference, a sum, a cat).
2. GPU (CUDA and Triton present): eager ``apply_rope``, ``RotaryEmbedding`` and
   the fused Triton kernel ``apply_rope_triton`` for bfloat16, float16 and
   float32, timed with ``triton.testing.do_bench`` (median). Throughput counts
   the bytes a perfect kernel must move, ``2 · numel · itemsize`` (read ``x``,
   write ``y``); eager implementations move several times that. Each row also
   gives the largest difference between the Triton and eager outputs.
   Without CUDA or Triton it says so and exits 0.

Timings on a shared machine are noisy: the load average is printed with them.
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

from companion.rope import RotaryEmbedding, apply_rope, apply_rope_complex  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-shape", type=int, nargs=4, default=[2, 8, 1024, 128], metavar=("B", "H", "S", "D"))
    p.add_argument("--repeats", type=int, default=10, help="CPU: best of this many runs")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: PyTorch's; on a busy machine 1 thread times more steadily)")
    p.add_argument("--gpu-shapes", type=str, nargs="+",
                   default=["1x32x4096x128", "4x32x4096x128", "8x8x8192x64", "64x32x1x128"],
                   help="GPU shapes BxHxSxD (the last: one decode step)")
    p.add_argument("--dtypes", choices=sorted(DTYPES), nargs="+", default=["bf16", "fp16", "fp32"])
    return p.parse_args(argv)


def best_times(variants: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Best wall time of each variant; the variants take turns, so a burst of load hits them alike."""
    best = dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        for fn in variants.values():
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def cpu_table(shape: list[int], repeats: int) -> None:
    b, h, s, d = shape
    x = torch.randn(b, h, s, d, generator=torch.Generator().manual_seed(0))
    nbytes = 2 * x.numel() * x.element_size()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# CPU, float32, x = ({b}, {h}, {s}, {d}), {torch.get_num_threads()} threads, load {load:.2f}, "
          f"best of {repeats}")
    print(f"# GB/s = 2 * numel * 4 bytes / time\n")
    header = (f"{'pairing':>12} | {'eager ms':>9} {'GB/s':>6} | {'cached ms':>9} {'GB/s':>6} | "
              f"{'complex ms':>10} {'GB/s':>6} | {'complex/eager':>13}")
    print(header)
    print("-" * len(header))
    for interleaved in (False, True):
        rot = RotaryEmbedding(d, interleaved=interleaved)
        variants = {
            "eager": lambda: apply_rope(x, interleaved=interleaved),
            "cached": lambda: rot(x),
            "complex": lambda: apply_rope_complex(x, interleaved=interleaved),
        }
        with torch.no_grad():
            ref = variants["eager"]()
            for name, fn in variants.items():
                err = (fn() - ref).abs().max().item()
                assert err < 1e-5, f"{name} differs from eager by {err}"
        t = best_times(variants, repeats)
        print(f"{'interleaved' if interleaved else 'half-split':>12} | "
              f"{t['eager'] * 1e3:9.2f} {nbytes / t['eager'] / 1e9:6.2f} | "
              f"{t['cached'] * 1e3:9.2f} {nbytes / t['cached'] / 1e9:6.2f} | "
              f"{t['complex'] * 1e3:10.2f} {nbytes / t['complex'] / 1e9:6.2f} | "
              f"{t['complex'] / t['eager']:13.2f}")


def gpu_table(shapes: list[str], dtype_names: list[str]) -> int:
    if not torch.cuda.is_available():
        print("\nrope.py: no CUDA device available; the GPU part (eager vs Triton, GB/s) needs an NVIDIA GPU. Skipped.")
        return 0
    from companion.rope_triton import HAS_TRITON, apply_rope_triton

    if not HAS_TRITON:
        print("\nrope.py: Triton is not installed (pip install -e '.[gpu]'); GPU part skipped.")
        return 0
    from triton.testing import do_bench

    print(f"\n# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    print("# GB/s = 2 * numel * itemsize / median time (the bytes a fused kernel must move)\n")
    header = (f"{'dtype':>5} {'B x H x S x D':>16} {'pairing':>11} | {'eager ms':>9} {'GB/s':>7} | "
              f"{'cached ms':>9} {'GB/s':>7} | {'triton ms':>9} {'GB/s':>7} | {'speed-up':>8} | {'max err':>8}")
    print(header)
    print("-" * len(header))
    for name in dtype_names:
        dtype = DTYPES[name]
        for spec in shapes:
            b, h, s, d = (int(v) for v in spec.lower().split("x"))
            x = torch.randn(b, h, s, d, device="cuda", dtype=dtype)
            pos = torch.arange(s, device="cuda") + 1000  # a KV-cache offset
            nbytes = 2 * x.numel() * x.element_size()
            for interleaved in (False, True):
                rot = RotaryEmbedding(d, interleaved=interleaved).cuda()
                with torch.no_grad():
                    ref = apply_rope(x, pos, interleaved=interleaved)
                    err = (apply_rope_triton(x, pos, interleaved=interleaved).float() - ref.float()).abs().max().item()
                    rot(x, pos)  # fill the cache outside the timing
                    ms = {
                        "eager": do_bench(lambda: apply_rope(x, pos, interleaved=interleaved)),
                        "cached": do_bench(lambda: rot(x, pos)),
                        "triton": do_bench(lambda: apply_rope_triton(x, pos, interleaved=interleaved)),
                    }
                gbs = {k: nbytes / (v * 1e-3) / 1e9 for k, v in ms.items()}
                print(f"{name:>5} {spec:>16} {'interleaved' if interleaved else 'half-split':>11} | "
                      f"{ms['eager']:9.3f} {gbs['eager']:7.0f} | {ms['cached']:9.3f} {gbs['cached']:7.0f} | "
                      f"{ms['triton']:9.3f} {gbs['triton']:7.0f} | {ms['eager'] / ms['triton']:8.2f} | {err:8.2g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_table(args.cpu_shape, args.repeats)
    return gpu_table(args.gpu_shapes, args.dtypes)


if __name__ == "__main__":
    sys.exit(main())
