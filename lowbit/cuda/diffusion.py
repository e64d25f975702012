"""CUDA wrappers for error diffusion: same names and signatures as :mod:`lowbit.cpu.diffusion`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import check_operands, grid, kernel, suffix

#: Warps per block of diffuse_rows (DIFFUSE_WARPS in diffusion.cu); each warp takes 32 rows.
DIFFUSE_WARPS = 4
#: Columns per tile of the wide 16-bit kernel (WIDE_TILE in diffusion.cu).
WIDE_TILE = 128


def _same_dtype(x: Any, out: Any) -> None:
    if out.dtype != x.dtype or out.shape != x.shape:
        raise TypeError(f"out must have x's dtype and shape on the GPU ({x.dtype}, {x.shape}), "
                        f"got {out.dtype}, {out.shape}")


def diffuse_rows(x: Any, order: int, lo: float, hi: float, out: Any) -> None:
    check_operands(x=x, out=out)
    _same_dtype(x, out)
    rows, n = x.shape
    wide = (x.dtype.itemsize == 2 and n % WIDE_TILE == 0 and x.data.ptr % 16 == 0
            and out.data.ptr % 16 == 0)
    k = kernel("diffusion", f"lowbit_diffuse_rows_{'wide_' if wide else ''}{suffix(x.dtype)}")
    k(grid(-(-rows // 32), DIFFUSE_WARPS), (32 * DIFFUSE_WARPS,),
      (x, np.int64(rows), np.int64(n), np.int32(order), np.float64(lo), np.float64(hi), out))


def diffuse_2d(x: Any, dy: Any, dx: Any, weight: Any, serpentine: bool, lo: float, hi: float,
               out: Any) -> None:
    import cupy

    # the taps are a few constants (lowbit.rounding.diffusion.ErrorKernel.arrays): taken as
    # given, numpy or CuPy
    dy_d, dx_d = (cupy.asarray(a, dtype=cupy.int64) for a in (dy, dx))
    w_d = cupy.asarray(weight, dtype=cupy.float64)
    check_operands(x=x, out=out, dy=dy_d, dx=dx_d, weight=w_d)
    _same_dtype(x, out)
    batch, h, w = x.shape
    depth = int(dy.max()) if len(dy) else 0
    acc = cupy.zeros((batch, depth + 1, w), cupy.float64)  # each image's pending error rows
    k = kernel("diffusion", f"lowbit_diffuse_2d_{suffix(x.dtype)}")
    threads = 32
    k(grid(batch, threads), (threads,),
      (x, np.int64(batch), np.int64(h), np.int64(w), dy_d, dx_d, w_d, np.int32(dy_d.shape[0]),
       np.int32(bool(serpentine)), np.float64(lo), np.float64(hi), out, acc))
