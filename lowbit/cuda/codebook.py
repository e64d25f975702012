"""CUDA wrappers for the codebook-format kernels: same names and signatures as :mod:`lowbit.cpu.codebook`.

Kernels in ``lowbit/cuda/codebook.cu``, bit-identical to the Numba twins (the same float64 and
integer operations on the same values; one counter-based generator for ``stochastic``).
``x`` may be float16, bfloat16 (uint16 bits), float32 or float64 (the CPU twins read float32
or float64: 16-bit inputs widened exactly, the same values).  ``codebook_encode`` runs one
thread per element; ``block_norm`` one thread per block (the CPU's sequential sum of squares).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, check_operands, kernel, persistent_grid, suffix
from lowbit.rounding.modes import RoundMode

NEAREST_EVEN, STOCHASTIC = int(RoundMode.nearest_even), int(RoundMode.stochastic)

#: Most levels of a table (uint8 codes; codebook.cu LOWBIT_MAX_LEVELS).
MAX_LEVELS = 256
#: Threads per block of block_norm (one per group: fewer, so that small batches spread).
NORM_THREADS = 64


def _flat(name: str, a: Any, dtype: Any = None) -> None:
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(a.shape)}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype)}, got {a.dtype}")


def _blocks(n: int, block_size: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    return -(-n // int(block_size))


def codebook_encode(x: Any, block_size: int, scale: Any, levels: Any, thresholds: Any, mode: int,
                    seed: np.uint64, first_index: Any, rbits: int, codes: Any) -> None:
    check_operands(x=x, scale=scale, levels=levels, thresholds=thresholds, codes=codes)
    _flat("x", x)
    suffix(x.dtype)  # TypeError for a dtype without a kernel
    for name, a in (("scale", scale), ("levels", levels), ("thresholds", thresholds)):
        _flat(name, a, np.float64)
    _flat("codes", codes, np.uint8)
    n = int(x.shape[0])
    if codes.shape[0] != n:
        raise ValueError(f"codes must have x's {n} elements, got {codes.shape[0]}")
    blocks = _blocks(n, block_size)
    if n and scale.shape[0] < blocks:
        raise ValueError(f"scale holds {scale.shape[0]} values for {blocks} blocks of {block_size}")
    n_levels = int(levels.shape[0])
    if not 2 <= n_levels <= MAX_LEVELS or thresholds.shape[0] != n_levels - 1:
        raise ValueError(f"levels must hold 2..{MAX_LEVELS} values and thresholds one fewer, got "
                         f"{n_levels} and {thresholds.shape[0]}")
    if mode not in (NEAREST_EVEN, STOCHASTIC):
        raise ValueError(f"mode must be {NEAREST_EVEN} (nearest_even) or {STOCHASTIC} (stochastic), got {mode!r}")
    if not 1 <= rbits <= 32:
        raise ValueError(f"rbits must be in 1..32, got {rbits!r}")
    if n == 0:
        return
    k = kernel("codebook", f"lowbit_codebook_encode_{suffix(x.dtype)}")
    k(persistent_grid(n), (THREADS,),
      (x, np.int64(n), np.int64(block_size), scale, levels, np.int32(n_levels), thresholds,
       np.int32(n_levels - 1), np.int32(mode), np.uint64(seed), np.int64(first_index), np.int32(rbits), codes))


def block_norm(x: Any, block_size: int, out: Any) -> None:
    check_operands(x=x, out=out)
    _flat("x", x)
    suffix(x.dtype)
    _flat("out", out, np.float64)
    n, n_blocks = int(x.shape[0]), int(out.shape[0])
    _blocks(n, block_size)
    if n_blocks == 0:
        return
    k = kernel("codebook", f"lowbit_block_norm_{suffix(x.dtype)}")
    k(persistent_grid(n_blocks, NORM_THREADS), (NORM_THREADS,),
      (x, np.int64(n), np.int64(block_size), out, np.int64(n_blocks)))
