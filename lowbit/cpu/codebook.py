"""Numba kernels of codebook formats (:class:`lowbit.formats.Codebook`): encode, group norms.

Layout as in ``lowbit/cpu/codec.py``: ``x`` is flat and C-contiguous (float32 or float64),
split into consecutive blocks of ``block_size`` elements, block b divided by ``scale[b]``
(float64 division; a block whose scale is 0 or not finite encodes signed zeros).  The level
table is ``levels`` (float64, strictly increasing, n entries) with ``thresholds[i]`` the
exact midpoint of levels i and i + 1.  Decoding is the codec's ``decode_table`` kernel
(table[code] * scale[block]); codes are packed by the shared packer.

Encoding a value v (after the scale):

* ``nearest_even``: the code c of the nearest level; v == thresholds[i] (a tie between codes
  i and i + 1) takes the even one.  Comparisons with the thresholds are exact, so this is
  the exact nearest level of the float64 value v.  NaN encodes 0 (fronts reject NaN input).
* ``stochastic``: for levels[i] <= v < levels[i + 1], code i + 1 with probability
  f = (v - levels[i]) / (levels[i + 1] - levels[i]) (f in float64, then ``round_grid``'s
  ``rbits``-bit comparison with the counter-based generator at index first_index + element), so
  E[level] = v up to the f rounding (unbiased); v at or outside the end levels takes the end
  level (no randomness there).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.codec import block_of, scaled, span_absmax
from lowbit.cpu.scalar import STOCHASTIC, round_grid


@nb.njit(inline="always", cache=True)
def nearest_code(v: float, thresholds: np.ndarray) -> int:
    """Code of the level nearest to v; v on a threshold goes to the even code."""
    lo = 0
    hi = thresholds.shape[0]
    while lo < hi:  # lo = number of thresholds below v
        mid = (lo + hi) >> 1
        if thresholds[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    if lo < thresholds.shape[0] and thresholds[lo] == v and lo & 1:
        lo += 1
    return lo


@nb.njit(inline="always", cache=True)
def stochastic_code(v: float, levels: np.ndarray, seed: np.uint64, index: np.int64, rbits: int) -> int:
    """Code of one of the two levels around v, the upper one with probability proportional to
    v's distance from the lower one."""
    n = levels.shape[0]
    if not v > levels[0]:  # also NaN
        return 0
    if not v < levels[n - 1]:
        return n - 1
    lo = 0
    hi = n - 1  # invariant: levels[lo] <= v < levels[hi]
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if levels[mid] <= v:
            lo = mid
        else:
            hi = mid
    f = (v - levels[lo]) / (levels[lo + 1] - levels[lo])
    return lo + int(round_grid(f, STOCHASTIC, seed, index, rbits))


@nb.njit(parallel=True, cache=True)
def codebook_encode(x: np.ndarray, block_size: int, scale: np.ndarray, levels: np.ndarray,
                    thresholds: np.ndarray, mode: int, seed: np.uint64, first_index: np.int64,
                    rbits: int, codes: np.ndarray) -> None:
    """codes[i] = code of x[i] / scale[i // block_size] (uint8, unpacked): ``nearest_even``
    (mode 0) or ``stochastic`` (mode 6, counter first_index + i); see the module docstring."""
    n = x.shape[0]
    inv_block = 1.0 / block_size
    if mode == STOCHASTIC:
        for i in nb.prange(n):
            v = scaled(np.float64(x[i]), scale[block_of(i, block_size, inv_block)])
            codes[i] = np.uint8(stochastic_code(v, levels, seed, first_index + i, rbits))
    else:
        for i in nb.prange(n):
            v = scaled(np.float64(x[i]), scale[block_of(i, block_size, inv_block)])
            codes[i] = np.uint8(nearest_code(v, thresholds))


@nb.njit(parallel=True, cache=True)
def block_norm(x: np.ndarray, block_size: int, out: np.ndarray) -> None:
    """out[b] = ||block b||_2 (float64); NaN if the block holds NaN or +-Inf.

    Computed as amax * sqrt(sum (x / amax)^2), so no square overflows or underflows.
    """
    n = x.shape[0]
    for b in nb.prange(out.shape[0]):
        start = b * block_size
        stop = min(start + block_size, n)
        m = span_absmax(x, start, stop)
        if not m > 0.0:  # NaN (a non-finite value) or 0
            out[b] = m
        else:
            acc = 0.0
            for i in range(start, stop):
                r = np.float64(x[i]) / m
                acc += r * r
            out[b] = m * np.sqrt(acc)
