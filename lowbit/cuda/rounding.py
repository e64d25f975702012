"""CUDA wrapper for element-wise rounding: same name and signature as :mod:`lowbit.cpu.rounding`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, check_operands, kernel, persistent_grid, suffix


def round_elementwise(x: Any, mode: int, seed: np.uint64, first_index: Any, rbits: int, lo: float, hi: float,
                      out: Any) -> None:
    check_operands(x=x, out=out)
    if out.dtype != x.dtype:
        raise TypeError(f"out must have x's dtype on the GPU ({x.dtype}), got {out.dtype}")
    n = x.shape[0]
    k = kernel("rounding", f"lowbit_round_elementwise_{suffix(x.dtype)}")
    k(persistent_grid(n), (THREADS,), (x, np.int64(n), np.int32(mode), np.uint64(seed), np.int64(first_index),
                            np.int32(rbits), np.float64(lo), np.float64(hi), out))
