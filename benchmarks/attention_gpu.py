"""Forward throughput of the Triton FlashAttention kernel against PyTorch SDPA (FLASH backend).

Usage (on a CUDA machine, with ``pip install -e '.[gpu]'``)::

    python benchmarks/attention_gpu.py                      # B=4, H=32, d in {64, 128}, n up to 16384
    python benchmarks/attention_gpu.py --seq-lens 1024 2048 --head-dims 64

For every (d, n, causal) it checks the Triton output against SDPA, times both with
``triton.testing.do_bench`` (median, milliseconds) and reports TFLOP/s, counting
``4 * B * H * n^2 * d`` FLOPs for the forward pass (two n x n x d matmuls), halved
for causal attention (only the lower triangle is computed). A second table gives the
causal / non-causal time ratio, which should approach 0.5 when the kernel skips the
key blocks above the diagonal. Without CUDA (or without Triton) it says so and
exits 0. The first call of each shape autotunes the kernel, outside the timings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time in ms")
    return p.parse_args(argv)


def tflops(batch: int, heads: int, n: int, d: int, causal: bool, ms: float) -> float:
    flops = 4 * batch * heads * n * n * d * (0.5 if causal else 1.0)
    return flops / (ms * 1e-3) / 1e12


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("attention_gpu.py: no CUDA device available; this benchmark needs an NVIDIA GPU. Nothing to do.")
        return 0
    from companion.attention.triton_kernel import HAS_TRITON, triton_flash_attention

    if not HAS_TRITON:
        print("attention_gpu.py: Triton is not installed (pip install -e '.[gpu]'). Nothing to do.")
        return 0
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    dtype = DTYPES[args.dtype]
    b, h = args.batch, args.heads
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | {args.dtype} | B={b} H={h}")
    print("# TFLOP/s = 4*B*H*n^2*d / time (halved for causal); ratio = Triton / SDPA (FLASH backend)\n")
    header = (f"{'d':>4} {'n':>6} {'causal':>6} | {'triton ms':>9} {'TFLOP/s':>8} | "
              f"{'sdpa ms':>9} {'TFLOP/s':>8} | {'ratio':>6} | {'max err':>8}")
    print(header)
    print("-" * len(header))
    times: dict[tuple[int, int, bool], tuple[float, float]] = {}
    for d in args.head_dims:
        for n in args.seq_lens:
            torch.manual_seed(0)
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
            for causal in (False, True):
                with torch.no_grad():
                    try:
                        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                            ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                            def run_sdpa():
                                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                            t_sdpa = do_bench(run_sdpa, rep=args.rep, return_mode="median")
                    except RuntimeError as exc:  # FLASH backend unavailable for this GPU / shape
                        print(f"# SDPA FLASH backend failed for d={d} n={n}: {exc}".splitlines()[0])
                        ref, t_sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal), float("nan")
                    out = triton_flash_attention(q, k, v, causal=causal)  # autotunes on first use
                    err = (out.float() - ref.float()).abs().max().item()

                    def run_triton():
                        return triton_flash_attention(q, k, v, causal=causal)

                    t_tri = do_bench(run_triton, rep=args.rep, return_mode="median")
                times[(d, n, causal)] = (t_tri, t_sdpa)
                f_tri, f_sdpa = tflops(b, h, n, d, causal, t_tri), tflops(b, h, n, d, causal, t_sdpa)
                flag = "  <-- check" if err > 3e-2 else ""
                print(f"{d:>4} {n:>6} {str(causal):>6} | {t_tri:>9.3f} {f_tri:>8.1f} | "
                      f"{t_sdpa:>9.3f} {f_sdpa:>8.1f} | {f_tri / f_sdpa:>6.2f} | {err:>8.1e}{flag}", flush=True)
            del q, k, v, out, ref
            torch.cuda.empty_cache()

    print("\n# causal / non-causal time (0.5 = the masked half is skipped entirely)\n")
    print(f"{'d':>4} {'n':>6} | {'triton':>7} {'sdpa':>7}")
    for d in args.head_dims:
        for n in args.seq_lens:
            (tc, sc), (tn, sn) = times[(d, n, True)], times[(d, n, False)]
            print(f"{d:>4} {n:>6} | {tc / tn:>7.2f} {sc / sn:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
