"""Scalar helpers inlined into the Numba kernels (not kernels themselves).

Every function here has a line-for-line twin in ``lowbit/cuda/common.cuh``;
keeping them identical is what makes CPU and GPU results bit-identical.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_U64 = nb.uint64

# Rounding mode codes (lowbit.rounding.modes.RoundMode); duplicated as literals
# because Numba freezes globals into compiled code anyway.
NEAREST_EVEN, NEAREST_AWAY, TOWARD_ZERO, UP, DOWN, ODD, STOCHASTIC = 0, 1, 2, 3, 4, 5, 6


@nb.njit(inline="always", cache=True)
def mix64(z: np.uint64) -> np.uint64:
    """splitmix64 finalizer: a bijective 64-bit mixing function."""
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


@nb.njit(inline="always", cache=True)
def random_bits(seed: np.uint64, index: np.int64) -> np.uint64:
    """64 random bits for (seed, global element index): mix64(mix64(seed) + golden*index+1)."""
    k = mix64(_U64(seed))
    return mix64(k + _U64(0x9E3779B97F4A7C15) * (_U64(index) + _U64(1)))


@nb.njit(inline="always", cache=True)
def round_grid(v: float, mode: int, seed: np.uint64, index: np.int64, rbits: int) -> float:
    """Round v (float64, in grid units) to an integer-valued float64 with ``mode``."""
    if mode == NEAREST_EVEN:
        return np.rint(v)
    f = math.floor(v)
    if mode == DOWN:
        return f
    if mode == UP:
        return math.ceil(v)
    if mode == TOWARD_ZERO:
        return math.trunc(v)
    if mode == NEAREST_AWAY:
        r = math.floor(abs(v) + 0.5)
        return r if v >= 0.0 else -r
    if mode == ODD:
        if f == v:
            return v
        return f if math.floor(f * 0.5) != f * 0.5 else f + 1.0  # keep the odd neighbour
    # stochastic: the rbits random bits sit right below the grid's last place
    frac = v - f  # exact in float64
    t = frac * (2.0 ** rbits)  # exact: scaling by a power of two
    u = random_bits(seed, index) >> _U64(64 - rbits)
    return f + 1.0 if float(u) < t else f


@nb.njit(inline="always", cache=True)
def clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)
