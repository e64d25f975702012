"""Weight rounding at fixed memory, on scikit-learn's digits (ships with scikit-learn, offline).

A one-hidden-layer MLP (64 → H → 10, ReLU) is trained in float32. For each code width
``b`` in ``bits`` the hidden width is ``H_b = round(budget / (74 · b))`` so that
*weights × bits* stays (nearly) constant (74 = 64 inputs + 10 outputs per hidden unit; biases
stay in float32 and are not counted). Each network's two weight matrices are then rounded to
``b`` bits per weight, one scale (and offset) per output neuron, i.e. groups along the input
dimension (``lowbit.quantize(w, bits=b, scheme="rtn", axis=-1, symmetric=(b == 1))``; 1 bit
is sign quantization ``sign(w)·mean|w|``), with:

* ``nearest_even`` -- round to nearest;
* ``stochastic`` -- unbiased stochastic rounding; mean and spread over ``seeds``;
* ``diffuse`` -- first-order error diffusion along the input dimension (the residual of each
  weight is carried to the next input's weight of the same neuron);
* ``shadow_ste`` -- training with a float shadow copy and rounded forward weights
  (nearest-even; straight-through gradient), started from the float network;

and compared by test accuracy against the float network of the same width.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Code widths of the study and the hidden width at 8 bits that fixes the memory budget.
BITS = (1, 2, 3, 4, 6, 8)
WIDTH_AT_8_BITS = 16
#: Weights per hidden unit (64 inputs + 10 outputs).
WEIGHTS_PER_UNIT = 64 + 10
METHODS = ("float", "nearest_even", "stochastic", "diffuse", "shadow_ste")


class RoundingUnavailableError(RuntimeError):
    """A rounding mode is not available in this lowbit build."""


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): digits scaled to [0, 1], stratified 70/30 split.

    Raises
    ------
    RuntimeError
        scikit-learn is not installed (the message carries the install command).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise RuntimeError("the weight study needs scikit-learn: pip install scikit-learn") from exc
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(round(0.7 * idx.size))
        train.append(idx[:cut])
        test.append(idx[cut:])
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return x[tr], y[tr], x[te], y[te]


def width_for_bits(bits: int, budget_bits: int) -> int:
    """Hidden width whose weight count × ``bits`` is closest to ``budget_bits``."""
    return max(1, int(round(budget_bits / (WEIGHTS_PER_UNIT * bits))))


def _mlp(hidden: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, 64, generator=g) * math.sqrt(2.0 / 64)
    w2 = torch.randn(10, hidden, generator=g) * math.sqrt(1.0 / hidden)
    params = [w1, torch.zeros(hidden), w2, torch.zeros(10)]
    return [p.requires_grad_(True) for p in params]


def _logits(params: Sequence[Any], x: Any, weights: Sequence[Any] | None = None) -> Any:
    import torch

    w1, b1, w2, b2 = params
    if weights is not None:
        w1, w2 = weights
    return torch.relu(x @ w1.T + b1) @ w2.T + b2


def _accuracy(params: Sequence[Any], x: Any, y: Any, weights: Sequence[Any] | None = None) -> float:
    import torch

    with torch.no_grad():
        return float((_logits(params, x, weights).argmax(-1) == y).double().mean())


def _train(params: list[Any], x: Any, y: Any, *, epochs: int, lr: float, seed: int,
           forward_weights: Callable[[list[Any]], list[Any]] | None = None) -> None:
    """Adam on minibatches of 64; ``forward_weights`` maps (w1, w2) to the weights used in the
    forward pass (straight-through: gradients flow to the shadow copy unchanged)."""
    import torch

    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, 64):
            idx = order[i:i + 64]
            weights = None
            if forward_weights is not None:
                shadow = [params[0], params[2]]
                rounded = forward_weights([w.detach() for w in shadow])
                weights = [w + (r - w).detach() for w, r in zip(shadow, rounded, strict=True)]
            loss = torch.nn.functional.cross_entropy(_logits(params, x[idx], weights), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def _rounder(bits: int) -> Callable[[list[Any]], list[Any]]:
    def rounded(ws: list[Any]) -> list[Any]:
        return [round_weights(w, bits, "nearest_even") for w in ws]

    return rounded


def round_weights(w: Any, bits: int, rounding: str, seed: int | None = None) -> Any:
    """``w`` rounded to ``bits`` per weight, one grid per row (output neuron).

    Uses ``lowbit.quantize(w, bits=bits, scheme="rtn", axis=-1, symmetric=(bits == 1),
    rounding=rounding)``; rtn diffuses along the row for bits >= 2. At 1 bit (sign
    quantization has no uniform grid, so rtn refuses ``diffuse``) the pair ±mean|w| is used as
    a two-level grid and its units are rounded with ``lowbit.round(u, mode="diffuse", axis=-1,
    clip=(0, 1))``.

    Raises
    ------
    RoundingUnavailableError
        This lowbit build cannot round with ``rounding``.
    """
    import lowbit

    kwargs: dict[str, Any] = {"bits": bits, "scheme": "rtn", "axis": -1,
                              "symmetric": bits == 1, "rounding": rounding}
    if seed is not None:
        kwargs["seed"] = seed
    try:
        return lowbit.quantize(w, **kwargs).dequantize()
    except (TypeError, ValueError) as exc:
        first_error = exc
    if rounding == "diffuse" and hasattr(lowbit, "round"):
        if bits == 1:  # the two levels of sign quantization, ±mean|w|
            m = w.abs().mean(dim=-1, keepdim=True)
            lo, step = -m, (2 * m).clamp_min(1e-12)
        else:
            lo = w.amin(dim=-1, keepdim=True)
            step = ((w.amax(dim=-1, keepdim=True) - lo) / (2**bits - 1)).clamp_min(1e-12)
        try:
            q = lowbit.round((w - lo) / step, mode="diffuse", axis=-1, clip=(0, 2**bits - 1))
        except (TypeError, ValueError) as exc:
            raise RoundingUnavailableError(
                f"rounding={rounding!r} is not available in this lowbit build: {exc}"
            ) from exc
        return q * step + lo
    raise RoundingUnavailableError(
        f"rounding={rounding!r} at bits={bits} is not available in this lowbit build "
        f"(lowbit.quantize raised: {first_error})"
    )


@dataclass
class WeightStudyResult:
    bits: list[int]
    widths: list[int]
    budget_bits: int
    #: method -> per-bits accuracy (mean over seeds for stochastic)
    accuracy: dict[str, list[float]]
    #: method -> per-bits standard deviation over seeds (stochastic only)
    spread: dict[str, list[float]]
    #: method -> reason, for methods that could not run
    unavailable: dict[str, str] = field(default_factory=dict)
    seeds: int = 0
    epochs: int = 0
    test_size: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def weight_study(
    *,
    bits: Sequence[int] = BITS,
    width_at_8_bits: int = WIDTH_AT_8_BITS,
    epochs: int = 100,
    ste_epochs: int = 40,
    seeds: int = 8,
    seed: int = 0,
    progress: bool | None = None,
) -> WeightStudyResult:
    """Run the fixed-memory weight-rounding study (see the module docstring).

    Parameters
    ----------
    bits : sequence of int
        Code widths (1..8).
    width_at_8_bits : int
        Hidden width at 8 bits; fixes the budget ``74 · width · 8`` bits.
    epochs, ste_epochs : int
        Float training epochs; shadow-copy (straight-through) fine-tuning epochs.
    seeds : int
        Stochastic-rounding seeds per width.
    seed : int
        Seed of the data split, initialization and minibatch order.
    """
    import torch

    for b in bits:
        if not isinstance(b, int) or not 1 <= b <= 8:
            raise ValueError(f"bits must be ints in 1..8, got {b!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in load_digits_split(seed))
    budget = WEIGHTS_PER_UNIT * width_at_8_bits * 8
    widths = [width_for_bits(b, budget) for b in bits]
    with _single_thread():
        return _study(bits, widths, budget, xtr, ytr, xte, yte, epochs=epochs,
                      ste_epochs=ste_epochs, seeds=seeds, seed=seed, progress=progress)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Tiny matrices: one torch thread is much faster than two (above all on a busy machine)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _study(bits: Sequence[int], widths: list[int], budget: int, xtr: Any, ytr: Any, xte: Any,
           yte: Any, *, epochs: int, ste_epochs: int, seeds: int, seed: int,
           progress: bool | None) -> WeightStudyResult:
    import torch
    from tqdm.auto import tqdm

    acc: dict[str, list[float]] = {m: [] for m in METHODS}
    spread: dict[str, list[float]] = {m: [] for m in METHODS}
    unavailable: dict[str, str] = {}
    torch.manual_seed(seed)
    bar = tqdm(list(zip(bits, widths, strict=True)), desc="weight study", unit="width",
               disable=None if progress is None else not progress)
    for b, h in bar:
        params = _mlp(h, seed)
        _train(params, xtr, ytr, epochs=epochs, lr=1e-2, seed=seed)
        acc["float"].append(_accuracy(params, xte, yte))
        spread["float"].append(0.0)
        ws = [params[0].detach(), params[2].detach()]
        for method in ("nearest_even", "stochastic", "diffuse"):
            runs = []
            try:
                for s in range(seeds if method == "stochastic" else 1):
                    rounded = [round_weights(w, b, method, seed=(1000 * s + i) if method == "stochastic" else None)
                               for i, w in enumerate(ws)]
                    runs.append(_accuracy(params, xte, yte, rounded))
            except RoundingUnavailableError as exc:
                unavailable.setdefault(method, str(exc))
                runs = [math.nan]
            acc[method].append(float(np.mean(runs)))
            spread[method].append(float(np.std(runs)) if len(runs) > 1 else 0.0)
        shadow = [p.detach().clone().requires_grad_(True) for p in params]
        _train(shadow, xtr, ytr, epochs=ste_epochs, lr=3e-3, seed=seed + 1,
               forward_weights=_rounder(b))
        rounded = [round_weights(shadow[0].detach(), b, "nearest_even"),
                   round_weights(shadow[2].detach(), b, "nearest_even")]
        acc["shadow_ste"].append(_accuracy(shadow, xte, yte, rounded))
        spread["shadow_ste"].append(0.0)
    return WeightStudyResult(bits=list(bits), widths=widths, budget_bits=budget, accuracy=acc,
                             spread=spread, unavailable=unavailable, seeds=seeds, epochs=epochs,
                             test_size=int(yte.shape[0]))


def write_weight_report(out: Any, result: WeightStudyResult, meta: dict[str, Any]) -> Any:
    """Write ``report.md``, ``results.json`` and ``weights_accuracy_vs_bits.png``."""
    import json
    from pathlib import Path

    from lowbit.research.report import _figure, _fmt, _table, have_matplotlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if have_matplotlib():
        fig, axes = _figure(1, 1)
        ax = axes[0][0]
        for m in METHODS:
            y = np.array(result.accuracy[m]) * 100
            if np.all(np.isnan(y)):
                continue
            ax.errorbar(result.bits, y, yerr=np.array(result.spread[m]) * 100, marker="o",
                        ms=4, capsize=3, label=m)
        ax.set_xlabel("bits per weight (hidden width chosen so weights × bits is constant)")
        ax.set_ylabel("test accuracy, %")
        ax.set_xticks(result.bits)
        ax.set_title(f"digits MLP at a fixed {result.budget_bits}-bit weight budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(out / "weights_accuracy_vs_bits.png", dpi=110)
        plots.append("weights_accuracy_vs_bits.png")
    L = ["# lowbit eval weights — weight rounding at fixed memory", ""]
    L += [f"- {k}: {v}" for k, v in meta.items()]
    L += [
        f"- budget: {result.budget_bits} weight bits (64→H→10 MLP, biases in float32 not "
        f"counted); float training {result.epochs} epochs; stochastic rounding over "
        f"{result.seeds} seeds (mean ± std)", "",
        "## Test accuracy (%)", "",
    ]
    rows = []
    for i, b in enumerate(result.bits):
        row: list[Any] = [b, result.widths[i], result.widths[i] * WEIGHTS_PER_UNIT]
        for m in METHODS:
            a, s = result.accuracy[m][i], result.spread[m][i]
            cell = _fmt(100 * a, 4)
            if m == "stochastic" and not math.isnan(a):
                cell += f" ± {_fmt(100 * s, 2)}"
            row.append(cell)
        rows.append(row)
    L += _table(["bits", "hidden", "weights"] + list(METHODS), rows)
    L += ["", "## Findings (computed from the table)", ""] + _weight_findings(result)
    if 1 in result.bits:
        L += ["", "At 1 bit the grid is sign quantization ±mean|w| per neuron: every weight "
              "has one representable value of its sign, so stochastic rounding has no choice to "
              "make and equals nearest_even; error diffusion uses the pair ±mean|w| as its grid.",
              f"The test set has {result.test_size} images: one image is "
              f"{100 / max(result.test_size, 1):.2f} % of accuracy."]
    if result.unavailable:
        L += ["", "Methods that could not run in this lowbit build:", ""]
        L += [f"- {m}: {why}" for m, why in result.unavailable.items()]
    if plots:
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"meta": meta, "weights": result.to_json()},
                                                 indent=1), encoding="utf-8")
    return report


def _weight_findings(r: WeightStudyResult) -> list[str]:
    from lowbit.research.report import _fmt

    lines = []
    for m in METHODS[1:]:
        a = np.array(r.accuracy[m])
        if np.all(np.isnan(a)):
            continue
        i = int(np.nanargmax(a))
        lines.append(f"- {m}: best at {r.bits[i]} bit(s) (width {r.widths[i]}), "
                     f"{_fmt(100 * a[i], 4)} %; at {r.bits[0]} bit(s) {_fmt(100 * a[0], 4)} %.")
    post = [m for m in ("nearest_even", "stochastic", "diffuse")
            if not np.all(np.isnan(r.accuracy[m]))]
    for i, b in enumerate(r.bits):
        vals = {m: r.accuracy[m][i] for m in post + ["shadow_ste"]}
        best = max(vals, key=lambda m: -1 if math.isnan(vals[m]) else vals[m])
        lines.append(f"- {b} bit(s): best method {best} ({_fmt(100 * vals[best], 4)} %), "
                     f"float network of that width {_fmt(100 * r.accuracy['float'][i], 4)} %.")
    return lines
