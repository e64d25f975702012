"""Numba kernels for the fast Walsh–Hadamard transform (Sylvester order, optional core factor).

The transform of a row of length ``n = 2**k * m`` is ``(H_{2**k} ⊗ core) @ x``: the ``m × m``
``core`` matrix (``[[1]]``, or a symmetric Paley-type Hadamard matrix of order 12 or 20 built by
the front) is applied to each of the ``2**k`` consecutive chunks of ``m`` elements, then the
Sylvester butterflies run across chunks (strides ``m, 2m, 4m, ...``): radix-4 sweeps (two levels
each), plus one radix-2 sweep when ``k`` is odd.

SIMD lanes run across rows: each thread copies a block of ``lanes`` rows into a transposed
scratch buffer ``[n, lanes]``, so every butterfly is an add/sub of two contiguous ``lanes``-long
vectors, then writes the block back.  ``lanes`` is a runtime value on purpose: with a
compile-time constant LLVM unrolls the short loop and emits scalar code.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.scalar import random_bits

_U64 = nb.uint64

#: Rows per block (SIMD lanes across rows): four AVX2 float32 registers; a 128-long block
#: (16 KiB in float32) stays in L1.  Measured: 16 and 64 lanes were slower on the 2-core dev box.
_LANES = 32
#: Most scratch blocks allocated per call (one per chunk of consecutive row blocks).
_CHUNKS = 256


@nb.njit(parallel=True, cache=True)
def hadamard_signs(seed: np.uint64, out: np.ndarray) -> None:
    """Random signs for a randomized Hadamard: ``out[j] = 1 - 2 * (random_bits(seed, j) >> 63)``."""
    for j in nb.prange(out.shape[0]):
        bit = random_bits(_U64(seed), np.int64(j)) >> _U64(63)
        out[j] = 1.0 - 2.0 * np.float64(bit)


@nb.njit(inline="always", cache=True)
def _butterflies(buf: np.ndarray, tmp: np.ndarray, core: np.ndarray, lanes: int) -> None:
    """Apply ``H_{2**k} ⊗ core`` in place to the columns of ``buf[:, :lanes]`` (rows = positions)."""
    n = buf.shape[0]
    m = core.shape[0]
    if m > 1:
        # core factor on each chunk of m consecutive positions
        for c0 in range(0, n, m):
            for i in range(m):
                for r in range(lanes):
                    tmp[i, r] = 0.0
                for j in range(m):
                    w = core[i, j]
                    for r in range(lanes):
                        tmp[i, r] += w * buf[c0 + j, r]
            for i in range(m):
                for r in range(lanes):
                    buf[c0 + i, r] = tmp[i, r]
    h = m
    # radix-4 passes (two butterfly levels per sweep over the buffer)
    while 4 * h <= n:
        for b0 in range(0, n, 4 * h):
            for i in range(b0, b0 + h):
                for r in range(lanes):
                    a0 = buf[i, r]
                    a1 = buf[i + h, r]
                    a2 = buf[i + 2 * h, r]
                    a3 = buf[i + 3 * h, r]
                    s01 = a0 + a1
                    d01 = a0 - a1
                    s23 = a2 + a3
                    d23 = a2 - a3
                    buf[i, r] = s01 + s23
                    buf[i + h, r] = d01 + d23
                    buf[i + 2 * h, r] = s01 - s23
                    buf[i + 3 * h, r] = d01 - d23
        h *= 4
    if 2 * h <= n:
        for b0 in range(0, n, 2 * h):
            for i in range(b0, b0 + h):
                for r in range(lanes):
                    a0 = buf[i, r]
                    a1 = buf[i + h, r]
                    buf[i, r] = a0 + a1
                    buf[i + h, r] = a0 - a1


@nb.njit(parallel=True, cache=True)
def fwht(x: np.ndarray, core: np.ndarray, signs: np.ndarray, signs_first: bool,
         scale: np.floating, out: np.ndarray) -> None:
    """``out[i] = scale * (H_{2**k} ⊗ core) @ (signs * x[i])`` for every row ``i`` of ``x [rows, n]``.

    ``signs`` has length ``n`` or 0 (no signs).  With ``signs_first`` False the signs multiply
    the transformed row instead: ``out[i] = signs * (scale * (H ⊗ core) @ x[i])``.
    ``x`` and ``out`` are C-contiguous with the same shape and float dtype (they may be the
    same array); ``core [m, m]``, ``signs`` and ``scale`` have that dtype too, ``n % m == 0``
    and ``n // m`` is a power of two.
    """
    rows, n = x.shape
    m = core.shape[0]
    lanes = _LANES if n <= 1024 else 8  # long rows: keep the scratch block within L2
    nblocks = (rows + lanes - 1) // lanes
    nchunks = min(nblocks, _CHUNKS)
    has_signs = signs.shape[0] == n
    for chunk in nb.prange(nchunks):
        # one scratch block per chunk of consecutive row blocks
        buf = np.empty((n, lanes), dtype=x.dtype)
        tmp = np.empty((m, lanes), dtype=x.dtype)
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            r0 = blk * lanes
            nr = min(lanes, rows - r0)
            # load_block: rows become SIMD lanes (with the signs of a forward randomized transform)
            if has_signs and signs_first:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = signs[j] * x[r0 + r, j]
            else:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = x[r0 + r, j]
            _butterflies(buf, tmp, core, nr)
            # store_block
            if has_signs and not signs_first:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = signs[j] * (scale * buf[j, r])
            else:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = scale * buf[j, r]
