"""Markdown reports, JSON results and PNG plots for ``lowbit eval``.

matplotlib is imported inside the plotting functions only, and only through its object-oriented
API (no ``pyplot`` state, no ``matplotlib.use``): figures are built as
``matplotlib.figure.Figure`` objects and saved with the Agg canvas they carry by default.
When matplotlib is missing the reports are written without plots and say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.research.decode import DecodeResult
from lowbit.research.kv_error import TOP_FRACTION, PseudoDecodeResult


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


#: Legend text of the markers that stand for values of exactly 0 on a log axis.
ZERO_LABEL = "exactly 0 (off the log scale: on the bottom edge)"


def _log_plot(ax: Any, x: Any, y: Any, *, zeros: list[Any], **kwargs: Any) -> Any:
    """Plot ``y`` against ``x`` on the log axis ``ax``.

    Zeros, which a log axis cannot show, are not drawn at a fake tiny value (which would squash
    the real range into a strip): they are drawn as hollow triangles on the bottom edge of the
    axes, in one neutral colour, and a legend entry says so (``zeros`` collects its handle).
    """
    from matplotlib.transforms import blended_transform_factory

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    zero = y <= 0
    line, = ax.plot(x, np.where(zero, np.nan, y), **kwargs)
    if zero.any():
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        mark, = ax.plot(x[zero], np.full(int(zero.sum()), 0.02), ls="none", marker="v", ms=7,
                        mfc="none", color="0.25", transform=edge, clip_on=False, label=ZERO_LABEL)
        if not zeros:
            zeros.append(mark)
    return line


def _legend_below(fig: Any, handles: Sequence[Any], ncols: int = 3) -> None:
    """One legend for the whole figure, under the axes (it never hides a line)."""
    fig.legend(handles=list(handles), loc="outside lower center", ncols=ncols, fontsize=8)


def _style_handles() -> list[Any]:
    """Legend entries of the two regimes' line styles (the colour is the scheme's)."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="0.3", marker="o", ms=3, label="accumulated regime (solid)"),
            Line2D([], [], color="0.3", ls="--", marker="o", ms=3, mfc="none",
                   label="static regime (dashed)")]


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 10 ** -(digits):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def first_affected_block(r: PseudoDecodeResult) -> int:
    """Index of the first block whose attention can see quantized history."""
    return r.sink_tokens // r.block_size + 1


def kv_summary(r: PseudoDecodeResult) -> dict[str, float]:
    """Scalar summaries of one scheme's pseudo-decode run (means over affected blocks)."""
    b0 = min(first_affected_block(r), len(r.block_end) - 1)
    s_mae, a_mae = r.static_mae.mean(1), r.accum_mae.mean(1)
    s_rel, a_rel = r.static_rel.mean(1), r.accum_rel.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth_a = a_mae[-1] / a_mae[b0] if a_mae[b0] > 0 else math.nan
        growth_s = s_mae[-1] / s_mae[b0] if s_mae[b0] > 0 else math.nan
        amplification = a_mae[b0:].mean() / s_mae[b0:].mean() if s_mae[b0:].mean() > 0 else math.nan
    return {
        "static_rel": float(s_rel[b0:].mean()),
        "accum_rel": float(a_rel[b0:].mean()),
        "static_mae": float(s_mae[b0:].mean()),
        "accum_mae": float(a_mae[b0:].mean()),
        "static_mae_last": float(s_mae[-1]),
        "accum_mae_last": float(a_mae[-1]),
        "accum_growth": float(growth_a),
        "static_growth": float(growth_s),
        "amplification": float(amplification),
        "kl": float(r.kl[b0:].mean()),
        "kl_last": float(r.kl[-1]),
        "top1": float(r.top1[b0:].mean()),
        "delta_nll": float((r.nll[b0:] - r.nll_reference[b0:]).mean()),
    }


def _plot_kv(results: list[PseudoDecodeResult], out: Path) -> list[str]:
    files = []
    xlabel = f"context position (end of {results[0].block_size}-token block)"
    fig, axes = _figure(2, 2)
    handles = []
    for r in results:
        x = r.block_end
        for col, (stat, label) in enumerate((("mae", "mean |error|"), ("rel", "relative error"))):
            static = getattr(r, f"static_{stat}").mean(1)
            accum = getattr(r, f"accum_{stat}").mean(1)
            line, = axes[0][col].plot(x, accum, marker="o", ms=3, label=r.scheme)
            axes[1][col].plot(x, static, marker="o", ms=3, color=line.get_color(), label=r.scheme)
            axes[0][col].set_title(f"accumulated regime: attention output {label}")
            axes[1][col].set_title(f"static regime: attention output {label}")
            if col == 0:
                handles.append(line)
    for row in axes:
        for ax in row:
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    _legend_below(fig, handles)
    fig.suptitle("Pseudo-decode: attention-output error vs context (mean over layers)")
    fig.savefig(out / "kv_error_vs_context.png", dpi=110)
    files.append("kv_error_vs_context.png")

    fig, axes = _figure(2, 1, height=4.6)
    zeros: list[Any] = []
    handles = []
    axes[0][0].set_yscale("log")
    for r in results:
        handles.append(_log_plot(axes[0][0], r.block_end, r.kl, zeros=zeros, marker="o", ms=3,
                                 label=r.scheme))
        axes[0][1].plot(r.block_end, r.top1, marker="o", ms=3, label=r.scheme)
    axes[0][0].set_title("accumulated regime: KL(reference || quantized), nats/token")
    axes[0][1].set_title("accumulated regime: top-1 agreement with reference")
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    _legend_below(fig, handles + zeros)
    fig.savefig(out / "kv_kl_vs_context.png", dpi=110)
    files.append("kv_kl_vs_context.png")

    fig, axes = _figure(1, 1, height=5.0)
    ax = axes[0][0]
    handles = []
    for r in results:
        b0 = min(first_affected_block(r), len(r.block_end) - 1)
        line, = ax.plot(r.accum_rel[b0:].mean(0), marker="o", ms=3, label=r.scheme)
        ax.plot(r.static_rel[b0:].mean(0), ls="--", marker="o", ms=3, mfc="none", color=line.get_color())
        handles.append(line)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative attention-output error")
    ax.set_title("error by layer (mean over the blocks that see quantized history)")
    ax.grid(alpha=0.3)
    _legend_below(fig, handles + _style_handles(), ncols=2)
    fig.savefig(out / "kv_error_by_layer.png", dpi=110)
    files.append("kv_error_by_layer.png")

    kivi = [r for r in results if r.scheme.startswith("kivi")]
    kvarn = [r for r in results if r.scheme.startswith("kvarn")]
    if kivi and kvarn:
        fig, axes = _figure(1, 1, height=5.0)
        ax = axes[0][0]
        base = kivi[0]
        handles = []
        for r in kvarn:
            color = None
            for regime, ls in (("accum", "-"), ("static", "--")):
                d = getattr(r, f"{regime}_mae").mean(1) - getattr(base, f"{regime}_mae").mean(1)
                line, = ax.plot(r.block_end, d, ls=ls, marker="o", ms=3, color=color,
                                mfc=None if regime == "accum" else "none",
                                label=f"{r.scheme} − {base.scheme}")
                if color is None:
                    color = line.get_color()
                    handles.append(line)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(f"context position (end of {base.block_size}-token block)")
        ax.set_ylabel("Δ mean |error| (below 0: KVarN lower)")
        ax.set_title("KVarN − KIVI attention-output MAE (paper Fig. 5b)")
        ax.grid(alpha=0.3)
        _legend_below(fig, handles + _style_handles(), ncols=2)
        fig.savefig(out / "kv_kvarn_minus_kivi.png", dpi=110)
        files.append("kv_kvarn_minus_kivi.png")
    return files


def _plot_decode(decode: list[DecodeResult], out: Path) -> list[str]:
    fig, axes = _figure(1, 1, height=5.0)
    ax = axes[0][0]
    zeros: list[Any] = []
    handles = []
    ax.set_yscale("log")
    for d in decode:
        handles.append(_log_plot(ax, np.arange(d.kl.shape[1]), d.kl.mean(0), zeros=zeros,
                                 marker=".", label=d.scheme))
    ax.set_xlabel("decode step (0 = the first generated token)")
    ax.set_ylabel("KL(reference || quantized), nats (mean over prompts)")
    ax.set_title("Greedy decode: per-step KL")
    ax.grid(alpha=0.3)
    _legend_below(fig, handles + zeros, ncols=2)
    fig.savefig(out / "decode_kl_vs_step.png", dpi=110)
    return ["decode_kl_vs_step.png"]


def _findings(results: list[PseudoDecodeResult], summaries: dict[str, dict[str, float]]) -> list[str]:
    lossy = [r for r in results if r.scheme != "none"]
    if not lossy:
        return []
    lines = []
    best = min(lossy, key=lambda r: summaries[r.scheme]["accum_mae"])
    lines.append(
        f"- Lowest accumulated attention-output error: **{best.scheme}** "
        f"(mean |error| {_fmt(summaries[best.scheme]['accum_mae'])} over the quantized blocks, "
        f"{_fmt(best.bits_per_element['mean'])} bits/element)."
    )
    for r in lossy:
        s = summaries[r.scheme]
        lines.append(
            f"- {r.scheme}: accumulated error {_fmt(s['amplification'])}× the static error on "
            f"average; from the first quantized block to the last, accumulated MAE changes "
            f"{_fmt(s['accum_growth'])}× (static {_fmt(s['static_growth'])}×); mean KL "
            f"{_fmt(s['kl'])} nats/token, top-1 agreement {_fmt(100 * s['top1'])} %."
        )
    kivi = [r for r in lossy if r.scheme.startswith("kivi")]
    kvarn = [r for r in lossy if r.scheme.startswith("kvarn")]
    for kv in kvarn:
        for ki in kivi:
            a, b = summaries[kv.scheme], summaries[ki.scheme]
            verdict = "lower" if a["accum_mae_last"] < b["accum_mae_last"] else "higher"
            lines.append(
                f"- At the last block, {kv.scheme} has {verdict} accumulated error than "
                f"{ki.scheme} ({_fmt(a['accum_mae_last'])} vs {_fmt(b['accum_mae_last'])}); "
                f"accumulated MAE last/first quantized block {_fmt(a['accum_growth'])}× vs "
                f"{_fmt(b['accum_growth'])}×."
            )
    return lines


def write_kv_report(
    out: str | Path,
    results: list[PseudoDecodeResult],
    decode: tuple[list[list[int]], list[DecodeResult]] | None,
    meta: dict[str, Any],
    *,
    tokenizer: Any = None,
    reference_texts: Sequence[str] | None = None,
) -> Path:
    """Write ``report.md``, ``results.json`` and the PNG plots of ``lowbit eval kv`` to ``out``.

    The greedy decode's reference continuations are shown as text when ``tokenizer`` (to
    decode them) or ``reference_texts`` is given; they are kept in ``results.json``, so that
    :func:`rewrite_kv_report` needs no tokenizer.

    Returns
    -------
    Path
        The markdown report.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {r.scheme: kv_summary(r) for r in results}
    texts = list(reference_texts or [])
    plots: list[str] = []
    if have_matplotlib() and results:
        plots += _plot_kv(results, out)
        if decode is not None and decode[1]:
            plots += _plot_decode(decode[1], out)

    L: list[str] = ["# lowbit eval kv — KV-cache error accumulation", ""]
    L += [f"- {k}: {_short_path(v)}" for k, v in meta.items()]
    L += [""]
    if results:
        r0 = results[0]
        L += [
            "Protocol (KVarN paper, Fig. 5): the text is fed in "
            f"{r0.block_size}-token blocks; after each block its K/V are replaced by "
            f"dequantize(quantize(·)) of the scheme; the first {r0.sink_tokens} tokens and the "
            "current block stay in full precision. *Static*: each layer's reference query attends "
            "over the quantized reference history and the reference output is fed forward "
            "(errors cannot propagate). *Accumulated*: the model runs on its own quantized cache. "
            "Errors are of the attention output softmax(QKᵀ/√d)V before o_proj, against the "
            "unquantized model; means are over layers and over the blocks that can see "
            f"quantized history (blocks ≥ {first_affected_block(r0)}).",
            "",
            "## Summary",
            "",
        ]
        rows: list[list[Any]] = []
        for r in results:
            s, bpe = summaries[r.scheme], r.bits_per_element
            rows.append([
                r.scheme, _fmt(bpe["key"]), _fmt(bpe["value"]), _fmt(bpe["mean"]),
                _fmt(s["static_mae"]), _fmt(s["accum_mae"]), _fmt(s["amplification"]),
                _fmt(s["static_rel"]), _fmt(s["accum_rel"]), _fmt(s["accum_growth"]),
                _fmt(s["kl"]), _fmt(100 * s["top1"], 4), _fmt(s["delta_nll"]),
            ])
        L += _table(
            ["scheme", "K bits/el", "V bits/el", "bits/el", "static MAE", "accum MAE",
             "accum/static", "static rel", "accum rel", "accum MAE last/first block",
             "KL nats/tok", "top-1 %", "ΔNLL nats/tok"],
            rows,
        )
        b0 = min(first_affected_block(r0), len(r0.block_end) - 1)
        L += [
            "",
            "*accum/static*: accumulated MAE over static MAE (how much the errors feed on "
            "themselves). *accum MAE last/first block*: the accumulated MAE of the last block "
            f"(context {r0.block_end[-1]}) divided by that of the first block that sees quantized "
            f"history (block {b0}, context {r0.block_end[b0]}); that first block attends over a "
            "single quantized block, so the ratio mostly reflects the rise over the first few "
            "quantized blocks, not a steady growth with context (the per-block table below shows "
            "the course).",
        ]
        L += ["", "## Findings (computed from the numbers above)", ""]
        L += _findings(results, summaries) or ["- (no lossy scheme was run)"]
        L += ["", "## Per block: mean attention-output |error| over layers (static / accumulated)", ""]
        header = ["context"] + [r.scheme for r in results]
        rows = []
        for b, end in enumerate(results[0].block_end):
            rows.append([end] + [
                f"{_fmt(r.static_mae[b].mean())} / {_fmt(r.accum_mae[b].mean())}" for r in results
            ])
        L += _table(header, rows)
        L += ["", "## Per block: KL(reference ‖ quantized), nats/token, accumulated regime", ""]
        rows = [[end] + [_fmt(r.kl[b]) for r in results] for b, end in enumerate(results[0].block_end)]
        L += _table(header, rows)
        L += [
            "", "## K/V quantization error: magnitude vs direction", "",
            "Squared error of each token vector split as (‖x‖−‖x̂‖)² (magnitude) + "
            "2‖x‖‖x̂‖(1−cos θ) (direction), reference K/V, all quantized blocks and layers; "
            f"'worst {round(100 * TOP_FRACTION)} %' = the token vectors with the largest error.", "",
        ]
        rows = []
        for r in results:
            for kind, sp in r.kv_split.items():
                rows.append([r.scheme, kind, _fmt(sp.relative_error), _fmt(100 * sp.magnitude_share, 3),
                             _fmt(100 * sp.magnitude_share_top, 3), _fmt(100 * sp.top_error_share, 3)])
        L += _table(["scheme", "kind", "‖x−x̂‖²/‖x‖²", "magnitude share %",
                     f"magnitude share in worst {round(100 * TOP_FRACTION)} % %",
                     f"error share of worst {round(100 * TOP_FRACTION)} % %"], rows)
    if decode is not None and decode[1]:
        ref_tokens, dres = decode
        L += [
            "", "## Greedy decode with the quantized cache", "",
            "Prompts are prefilled in full precision, then completed blocks beyond the sink are "
            "quantized and decoding runs greedily; every cache is fed the unquantized model's "
            "greedy token, so the first step where a scheme's greedy choice differs is where "
            "free-running greedy decoding with that cache would first diverge.", "",
        ]
        rows = []
        for d in dres:
            rows.append([
                d.scheme, _fmt(d.kl.mean()), _fmt(d.kl.max()), _fmt(100 * d.top1.mean(), 4),
                ", ".join("none" if f is None else str(f) for f in d.first_divergence),
            ])
        L += _table(["scheme", "mean KL", "max KL", "top-1 %",
                     f"first divergence step per prompt (of {dres[0].kl.shape[1]})"], rows)
        L += ["", "Steps are numbered from 0: step 0 is the first generated token, predicted by "
              "the full-precision prefill (so it always agrees, KL 0); 'none': the greedy choice "
              f"matched the reference at all {dres[0].kl.shape[1]} steps."]
        if tokenizer is not None:
            texts = [tokenizer.decode(toks, skip_special_tokens=True) for toks in ref_tokens]
        if texts:
            L += ["", "Reference continuations (unquantized, greedy):", ""]
            for i, text in enumerate(texts):
                text = text.replace("\n", " ")
                L += [f"{i}. ({dres[0].prompt_tokens[i]} prompt tokens) “{text[:300]}”"]
    if plots:
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    elif results:
        L += ["", "(plots skipped: matplotlib is not installed; `pip install matplotlib`)"]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    payload = {
        "meta": meta,
        "pseudo_decode": [r.to_json() for r in results],
        "summary": summaries,
        "decode": None if decode is None else {
            "reference_tokens": decode[0], "schemes": [d.to_json() for d in decode[1]],
            "reference_texts": texts,
        },
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default),
                                      encoding="utf-8")
    return report


def _short_path(value: Any) -> Any:
    """A file under site-packages as ``(site-packages)/...`` (the rest says nothing)."""
    if isinstance(value, str) and "site-packages/" in value:
        return "(site-packages)/" + value.split("site-packages/", 1)[1]
    return value


def load_kv_results(folder: str | Path) -> tuple[list[PseudoDecodeResult],
                                                  tuple[list[list[int]], list[DecodeResult]] | None,
                                                  dict[str, Any], list[str]]:
    """The results of a ``lowbit eval kv`` run read back from its ``results.json``.

    Returns
    -------
    results, decode, meta, reference_texts
        As taken by :func:`write_kv_report` (``reference_texts`` empty when the run did not
        store them).
    """
    from lowbit.research.kv_error import KVErrorSplit

    data = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    arrays = ("static_rel", "static_mae", "accum_rel", "accum_mae", "kl", "top1", "nll", "nll_reference")
    results = []
    for r in data["pseudo_decode"]:
        r = dict(r)
        r.update({k: np.asarray(r[k], dtype=np.float64) for k in arrays})
        r["kv_split"] = {k: KVErrorSplit(**v) for k, v in r["kv_split"].items()}
        results.append(PseudoDecodeResult(**r))
    decode = None
    texts: list[str] = []
    if data.get("decode"):
        dres = [DecodeResult(scheme=d["scheme"], bits_per_element=d["bits_per_element"],
                             prompt_tokens=d["prompt_tokens"], kl=np.asarray(d["kl"], np.float64),
                             top1=np.asarray(d["top1"], np.float64),
                             first_divergence=d["first_divergence"], greedy_tokens=[])
                for d in data["decode"]["schemes"]]
        decode = (data["decode"]["reference_tokens"], dres)
        texts = list(data["decode"].get("reference_texts") or [])
    return results, decode, data["meta"], texts


def rewrite_kv_report(folder: str | Path, *, tokenizer: Any = None) -> Path:
    """Write ``report.md`` and the plots of a finished ``lowbit eval kv`` run again from its
    ``results.json`` (after a change to the report's layout; the numbers are not recomputed)."""
    results, decode, meta, texts = load_kv_results(folder)
    return write_kv_report(folder, results, decode, meta, tokenizer=tokenizer,
                           reference_texts=texts or None)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
