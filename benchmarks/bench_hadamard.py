"""FWHT (float32) vs ``x @ H`` with NumPy's BLAS, same process.

Rows, all on the same 32 Mi float32 elements (issue 19; 128 MiB, larger than the L3 cache):

- the kernel with a preallocated output against ``np.matmul(x, H, out=out)``, ``H`` the dense
  orthonormal matrix from ``lowbit.hadamard_matrix(n) / sqrt(n)`` in float32, for n = 128,
  n = 4096 (rows cache-blocked along the transform axis) and n = 96 = 12 * 8 (Paley core factor,
  lanes across rows);
- the public front ``lowbit.hadamard(x)`` (and with ``seed=1``) against ``x @ H`` (both
  allocate their output), n = 128.

Correctness gate, same run, for every n: the FWHT of the first 512 Ki elements against the float64
product, within 2x of the float32 product's own error.  (The previous Numba kernel, kept here as
``_fwht_reference`` until its ratios were recorded in docs/performance.md, has been removed.)

Minimum traffic: read x once, write the result once (8 bytes per float32 element).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from common import best_time, row

import lowbit
from lowbit import cpu


def _core(n: int) -> np.ndarray:
    m = 12 if n % 12 == 0 else 1
    return np.ascontiguousarray(lowbit.hadamard_matrix(m) if m > 1 else np.ones((1, 1)),
                                dtype=np.float32)


def _dense(n: int) -> np.ndarray:
    """The orthonormal Hadamard matrix ``H / sqrt(n)`` the transform applies, as float32."""
    return (lowbit.hadamard_matrix(n) / math.sqrt(n)).astype(np.float32)


def _check_against_float64(x: np.ndarray, h: np.ndarray) -> None:
    """Correctness gate: the FWHT of the first 512 Ki elements' rows against ``x @ H`` in float64,
    within 2x of the float32 BLAS product's own error."""
    probe = x[:(512 << 10) // h.shape[0]]
    exact = probe.astype(np.float64) @ h.astype(np.float64)
    err = np.abs(lowbit.hadamard(probe) - exact).max()
    assert err <= 2 * np.abs(probe @ h - exact).max() + 1e-6, f"n={h.shape[0]}: FWHT error {err}"


def run(quick: bool = False) -> list[dict]:
    elements = (8 << 20) if quick else (32 << 20)  # issue 19: 32 Mi float32 (128 MiB)
    repeat = 5 if quick else 10
    results = []
    for n in (128, 4096, 96):
        rows = elements // n
        x = np.random.default_rng(0).standard_normal((rows, n), dtype=np.float32)
        size = f"{rows >> 10} Ki x {n} f32"
        traffic = 2 * x.nbytes
        h = _dense(n)
        _check_against_float64(x, h)
        out = np.empty_like(x)
        no_signs = np.empty(0, dtype=np.float32)
        scale = np.float32(1 / math.sqrt(n))
        t = best_time(functools.partial(cpu.fwht, x, _core(n), no_signs, True, scale, out), repeat)
        # n = 4096: one product is ~2 * rows * n**2 = 275 GFLOP at full size (about 1 s), so fewer runs
        tb = best_time(functools.partial(np.matmul, x, h, out=out), repeat if n <= 1024 else 3)
        results.append(row(f"fwht-{n} kernel, out= given", size, t, "np.matmul(x, H, out=)", tb,
                           traffic, x.size))
        if n == 128:
            t = best_time(functools.partial(lowbit.hadamard, x), repeat)
            tb = best_time(functools.partial(np.matmul, x, h), repeat)  # x @ h
            results.append(row(f"lowbit.hadamard (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                               traffic, x.size))
            t = best_time(functools.partial(lowbit.hadamard, x, seed=1), repeat)
            results.append(row(f"lowbit.hadamard seed=1 (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                               traffic, x.size))
    return results
