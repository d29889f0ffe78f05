"""Train the chapter's tiny transformers and write their checkpoints.

    python -m companion.circuits.train                 # all three models, shipped settings (CPU minutes)
    python -m companion.circuits.train --kinds direct4 --out /tmp/ckpt   # one model, elsewhere
    python -m companion.circuits.train --check         # retrain and compare with the shipped checkpoints

Models (:data:`MODELS`): ``direct`` (2 layers) and ``direct4`` (4 layers) answer in one forward
pass; ``cot`` (2 layers) takes one chain-of-thought step per pass. ``direct`` and ``direct4`` use the
same seed, hence the same stream of training formulas: they differ only in depth.

Every hyperparameter is in :func:`run_spec`, the one source of truth: :func:`train_model` reads its
defaults from there, and each checkpoint stores the spec it was trained with and the sha256 of its
state dict (:func:`state_sha256`), so a test can check that a shipped checkpoint is what this script
makes. Deterministic: :func:`train_model` itself runs on one CPU thread with
``torch.use_deterministic_algorithms(True)`` (and restores the caller's settings), the global seed
fixes the initialisation and a seeded generator draws every batch. On the same CPU type and
PyTorch version the script rewrites the shipped ``companion/circuits/checkpoints/*.pt`` bit for bit
(``TM_SLOW=1 pytest tests/test_companion_circuits.py -k retraining``, or ``--check`` here). What
changes the bits, measured with ``direct``: the thread count (2 threads differ from 1 within 20
steps; final loss 0.2463 against 0.2494) and the CPU kernels (``ATEN_CPU_CAPABILITY=avx2`` on an
AVX-512 machine: 0.2505); not ``use_deterministic_algorithms`` (same bits on or off), nor SDPA
against a hand-written softmax attention (same bits). Checkpoints made on another CPU or PyTorch
version differ in the last bits, and their accuracies by a little.

Data: random formulas of depth 1..6 (:func:`companion.circuits.formulas.random_formula`,
p_not = 0.25), at most 128 symbols. All models: d_model 64, 4 heads, MLP 128, relative position
bias clipped at +-8, AdamW (lr 3e-3, 100 warm-up steps then cosine decay, weight decay 0.01),
gradient norm clipped at 1, batch 64, 1500 steps.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from companion.circuits.formulas import cot_trace, evaluate_formula
from companion.circuits.model import (
    BLANK,
    CHECKPOINT_DIR,
    MODEL_KINDS,
    TinyTransformer,
    encode,
    formula_dataset,
    step_targets,
)

__all__ = ["MODELS", "TRAIN_DEPTHS", "main", "run_spec", "save", "state_sha256", "train_model"]

TRAIN_DEPTHS = [1, 2, 3, 4, 5, 6]
MAX_LEN = 128
# kind -> task ("direct": one answer at CLS; "cot": one step per pass), layers and seed
MODELS: dict[str, dict] = {
    "direct": {"task": "direct", "n_layers": 2, "seed": 1234},
    "direct4": {"task": "direct", "n_layers": 4, "seed": 1234},  # same seed: same data as "direct"
    "cot": {"task": "cot", "n_layers": 2, "seed": 5678},
}
assert tuple(MODELS) == MODEL_KINDS
SEEDS = {kind: m["seed"] for kind, m in MODELS.items()}
_SHARED = {"steps": 1500, "batch": 64, "lr": 3e-3, "weight_decay": 0.01, "warmup": 100, "clip": 1.0,
           "d_model": 64, "n_heads": 4, "d_ff": 128, "max_rel": 8, "p_not": 0.25}


def run_spec(kind: str, **overrides) -> dict:
    """Every setting of one training run of ``kind`` (the defaults, then ``overrides``), as a plain dict."""
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {tuple(MODELS)}, got {kind!r}")
    spec = {"kind": kind, **MODELS[kind], **_SHARED, "depths": list(TRAIN_DEPTHS), "max_len": MAX_LEN}
    for key, value in overrides.items():
        if key not in spec or key in ("kind", "task"):
            raise ValueError(f"unknown or fixed setting {key!r}; settings are {sorted(spec)}")
        spec[key] = value
    return spec


def _model_for(spec: dict) -> TinyTransformer:
    return TinyTransformer(n_out=2 if spec["task"] == "direct" else BLANK + 1, n_layers=spec["n_layers"],
                           d_model=spec["d_model"], n_heads=spec["n_heads"], d_ff=spec["d_ff"],
                           max_rel=spec["max_rel"])


def _direct_batch(spec: dict, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    formulas = formula_dataset(spec["batch"], spec["depths"], generator=g, max_len=spec["max_len"],
                               p_not=spec["p_not"])
    ids = encode(formulas)
    y = torch.tensor([int(evaluate_formula(s)) for s in formulas])
    return ids, y


def _cot_batch(spec: dict, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    formulas = formula_dataset(spec["batch"], spec["depths"], generator=g, max_len=spec["max_len"],
                               p_not=spec["p_not"])
    states = []
    for s in formulas:
        trace = cot_trace(s)[:-1]  # every state that still has a step to take
        states.append(trace[int(torch.randint(len(trace), (1,), generator=g))])
    ids = encode(states)
    y = torch.full(ids.shape, -100, dtype=torch.long)  # ignored: CLS and padding
    for i, s in enumerate(states):
        y[i, 1 : 1 + len(s)] = torch.tensor(step_targets(s))
    return ids, y


def train_model(kind: str, *, progress: bool = True, **overrides) -> tuple[TinyTransformer, list[float]]:
    """Train model ``kind`` from scratch with :func:`run_spec` settings (``overrides``, e.g. ``steps=200``).

    Returns ``(model, losses)`` (one loss per step). Bitwise deterministic given the settings: the run
    uses one CPU thread and deterministic algorithms whatever the caller set, and restores the
    caller's settings afterwards.
    """
    spec = run_spec(kind, **overrides)
    threads = torch.get_num_threads()
    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(spec, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)


def _train(spec: dict, progress: bool) -> tuple[TinyTransformer, list[float]]:
    torch.manual_seed(spec["seed"])  # the initialisation
    g = torch.Generator().manual_seed(spec["seed"])  # the data
    model = _model_for(spec)
    steps, warmup = spec["steps"], spec["warmup"]
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    losses = []
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"train {spec['kind']}", mininterval=2.0)
    model.train()
    for _ in iterator:
        if spec["task"] == "direct":
            ids, y = _direct_batch(spec, g)
            loss = F.cross_entropy(model(ids)[:, 0, :2], y)
        else:
            ids, y = _cot_batch(spec, g)
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return model, losses


def state_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict: every entry's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(model: TinyTransformer, path: Path, spec: dict, losses: list[float]) -> dict:
    """Write ``{"config", "state_dict", "meta"}`` to ``path``; returns the meta (spec, final loss, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tail = losses[-50:]
    meta = {"spec": dict(spec), "final_loss": sum(tail) / len(tail), "torch": str(torch.__version__),
            "state_sha256": state_sha256(state)}
    torch.save({"config": model.config, "state_dict": state, "meta": meta}, path)
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the chapter 04 formula models and write their checkpoints.")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps (not for shipping)")
    p.add_argument("--kinds", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--check", action="store_true",
                   help="compare each retrained state dict with the checkpoint in --out instead of writing it")
    args = p.parse_args(argv)
    overrides = {} if args.steps is None else {"steps": args.steps}
    failed = 0
    for kind in args.kinds:
        start = time.perf_counter()
        spec = run_spec(kind, **overrides)
        model, losses = train_model(kind, **overrides)
        elapsed = time.perf_counter() - start
        path = args.out / f"{kind}.pt"
        if args.check:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            same = blob["meta"]["spec"] == spec and state_sha256(model.state_dict()) == blob["meta"]["state_sha256"]
            failed += not same
            print(f"{kind}: {spec['steps']} steps in {elapsed:.0f} s: "
                  f"{'identical to' if same else 'DIFFERENT from'} {path}")
        else:
            meta = save(model, path, spec, losses)
            print(f"{kind}: {spec['steps']} steps in {elapsed:.0f} s, final loss {meta['final_loss']:.4f}, "
                  f"sha256 {meta['state_sha256'][:12]} -> {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
