"""Matched-bits KV study (issue 20): several ``lowbit eval kv`` runs merged into one table.

``lowbit eval kv-study RUN_DIR [RUN_DIR ...] --out DIR`` reads the ``results.json`` of
pseudo-decode runs on the same text and model (one run per batch of schemes, so that a long
study can be made in pieces), groups the schemes that differ only in their rotation seed
(a ``-s<N>`` option, e.g. ``turboquant-k2v2-s0``, ``-s1``, ``-s2``) and writes ``study.md``,
``study.json`` and ``study_kl_per_block.png``:

* per scheme (seed group): bits/element (K, V, mean), mean KL(reference ‖ quantized) of the
  accumulated regime over the blocks that see quantized history, the same mean over the
  first and the second half of those blocks (accumulation), top-1 agreement and the
  accumulated attention-output error, each as the mean over seeds with its min–max spread;
* the verdict of issue 20: whether the best lowbit scheme at ≤ ``max_bits`` bits/element
  (KVarN family) reaches a mean KL ≤ ``target`` × that of TurboQuant-MSE at the same or fewer
  bits, with the seed spread — or by how much it misses.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.research.kv_error import KVErrorSplit, PseudoDecodeResult
from lowbit.research.report import _fmt, _table, first_affected_block, have_matplotlib

_SEED = re.compile(r"-s[0-9]+(?=-|$)")


def seed_group(name: str) -> str:
    """The scheme name without its ``-s<N>`` seed option."""
    return _SEED.sub("", name)


def load_results(run_dirs: Sequence[str | Path]) -> tuple[list[PseudoDecodeResult], list[dict[str, Any]]]:
    """Pseudo-decode results and the run metadata of several ``lowbit eval kv`` output folders.

    Raises
    ------
    ValueError
        A folder without ``results.json``, runs of different token counts, or a scheme twice.
    """
    results: list[PseudoDecodeResult] = []
    metas = []
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise ValueError(f"{d}: no results.json (not a `lowbit eval kv` output folder)")
        payload = json.loads(path.read_text(encoding="utf-8"))
        metas.append(payload["meta"])
        for r in payload["pseudo_decode"]:
            arrays = {k: np.asarray(v, np.float64) for k, v in r.items()
                      if k in ("static_rel", "static_mae", "accum_rel", "accum_mae", "kl", "top1",
                               "nll", "nll_reference")}
            split = {k: KVErrorSplit(**v) for k, v in r.get("kv_split", {}).items()}
            results.append(PseudoDecodeResult(
                scheme=r["scheme"], description=r["description"], bits_per_element=r["bits_per_element"],
                block_size=r["block_size"], sink_tokens=r["sink_tokens"], block_end=r["block_end"],
                kv_split=split, **arrays))
    if len({tuple(r.block_end) for r in results}) > 1:
        raise ValueError("the runs cover different token counts; merge runs of one length only")
    # a scheme in several runs must have given the same numbers (the protocol is deterministic
    # on the CPU): kept once, and the check is reported
    first: dict[str, PseudoDecodeResult] = {}
    kept = []
    for r in results:
        if r.scheme not in first:
            first[r.scheme] = r
            kept.append(r)
            continue
        a = first[r.scheme]
        same = all(np.allclose(getattr(a, k), getattr(r, k), rtol=1e-9, atol=0)
                   for k in ("kl", "top1", "accum_mae", "static_mae"))
        if not same:
            diff = float(np.max(np.abs(a.kl - r.kl)))
            raise ValueError(f"scheme {r.scheme!r} appears in more than one run with different "
                             f"results (KL differs by up to {diff:.3g})")
        metas[0].setdefault("reproduced", []).append(r.scheme)
    return kept, metas


def scheme_stats(r: PseudoDecodeResult) -> dict[str, float]:
    """Scalars of one run: KL over the affected blocks, its first / second half, top-1, MAE."""
    b0 = min(first_affected_block(r), len(r.block_end) - 1)
    kl = r.kl[b0:]
    half = len(kl) // 2
    return {
        "bits_key": float(r.bits_per_element["key"]),
        "bits_value": float(r.bits_per_element["value"]),
        "bits": float(r.bits_per_element["mean"]),
        "kl": float(kl.mean()),
        "kl_first_half": float(kl[:half].mean()) if half else math.nan,
        "kl_second_half": float(kl[half:].mean()),
        "top1": float(r.top1[b0:].mean()),
        "accum_mae": float(r.accum_mae[b0:].mean()),
    }


def group_stats(results: Sequence[PseudoDecodeResult]) -> dict[str, dict[str, Any]]:
    """{group: {"seeds": n, "schemes": [...], stat: (mean, min, max)}} in first-seen order."""
    groups: dict[str, list[PseudoDecodeResult]] = {}
    for r in results:
        groups.setdefault(seed_group(r.scheme), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for g, rs in groups.items():
        per = [scheme_stats(r) for r in rs]
        entry: dict[str, Any] = {"seeds": len(rs), "schemes": [r.scheme for r in rs]}
        for k in per[0]:
            vals = np.array([p[k] for p in per])
            entry[k] = (float(vals.mean()), float(vals.min()), float(vals.max()))
        out[g] = entry
    return out


def _with_spread(stat: tuple[float, float, float], n: int, digits: int = 3, scale: float = 1.0) -> str:
    mean, lo, hi = (scale * v for v in stat)
    if n == 1 or lo == hi:
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"


def verdict(stats: dict[str, dict[str, Any]], *, max_bits: float = 2.4, target: float = 0.8) -> list[str]:
    """The issue-20 comparison, as sentences computed from ``stats``."""
    tq = {g: s for g, s in stats.items() if g.startswith("turboquant") and "prod" not in g}
    mine = {g: s for g, s in stats.items() if g.startswith("kvarn") and s["bits"][0] <= max_bits + 1e-9}
    if not tq or not mine:
        return ["- (the verdict needs a TurboQuant-MSE run and a KVarN run at ≤ "
                f"{max_bits} bits/element)"]
    best = min(mine, key=lambda g: mine[g]["kl"][0])
    b = mine[best]
    peers = {g: s for g, s in tq.items() if s["bits"][0] <= b["bits"][0] + 1e-9}
    if not peers:
        return [f"- No TurboQuant-MSE run uses ≤ {_fmt(b['bits'][0])} bits/element; no verdict."]
    ref_name = min(peers, key=lambda g: peers[g]["kl"][0])
    ref = peers[ref_name]
    ratio = b["kl"][0] / ref["kl"][0]
    # the ratio against the best and the worst TurboQuant seed
    lo, hi = b["kl"][0] / ref["kl"][2], b["kl"][0] / ref["kl"][1]
    reached = ratio <= target
    lines = [
        f"- Best lowbit scheme at ≤ {max_bits} bits/element: **{best}** ({_fmt(b['bits'][0])} "
        f"bits/element, mean KL {_with_spread(b['kl'], b['seeds'])} nats/token).",
        f"- TurboQuant-MSE at the same or fewer bits: **{ref_name}** ({_fmt(ref['bits'][0])} "
        f"bits/element, mean KL {_with_spread(ref['kl'], ref['seeds'])} over {ref['seeds']} "
        "rotation seed(s)).",
        f"- Ratio of mean KL: **{_fmt(ratio)}×** (against TurboQuant's seed range: "
        f"{_fmt(lo)}–{_fmt(hi)}×); target ≤ {target}×: "
        + ("**reached**." if reached and hi <= target else
           "reached on the mean, but not against every TurboQuant seed." if reached else
           f"**not reached** (short by {_fmt(ratio / target)}× the target)."),
    ]
    return lines


def _plot(results: Sequence[PseudoDecodeResult], stats: dict[str, dict[str, Any]], out: Path) -> str:
    from lowbit.research.report import _figure

    fig, axes = _figure(1, 1, width=8.0, height=4.8)
    ax = axes[0][0]
    for g in stats:
        rs = [r for r in results if seed_group(r.scheme) == g]
        kl = np.stack([np.maximum(r.kl, 1e-6) for r in rs])
        x = rs[0].block_end
        line, = ax.plot(x, kl.mean(0), marker="o", ms=3,
                        label=f"{g} ({_fmt(stats[g]['bits'][0])} b/el" + (f", {len(rs)} seeds)" if len(rs) > 1 else ")"))
        if len(rs) > 1:
            ax.fill_between(x, kl.min(0), kl.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("context position (end of 128-token block)")
    ax.set_ylabel("KL(reference ‖ quantized), nats/token")
    ax.set_title("Accumulated regime, per block (band: min–max over rotation seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    name = "study_kl_per_block.png"
    fig.savefig(out / name, dpi=110)
    return name


def write_study(out: str | Path, results: Sequence[PseudoDecodeResult], metas: Sequence[dict[str, Any]],
                *, max_bits: float = 2.4, target: float = 0.8) -> Path:
    """Write ``study.md``, ``study.json`` and the per-block KL plot; returns the markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = group_stats(results)
    order = sorted(stats, key=lambda g: (stats[g]["bits"][0], stats[g]["kl"][0]))
    r0 = results[0]
    L = ["# Matched-bits KV study (issue 20)", ""]
    L += [f"- runs: {len(metas)}; tokens: {r0.block_end[-1]}; block size {r0.block_size}; "
          f"sink {r0.sink_tokens}; model: {metas[0].get('model', '?')}",
          f"- versions: {metas[0].get('versions', '?')}"]
    L += [f"- run {i}: {m.get('time', '?')}" for i, m in enumerate(metas)]
    if metas[0].get("reproduced"):
        L += ["- in two runs with identical results (kept once): "
              + ", ".join(metas[0]["reproduced"])]
    b0 = first_affected_block(r0)
    n_aff = len(r0.block_end) - b0
    L += ["", f"Means over the {n_aff} blocks that see quantized history (blocks ≥ {b0}); "
          f"first half = the first {n_aff // 2} of them, second half = the rest. Values with a "
          "range are the mean over rotation seeds (min–max).", ""]
    rows = []
    for g in order:
        s, n = stats[g], stats[g]["seeds"]
        rows.append([g, n, _fmt(s["bits_key"][0]), _fmt(s["bits_value"][0]), _fmt(s["bits"][0]),
                     _with_spread(s["kl"], n), _with_spread(s["kl_first_half"], n),
                     _with_spread(s["kl_second_half"], n), _with_spread(s["top1"], n, 4, 100.0),
                     _with_spread(s["accum_mae"], n)])
    L += _table(["scheme", "seeds", "K bits/el", "V bits/el", "bits/el", "mean KL", "KL 1st half",
                 "KL 2nd half", "top-1 %", "accum MAE"], rows)
    L += ["", "## Verdict (computed from the table)", ""]
    L += verdict(stats, max_bits=max_bits, target=target)
    L += ["", "## Per block KL (accumulated regime), mean over seeds", ""]
    header = ["context"] + order
    per_block = []
    for b, end in enumerate(r0.block_end):
        row: list[Any] = [end]
        for g in order:
            rs = [r for r in results if seed_group(r.scheme) == g]
            row.append(_fmt(float(np.mean([r.kl[b] for r in rs]))))
        per_block.append(row)
    L += _table(header, per_block)
    if have_matplotlib():
        L += ["", f"![per-block KL]({_plot(results, stats, out)})"]
    path = out / "study.md"
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    (out / "study.json").write_text(json.dumps({"groups": stats, "order": order}, indent=1), encoding="utf-8")
    return path
