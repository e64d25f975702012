"""CUDA wrappers for KVarN on codebook grids: same names and signatures as :mod:`lowbit.cpu.kvarn_grid`.

``kvarn_grid_encode`` runs ``lowbit/cuda/kvarn_grid.cu``'s one-block-per-tile kernel: rotated
float32 tokens ``x [n, T, D]`` to the packed record (balance as kvarn.cu's, stored s_col, the
per-row least-squares fit on the level table, codes, packing), the tile in shared memory
(D = G = 128: about 90 KiB); one thread per tile row does the row's fit, in the CPU's order.
``kvarn_grid_decode`` writes float32 ``out`` (as the CPU twin), one thread per element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda import kvarn
from lowbit.cuda._module import THREADS, check_operands, kernel, persistent_grid
from lowbit.cuda.balance import scratch_floats, threads_for


def encode_smem_bytes(rows: int, cols: int, threads: int, n_levels: int) -> int:
    """Dynamic shared memory of one encode block (kvarn_grid.cu grid_encode_smem_bytes)."""
    floats = rows * kvarn._pitch(cols) + cols + rows + scratch_floats(rows, cols, threads)
    return 8 * (2 * n_levels + cols) + 4 * floats + rows * cols


def _check_tables(bits: int, levels: Any, thresholds: Any | None) -> None:
    want = {"levels": (levels, 1 << bits)}
    if thresholds is not None:
        want["thresholds"] = (thresholds, (1 << bits) - 1)
    for name, (a, size) in want.items():
        if a.dtype != np.float64 or tuple(a.shape) != (size,):
            raise TypeError(f"{name} must be float64 of shape ({size},) for bits={bits}, got {a.dtype} "
                            f"{tuple(a.shape)}")


def _check_fields(n: int, rows: int, cols: int, code_bytes: int, packed: Any, row_scale: Any, row_offset: Any,
                  col_scale: Any) -> None:
    want = {"packed": (packed, np.uint8, (n, code_bytes)), "row_scale": (row_scale, np.uint16, (n, rows)),
            "row_offset": (row_offset, np.uint16, (n, rows)), "col_scale": (col_scale, np.uint16, (n, cols))}
    for name, (a, dtype, shape) in want.items():
        if a.dtype != dtype or tuple(a.shape) != shape:
            raise TypeError(f"{name} must be {np.dtype(dtype)} of shape {shape}, got {a.dtype} {tuple(a.shape)}")


def _scale_format(scale_format: int) -> None:
    if scale_format not in (0, 1):
        raise ValueError(f"scale_format must be 0 (float16) or 1 (e4m3), got {scale_format}")


def _count(name: str, v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 2**31:
        raise ValueError(f"{name} must be an integer in [0, 2**31), got {v!r}")


def kvarn_grid_encode(x: Any, key: bool, bits: int, levels: Any, thresholds: Any, iterations: int, fits: int,
                      scale_format: int, packed: Any, row_scale: Any, row_offset: Any, col_scale: Any) -> None:
    check_operands(x=x, levels=levels, thresholds=thresholds, packed=packed, row_scale=row_scale,
                   row_offset=row_offset, col_scale=col_scale)
    if x.ndim != 3 or x.dtype != np.float32:
        raise TypeError(f"x must be [n, T, D] float32 (rotated tokens), got {x.dtype} of shape {tuple(x.shape)}")
    n, tokens, dim = (int(s) for s in x.shape)
    rows, cols = kvarn._geometry(tokens, dim, key, bits, False)
    _check_tables(bits, levels, thresholds)
    _scale_format(scale_format)
    _count("iterations", iterations)
    _count("fits", fits)
    _check_fields(n, rows, cols, (rows * cols * bits + 7) // 8, packed, row_scale, row_offset, col_scale)
    if n == 0:
        return
    threads = threads_for(rows, cols)
    k = kernel("kvarn_grid", "lowbit_kvarn_grid_encode", kvarn._defines())
    i32 = np.int32
    kvarn._launch(k, n, threads, encode_smem_bytes(rows, cols, threads, 1 << bits),
                  (x, np.int64(n), i32(tokens), i32(dim), i32(bool(key)), i32(bits), levels, thresholds,
                   i32(iterations), i32(fits), i32(scale_format), packed, row_scale, row_offset, col_scale))


def kvarn_grid_decode(packed: Any, key: bool, bits: int, levels: Any, scale_format: int, row_scale: Any,
                      row_offset: Any, col_scale: Any, out: Any) -> None:
    check_operands(packed=packed, levels=levels, row_scale=row_scale, row_offset=row_offset,
                   col_scale=col_scale, out=out)
    if out.ndim != 3 or out.dtype != np.float32:
        raise TypeError(f"out must be [n, T, D] float32, got {out.dtype} of shape {tuple(out.shape)}")
    n, tokens, dim = (int(s) for s in out.shape)
    rows, cols = kvarn._geometry(tokens, dim, key, bits, False)
    _check_tables(bits, levels, None)
    _scale_format(scale_format)
    _check_fields(n, rows, cols, (rows * cols * bits + 7) // 8, packed, row_scale, row_offset, col_scale)
    if n == 0:
        return
    k = kernel("kvarn_grid", "lowbit_kvarn_grid_decode", kvarn._defines())
    k(persistent_grid(n * rows * cols), (THREADS,),
      (packed, np.int64(n), np.int32(tokens), np.int32(dim), np.int32(bool(key)), np.int32(bits), levels,
       np.int32(scale_format), row_scale, row_offset, col_scale, out))
