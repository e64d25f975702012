"""Group-wise rtn quantize+pack and unpack+dequantize vs a vectorized NumPy version.

The NumPy baseline does the same computation (per-group min/max, float64 grid
arithmetic, nearest-even, clip, pack little-endian) with whole-array operations.
"""

from __future__ import annotations

import functools

import numpy as np
from common import best_time, row

import lowbit


def numpy_quantize_pack(x: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = x.reshape(-1, group)
    lo = g.min(axis=1)
    hi = g.max(axis=1)
    exact = (hi.astype(np.float64) - lo) / (2**bits - 1)
    scale = exact.astype(np.float32)
    scale = np.where(scale < exact, np.nextafter(scale, np.float32(np.inf)), scale)  # round up
    scale[scale == 0] = 1
    q = np.clip(np.rint((g - lo[:, None].astype(np.float64)) / scale[:, None]), 0, 2**bits - 1)
    codes = q.astype(np.uint8).reshape(-1, 8 // bits)
    shifts = (np.arange(8 // bits, dtype=np.uint8) * bits)[None, :]
    packed = np.bitwise_or.reduce(codes << shifts, axis=1).astype(np.uint8)
    return packed, scale, lo


def numpy_unpack_dequantize(packed: np.ndarray, scale: np.ndarray, lo: np.ndarray, bits: int, group: int) -> np.ndarray:
    shifts = (np.arange(8 // bits, dtype=np.uint8) * bits)[None, :]
    codes = ((packed[:, None] >> shifts) & (2**bits - 1)).reshape(-1, group)
    return (codes * scale[:, None].astype(np.float64) + lo[:, None]).astype(np.float32).ravel()


def run(quick: bool = False) -> list[dict]:
    n = (1 << 20) if quick else (64 << 20)
    group = 128
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    rows = []
    for bits in (2, 4):
        q = lowbit.quantize(x, bits=bits, scheme="rtn", group_size=group)
        ref_packed, ref_scale, ref_lo = numpy_quantize_pack(x, bits, group)
        assert np.array_equal(q.codes, ref_packed), "baseline and lowbit disagree"
        repeat = 3 if quick else 2
        t = best_time(functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=group), repeat)
        tb = best_time(functools.partial(numpy_quantize_pack, x, bits, group), repeat)
        # minimum traffic: read x twice (stats, encode) + write codes
        rows.append(row(f"rtn quantize+pack {bits}-bit g{group}", f"{n >> 20} Mi f32", t,
                        "numpy vectorized", tb, 2 * x.nbytes + n * bits // 8, n))
        t = best_time(q.dequantize, repeat)
        tb = best_time(functools.partial(numpy_unpack_dequantize, ref_packed, ref_scale, ref_lo, bits, group), repeat)
        rows.append(row(f"rtn unpack+dequantize {bits}-bit g{group}", f"{n >> 20} Mi f32", t,
                        "numpy vectorized", tb, x.nbytes + n * bits // 8, n))
    return rows
