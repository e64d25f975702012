"""Numba kernels for affine integer quantization (scheme ``rtn``).

Inputs are flat C-contiguous arrays split into consecutive groups of
``group_size`` elements.  Grid arithmetic is float64, so that CPU and CUDA
agree bit for bit (CUDA flushes float32 subnormals, never float64 ones).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.packing import load_unit, store_unit
from lowbit.cpu.scalar import clamp, round_grid

_U64 = nb.uint64


@nb.njit(parallel=True, cache=True)
def group_range(x: np.ndarray, group_size: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """Per-group min and max (float64); NaN for groups holding NaN or +-Inf."""
    for g in nb.prange(lo.shape[0]):
        base = g * group_size
        mn = np.inf
        mx = -np.inf
        bad = False
        for i in range(base, base + group_size):
            v = np.float64(x[i])
            bad |= not np.isfinite(v)
            mn = min(mn, v)
            mx = max(mx, v)
        # "+ 0.0" turns -0.0 into +0.0, so min/max order never shows in the result
        lo[g] = np.nan if bad else mn + 0.0
        hi[g] = np.nan if bad else mx + 0.0


#: Lanes of the canonical summation order shared with the CUDA twin (one warp).
LANES = 32


@nb.njit(parallel=True, cache=True)
def group_abs_mean(x: np.ndarray, group_size: int, out: np.ndarray) -> None:
    """Per-group mean of |x| in float64, in a fixed summation order.

    Element i of a group goes to lane i % 32, each lane sums in order, and the
    lanes combine by the xor butterfly (offsets 16, 8, 4, 2, 1) -- exactly the
    order of one CUDA warp, so both backends give the same bits.
    """
    for g in nb.prange(out.shape[0]):
        base = g * group_size
        lanes = np.zeros(LANES, np.float64)
        for i in range(group_size):
            lanes[i % LANES] += abs(np.float64(x[base + i]))
        step = LANES // 2
        while step:
            nxt = np.empty(LANES, np.float64)
            for lane in range(LANES):
                nxt[lane] = lanes[lane] + lanes[lane ^ step]
            lanes = nxt
            step //= 2
        out[g] = lanes[0] / group_size


@nb.njit(inline="always", cache=True)
def encode_one(v: float, scale: float, offset: float, bits: int, symmetric: bool,
               mode: int, seed: np.uint64, index: np.int64, rbits: int) -> np.uint64:
    if symmetric:
        if bits == 1:
            return _U64(1) if v >= 0.0 else _U64(0)
        m = float((1 << (bits - 1)) - 1)
        q = clamp(round_grid(v / scale, mode, seed, index, rbits), -m, m)
        return _U64(np.int64(q + m))
    levels = float((1 << bits) - 1)
    q = clamp(round_grid((v - offset) / scale, mode, seed, index, rbits), 0.0, levels)
    return _U64(np.int64(q))


@nb.njit(inline="always", cache=True)
def decode_one(code: np.uint64, scale: float, offset: float, bits: int, symmetric: bool) -> float:
    if symmetric:
        if bits == 1:
            return scale if code == _U64(1) else -scale
        return (float(code) - float((1 << (bits - 1)) - 1)) * scale
    return float(code) * scale + offset


@nb.njit(parallel=True, cache=True)
def rtn_encode(x: np.ndarray, group_size: int, scale: np.ndarray, offset: np.ndarray,
               bits: int, symmetric: bool, mode: int, seed: np.uint64, rbits: int,
               packed: np.ndarray) -> None:
    """Quantize flat ``x`` per group and pack the codes (DESIGN.md section 2 grids).

    asymmetric: code = clip(round((x - offset) / scale), 0, 2**bits - 1)
    symmetric:  code = clip(round(x / scale), -m, m) + m, m = 2**(bits-1) - 1
    symmetric, bits == 1: code = (x >= 0)
    """
    n = x.shape[0]
    units = (n + 7) // 8
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = _U64(0)
        g = start // group_size
        g_end = (g + 1) * group_size
        s = np.float64(scale[g])
        o = np.float64(offset[g])
        for i in range(start, stop):
            if i >= g_end:  # crossed into the next group
                g = i // group_size
                g_end = (g + 1) * group_size
                s = np.float64(scale[g])
                o = np.float64(offset[g])
            c = encode_one(np.float64(x[i]), s, o, bits, symmetric, mode, seed, i, rbits)
            acc |= c << _U64((i - start) * bits)
        store_unit(packed, u, bits, acc, min(bits, packed.shape[0] - u * bits))


@nb.njit(parallel=True, cache=True)
def rtn_decode(packed: np.ndarray, group_size: int, scale: np.ndarray, offset: np.ndarray,
               bits: int, symmetric: bool, out: np.ndarray) -> None:
    """Unpack codes and reconstruct x_hat = code * scale + offset (float64, then out's dtype)."""
    n = out.shape[0]
    units = (n + 7) // 8
    mask = _U64((1 << bits) - 1)
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = load_unit(packed, u, bits, min(bits, packed.shape[0] - u * bits))
        g = start // group_size
        g_end = (g + 1) * group_size
        s = np.float64(scale[g])
        o = np.float64(offset[g])
        for i in range(start, stop):
            if i >= g_end:
                g = i // group_size
                g_end = (g + 1) * group_size
                s = np.float64(scale[g])
                o = np.float64(offset[g])
            c = (acc >> _U64((i - start) * bits)) & mask
            out[i] = decode_one(c, s, o, bits, symmetric)
