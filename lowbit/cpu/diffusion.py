"""Numba kernels: error diffusion (sigma-delta along rows; 2-D diffusion over images).

Values are in grid units; the quantizer is round-to-nearest-even followed by a clip to
[lo, hi].  The carried error is clamped to [-1/2, 1/2]: it can only leave that interval when
the output saturated, and clamping it there keeps the loop from winding up.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True)
def quantize_clip(w: float, lo: float, hi: float) -> float:
    return min(max(np.rint(w), lo), hi)


@nb.njit(inline="always", cache=True)
def clamp_carry(e: float) -> float:
    return min(max(e, -0.5), 0.5)


@nb.njit(parallel=True, cache=True)
def diffuse_rows(x: np.ndarray, order: int, lo: float, hi: float, out: np.ndarray) -> None:
    """Sigma-delta along the last axis of ``x`` [rows, n], each row independently.

    order 1: w_i = x_i + e_{i-1};                  y_i = Q(w_i); e_i = w_i - y_i
    order 2: w_i = x_i + 2 e_{i-1} - e_{i-2};      y_i = Q(w_i); e_i = w_i - y_i
    (noise transfer 1 - z^-1 and (1 - z^-1)^2), e clamped to [-1/2, 1/2], e_{-1} = e_{-2} = 0.
    """
    rows, n = x.shape
    for r in nb.prange(rows):
        e1 = 0.0
        e2 = 0.0
        for i in range(n):
            xi = np.float64(x[r, i])
            w = xi + e1 if order == 1 else xi + 2.0 * e1 - e2
            y = quantize_clip(w, lo, hi)
            e2 = e1
            e1 = clamp_carry(w - y)
            out[r, i] = y


@nb.njit(parallel=True, cache=True)
def diffuse_2d(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, weight: np.ndarray,
               serpentine: bool, lo: float, hi: float, out: np.ndarray) -> None:
    """2-D error diffusion of each image ``x`` [batch, H, W].

    Pixels are visited row by row (left to right; with ``serpentine``, odd rows right to
    left with dx mirrored).  Pixel (i, j) is quantized as y = Q(x + acc), and its error
    e = clamp(x + acc - y) is added to acc at (i + dy[k], j + dx[k]) with weight[k];
    error falling outside the image is dropped.
    """
    batch, h, w = x.shape
    depth = 0
    for k in range(dy.shape[0]):
        depth = max(depth, dy[k])
    for b in nb.prange(batch):
        acc = np.zeros((depth + 1, w), np.float64)  # ring buffer of pending error rows
        for i in range(h):
            row = i % (depth + 1)
            reverse = serpentine and (i % 2 == 1)
            for jj in range(w):
                j = w - 1 - jj if reverse else jj
                v = np.float64(x[b, i, j]) + acc[row, j]
                acc[row, j] = 0.0
                y = quantize_clip(v, lo, hi)
                e = clamp_carry(v - y)
                out[b, i, j] = y
                for k in range(dy.shape[0]):
                    ti = i + dy[k]
                    tj = j - dx[k] if reverse else j + dx[k]
                    if ti < h and 0 <= tj < w:
                        acc[ti % (depth + 1), tj] += weight[k] * e
