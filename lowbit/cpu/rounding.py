"""Numba kernels: element-wise rounding of values in grid units (``lowbit.round``)."""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.scalar import round_grid


@nb.njit(parallel=True, cache=True)
def round_elementwise(x: np.ndarray, mode: int, seed: np.uint64, first_index: np.int64, rbits: int,
                      lo: float, hi: float, out: np.ndarray) -> None:
    """out[i] = clip(round_grid(x[i], mode, seed, first_index + i, rbits), lo, hi) (float64 inside).

    ``first_index`` is the global flat index of x[0]; NaN stays NaN, +-Inf is clipped like any value.
    """
    for i in nb.prange(x.shape[0]):
        r = round_grid(np.float64(x[i]), mode, seed, first_index + i, rbits)
        if r < lo:
            r = lo
        elif r > hi:
            r = hi
        out[i] = r
