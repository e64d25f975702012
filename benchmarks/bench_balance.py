"""KVarN dual-axis variance normalization (``lowbit.balance``) vs a vectorized NumPy version.

The baseline runs the same algorithm (float32, unbiased two-pass std, the same clips and
best-so-far selection, column stds reused between the imbalance and the next column step) on
the whole batch at once with NumPy array operations.  Minimum traffic: read the tiles, write
the balanced tiles (scales are negligible): 8 bytes per element.
"""

from __future__ import annotations

import numpy as np
from common import best_time, row

import lowbit


def _std(x: np.ndarray, axis: int) -> np.ndarray:
    return np.std(x, axis=axis, ddof=1, keepdims=True)


def _imbalance(std_col: np.ndarray, std_row: np.ndarray) -> np.ndarray:
    floor = np.float32(1e-8)
    col = std_col.max(axis=(1, 2)) / np.maximum(std_col.min(axis=(1, 2)), floor)
    row_ = std_row.max(axis=(1, 2)) / np.maximum(std_row.min(axis=(1, 2)), floor)
    return col + row_


def numpy_balance(t: np.ndarray, iterations: int = 8) -> tuple[np.ndarray, ...]:
    """Batch [B, R, C] float32 -> balanced, col_scale [B, 1, C], row_scale [B, R, 1], imbalance [B]."""
    b, r, c = t.shape
    f32 = np.float32
    log_col = np.zeros((b, 1, c), f32)
    log_row = np.zeros((b, r, 1), f32)
    best_col = np.ones((b, 1, c), f32)
    best_row = np.ones((b, r, 1), f32)
    std_col = _std(t, 1)
    best = _imbalance(std_col, _std(t, 2))
    for _ in range(iterations):
        log_col = np.clip(log_col + np.log(np.clip(std_col, f32(1e-3), f32(1e3))), f32(-0.3), f32(10))
        cur = t / np.exp(log_col) / np.exp(log_row)
        log_row = np.clip(log_row + np.log(np.clip(_std(cur, 2), f32(1e-3), f32(1e3))), f32(-0.3), f32(10))
        cur = t / np.exp(log_col) / np.exp(log_row)
        std_col = _std(cur, 1)
        imb = _imbalance(std_col, _std(cur, 2))
        better = imb <= best
        best = np.where(better, imb, best)
        best_col = np.where(better[:, None, None], np.exp(log_col), best_col)
        best_row = np.where(better[:, None, None], np.exp(log_row), best_row)
    return t / best_col / best_row, best_col, best_row, best


def run(quick: bool = False) -> list[dict]:
    tiles_n = 64 if quick else 4096
    r = c = 128
    iterations = 8
    rng = np.random.default_rng(0)
    # K-like tiles: per-channel (row) magnitudes spread over ~2 decades, one outlier token
    tiles = (rng.standard_normal((tiles_n, r, c), dtype=np.float32)
             * np.exp(rng.standard_normal((tiles_n, r, 1))).astype(np.float32) * 4)
    tiles[:, :, 7] *= 20

    # correctness gate, same run (balanced tiles are gauge invariant; compare them and Imb)
    probe = tiles[:16]
    bal, _, _, imb = lowbit.balance(probe, iterations, return_imbalance=True)
    ref_bal, _, _, ref_imb = numpy_balance(probe, iterations)
    assert np.allclose(imb, ref_imb, rtol=1e-4), "imbalance disagrees with the numpy baseline"
    assert np.allclose(bal, ref_bal, rtol=1e-3, atol=1e-3 * np.abs(ref_bal).max()), "balanced disagrees"

    t = best_time(lambda: lowbit.balance(tiles, iterations), 5 if quick else 3)
    tb = best_time(lambda: numpy_balance(tiles, iterations), 3 if quick else 1, warmup=1 if quick else 0)
    out = row(f"balance {r}x{c} f32, {iterations} it", f"{tiles_n} t, {t / tiles_n * 1e6:.0f} us/tile",
              t, "numpy vectorized", tb, 2 * tiles.nbytes, tiles.size)
    out["us_per_tile"] = t / tiles_n * 1e6
    out["baseline_us_per_tile"] = tb / tiles_n * 1e6

    return [out]
