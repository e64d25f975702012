"""Group-wise rtn quantize+pack and unpack+dequantize vs vectorized NumPy versions.

Baselines, measured in the same process:

- ``numpy_f32_quantize_pack``: the plain float32 composition a user would write (issue 19):
  per-group min/max, ``s = (hi - lo) / (2**bits - 1)``, ``rint((x - lo) / s)``, ``clip``,
  shift-or packing, all in float32.  It rounds its scale to nearest (lowbit rounds it up) and
  divides in float32, so its codes differ from lowbit's in a few elements; the row reports the
  fraction (timing only, not a correctness gate).
- ``numpy_quantize_pack``: the same computation as lowbit's, exactly (float64 grid arithmetic,
  scale rounded up to float32): lowbit's packed bytes must equal it (the correctness gate).
- the kernel alone (``lowbit.cpu.rtn._quantize_groups`` on preallocated outputs) is timed
  against ``numpy_f32_quantize_pack``; its packed codes, scales and offsets must equal
  ``numpy_quantize_pack``'s bit for bit.  (The previous Numba kernel, kept here as
  ``_quantize_groups_reference`` until its ratios were recorded in docs/performance.md, has
  been removed.)

Traffic counted for % of copy bandwidth: x read once + codes + scales and offsets written
(quantize); codes + scales and offsets read + x written (dequantize).
"""

from __future__ import annotations

import functools

import numpy as np
from common import best_time, row

import lowbit
from lowbit.cpu.rtn import _quantize_groups


def numpy_f32_quantize_pack(x: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = x.reshape(-1, group)
    lo = g.min(axis=1, keepdims=True)
    hi = g.max(axis=1, keepdims=True)
    scale = (hi - lo) / np.float32(2**bits - 1)
    scale[scale == 0] = 1
    q = np.clip(np.rint((g - lo) / scale), 0, 2**bits - 1)
    codes = q.astype(np.uint8).reshape(-1, 8 // bits)
    shifts = (np.arange(8 // bits, dtype=np.uint8) * bits)[None, :]
    packed = np.bitwise_or.reduce(codes << shifts, axis=1).astype(np.uint8)
    return packed, scale.ravel(), lo.ravel()


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


def _kernel_call(kernel, x: np.ndarray, bits: int, group: int) -> tuple[functools.partial, tuple]:
    """A call of a fused quantize kernel (asymmetric, nearest_even, float32 scales) on
    preallocated outputs, and those outputs."""
    outs = (np.empty(x.size * bits // 8, np.uint8), np.empty(x.size // group, np.float32),
            np.empty(x.size // group, np.float32))
    fmax = float(np.finfo(np.float32).max)
    return functools.partial(kernel, x, group, bits, False, 0, 0, np.uint64(0), 16, *outs, fmax), outs


def run(quick: bool = False) -> list[dict]:
    n = (1 << 20) if quick else (32 << 20)
    group = 128
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    rows = []
    size = f"{n >> 20} Mi f32"
    for bits in (2, 4):
        q = lowbit.quantize(x, bits=bits, scheme="rtn", group_size=group)
        ref_packed, ref_scale, ref_lo = numpy_quantize_pack(x, bits, group)
        assert np.array_equal(q.codes, ref_packed), "baseline and lowbit disagree"
        f32_packed = numpy_f32_quantize_pack(x, bits, group)[0]
        kernel_call, kernel_out = _kernel_call(_quantize_groups, x, bits, group)
        kernel_call()
        assert all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                   for a, b in zip(kernel_out, (ref_packed, ref_scale, ref_lo), strict=True)), \
            "kernel and exact NumPy baseline disagree"
        repeat = 3 if quick else 5
        traffic = x.nbytes + n * bits // 8 + 2 * 4 * (n // group)
        t = best_time(functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=group), repeat)
        tb_f32 = best_time(functools.partial(numpy_f32_quantize_pack, x, bits, group), repeat)
        differ = np.count_nonzero(f32_packed != q.codes) / q.codes.size
        rows.append(row(f"rtn quantize+pack {bits}-bit g{group}", size, t,
                        f"numpy vectorized float32 ({100 * differ:.2f}% bytes differ)", tb_f32, traffic, n))
        tb = best_time(functools.partial(numpy_quantize_pack, x, bits, group), repeat)
        rows.append(row(f"rtn quantize+pack {bits}-bit g{group} (vs exact)", size, t,
                        "numpy vectorized float64, same codes", tb, traffic, n))
        tk = best_time(kernel_call, repeat)
        rows.append(row(f"rtn quantize+pack kernel {bits}-bit g{group}", size, tk,
                        "numpy vectorized float32", tb_f32, traffic, n))
        t = best_time(q.dequantize, repeat)
        tb = best_time(functools.partial(numpy_unpack_dequantize, ref_packed, ref_scale, ref_lo, bits, group), repeat)
        rows.append(row(f"rtn unpack+dequantize {bits}-bit g{group}", size, t,
                        "numpy vectorized", tb, traffic, n))
    return rows
