"""Numba kernels for KVarN's log-domain dual-axis variance normalization (DESIGN.md §4 step 2).

``balance_tile`` is the per-tile algorithm, inlined into its callers: the batch kernel
``balance_tiles`` here and the KVarN tile quantizer (``lowbit/cpu/kvarn.py``) call it per tile.
All arithmetic is float32.  The current iterate ``cur = T / e^Lc / e^Lr`` is never stored.
A std along one axis factors out the other axis's scale: with ``inv = e^-L``,
``σ_col[c] = inv_col[c] * std_r(T[r, c] * inv_row[r])`` and
``σ_row[r] = inv_row[r] * std_c(T[r, c] * inv_col[c])``; so one round costs two std sweeps
(rows after the column update, columns after the row update); the row stds after the row update
are ``inv_row * (the same row sweep)``, and the column stds of the imbalance are reused by the
next column update.  Results equal the literal formula up to float32 rounding.
Column statistics stream over ``T`` (row-major, SIMD across columns) and row statistics over a
transposed copy ``T.T`` (SIMD across rows), so that no loop is a horizontal reduction (which
LLVM will not vectorize without reassociation).

The CUDA twin (``lowbit/cuda/balance.cuh``) performs the same float32 operations in the same
order, so both give the same bits; ``exp``/``log`` are ``lowbit.cpu.scalar.exp_f32``/``log_f32``
(IEEE float64 operations only, rounded once), because libm's differ between glibc and CUDA.

Standard deviations are unbiased and two-pass, with the mean computed around the first element
of the column/row: ``m = x0 + sum(x - x0) / n``, ``var = sum((x - m)**2) / (n - 1)``.  The shift
makes the std of a constant column *exactly* 0 (so constant and all-zero tiles have an exact
imbalance of 0), and costs one subtraction.

Summation order (ours to choose, fixed so both backends round alike): each sum over ``n`` terms
``s_i`` is split into ``LANES = 8`` interleaved partial sums, partial ``p`` taking the terms
``i = p (mod 8)``: from ``0.0``, ``acc = acc + ((s_i + s_(i+8)) + (s_(i+16) + s_(i+24)))`` for
``i = 32 g + p``, ``g = 0 .. ceil(n / 32) - 1`` (terms past ``n`` are ``+0.0``); the partials
are combined as ``((P0 + P1) + (P2 + P3)) + ((P4 + P5) + (P6 + P7))``.  On the GPU the 8
partials are 8 lanes of one warp (a column or row per 8-lane group) and the tree is a
``__shfl_xor`` butterfly over lane offsets 1, 2, 4, which forms exactly these sums (``a + b ==
b + a`` in IEEE arithmetic).  Pass 1 sums ``s_i = x_i - x_0`` (``s_0`` is a zero), pass 2
``s_i = (x_i - m)**2`` (``d d`` products, the group as ``(d0 d0 + d1 d1) + (d2 d2 + d3 d3)``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from lowbit.cpu.scalar import clip_f32, exp_f32, log_f32

_F32 = nb.float32


#: Partial sums per std (the CUDA twin's lanes per column / row): element i goes to partial i % 8.
LANES = 8


@nb.njit(inline="always", cache=True)
def _lane_tree(part: np.ndarray, j: int) -> np.float32:
    """``((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))`` of ``part[:, j]`` (the CUDA twin's
    ``__shfl_xor`` butterfly over offsets 1, 2, 4; float addition is commutative)."""
    return (((part[0, j] + part[1, j]) + (part[2, j] + part[3, j]))
            + ((part[4, j] + part[5, j]) + (part[6, j] + part[7, j])))


@nb.njit(inline="always", cache=True)
def _dev(t: np.ndarray, w: np.ndarray, i: int, j: int, m: np.float32) -> np.float32:
    """``t[i, j] * w[i] - m``, or ``+0.0`` for a row ``i`` past the end (a tail block's gap)."""
    return t[i, j] * w[i] - m if i < t.shape[0] else _F32(0.0)


@nb.njit(inline="always", cache=True)
def _sq(t: np.ndarray, w: np.ndarray, i: int, j: int, m: np.float32) -> np.float32:
    """``(t[i, j] * w[i] - m)**2``, or ``+0.0`` for a row ``i`` past the end."""
    if i < t.shape[0]:
        d = t[i, j] * w[i] - m
        return d * d
    return _F32(0.0)


@nb.njit(inline="always", cache=True)
def _weighted_std(t: np.ndarray, w: np.ndarray, part: np.ndarray, mean: np.ndarray,
                  std: np.ndarray) -> None:
    """``std[j]`` = unbiased std over ``i`` of ``x[i] = t[i, j] * w[i]`` (``t`` row-major ``[n, m]``).

    The summation order (shared with the CUDA twin; see the module docstring): partial ``p``
    (``part[p]``) adds the terms ``i = p (mod 8)`` four at a time, one group per block of 32 rows
    (rows past the end count as ``+0.0``); :func:`_lane_tree` combines the partials.  Pass 1
    sums ``x[i] - x[0]`` (``i = 0`` included, a zero), ``mean = x[0] + sum / n``; pass 2 sums
    ``(x[i] - mean)**2``; ``std = sqrt(sum / (n - 1))``.  Every inner loop runs over ``j``
    (contiguous), so LLVM vectorizes it without reassociating; one accumulator load / store per
    four elements.  ``part`` is float32 scratch of at least ``[LANES, m]``.
    """
    n, m = t.shape
    n32 = n - n % 32  # rows of the whole blocks; a partial block follows when n32 < n
    w0 = w[0]
    for j in range(m):
        mean[j] = t[0, j] * w0  # shift: the first element
    part[:, :m] = _F32(0.0)
    for i0 in range(0, n32, 32):
        for p in range(LANES):
            i = i0 + p
            w0, w1, w2, w3 = w[i], w[i + 8], w[i + 16], w[i + 24]
            for j in range(m):
                x0 = mean[j]
                part[p, j] += (((t[i, j] * w0 - x0) + (t[i + 8, j] * w1 - x0))
                               + ((t[i + 16, j] * w2 - x0) + (t[i + 24, j] * w3 - x0)))
    if n32 < n:
        for p in range(LANES):
            i = n32 + p
            for j in range(m):
                x0 = mean[j]
                part[p, j] += ((_dev(t, w, i, j, x0) + _dev(t, w, i + 8, j, x0))
                               + (_dev(t, w, i + 16, j, x0) + _dev(t, w, i + 24, j, x0)))
    for j in range(m):
        mean[j] += _lane_tree(part, j) / _F32(n)  # type: ignore[operator]  # (nb.float32() types as a Signature)
    part[:, :m] = _F32(0.0)
    for i0 in range(0, n32, 32):
        for p in range(LANES):
            i = i0 + p
            w0, w1, w2, w3 = w[i], w[i + 8], w[i + 16], w[i + 24]
            for j in range(m):
                mj = mean[j]
                d0 = t[i, j] * w0 - mj
                d1 = t[i + 8, j] * w1 - mj
                d2 = t[i + 16, j] * w2 - mj
                d3 = t[i + 24, j] * w3 - mj
                part[p, j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    if n32 < n:
        for p in range(LANES):
            i = n32 + p
            for j in range(m):
                mj = mean[j]
                part[p, j] += ((_sq(t, w, i, j, mj) + _sq(t, w, i + 8, j, mj))
                               + (_sq(t, w, i + 16, j, mj) + _sq(t, w, i + 24, j, mj)))
    for j in range(m):
        std[j] = math.sqrt(_lane_tree(part, j) / _F32(n - 1))


@nb.njit(inline="always", cache=True)
def _spread(std: np.ndarray, floor: np.float32) -> np.float32:
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
def _update_log_scale(log_scale: np.ndarray, std: np.ndarray, inv: np.ndarray, std_min: np.float32,
                      std_max: np.float32, log_min: np.float32, log_max: np.float32) -> None:
    """``L = clip(L + ln(clip(std, std_min, std_max)), log_min, log_max)``; ``inv = exp(-L)``.

    ``ln`` and ``exp`` are lowbit's own (``log_f32``, ``exp_f32``), evaluated identically by the
    CUDA twin, so scales agree bit for bit across backends.
    """
    for i in range(log_scale.shape[0]):
        s = clip_f32(std[i], std_min, std_max)
        v = clip_f32(log_scale[i] + log_f32(s), log_min, log_max)
        log_scale[i] = v
        inv[i] = exp_f32(-v)


@nb.njit(inline="always", cache=True)
def transpose(src: np.ndarray, dst: np.ndarray) -> None:
    """dst [m, n] = src [n, m].T (float32), in blocks of 16 rows of src."""
    n, m = src.shape
    for i0 in range(0, n, 16):
        i1 = min(i0 + 16, n)
        for j in range(m):
            for i in range(i0, i1):
                dst[j, i] = src[i, j]


@nb.njit(inline="always", cache=True)
def balance_tile(tile: np.ndarray, iterations: int, std_min: np.float32, std_max: np.float32,
                 log_min: np.float32, log_max: np.float32, imbalance_floor: np.float32,
                 col_scale: np.ndarray, row_scale: np.ndarray) -> np.float32:
    """:func:`balance_tile_t` with the transposed copy made here."""
    tt = np.ascontiguousarray(tile.T)  # [C, R]
    return balance_tile_t(tile, tt, iterations, std_min, std_max, log_min, log_max,
                          imbalance_floor, col_scale, row_scale)


@nb.njit(inline="always", cache=True)
def balance_tile_t(tile: np.ndarray, tt: np.ndarray, iterations: int, std_min: np.float32,
                   std_max: np.float32, log_min: np.float32, log_max: np.float32,
                   imbalance_floor: np.float32, col_scale: np.ndarray,
                   row_scale: np.ndarray) -> np.float32:
    """Balance one float32 tile ``[R, C]``; write the best scales, return the best imbalance.

    Exactly DESIGN.md §4 step 2 in float32 (all scalar arguments float32): ``Imb(X) = max σ_col /
    max(min σ_col, floor) + max σ_row / max(min σ_row, floor)`` (unclipped stds); the identity
    (``Imb(T)``, scales 1) is the first candidate; each of ``iterations`` rounds updates the column
    log scale then the row log scale, and its iterate replaces the best when ``Imb <= best``.

    ``col_scale [C]`` and ``row_scale [R]`` (float32) receive ``e^Lc`` and ``e^Lr`` of the best
    candidate; the balanced tile is ``tile / col_scale / row_scale`` (see ``divide_scales``).
    Non-finite tiles give a NaN imbalance, never beat it, and keep the identity scales.
    ``tt`` [C, R] is ``tile.T`` as a C-contiguous copy: row statistics stream over it like
    column statistics over ``tile``.
    """
    nr, nc = tile.shape
    log_col = np.zeros(nc, dtype=np.float32)
    log_row = np.zeros(nr, dtype=np.float32)
    inv_col = np.ones(nc, dtype=np.float32)
    inv_row = np.ones(nr, dtype=np.float32)
    n = max(nr, nc)
    part = np.empty((LANES, n), dtype=np.float32)
    mean = np.empty(n, dtype=np.float32)
    base_col = np.empty(nc, dtype=np.float32)  # std over rows of T * inv_row
    base_row = np.empty(nr, dtype=np.float32)  # std over columns of T * inv_col
    std_col = np.empty(nc, dtype=np.float32)
    std_row = np.empty(nr, dtype=np.float32)
    best_log_col = np.zeros(nc, dtype=np.float32)  # the identity is the first candidate
    best_log_row = np.zeros(nr, dtype=np.float32)
    identity = True

    _weighted_std(tile, inv_row, part, mean, std_col)
    _weighted_std(tt, inv_col, part, mean, std_row)
    best = _spread(std_col, imbalance_floor) + _spread(std_row, imbalance_floor)

    for _ in range(iterations):
        # columns: std_col holds the column stds of the current iterate
        _update_log_scale(log_col, std_col, inv_col, std_min, std_max, log_min, log_max)
        # rows: std over columns of cur[r, :] = inv_row[r] * std of T[r, :] * inv_col
        _weighted_std(tt, inv_col, part, mean, base_row)
        for r in range(nr):
            std_row[r] = inv_row[r] * base_row[r]
        _update_log_scale(log_row, std_row, inv_row, std_min, std_max, log_min, log_max)
        for r in range(nr):
            std_row[r] = inv_row[r] * base_row[r]
        _weighted_std(tile, inv_row, part, mean, base_col)
        for c in range(nc):
            std_col[c] = inv_col[c] * base_col[c]
        imb = _spread(std_col, imbalance_floor) + _spread(std_row, imbalance_floor)
        if imb <= best:
            best = imb
            identity = False
            best_log_col[:] = log_col
            best_log_row[:] = log_row
    for c in range(nc):
        col_scale[c] = _F32(1.0) if identity else exp_f32(best_log_col[c])
    for r in range(nr):
        row_scale[r] = _F32(1.0) if identity else exp_f32(best_log_row[r])
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
def balance_tiles(tiles: np.ndarray, iterations: int, std_min: np.float32, std_max: np.float32,
                  log_min: np.float32, log_max: np.float32, imbalance_floor: np.float32,
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
