"""Numba kernels for KVarN's log-domain dual-axis variance normalization (DESIGN.md §4 step 2).

``balance_tile`` is the per-tile algorithm, inlined into its callers: the batch kernel
``balance_tiles`` here and the KVarN tile quantizer (``lowbit/cpu/kvarn.py``) call it per tile.
All arithmetic is float32.  The current iterate ``cur = T / e^Lc / e^Lr`` is never stored: it is
recomputed on the fly as ``(T[r, c] * inv_col[c]) * inv_row[r]`` with ``inv = exp(-L)``.
Column statistics stream over ``T`` (row-major, SIMD across columns) and row statistics over a
transposed copy ``T.T`` (SIMD across rows), so that no loop is a horizontal reduction (which
LLVM will not vectorize without reassociation).

Standard deviations are unbiased and two-pass, with the mean computed around the first element
of the column/row: ``m = x0 + sum(x - x0) / n``, ``var = sum((x - m)**2) / (n - 1)``.  The shift
makes the std of a constant column *exactly* 0 (so constant and all-zero tiles have an exact
imbalance of 0), and costs one subtraction.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_F32 = nb.float32


@nb.njit(inline="always", cache=True)
def _col_std(t: np.ndarray, inv_col: np.ndarray, inv_row: np.ndarray,
             acc: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """``std[c]`` = unbiased std over rows of ``cur[:, c] = (t[:, c] * inv_col[c]) * inv_row``.

    ``t`` is ``[R, C]`` row-major; every inner loop runs over columns (contiguous).  Called with
    ``t = T.T`` and the roles of ``inv_col``/``inv_row`` swapped it gives row stds.
    """
    nr, nc = t.shape
    s0 = inv_row[0]
    for c in range(nc):
        mean[c] = (t[0, c] * inv_col[c]) * s0  # shift: the first element of the column
        acc[c] = _F32(0.0)
    for r in range(1, nr):
        sr = inv_row[r]
        for c in range(nc):
            acc[c] += (t[r, c] * inv_col[c]) * sr - mean[c]
    for c in range(nc):
        mean[c] += acc[c] / _F32(nr)
        acc[c] = _F32(0.0)
    for r in range(nr):
        sr = inv_row[r]
        for c in range(nc):
            d = (t[r, c] * inv_col[c]) * sr - mean[c]
            acc[c] += d * d
    for c in range(nc):
        std[c] = math.sqrt(acc[c] / _F32(nr - 1))


@nb.njit(inline="always", cache=True)
def _spread(std: np.ndarray, floor: float) -> float:
    """``max(std) / max(min(std), floor)``; NaN if any std is NaN."""
    lo = std[0]
    hi = std[0]
    bad = False
    for i in range(std.shape[0]):
        v = std[i]
        bad |= v != v
        lo = min(lo, v)
        hi = max(hi, v)
    if bad:
        return _F32(np.nan)
    return hi / max(lo, floor)


@nb.njit(inline="always", cache=True)
def _update_log_scale(log_scale: np.ndarray, std: np.ndarray, inv: np.ndarray,
                      std_min: float, std_max: float, log_min: float, log_max: float) -> None:
    """``L = clip(L + ln(clip(std, std_min, std_max)), log_min, log_max)``; ``inv = exp(-L)``."""
    for i in range(log_scale.shape[0]):
        s = min(max(std[i], std_min), std_max)
        v = min(max(log_scale[i] + math.log(s), log_min), log_max)
        log_scale[i] = v
        inv[i] = math.exp(-v)


@nb.njit(inline="always", cache=True)
def balance_tile(tile: np.ndarray, iterations: int, std_min: float, std_max: float,
                 log_min: float, log_max: float, imbalance_floor: float,
                 col_scale: np.ndarray, row_scale: np.ndarray) -> float:
    """Balance one float32 tile ``[R, C]``; write the best scales, return the best imbalance.

    Exactly DESIGN.md §4 step 2 in float32 (all scalar arguments float32): ``Imb(X) = max σ_col /
    max(min σ_col, floor) + max σ_row / max(min σ_row, floor)`` (unclipped stds); the identity
    (``Imb(T)``, scales 1) is the first candidate; each of ``iterations`` rounds updates the column
    log scale then the row log scale, and its iterate replaces the best when ``Imb <= best``.

    ``col_scale [C]`` and ``row_scale [R]`` (float32) receive ``e^Lc`` and ``e^Lr`` of the best
    candidate; the balanced tile is ``tile / col_scale / row_scale`` (see ``divide_scales``).
    Non-finite tiles give a NaN imbalance, never beat it, and keep the identity scales.
    """
    nr, nc = tile.shape
    tt = np.ascontiguousarray(tile.T)  # [C, R]: row statistics become column statistics
    log_col = np.zeros(nc, dtype=np.float32)
    log_row = np.zeros(nr, dtype=np.float32)
    inv_col = np.ones(nc, dtype=np.float32)
    inv_row = np.ones(nr, dtype=np.float32)
    n = max(nr, nc)
    acc = np.empty(n, dtype=np.float32)
    mean = np.empty(n, dtype=np.float32)
    std_col = np.empty(nc, dtype=np.float32)
    std_row = np.empty(nr, dtype=np.float32)

    for c in range(nc):
        col_scale[c] = _F32(1.0)
    for r in range(nr):
        row_scale[r] = _F32(1.0)
    _col_std(tile, inv_col, inv_row, acc, mean, std_col)
    _col_std(tt, inv_row, inv_col, acc, mean, std_row)
    best = _spread(std_col, imbalance_floor) + _spread(std_row, imbalance_floor)

    for _ in range(iterations):
        # columns: std_col already holds the column stds of the current iterate
        _update_log_scale(log_col, std_col, inv_col, std_min, std_max, log_min, log_max)
        _col_std(tt, inv_row, inv_col, acc, mean, std_row)
        _update_log_scale(log_row, std_row, inv_row, std_min, std_max, log_min, log_max)
        _col_std(tile, inv_col, inv_row, acc, mean, std_col)
        _col_std(tt, inv_row, inv_col, acc, mean, std_row)
        imb = _spread(std_col, imbalance_floor) + _spread(std_row, imbalance_floor)
        if imb <= best:
            best = imb
            for c in range(nc):
                col_scale[c] = math.exp(log_col[c])
            for r in range(nr):
                row_scale[r] = math.exp(log_row[r])
    return best


@nb.njit(inline="always", cache=True)
def divide_scales(tile: np.ndarray, col_scale: np.ndarray, row_scale: np.ndarray,
                  out: np.ndarray) -> None:
    """``out[r, c] = tile[r, c] / col_scale[c] / row_scale[r]`` (float32, in that order)."""
    nr, nc = tile.shape
    for r in range(nr):
        sr = row_scale[r]
        for c in range(nc):
            out[r, c] = tile[r, c] / col_scale[c] / sr


@nb.njit(parallel=True, cache=True)
def balance_tiles(tiles: np.ndarray, iterations: int, std_min: float, std_max: float,
                  log_min: float, log_max: float, imbalance_floor: float,
                  balanced: np.ndarray, col_scale: np.ndarray, row_scale: np.ndarray,
                  imbalance: np.ndarray) -> None:
    """``balance_tile`` on every tile of ``tiles [B, R, C]`` (float32, C-contiguous), in parallel.

    Outputs: ``balanced [B, R, C]``, ``col_scale [B, C]``, ``row_scale [B, R]`` and the best
    ``imbalance [B]``, all float32.  Scalar arguments are float32.
    """
    for b in nb.prange(tiles.shape[0]):
        imbalance[b] = balance_tile(tiles[b], iterations, std_min, std_max, log_min, log_max,
                                    imbalance_floor, col_scale[b], row_scale[b])
        divide_scales(tiles[b], col_scale[b], row_scale[b], balanced[b])
