"""GPU: KVarN balance of 128 x 128 tiles at 8 iterations vs a batched torch implementation.

Skipped (no rows) without a CUDA device.  The baseline runs the same algorithm (float32,
unbiased two-pass std, the same clips and best-so-far selection) on the whole batch with torch
operations.  Reported per tile (µs); traffic counted: tiles read + balanced tiles written.
"""

from __future__ import annotations

import functools
import sys

from cuda_common import event_time, gpu_available, gpu_row

import lowbit


def torch_balance(t, iterations: int = 8):  # type: ignore[no-untyped-def]
    """Batch [B, R, C] float32 -> balanced, col_scale [B, 1, C], row_scale [B, R, 1], imbalance [B]."""
    import torch

    b, r, c = t.shape
    log_col = torch.zeros(b, 1, c, device=t.device)
    log_row = torch.zeros(b, r, 1, device=t.device)
    best_col = torch.ones(b, 1, c, device=t.device)
    best_row = torch.ones(b, r, 1, device=t.device)

    def imbalance(cur):  # type: ignore[no-untyped-def]
        sc, sr = cur.std(dim=1, keepdim=True), cur.std(dim=2, keepdim=True)
        f = lambda s: s.amax(dim=(1, 2)) / s.amin(dim=(1, 2)).clamp_min(1e-8)  # noqa: E731
        return f(sc) + f(sr), sc

    best, std_col = imbalance(t)
    for _ in range(iterations):
        log_col = (log_col + std_col.clamp(1e-3, 1e3).log()).clamp(-0.3, 10)
        cur = t / log_col.exp() / log_row.exp()
        log_row = (log_row + cur.std(dim=2, keepdim=True).clamp(1e-3, 1e3).log()).clamp(-0.3, 10)
        cur = t / log_col.exp() / log_row.exp()
        imb, std_col = imbalance(cur)
        better = imb <= best
        best = torch.where(better, imb, best)
        best_col = torch.where(better[:, None, None], log_col.exp(), best_col)
        best_row = torch.where(better[:, None, None], log_row.exp(), best_row)
    return t / best_col / best_row, best_col, best_row, best


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("bench_balance_cuda: skipped (no CUDA device)", file=sys.stderr)
        return []
    import cupy as cp
    import numpy as np
    import torch

    n_tiles = 2048 if quick else 65536
    r = c = 128
    it = 8
    g = torch.Generator(device="cuda").manual_seed(0)
    # K-like tiles: per-channel (row) magnitudes spread over ~2 decades, one outlier token
    tiles = (torch.randn(n_tiles, r, c, device="cuda", generator=g)
             * torch.randn(n_tiles, r, 1, device="cuda", generator=g).exp() * 4)
    tiles[:, :, 7] *= 20

    # correctness gate, same run: the baseline agrees (balanced tiles are gauge invariant)
    bal, _, _, imb = lowbit.balance(tiles[:64], it, return_imbalance=True)
    ref_bal, _, _, ref_imb = torch_balance(tiles[:64], it)
    assert torch.allclose(imb, ref_imb, rtol=1e-4), "imbalance disagrees with the torch baseline"
    assert torch.allclose(bal, ref_bal, rtol=1e-3, atol=1e-3 * ref_bal.abs().max().item()), "balanced disagrees"
    assert torch.equal(bal.cpu(), lowbit.balance(tiles[:64].cpu(), it)[0]), "GPU and CPU balance differ"

    tb = event_time(functools.partial(torch_balance, tiles, it), repeat=3, warmup=1)
    results = []
    f32 = np.float32
    consts = (f32(1e-3), f32(1e3), f32(-0.3), f32(10.0), f32(1e-8))
    for label, data in (("f32", tiles), ("f16", tiles.half())):
        xc = cp.from_dlpack(data)
        outs = (cp.empty_like(xc), cp.empty((n_tiles, c), cp.float32), cp.empty((n_tiles, r), cp.float32),
                cp.empty(n_tiles, cp.float32))
        t = event_time(functools.partial(lowbit.cuda.balance_tiles, xc, it, *consts, *outs), repeat=10)
        nbytes = 2 * data.numel() * data.element_size()
        row = gpu_row(f"balance kernel {r}x{c} {label}, {it} it", f"{n_tiles} tiles, {t / n_tiles * 1e6:.3f} us/tile",
                      t, "torch batched, same algorithm", tb, nbytes, data.numel())
        row["us_per_tile"] = t / n_tiles * 1e6
        row["baseline_us_per_tile"] = tb / n_tiles * 1e6
        results.append(row)
    t = event_time(functools.partial(lowbit.balance, tiles, it), repeat=10)
    row = gpu_row(f"lowbit.balance(torch f32) front, {it} it", f"{n_tiles} tiles, {t / n_tiles * 1e6:.3f} us/tile",
                  t, "torch batched, same algorithm", tb, 2 * tiles.numel() * 4, tiles.numel())
    row["us_per_tile"] = t / n_tiles * 1e6
    row["baseline_us_per_tile"] = tb / n_tiles * 1e6
    results.append(row)
    return results


if __name__ == "__main__":
    from lowbit.benchrun import format_table

    print(format_table(run("--quick" in sys.argv)))
