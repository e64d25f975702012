"""Numba kernels: KVarN tiles on a codebook grid (lowbit/kv/kvarn_grid.py; docs/kv.md).

The tile is read as in ``lowbit/cpu/kvarn.py`` (``key=True``: K tile [D, T], rows =
channels; ``key=False``: V tile [T, D], rows = tokens) and balanced by the same routine
(:func:`lowbit.cpu.balance.balance_tile`, DESIGN.md's constants).  The column scale s_col is
stored first (float16, or e4m3 with ``scale_format == 1``) and u[r, c] = tile[r, c] / s_col[c]
uses the stored value.  Each row r is then coded on the level table ``levels`` (float64,
increasing, 2**bits entries; ``thresholds`` their midpoints) with its own affine map:

    x_hat[r, c] = (levels[code[r, c]] * A[r] + Z[r]) * s_col[c]

(the balance's row scale folds into A and Z, so the reconstruction stays separable exactly as
for the uniform grid).  A and Z are fitted to the row: start at the row's standard deviation
and mean (the levels are designed for a unit-variance distribution), then ``fits`` rounds of
(nearest-level codes, least-squares A and Z for those codes), which never raise the row's
squared error.  A is stored (float16, or e4m3; at least the format's smallest positive value),
Z is refitted for the stored A and stored as float16, and the final codes are the nearest
levels of (u - Z) / A for the *stored* A and Z, so decoding reproduces exactly the grid the
codes were chosen on.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.balance import balance_tile
from lowbit.cpu.codebook import nearest_code
from lowbit.cpu.codec import SATURATE, Spec, minifloat_decode_one, minifloat_encode_one
from lowbit.cpu.packing import get_code, load_unit, pack_unit, unit_bytes
from lowbit.cpu.scalar import NEAREST_EVEN
from lowbit.formats import FLOAT16, FP8_E4M3

_U64 = nb.uint64
_F32 = np.float32
_SCALE_SPECS = (FLOAT16.spec, FP8_E4M3.spec)
_F16 = FLOAT16.spec


@nb.njit(inline="always", cache=True)
def _store(v: float, spec: Spec) -> np.int64:
    """Code of the finite ``v`` in ``spec``: nearest-even, saturating (the shared codec)."""
    return np.int64(minifloat_encode_one(v, spec, SATURATE, NEAREST_EVEN, _U64(0), np.int64(0), 16)[0])


@nb.njit(cache=True)
def _balance(tile: np.ndarray, iterations: int, s_col: np.ndarray, s_row: np.ndarray) -> None:
    balance_tile(tile, iterations, _F32(1e-3), _F32(1e3), _F32(-0.3), _F32(10.0),  # type: ignore[arg-type]
                 _F32(1e-8), s_col, s_row)


@nb.njit(cache=True)
def _fit_row(u: np.ndarray, levels: np.ndarray, thresholds: np.ndarray, fits: int,
             codes: np.ndarray) -> tuple[float, float]:
    """(A, Z) of one row ``u`` after ``fits`` least-squares rounds; ``codes`` the last codes."""
    n = u.shape[0]
    mean = 0.0
    for c in range(n):
        mean += u[c]
    mean /= n
    var = 0.0
    for c in range(n):
        var += (u[c] - mean) ** 2
    a = np.sqrt(var / n)
    z = mean
    if not a > 0.0:
        a = 1e-10
    for _ in range(fits + 1):
        sl = 0.0
        sll = 0.0
        sul = 0.0
        su = 0.0
        for c in range(n):
            q = nearest_code((u[c] - z) / a, thresholds)
            codes[c] = q
            lv = levels[q]
            sl += lv
            sll += lv * lv
            sul += u[c] * lv
            su += u[c]
        det = sll - sl * sl / n
        if det > 0.0:
            slope = (sul - sl * su / n) / det
            if slope > 0.0:
                a = slope
                z = (su - a * sl) / n
    return a, z


@nb.njit(parallel=True, cache=True)
def kvarn_grid_encode(x: np.ndarray, key: bool, bits: int, levels: np.ndarray, thresholds: np.ndarray,
                      iterations: int, fits: int, scale_format: int, packed: np.ndarray,
                      row_scale: np.ndarray, row_offset: np.ndarray, col_scale: np.ndarray) -> None:
    """Encode ``x`` [n, T, D] (rotated, float32) into codebook-grid KVarN tiles.

    packed [n, ceil(T*D*bits/8)] uint8; row_scale A [n, R] and col_scale s_col [n, C]
    (uint16 float16 bits, or e4m3 codes when ``scale_format == 1``); row_offset Z [n, R]
    (uint16 float16 bits).  R, C = (D, T) for keys, (T, D) for values.
    """
    n, tokens, dim = x.shape
    rows, cols = (dim, tokens) if key else (tokens, dim)
    nel = rows * cols
    units = (nel + 7) // 8
    spec = _SCALE_SPECS[scale_format]
    for i in nb.prange(n):
        tile = np.empty((rows, cols), np.float32)
        for t in range(tokens):
            for d in range(dim):
                if key:
                    tile[d, t] = _F32(x[i, t, d])
                else:
                    tile[t, d] = _F32(x[i, t, d])
        s_col = np.empty(cols, np.float32)
        s_row = np.empty(rows, np.float32)
        if rows >= 2 and cols >= 2:
            _balance(tile, iterations, s_col, s_row)
        else:  # a 1-token tile has no token std: identity scales
            s_col[:] = _F32(1.0)
        scv = np.empty(cols, np.float64)
        for c in range(cols):
            code = _store(np.float64(s_col[c]), spec)
            col_scale[i, c] = code
            scv[c] = minifloat_decode_one(_U64(code), spec)
        codes = np.empty(nel, np.uint8)
        u = np.empty(cols, np.float64)
        rc = np.empty(cols, np.int64)
        for r in range(rows):
            for c in range(cols):
                u[c] = np.float64(tile[r, c]) / scv[c] if scv[c] > 0.0 else 0.0
            a, z = _fit_row(u, levels, thresholds, fits, rc)
            acode = _store(a, spec)
            a_s = minifloat_decode_one(_U64(acode), spec)
            sl = 0.0
            su = 0.0
            for c in range(cols):
                sl += levels[rc[c]] if a_s > 0.0 else 0.0
                su += u[c]
            zcode = _store((su - a_s * sl) / cols, _F16)
            z_s = minifloat_decode_one(_U64(zcode), _F16)
            row_scale[i, r] = acode
            row_offset[i, r] = zcode
            for c in range(cols):
                # A = 0 (a row too flat for the format's smallest step): every value decodes to Z
                q = nearest_code((u[c] - z_s) / a_s, thresholds) if a_s > 0.0 else 0
                codes[r * cols + c] = np.uint8(q)
        for w in range(units):
            pack_unit(codes, w, bits, packed[i])


@nb.njit(parallel=True, cache=True)
def kvarn_grid_decode(packed: np.ndarray, key: bool, bits: int, levels: np.ndarray, scale_format: int,
                      row_scale: np.ndarray, row_offset: np.ndarray, col_scale: np.ndarray,
                      out: np.ndarray) -> None:
    """Reconstruct ``out`` [n, T, D] float32 (rotated frame) from :func:`kvarn_grid_encode`."""
    n, tokens, dim = out.shape
    rows, cols = (dim, tokens) if key else (tokens, dim)
    nel = rows * cols
    units = (nel + 7) // 8
    spec = _SCALE_SPECS[scale_format]
    for i in nb.prange(n):
        a = np.empty(rows, np.float64)
        z = np.empty(rows, np.float64)
        s = np.empty(cols, np.float64)
        for r in range(rows):
            a[r] = minifloat_decode_one(_U64(row_scale[i, r]), spec)
            z[r] = minifloat_decode_one(_U64(row_offset[i, r]), _F16)
        for c in range(cols):
            s[c] = minifloat_decode_one(_U64(col_scale[i, c]), spec)
        for w in range(units):
            start = w * 8
            stop = min(start + 8, nel)
            acc = load_unit(packed[i], w, bits, unit_bytes(packed[i], w, bits))
            for e in range(start, stop):
                q = get_code(acc, e - start, bits)
                r = e // cols
                c = e - r * cols
                val = _F32((levels[q] * a[r] + z[r]) * s[c])
                if key:
                    out[i, c, r] = val
                else:
                    out[i, r, c] = val
