"""Train the chapter's two tiny transformers and write their checkpoints.

    python -m companion.circuits.train                 # both models, shipped settings (a few CPU minutes)
    python -m companion.circuits.train --steps 200 --out /tmp/ckpt   # a quick run elsewhere

Deterministic: one CPU thread, fixed seeds, fresh batches drawn from a seeded
generator; on the same machine and PyTorch version the script rewrites the shipped
``companion/circuits/checkpoints/{direct,cot}.pt`` bit for bit (across machines or
versions, float rounding may differ in the last bits, and accuracies by a little).

Data: random formulas of depth 1..6 (:func:`companion.circuits.formulas.random_formula`,
p_not = 0.25), at most 128 symbols. Both models: 2 layers, d_model 64, 4 heads,
MLP 128, relative position bias clipped at +-8, AdamW (lr 3e-3, warm-up then cosine decay,
weight decay 0.01), batch 64, 1500 steps.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from companion.circuits.formulas import cot_trace, evaluate_formula
from companion.circuits.model import (
    BLANK,
    CHECKPOINT_DIR,
    PAD,
    TinyTransformer,
    encode,
    formula_dataset,
    step_targets,
)

__all__ = ["TRAIN_DEPTHS", "train_model", "main"]

TRAIN_DEPTHS = [1, 2, 3, 4, 5, 6]
MAX_LEN = 128
SEEDS = {"direct": 1234, "cot": 5678}


def _direct_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    formulas = formula_dataset(n, TRAIN_DEPTHS, generator=g, max_len=MAX_LEN)
    ids = encode(formulas)
    y = torch.tensor([int(evaluate_formula(s)) for s in formulas])
    return ids, y


def _cot_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    formulas = formula_dataset(n, TRAIN_DEPTHS, generator=g, max_len=MAX_LEN)
    states = []
    for s in formulas:
        trace = cot_trace(s)[:-1]  # every state that still has a step to take
        states.append(trace[int(torch.randint(len(trace), (1,), generator=g))])
    ids = encode(states)
    y = torch.full(ids.shape, -100, dtype=torch.long)  # ignored: CLS and padding
    for i, s in enumerate(states):
        y[i, 1 : 1 + len(s)] = torch.tensor(step_targets(s))
    return ids, y


def train_model(kind: str, *, steps: int = 1500, batch: int = 64, lr: float = 3e-3, seed: int | None = None,
                progress: bool = True, n_layers: int = 2, d_model: int = 64) -> tuple[TinyTransformer, list[float]]:
    """Train the ``direct`` or ``cot`` model from scratch; returns ``(model, losses)``. Deterministic given seed."""
    if kind not in ("direct", "cot"):
        raise ValueError(f"kind must be 'direct' or 'cot', got {kind!r}")
    seed = SEEDS[kind] if seed is None else seed
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = TinyTransformer(n_out=2 if kind == "direct" else BLANK + 1, n_layers=n_layers, d_model=d_model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    losses = []
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"train {kind}", mininterval=2.0)
    model.train()
    for _ in iterator:
        if kind == "direct":
            ids, y = _direct_batch(batch, g)
            loss = F.cross_entropy(model(ids)[:, 0, :2], y)
        else:
            ids, y = _cot_batch(batch, g)
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return model, losses


def save(model: TinyTransformer, path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "state_dict": state, "meta": meta}, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the chapter 04 formula models and write their checkpoints.")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--kinds", nargs="+", default=["direct", "cot"], choices=["direct", "cot"])
    p.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for kind in args.kinds:
        start = time.perf_counter()
        model, losses = train_model(kind, steps=args.steps)
        meta = {"steps": args.steps, "seed": SEEDS[kind], "depths": TRAIN_DEPTHS, "max_len": MAX_LEN,
                "final_loss": sum(losses[-50:]) / len(losses[-50:]), "torch": str(torch.__version__)}
        save(model, args.out / f"{kind}.pt", meta)
        print(f"{kind}: {args.steps} steps in {time.perf_counter() - start:.0f} s, "
              f"final loss {meta['final_loss']:.4f} -> {args.out / (kind + '.pt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
