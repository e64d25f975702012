"""FWHT (float32) vs ``x @ H`` with NumPy's BLAS and vs the previous kernel, same process.

Rows, all on the same 32 Mi float32 elements (issue 19; 128 MiB, larger than the L3 cache):

- the kernel with a preallocated output against ``np.matmul(x, H, out=out)`` (n = 128);
- the kernel against ``_fwht_reference``, the previous Numba kernel (lowbit before issue 19:
  SIMD lanes across rows through a transposed scratch block), kept here so that the new/old
  ratio is measured in one process; its output must equal the new kernel's byte for byte
  (asserted below, without signs, with signs before and with signs after the transform);
- the public front ``lowbit.hadamard(x)`` (and with ``seed=1``) against ``x @ H`` (both
  allocate their output);
- n = 4096 (rows cache-blocked along the transform axis) and n = 96 = 12 * 8 (Paley core factor,
  lanes across rows) against the previous kernel.

Minimum traffic: read x once, write the result once (8 bytes per float32 element).
"""

from __future__ import annotations

import functools
import math

import numba as nb
import numpy as np
from common import best_time, row

import lowbit
from lowbit import cpu

_LANES = 32
_CHUNKS = 256


@nb.njit(inline="always")
def _butterflies_reference(buf: np.ndarray, tmp: np.ndarray, core: np.ndarray, lanes: int) -> None:
    n = buf.shape[0]
    m = core.shape[0]
    if m > 1:
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


@nb.njit(parallel=True)
def _fwht_reference(x: np.ndarray, core: np.ndarray, signs: np.ndarray, signs_first: bool,
                    scale: np.floating, out: np.ndarray) -> None:
    """The previous ``lowbit.cpu.fwht`` (same signature and results)."""
    rows, n = x.shape
    m = core.shape[0]
    lanes = _LANES if n <= 1024 else 8
    nblocks = (rows + lanes - 1) // lanes
    nchunks = min(nblocks, _CHUNKS)
    has_signs = signs.shape[0] == n
    for chunk in nb.prange(nchunks):
        buf = np.empty((n, lanes), dtype=x.dtype)
        tmp = np.empty((m, lanes), dtype=x.dtype)
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            r0 = blk * lanes
            nr = min(lanes, rows - r0)
            if has_signs and signs_first:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = signs[j] * x[r0 + r, j]
            else:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = x[r0 + r, j]
            _butterflies_reference(buf, tmp, core, nr)
            if has_signs and not signs_first:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = signs[j] * (scale * buf[j, r])
            else:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = scale * buf[j, r]


def _core(n: int) -> np.ndarray:
    m = 12 if n % 12 == 0 else 1
    return np.ascontiguousarray(lowbit.hadamard_matrix(m) if m > 1 else np.ones((1, 1)),
                                dtype=np.float32)


def _same_as_reference(x: np.ndarray, n: int) -> None:
    """Assert the kernel's output equals the previous kernel's, byte for byte."""
    core = _core(n)
    scale = np.float32(1 / math.sqrt(n))
    signs = np.empty(n, dtype=np.float32)
    cpu.hadamard_signs(np.uint64(1), signs)
    new, old = np.empty_like(x), np.empty_like(x)
    for s, first in ((signs[:0], True), (signs, True), (signs, False)):
        cpu.fwht(x, core, s, first, scale, new)
        _fwht_reference(x, core, s, first, scale, old)
        assert new.tobytes() == old.tobytes(), f"n={n}: new and previous kernels disagree"


def run(quick: bool = False) -> list[dict]:
    elements = (8 << 20) if quick else (32 << 20)  # issue 19: 32 Mi float32 (128 MiB)
    repeat = 5 if quick else 10
    results = []
    for n in (128, 4096, 96):
        rows = elements // n
        x = np.random.default_rng(0).standard_normal((rows, n), dtype=np.float32)
        size = f"{rows >> 10} Ki x {n} f32"
        traffic = 2 * x.nbytes
        _same_as_reference(x, n)
        out = np.empty_like(x)
        core = _core(n)
        no_signs = np.empty(0, dtype=np.float32)
        scale = np.float32(1 / math.sqrt(n))
        kernel = functools.partial(cpu.fwht, x, core, no_signs, True, scale, out)
        reference = functools.partial(_fwht_reference, x, core, no_signs, True, scale, out)
        t = best_time(kernel, repeat)
        if n == 128:
            h = (lowbit.hadamard_matrix(n) / math.sqrt(n)).astype(np.float32)
            # correctness gate, same run: against float64, and within 2x of the BLAS product's error
            probe = x[:4096]
            exact = probe.astype(np.float64) @ h.astype(np.float64)
            err = np.abs(lowbit.hadamard(probe) - exact).max()
            assert err <= 2 * np.abs(probe @ h - exact).max() + 1e-6, f"FWHT error {err}"
            tb = best_time(functools.partial(np.matmul, x, h, out=out), repeat)
            results.append(row(f"fwht-{n} kernel, out= given", size, t, "np.matmul(x, H, out=)", tb,
                               traffic, x.size))
        tr = best_time(reference, repeat)
        results.append(row(f"fwht-{n} kernel, out= given", size, t, "previous kernel (_reference)",
                           tr, traffic, x.size))
        if n == 128:
            t = best_time(functools.partial(lowbit.hadamard, x), repeat)
            tb = best_time(functools.partial(np.matmul, x, h), repeat)  # x @ h
            results.append(row(f"lowbit.hadamard (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                               traffic, x.size))
            t = best_time(functools.partial(lowbit.hadamard, x, seed=1), repeat)
            results.append(row(f"lowbit.hadamard seed=1 (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                               traffic, x.size))
    return results
