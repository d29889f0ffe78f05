"""A tiny transformer for the Boolean formula value problem: direct answer vs chain of thought.

Both models share one architecture, :class:`TinyTransformer`: token embedding, ``n_layers``
pre-LayerNorm encoder blocks (bidirectional softmax attention with a learned relative
position bias per head, as in T5, offsets clipped to ``+-max_rel``; a GELU MLP), a final
LayerNorm and a linear head. No absolute positions.

* **direct**: input ``= s`` (a CLS token then the formula); the head at the CLS
  position answers 0 or 1 in one forward pass: a constant-depth computation.
* **cot** (one chain-of-thought step per forward pass): input ``s_t``; at every
  position the head writes what that symbol becomes in ``s_{t+1} = reduce_step(s_t)``:
  the same symbol, the value of a redex (at the redex's first symbol), or BLANK
  (the other symbols of the redex). Dropping the BLANKs gives ``s_{t+1}``; the model
  is applied again until one symbol is left. A formula of depth d takes d forward
  passes: the depth of the computation grows with the input, which one pass cannot do.

Checkpoints (``checkpoints/direct.pt``, ``checkpoints/direct4.pt``: the direct model with 4 layers
instead of 2, ``checkpoints/cot.pt``) are made by ``python -m companion.circuits.train``;
:func:`load_model` reads them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from companion.circuits.formulas import _REDEX, evaluate_formula, random_formula

__all__ = [
    "BLANK",
    "CHECKPOINT_DIR",
    "CLS",
    "MODEL_KINDS",
    "PAD",
    "SYMBOLS",
    "TOKENS",
    "TinyTransformer",
    "cot_answer",
    "decode_step",
    "direct_answer",
    "encode",
    "formula_dataset",
    "accuracy_by_depth",
    "load_model",
    "plot_accuracy",
    "show_formula",
    "step_targets",
]

TOKENS = ["<pad>", "0", "1", "!", "&", "|", "(", ")", "<cls>", "_"]
PAD, CLS, BLANK = 0, 8, 9
SYMBOLS = "01!&|()"  # the formula symbols, token ids 1..7
STOI = {ch: i for i, ch in enumerate(TOKENS) if ch in SYMBOLS}
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MODEL_KINDS = ("direct", "direct4", "cot")  # the shipped checkpoints (companion.circuits.train.MODELS)


def _check_formulas(formulas: object, where: str) -> list[str]:
    if isinstance(formulas, str) or not isinstance(formulas, (list, tuple)):
        raise TypeError(f"{where}: formulas must be a list of str, got {type(formulas).__name__}")
    if not formulas:
        raise ValueError(f"{where}: formulas is empty; pass at least one formula")
    for i, s in enumerate(formulas):
        if not isinstance(s, str):
            raise TypeError(f"{where}: formulas[{i}] must be a str, got {type(s).__name__}")
        if not s:
            raise ValueError(f"{where}: formulas[{i}] is the empty string")
    return list(formulas)


def encode(formulas: list[str], max_len: int | None = None) -> torch.Tensor:
    """Token ids ``(batch, 1 + longest)``: CLS, then the symbols, then PAD.

    ``formulas``: a non-empty list of non-empty strings over ``0 1 ! & | ( )`` (not checked to be
    well formed: the CoT model's own steps are encoded too). ``ValueError`` naming the formula and
    position of any other character, or if a formula is longer than ``max_len``.
    """
    formulas = _check_formulas(formulas, "encode")
    longest = max(len(s) for s in formulas)
    if max_len is not None and longest > max_len:
        raise ValueError(f"a formula of {longest} symbols exceeds max_len={max_len}")
    out = torch.full((len(formulas), 1 + longest), PAD, dtype=torch.long)
    out[:, 0] = CLS
    for i, s in enumerate(formulas):
        bad = next((j for j, c in enumerate(s) if c not in SYMBOLS), None)
        if bad is not None:
            raise ValueError(f"encode: formulas[{i}] = {s[:40]!r} has {s[bad]!r} at position {bad}; "
                             f"the symbols are {SYMBOLS!r}")
        out[i, 1 : 1 + len(s)] = torch.tensor([STOI[c] for c in s], dtype=torch.long)
    return out


def step_targets(s: str) -> list[int]:
    """Per-symbol targets of one CoT step: the symbol, the redex value (at its start) or BLANK."""
    out = [STOI[c] for c in s]
    for m in _REDEX.finditer(s):
        a, b = m.span()
        out[a] = STOI[_value_of(m.group(0))]
        for j in range(a + 1, b):
            out[j] = BLANK
    return out


def _value_of(redex: str) -> str:
    return "1" if evaluate_formula(redex) else "0"


def decode_step(s: str, predicted: torch.Tensor) -> str:
    """Apply per-symbol predictions (ids, shape ``(len(s),)``) to get the next string (BLANKs dropped)."""
    chars = []
    for t in predicted.tolist()[: len(s)]:
        if t == BLANK:
            continue
        chars.append(TOKENS[t] if 1 <= t <= 7 else "?")
    return "".join(chars)


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, max_rel: int) -> None:
        super().__init__()
        self.n_heads, self.max_rel = n_heads, max_rel
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.rel = nn.Parameter(torch.zeros(n_heads, 2 * max_rel + 1))
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        pos = torch.arange(n, device=x.device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel  # key - query
        bias = self.rel[:, offset]  # (heads, n, n): softmax(q k^T / sqrt(d_head) + bias), padded keys masked
        mask = bias[None].masked_fill(pad[:, None, None, :], float("-inf"))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Encoder-only transformer: ids ``(batch, seq)`` -> logits ``(batch, seq, n_out)``."""

    def __init__(self, n_out: int, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                 d_ff: int = 128, max_rel: int = 8) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.config = dict(n_out=n_out, n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                           max_rel=max_rel)
        self.embed = nn.Embedding(len(TOKENS), d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff, max_rel) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_out)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be a (batch, seq) int64 tensor, got {tuple(ids.shape)} {ids.dtype}")
        pad = ids == PAD
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, pad)
        return self.head(self.ln(x))


@torch.no_grad()
def direct_answer(model: TinyTransformer, formulas: list[str], batch_size: int = 512) -> torch.Tensor:
    """The direct model's answers, bool ``(len(formulas),)``: one forward pass each.

    The answer is the argmax of the logits of tokens ``0`` and ``1`` (ids 0, 1 of the head) at the
    CLS position, computed in batches of ``batch_size`` formulas (the result does not depend on it).
    """
    formulas = _check_formulas(formulas, "direct_answer")
    model.eval()
    out = []
    for i in range(0, len(formulas), batch_size):
        logits = model(encode(formulas[i : i + batch_size]))[:, 0, :2]
        out.append(logits.argmax(-1).bool())
    return torch.cat(out)


@torch.no_grad()
def cot_answer(model: TinyTransformer, formulas: list[str], max_steps: int | None = None,
               batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Run the CoT model step by step, all formulas in parallel.

    Returns ``(answers, valid, traces)``: bool answers, bool "ended in 0 or 1 within
    max_steps" (an invalid chain counts as wrong), and each model-written trace.
    ``max_steps`` defaults to the longest formula's length.
    """
    formulas = _check_formulas(formulas, "cot_answer")
    model.eval()
    traces = [[s] for s in formulas]
    live = [i for i, s in enumerate(formulas) if s not in ("0", "1")]
    limit = max_steps if max_steps is not None else max(len(s) for s in formulas)
    for _ in range(limit):
        if not live:
            break
        nxt = []
        for j in range(0, len(live), batch_size):
            chunk = live[j : j + batch_size]
            cur = [traces[i][-1] for i in chunk]
            pred = model(encode(cur))[:, 1:].argmax(-1)
            for i, s, p in zip(chunk, cur, pred):
                new = decode_step(s, p)
                traces[i].append(new)
                if new not in ("0", "1") and 0 < len(new) < len(s) and set(new) <= set("01!&|()"):
                    nxt.append(i)
        live = nxt
    answers = torch.tensor([t[-1] == "1" for t in traces])
    valid = torch.tensor([t[-1] in ("0", "1") for t in traces])
    return answers, valid, traces


def formula_dataset(n: int, depths: list[int], *, generator: torch.Generator, max_len: int = 128,
                    p_not: float = 0.25) -> list[str]:
    """``n`` random formulas, the i-th of depth ``depths[i % len(depths)]``, each at most ``max_len`` symbols.

    Formulas are drawn with :func:`random_formula` from ``generator``; one longer than ``max_len`` is
    dropped and redrawn at the same depth (so lengths are those of ``random_formula`` conditioned on
    ``<= max_len``). Deterministic given the generator's state.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(depths, (str, bytes)) or not isinstance(depths, (list, tuple, range)) or not len(depths):
        raise ValueError(f"depths must be a non-empty list of depths, got {depths!r}")
    if max_len < max(depths) + 1:
        raise ValueError(f"max_len={max_len} is shorter than the shortest formula of depth {max(depths)} "
                         f"({max(depths) + 1} symbols)")
    out = []
    i = 0
    while len(out) < n:
        s = random_formula(depths[i % len(depths)], generator=generator, p_not=p_not)
        if len(s) <= max_len:
            out.append(s)
            i += 1
    return out


def load_model(kind: str, path: str | Path | None = None) -> TinyTransformer:
    """Load a shipped checkpoint, ``kind`` in :data:`MODEL_KINDS` (or the one at ``path``), in eval mode."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    path = Path(path) if path is not None else CHECKPOINT_DIR / f"{kind}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; make it with: python -m companion.circuits.train")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = TinyTransformer(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model


def accuracy_by_depth(direct: TinyTransformer | None, cot: TinyTransformer | None, depths: list[int], n: int,
                      *, seed: int = 0, max_len: int = 128,
                      more_direct: dict[str, TinyTransformer] | None = None) -> dict[str, list[float]]:
    """Accuracy of each model on ``n`` fresh formulas per depth (seeded), and the majority-answer baseline.

    Returns ``{"depth", "direct", "cot", "cot_valid", "baseline", "length", "cot_wrong_lengths"}`` and one
    key per entry of ``more_direct`` (further direct models, scored on the same formulas). All but the last
    hold one entry per depth; ``cot`` counts a chain that does not end in 0/1 as wrong; ``baseline`` is the
    accuracy of always answering the more frequent value at that depth; ``length`` the mean number of
    symbols; ``cot_wrong_lengths`` the length of every formula (all depths) the chain of thought got wrong.
    A model given as None scores NaN.
    """
    more_direct = dict(more_direct or {})
    fixed = ("depth", "direct", "cot", "cot_valid", "baseline", "length", "cot_wrong_lengths")
    clash = set(more_direct) & set(fixed)
    if clash:
        raise ValueError(f"more_direct names {sorted(clash)} are taken; use other names")
    g = torch.Generator().manual_seed(seed)
    res: dict[str, list[float]] = {k: [] for k in (*fixed, *more_direct)}
    nan = float("nan")
    for d in depths:
        formulas = formula_dataset(n, [d], generator=g, max_len=max_len)
        truth = torch.tensor([evaluate_formula(s) for s in formulas])
        res["depth"].append(d)
        res["length"].append(sum(len(s) for s in formulas) / n)
        p1 = truth.float().mean().item()
        res["baseline"].append(max(p1, 1 - p1))
        for name, m in (("direct", direct), *more_direct.items()):
            res[name].append((direct_answer(m, formulas) == truth).float().mean().item() if m is not None else nan)
        if cot is not None:
            ans, valid, _ = cot_answer(cot, formulas, max_steps=d + 2)
            right = (ans == truth) & valid
            res["cot"].append(right.float().mean().item())
            res["cot_valid"].append(valid.float().mean().item())
            res["cot_wrong_lengths"].extend(float(len(s)) for s, r in zip(formulas, right.tolist()) if not r)
        else:
            res["cot"].append(nan)
            res["cot_valid"].append(nan)
    return res


def plot_accuracy(res: dict[str, list[float]], ax=None, *, train_depths: list[int] | None = None,
                  labels: dict[str, str] | None = None):
    """Accuracy against formula depth: chain of thought, direct, the majority baseline. Returns the axes.

    ``res`` as returned by :func:`accuracy_by_depth`. Curves: ``res["cot"]`` and ``res["direct"]`` (unless
    all NaN), then every key of ``labels`` (which may also rename those two), each labelled by its value;
    the baseline dotted; the trained depths shaded if ``train_depths`` is given.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    names = {"cot": "chain of thought (one step per pass)", "direct": "direct answer (one pass)"}
    names.update(labels or {})
    markers = iter("os^Dv<>p")
    for key, label in names.items():
        if key not in res:
            raise KeyError(f"plot_accuracy: no curve {key!r} in res (keys: {sorted(res)})")
        if len(res[key]) != len(res["depth"]):
            raise ValueError(f"plot_accuracy: res[{key!r}] has {len(res[key])} entries, res['depth'] has "
                             f"{len(res['depth'])}")
        if all(math.isnan(v) for v in res[key]):
            continue
        ax.plot(res["depth"], res[key], marker=next(markers, "o"), label=label)
    ax.plot(res["depth"], res["baseline"], ls=":", color="0.4", label="always the more frequent value")
    if train_depths:
        ax.axvspan(min(train_depths) - 0.5, max(train_depths) + 0.5, color="0.9", zorder=0, label="trained depths")
    ax.set_xlabel("formula depth d")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.4, 1.02)
    ax.legend(fontsize=8)
    return ax


def show_formula(s: str, direct: TinyTransformer | None = None, cot: TinyTransformer | None = None, ax=None):
    """The widget's picture: the formula's tree coloured by contraction round, titled with the models' answers.

    Title: the true value, the depth, the number of contraction rounds, then (if given) the direct
    model's answer and the CoT model's answer (or ``invalid``) with its number of steps. Returns the axes.
    """
    from companion.circuits.formulas import evaluate_formula_parallel, formula_depth, plot_formula

    value, rounds = evaluate_formula_parallel(s)
    parts = [f"true value {int(value)}", f"depth {formula_depth(s)}", f"{rounds} contraction rounds"]
    if direct is not None:
        parts.append(f"direct model: {int(direct_answer(direct, [s])[0])}")
    if cot is not None:
        ans, valid, traces = cot_answer(cot, [s], max_steps=len(s))
        parts.append(f"CoT model: {int(ans[0]) if valid[0] else 'invalid'} after {len(traces[0]) - 1} steps")
    return plot_formula(s, ax=ax, title=", ".join(parts))
