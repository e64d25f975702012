"""FWHT-128 (float32) vs ``x @ H`` with NumPy's BLAS, same rows, same process.

Two pairs: the public front ``lowbit.hadamard(x)`` against ``x @ H`` (both allocate their
output), and the kernel with a preallocated output against ``np.matmul(x, H, out=out)``.
Minimum traffic: read x once, write the result once (8 bytes per float32 element).
"""

from __future__ import annotations

import math

import numpy as np
from common import best_time, row

import lowbit
from lowbit import cpu


def run(quick: bool = False) -> list[dict]:
    n = 128
    rows = (1 << 16) if quick else (8 << 20)  # full: 8 Mi rows = 4 GiB of float32
    x = np.random.default_rng(0).standard_normal((rows, n), dtype=np.float32)
    h = (lowbit.hadamard_matrix(n) / math.sqrt(n)).astype(np.float32)
    size = f"{rows >> 10} Ki x {n} f32" if rows < (1 << 20) else f"{rows >> 20} Mi x {n} f32"

    # correctness gate, same run: against float64, and within 2x of the BLAS product's error
    probe = x[:4096]
    exact = probe.astype(np.float64) @ h.astype(np.float64)
    err = np.abs(lowbit.hadamard(probe) - exact).max()
    assert err <= 2 * np.abs(probe @ h - exact).max() + 1e-6, f"FWHT error {err}"

    repeat = 5 if quick else 3
    out = np.empty_like(x)
    core = np.ones((1, 1), dtype=np.float32)
    no_signs = np.empty(0, dtype=np.float32)
    scale = np.float32(1 / math.sqrt(n))
    results = []

    t = best_time(lambda: cpu.fwht(x, core, no_signs, True, scale, out), repeat)
    tb = best_time(lambda: np.matmul(x, h, out=out), repeat)
    results.append(row(f"fwht-{n} kernel, out= given", size, t, "np.matmul(x, H, out=)", tb,
                       2 * x.nbytes, x.size))
    t = best_time(lambda: lowbit.hadamard(x), repeat)
    tb = best_time(lambda: x @ h, repeat)
    results.append(row(f"lowbit.hadamard (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                       2 * x.nbytes, x.size))
    t = best_time(lambda: lowbit.hadamard(x, seed=1), repeat)
    results.append(row(f"lowbit.hadamard seed=1 (n={n})", size, t, "x @ H (numpy BLAS)", tb,
                       2 * x.nbytes, x.size))
    return results
