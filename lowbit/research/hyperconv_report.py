"""The ``lowbit eval hyperconv`` report: markdown, ``results.json`` and one PNG per experiment.

Findings are computed from the numbers (never typed in): a difference "exceeds the seed spread"
when the difference of the means is larger than the sum of the two standard deviations over
training seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.research.report import _figure, _fmt, _table, have_matplotlib


def _stats(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std()) if a.size > 1 else 0.0


def _pm(values: Sequence[float], digits: int = 4) -> str:
    m, s = _stats(values)
    return f"{_fmt(m, digits)} ± {_fmt(s, 2)}" if len(values) > 1 else _fmt(m, digits)


def _e1_groups(e1: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """(task, variant, width, hidden, descriptor) -> the runs over seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in e1:
        groups[(r["task"], r["variant"], r["width"], r["hidden"], r["descriptor"])].append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "plain",
                                                        str(kv[0][4]), kv[0][2], kv[0][3] or 0)))


def _exceeds(a: Sequence[float], b: Sequence[float]) -> tuple[float, bool]:
    (ma, sa), (mb, sb) = _stats(a), _stats(b)
    return ma - mb, abs(ma - mb) > sa + sb


def e1_findings(study: dict[str, Any]) -> list[str]:
    """E1: each HC net against the plain net of the same width (equal conv FLOPs), and the
    plain width needed to match the best HC net."""
    cfg, lines = study["config"], []
    groups = _e1_groups(study["e1"])
    for task in cfg["tasks"]:
        base = groups.get((task, "plain", cfg["e1_hc_width"], None, None))
        if not base:
            continue
        b_psnr = [r["test"]["psnr"] for r in base]
        for key, runs in groups.items():
            if key[0] != task or key[1] != "hc":
                continue
            d, sig = _exceeds([r["test"]["psnr"] for r in runs], b_psnr)
            lines.append(
                f"- {task}: HC width {key[2]}, h = {key[3]} ({key[4]}; {runs[0]['params']:,} "
                f"params) vs plain width {key[2]} ({base[0]['params']:,} params), same conv "
                f"FLOPs: {d:+.2f} dB test PSNR, {'more' if sig else 'not more'} than the seed "
                f"spread ({len(runs)} seeds).")
        hc = [(np.mean([r["test"]["psnr"] for r in runs]), runs) for key, runs in groups.items()
              if key[0] == task and key[1] == "hc"]
        plain = [(np.mean([r["test"]["psnr"] for r in runs]), runs) for key, runs in groups.items()
                 if key[0] == task and key[1] == "plain"]
        if hc and plain:
            best, runs = max(hc, key=lambda t: t[0])
            match = [p for p in sorted(plain, key=lambda t: t[1][0]["flops_per_pixel_1mp"])
                     if p[0] >= best]
            where = (f"the plain width {match[0][1][0]['width']} "
                     f"({_fmt(match[0][1][0]['flops_per_pixel_1mp'], 4)} FLOPs/pixel) is the "
                     "narrowest plain net that reaches it" if match else
                     "no plain net in the sweep reaches it")
            lines.append(f"- {task}: best HC net {_fmt(best, 4)} dB at "
                         f"{_fmt(runs[0]['flops_per_pixel_1mp'], 4)} FLOPs/pixel (1 MP); {where}.")
    return lines


def e3_findings(study: dict[str, Any]) -> list[str]:
    """E3: where the mean test MSE over seeds peaks, and whether the peak stands out."""
    by_h: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in study["e3"]:
        by_h[r["hidden"]].append(r)
    hs = sorted(by_h)
    if len(hs) < 3:
        return ["- E3 needs at least three MLP widths for a shape."]
    mse = [_stats([r["test"]["mse"] for r in by_h[h]]) for h in hs]
    means = np.array([m for m, _ in mse])
    i = int(np.argmax(means[1:-1])) + 1
    left, right = means[:i].min(), means[i + 1:].min()
    spread = mse[i][1] + max(s for _, s in mse)
    peak = means[i] - max(left, right)
    params = [by_h[h][0]["params"] for h in hs]
    n_targets = study["e3"][0]["target_values"]
    lines = [f"- Training targets: {n_targets:,} values; parameters swept "
             f"{params[0]:,} … {params[-1]:,} at a fixed conv FLOP count."]
    if peak > spread:
        lines.append(f"- Test MSE has an interior peak at h = {hs[i]} ({params[i]:,} params): "
                     f"{_fmt(peak, 3)} above the lower of its two sides, more than the seed "
                     f"spread ({_fmt(spread, 3)}): a double-descent-like shape.")
    else:
        lines.append(f"- No interior test-MSE peak beyond the seed spread (largest interior "
                     f"excess {_fmt(peak, 3)} at h = {hs[i]}, spread {_fmt(spread, 3)}): no "
                     "double descent resolved in this probe.")
    j = int(np.argmin(means))
    lines.append(f"- Lowest test MSE at h = {hs[j]} ({params[j]:,} params), "
                 f"{_fmt(means[j], 3)}; at the smallest width {_fmt(means[0], 3)}, at the "
                 f"largest {_fmt(means[-1], 3)}.")
    train = [np.mean([r["train_loss"] for r in by_h[h]]) for h in hs]
    sigma2 = (25 / 255) ** 2
    lines.append(f"- Final training loss (noisy targets) from {_fmt(train[0], 3)} (h = {hs[0]}) "
                 f"to {_fmt(train[-1], 3)} (h = {hs[-1]}), lowest {_fmt(min(train), 3)}; against "
                 f"the noisy targets a perfect denoiser scores σ² = {_fmt(sigma2, 3)} and the "
                 f"identity 2σ² = {_fmt(2 * sigma2, 3)}: below σ² a net fits the target noise.")
    return lines


def _e4_psnr(r: dict[str, Any], method: str) -> float:
    v = r["test"][method]
    return float(np.mean([x["psnr"] for x in v])) if isinstance(v, list) else float(v["psnr"])


def e4_table(study: dict[str, Any]) -> tuple[list[int], dict[str, list[list[float]]]]:
    """Bits and, per method, the PSNR of every training seed at each bits."""
    from lowbit.research.hyperconv_study import E4_METHODS

    bits = sorted({r["bits"] for r in study["e4"]})
    table = {m: [[_e4_psnr(r, m) for r in study["e4"] if r["bits"] == b] for b in bits]
             for m in E4_METHODS}
    return bits, table


def e4_findings(study: dict[str, Any]) -> list[str]:
    from lowbit.research.hyperconv_study import E4_METHODS

    bits, table = e4_table(study)
    lines = []
    for m in E4_METHODS[1:]:
        means = [float(np.mean(v)) for v in table[m]]
        i = int(np.argmax(means))
        lines.append(f"- {m}: best at {bits[i]} bit(s) per weight ({_fmt(means[i], 4)} dB); "
                     + ", ".join(f"{b} bit: {_fmt(x, 4)}" for b, x in zip(bits, means, strict=True))
                     + ".")
    return lines


# -- plots --------------------------------------------------------------------------------------
def _plot_e1(study: dict[str, Any], out: Path) -> str:
    cfg = study["config"]
    groups = _e1_groups(study["e1"])
    fig, axes = _figure(2, len(cfg["tasks"]), width=5.0, height=3.4)
    for row, task in enumerate(cfg["tasks"]):
        series: dict[tuple[str, Any], list[tuple[float, float, float, float]]] = defaultdict(list)
        for key, runs in groups.items():
            if key[0] != task:
                continue
            m, s = _stats([r["test"]["psnr"] for r in runs])
            label = ("plain (width swept)", None) if key[1] == "plain" else (
                f"HC width {key[2]}, {key[4]} (h swept)", key[4])
            series[label].append((runs[0]["flops_per_pixel_1mp"], runs[0]["params"], m, s))
        for (name, _), pts in series.items():
            pts.sort(key=lambda p: p[1])
            x_f, x_p, y, e = (np.array(v) for v in zip(*pts, strict=True))
            for col, x in enumerate((x_f, x_p)):
                axes[row][col].errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, label=name)
            if name.startswith("HC"):  # which point is which MLP width
                hs = sorted(k[3] for k in groups if k[0] == task and k[1] == "hc"
                            and f"{k[4]} (h swept)" in name)
                for xp, yp, h in zip(x_p, y, hs, strict=False):
                    axes[row][1].annotate(f"h={h}", (xp, yp), fontsize=7,
                                          textcoords="offset points", xytext=(3, 4))
        axes[row][0].set_xlabel("FLOPs per pixel at 1 MP (log)")
        axes[row][1].set_xlabel("parameters (log)")
        for ax in axes[row]:
            ax.set_xscale("log")
            ax.set_ylabel(f"{task}: test PSNR, dB")
            ax.grid(alpha=0.3)
        axes[row][1].legend(fontsize=7)
    fig.suptitle("E1: quality vs FLOPs and vs parameters (mean ± std over seeds)")
    fig.savefig(out / "e1_quality.png", dpi=90)
    return "e1_quality.png"


def _plot_e2(study: dict[str, Any], out: Path) -> str:
    fig, axes = _figure(2, 1, width=5.0, height=3.6)
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in study["e2"]:
        label = "plain" if r["variant"] == "plain" else f"HC h={r['hidden']} ({r['params']:,} params)"
        series[label].append(r)
    for label, rows in series.items():
        size = np.array([r["size"] for r in rows]) ** 2
        line, = axes[0][0].plot(size, [r["flops_per_pixel"] for r in rows], label=label)
        axes[0][0].plot(size, [r["measured_flops_per_pixel"] for r in rows], "x",
                        color=line.get_color())
        axes[0][1].plot(size, [r["seconds_per_mp"] for r in rows], marker="o", ms=4, label=label)
    axes[0][0].set_title("FLOPs/pixel (line: analytic; x: FlopCounterMode)", fontsize=9)
    axes[0][1].set_title("wall time per megapixel, 1 thread (best of repeats)", fontsize=9)
    axes[0][0].set_ylabel("FLOPs per pixel (log)")
    axes[0][1].set_ylabel("seconds per MP (log)")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels per image (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("E2: the MLP's cost amortizes over the image (width-8 denoiser)")
    fig.savefig(out / "e2_amortization.png", dpi=90)
    return "e2_amortization.png"


def _plot_e3(study: dict[str, Any], out: Path) -> str:
    fig, axes = _figure(2, 1, width=5.0, height=3.6)
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in study["e3"]:
        by_seed[r["seed"]].append(r)
    for seed, rows in sorted(by_seed.items()):
        rows.sort(key=lambda r: r["params"])
        p = [r["params"] for r in rows]
        axes[0][0].plot(p, [r["test"]["mse"] for r in rows], marker="o", ms=4, label=f"seed {seed}")
        axes[0][1].plot(p, [r["train_loss"] for r in rows], marker="o", ms=4, label=f"seed {seed}")
    n = study["e3"][0]["target_values"]
    for ax in axes[0]:
        ax.axvline(n, color="k", ls="--", lw=0.8, label="training target values")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (MLP width swept; conv FLOPs fixed; log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    sigma2 = (25 / 255) ** 2
    axes[0][1].axhline(sigma2, color="grey", ls=":", lw=0.8, label="σ²: a perfect denoiser")
    axes[0][1].axhline(2 * sigma2, color="grey", ls="-.", lw=0.8, label="2σ²: the identity")
    axes[0][1].legend(fontsize=7)
    axes[0][0].set_ylabel("test MSE vs clean")
    axes[0][1].set_ylabel("final training loss (noisy targets)")
    fig.suptitle("E3: double-descent probe (tiny training set, noisy targets)")
    fig.savefig(out / "e3_double_descent.png", dpi=90)
    return "e3_double_descent.png"


def _plot_e4(study: dict[str, Any], out: Path) -> str:
    bits, table = e4_table(study)
    fig, axes = _figure(1, 1, width=6.0, height=3.8)
    ax = axes[0][0]
    x = np.log2(bits)
    for m, per_bits in table.items():
        y = [np.mean(v) for v in per_bits]
        e = [np.std(v) if len(v) > 1 else 0.0 for v in per_bits]
        ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, label=m)
    ax.set_xticks(x, [str(b) for b in bits])
    ax.set_xlabel("bits per MLP weight (hidden width set so that weights × bits is constant)")
    ax.set_ylabel("denoising test PSNR, dB")
    budget = study["e4"][0]["weight_bits"] if study["e4"] else 0
    ax.set_title(f"E4: HC denoiser at a fixed MLP-weight budget (≈{budget:,} bits)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(out / "e4_fixed_memory.png", dpi=90)
    return "e4_fixed_memory.png"


# -- the report ---------------------------------------------------------------------------------
def _cost_section(study: dict[str, Any]) -> list[str]:
    from lowbit.research.hyperconv import HyperConv2d, costs_at_sizes, format_cost_table
    from lowbit.research.hyperconv_study import RestorationNet

    cfg = study["config"]
    w, h = cfg["e1_hc_width"], cfg["e1_hidden"][-1]
    layer = HyperConv2d(w, w, 3, tiles=cfg["tiles"], descriptor=cfg["descriptor"], hidden=h)
    net = RestorationNet("denoise", w, depth=cfg["depth"], hidden=h, tiles=cfg["tiles"],
                         descriptor=cfg["descriptor"])
    train = (cfg["batch"], cfg["patch"], cfg["patch"])
    rows = [(label, net.cost(hh, ww, b)) for label, (b, hh, ww) in
            [(f"training {train[0]}×{train[1]}×{train[2]}", train), ("1 MP (1000×1000)",
             (1, 1000, 1000)), ("12 MP (3000×4000)", (1, 3000, 4000))]]
    return ([f"One HC layer ({w}→{w} channels, k = 3, {cfg['tiles']} tiles, descriptor "
             f"{cfg['descriptor']!r}, h = {h}):", ""]
            + format_cost_table(costs_at_sizes(layer, train))
            + ["", f"The whole width-{w} HC denoiser (depth {cfg['depth']}, h = {h}):", ""]
            + format_cost_table(rows))


def write_hyperconv_report(out: str | Path, study: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``report.md``, ``results.json`` and the PNGs to ``out``; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = ([_plot_e1(study, out), _plot_e2(study, out), _plot_e3(study, out),
              _plot_e4(study, out)] if have_matplotlib() else [])
    cfg = study["config"]
    L = ["# lowbit eval hyperconv — hypernetwork convolutions at fixed FLOPs and fixed memory", ""]
    L += [f"- {k}: {v}" for k, v in meta.items()]
    L += [f"- training: {cfg['steps']} Adam steps (lr {cfg['lr']}, cosine decay), batches of "
          f"{cfg['batch']} random {cfg['patch']}² patches of the training images, L2 loss; "
          f"test: center {cfg['test_size']}² crops of the test images, fixed noise",
          f"- HC layers: the {cfg['depth'] - 2} middle convolutions, {cfg['tiles']} tiles, "
          f"descriptor {cfg['descriptor']!r} unless stated; HyperConv2d is lowbit's "
          "reconstruction of the paper's layer, not the paper's code",
          "", "## FLOPs and parameters (analytic counter, FLOPs = 2·MAC)", ""]
    L += _cost_section(study)
    L += ["", "## E1: quality at equal convolution FLOPs", ""]
    rows = []
    for key, runs in _e1_groups(study["e1"]).items():
        r0 = runs[0]
        rows.append([key[0], key[1], key[2], "—" if key[3] is None else key[3], key[4] or "—",
                     f"{r0['params']:,}", _fmt(r0["flops_per_pixel_1mp"], 5),
                     _fmt(r0["flops_per_pixel_train"], 5),
                     _pm([r["test"]["psnr"] for r in runs]),
                     _pm([r["test"]["ssim"] for r in runs], 3),
                     _pm([r["val"]["psnr"] for r in runs])])
    L += _table(["task", "net", "width", "h", "descriptor", "params", "FLOPs/px 1 MP",
                 "FLOPs/px training", "test PSNR dB", "test SSIM", "val PSNR dB"], rows)
    L += ["", "Findings (mean ± std over training seeds):", ""] + e1_findings(study)
    L += ["", "## E2: amortization (denoiser, width 8, untrained weights, one thread)", ""]
    L += _table(["net", "params", "image", "FLOPs/px analytic", "FLOPs/px measured",
                 "MLP share", "s/MP"],
                [["plain" if r["variant"] == "plain" else f"HC h={r['hidden']}", f"{r['params']:,}",
                  f"{r['size']}²", _fmt(r["flops_per_pixel"], 5),
                  _fmt(r["measured_flops_per_pixel"], 5), f"{100 * r['mlp_share']:.3g} %",
                  _fmt(r["seconds_per_mp"], 3)] for r in study["e2"]])
    L += ["", "Measured FLOPs are torch's FlopCounterMode (convolutions and matrix products "
          "only; the analytic count adds biases, ReLUs, gains and the descriptor sums). Wall "
          "times are from a shared machine and are indicative only.", ""]
    L += [f"## E3: double-descent probe ({cfg['e3_patches']} training patches of "
          f"{cfg['e3_patch']}², noisy targets, full batch, {cfg['e3_steps']} steps)", ""]
    by_h: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in study["e3"]:
        by_h[r["hidden"]].append(r)
    L += _table(["h", "params", "train loss", "test MSE", "test PSNR dB"],
                [[h, f"{runs[0]['params']:,}", _pm([r["train_loss"] for r in runs], 3),
                  _pm([r["test"]["mse"] for r in runs], 3),
                  _pm([r["test"]["psnr"] for r in runs])] for h, runs in sorted(by_h.items())])
    L += ["", "Findings:", ""] + e3_findings(study)
    L += ["", "## E4: fixed memory for the hypernetwork's weights (denoising)", ""]
    bits, table = e4_table(study)
    first = {b: next(r for r in study["e4"] if r["bits"] == b) for b in bits}
    L += _table(["bits", "h", "MLP weights", "weight bits", "float biases"] + list(table),
                [[b, first[b]["hidden"], f"{first[b]['mlp_weights']:,}",
                  f"{first[b]['weight_bits']:,}", f"{first[b]['mlp_float_biases']:,}"]
                 + [_pm(table[m][i]) for m in table] for i, b in enumerate(bits)])
    L += ["", f"PSNR in dB (mean ± std over {cfg['e4_seeds']} training seed(s); stochastic: mean "
          f"over {cfg['e4_stochastic_seeds']} rounding seeds). The MLP weight matrices are "
          "rounded with one grid per output neuron (`lowbit.quantize(w, bits=b, scheme=\"rtn\", "
          "axis=-1, symmetric=(b == 1), rounding=...)`, via "
          "`lowbit.research.weights.round_weights`); MLP biases stay float32 and are not counted "
          "in the budget (as in `lowbit eval weights`); 32 bits is the float network itself. "
          f"shadow_ste: {cfg['e4_shadow_steps']} more steps with nearest-even rounded forward "
          "weights and a float shadow copy (straight-through), then rounded.", "",
          "Findings:", ""] + e4_findings(study)
    if plots:
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    else:
        L += ["", "(plots skipped: matplotlib is not installed; `pip install matplotlib`)"]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"meta": meta, "study": study}, indent=1,
                                                 default=_json_default), encoding="utf-8")
    return report


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
