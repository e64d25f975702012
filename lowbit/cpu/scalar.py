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
    """64 random bits for (seed, global element index).

    Equals output number ``index`` of splitmix64 started from state mix64(seed):
    mix64(mix64(seed) + 0x9E3779B97F4A7C15 * (index + 1)), all arithmetic mod 2**64.
    """
    k = mix64(_U64(seed))
    return mix64(k + _U64(0x9E3779B97F4A7C15) * (_U64(index) + _U64(1)))


@nb.njit(inline="always", cache=True)
def round_grid(v: float, mode: int, seed: np.uint64, index: np.int64, rbits: int) -> float:
    """Round v (float64, in grid units) to an integer-valued float64 with ``mode``.

    NaN and +-Inf come back unchanged; the sign of zero results follows v.
    ``stochastic`` works on |v| (sign-magnitude, so SR(-v) = -SR(v) for the same
    random bits): with a = |v|, i = floor(a), f = a - i (exact), the fraction is
    rounded to ``rbits`` bits, F = rint(f * 2**rbits) (nearest-even, exact in
    float64), and the result is sign(v) * (i + 1) when u < F, else sign(v) * i,
    where u is the top ``rbits`` bits of ``random_bits(seed, index)``.  So
    P(away from zero) = F / 2**rbits: exactly f whenever f is a multiple of
    2**-rbits, and within 2**-(rbits+1) of f otherwise (docs/rounding.md).
    """
    if mode == NEAREST_EVEN:
        return np.rint(v)
    if mode == DOWN:
        return np.floor(v)
    if mode == UP:
        return np.ceil(v)
    if mode == TOWARD_ZERO:
        return np.trunc(v)
    if mode == ODD:
        f = np.floor(v)
        if f == v:
            return v
        half = f * 0.5  # exact; f is odd iff f / 2 is not an integer
        return f if half != np.floor(half) else f + 1.0
    a = abs(v)
    i = np.floor(a)
    frac = a - i  # exact: i == 0, or a/2 <= i <= a (Sterbenz)
    if not frac > 0.0:  # integer, +-Inf (frac is NaN) or NaN
        return v
    if mode == NEAREST_AWAY:
        r = i + 1.0 if frac >= 0.5 else i
        return math.copysign(r, v)
    # STOCHASTIC
    threshold = np.int64(np.rint(frac * float(np.int64(1) << rbits)))  # 0 .. 2**rbits, exact
    u = np.int64(random_bits(seed, index) >> _U64(64 - rbits))
    r = i + np.float64(u < threshold)  # branch-free: the outcome is random
    return math.copysign(r, v)


@nb.njit(inline="always", cache=True)
def clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)
