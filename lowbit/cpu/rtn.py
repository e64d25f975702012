"""Numba kernels for affine integer quantization (scheme ``rtn``).

Inputs are flat C-contiguous arrays split into consecutive groups of
``group_size`` elements.  Grid arithmetic is float64, so that CPU and CUDA
agree bit for bit (CUDA flushes float32 subnormals, never float64 ones).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.codec import minifloat_round
from lowbit.cpu.packing import get_code, load_unit, put_code, store_unit, unit_bytes
from lowbit.cpu.scalar import DOWN, UP, clamp, round_grid
from lowbit.formats import BFLOAT16, FLOAT16, FLOAT32

_U64 = nb.uint64


@nb.njit(inline="always", cache=True)
def minmax(x: np.ndarray, base: int, size: int) -> tuple[float, float, bool]:
    """min, max (float64) of x[base:base+size] and whether it holds NaN/Inf.

    8 independent lanes (8 dependency chains instead of one; no fastmath needed), then the
    ``size % 8`` last elements in lane 0.  Exact (min and max do not round); "+ 0.0" turns -0.0
    into +0.0, so min/max order never shows in the result.  The bounds are meaningless when the
    flag is set (a NaN is skipped by the comparisons unless it is x[base])."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = x[base]
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = x[base]
    nan = False
    end8 = base + size - size % 8
    for u in range(base, end8, 8):
        v = x[u]
        nan |= v != v
        a0 = v if v < a0 else a0
        b0 = v if v > b0 else b0
        v = x[u + 1]
        nan |= v != v
        a1 = v if v < a1 else a1
        b1 = v if v > b1 else b1
        v = x[u + 2]
        nan |= v != v
        a2 = v if v < a2 else a2
        b2 = v if v > b2 else b2
        v = x[u + 3]
        nan |= v != v
        a3 = v if v < a3 else a3
        b3 = v if v > b3 else b3
        v = x[u + 4]
        nan |= v != v
        a4 = v if v < a4 else a4
        b4 = v if v > b4 else b4
        v = x[u + 5]
        nan |= v != v
        a5 = v if v < a5 else a5
        b5 = v if v > b5 else b5
        v = x[u + 6]
        nan |= v != v
        a6 = v if v < a6 else a6
        b6 = v if v > b6 else b6
        v = x[u + 7]
        nan |= v != v
        a7 = v if v < a7 else a7
        b7 = v if v > b7 else b7
    for u in range(end8, base + size):
        v = x[u]
        nan |= v != v
        a0 = v if v < a0 else a0
        b0 = v if v > b0 else b0
    mn = np.float64(min(min(min(a0, a1), min(a2, a3)), min(min(a4, a5), min(a6, a7)))) + 0.0
    mx = np.float64(max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7)))) + 0.0
    return mn, mx, nan or not (np.isfinite(mn) and np.isfinite(mx))


@nb.njit(parallel=True, cache=True)
def group_range(x: np.ndarray, group_size: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """Per-group min and max (float64); NaN for groups holding NaN or +-Inf."""
    for g in nb.prange(lo.shape[0]):
        mn, mx, bad = minmax(x, g * group_size, group_size)
        lo[g] = np.nan if bad else mn
        hi[g] = np.nan if bad else mx


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
               mode: int, seed: np.uint64, index: int, rbits: int) -> np.uint64:
    if symmetric:
        if bits == 1:
            return _U64(1) if v >= 0.0 else _U64(0)
        m = float((1 << (bits - 1)) - 1)
        q = clamp(round_grid(v / scale, mode, seed, np.int64(index), rbits), -m, m)
        return _U64(np.int64(q + m))
    levels = float((1 << bits) - 1)
    q = clamp(round_grid((v - offset) / scale, mode, seed, np.int64(index), rbits), 0.0, levels)
    return _U64(np.int64(q))


@nb.njit(inline="always", cache=True)
def decode_one(code: np.int64, scale: float, offset: float, bits: int, symmetric: bool) -> float:
    c = float(code)  # int64 (get_code): uint64 -> float64 is a slow sequence on x86-64
    if symmetric:
        if bits == 1:
            return scale if code == 1 else -scale
        return (c - float((1 << (bits - 1)) - 1)) * scale
    return c * scale + offset


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
            acc = put_code(acc, i - start, bits, c)
        store_unit(packed, u, bits, acc, unit_bytes(packed, u, bits))


@nb.njit(parallel=True, cache=True)
def rtn_decode(packed: np.ndarray, group_size: int, scale: np.ndarray, offset: np.ndarray,
               bits: int, symmetric: bool, out: np.ndarray) -> None:
    """Unpack codes and reconstruct x_hat = code * scale + offset (float64, then out's dtype)."""
    if group_size % 8 == 0:
        _decode_whole_units(packed, group_size, scale, offset, bits, symmetric, out)
        return
    n = out.shape[0]
    units = (n + 7) // 8
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = load_unit(packed, u, bits, unit_bytes(packed, u, bits))
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
            out[i] = decode_one(get_code(acc, i - start, bits), s, o, bits, symmetric)


@nb.njit(parallel=True, cache=True)
def _decode_whole_units(packed: np.ndarray, group_size: int, scale: np.ndarray,
                        offset: np.ndarray, bits: int, symmetric: bool, out: np.ndarray) -> None:
    """rtn_decode for groups of whole units (group_size % 8 == 0): same arithmetic as
    decode_one, with the group's scale and the grid's branches hoisted out of the loop."""
    m = float((1 << (bits - 1)) - 1)
    sign = symmetric and bits == 1
    units = group_size // 8
    for g in nb.prange(scale.shape[0]):
        s = np.float64(scale[g])
        o = np.float64(offset[g])
        base = g * group_size
        for u in range(units):
            acc = load_unit(packed, g * units + u, bits, bits)
            for j in range(8):
                c = float(get_code(acc, j, bits))
                if sign:
                    v = s if c == 1.0 else -s
                elif symmetric:
                    v = (c - m) * s
                else:
                    v = c * s + o
                out[base + 8 * u + j] = v


# ---- fused single pass: statistics + scale + encode + pack, one group at a time -------------

#: Codec specs of the scale storage formats, by kernel code (lowbit/scales.py SCALE_DTYPES).
_SCALE_SPECS = (FLOAT32.spec, FLOAT16.spec, BFLOAT16.spec)


@nb.njit(cache=True)
def rtn_quantize_groups(x: np.ndarray, group_size: int, bits: int, symmetric: bool, fmt: int,
                        mode: int, seed: np.uint64, rbits: int, packed: np.ndarray,
                        scale: np.ndarray, offset: np.ndarray, status: np.ndarray) -> None:
    """One pass per group: min/max, stored scale and offset (scales.py rules, rounded by the
    shared codec), codes, packing.

    ``group_size`` must be a multiple of 8 (groups start on byte boundaries).  A group
    holding NaN/Inf gets scale NaN, one whose scale or offset overflows ``fmt`` gets +Inf;
    their codes are 0.  ``status[0]`` (int32, zeroed by the caller) gets bit 0 set when some
    group held NaN/Inf and bit 1 when some group overflowed, so callers need not scan the
    scales.  Not for 1-bit symmetric (sign x mean|x|; use the unfused path).
    """
    n_groups = scale.shape[0]
    fmax = _SCALE_SPECS[fmt][4]
    _quantize_groups(x, group_size, bits, symmetric, fmt, mode, seed, rbits, packed, scale, offset, fmax)
    flags = 0
    for g in range(n_groups):  # serial: a data race on status would lose bits
        if not scale[g] <= fmax:  # NaN marks NaN/Inf input, +Inf an overflow
            flags |= 1 if np.isnan(scale[g]) else 2
    status[0] |= flags


#: Groups per parallel task of the fused quantize kernel: a task writes one contiguous block of
#: codes, scales and offsets (2 KiB of 2-bit codes for groups of 128), and reuses one scratch
#: array of codes for its groups.
_GROUPS_PER_TASK = 64

#: 1.5 * 2**52: for |y| < 2**51, (y + _RNE_MAGIC) - _RNE_MAGIC == rint(y) (up to the sign of a
#: zero): y + _RNE_MAGIC lies in [2**52, 2**53), where float64 steps are 1, and the add rounds
#: to nearest even (the default mode; _RNE_MAGIC is even).  Two plain adds, no libm call.
_RNE_MAGIC = 6755399441055744.0


@nb.njit(inline="always", cache=True)
def round_to_float32(v: float, up: bool) -> float:
    """minifloat_round(v, FLOAT32.spec, UP if up else DOWN), by hardware conversion: one
    rounding to nearest float32, then one step toward the mode if it went the wrong way; a
    result beyond +-max is +-Inf whatever the mode, as minifloat_round gives (|v| >= 2**128)."""
    if abs(v) >= 3.402823669209385e38:  # 2**128: beyond max even rounded toward zero
        return np.inf if v > 0 else -np.inf
    f = np.float32(v)
    r = np.float64(f)
    if up and r < v:
        r = np.float64(np.nextafter(f, np.float32(np.inf)))
    elif not up and r > v:
        r = np.float64(np.nextafter(f, np.float32(-np.inf)))
    return r


@nb.njit(inline="always", cache=True)
def pack_group(codes: np.ndarray, size: int, bits: int, packed: np.ndarray, unit0: int) -> None:
    """Pack codes[:size] (int32, < 2**bits; ``size`` a multiple of 8) into the units from
    ``unit0`` on: whole bytes of shifted codes for bits 1, 2, 4, 8, :func:`put_code` otherwise."""
    b0 = unit0 * bits
    if bits == 2:
        for b in range(size // 4):
            packed[b0 + b] = np.uint8(codes[4 * b] | (codes[4 * b + 1] << 2) | (codes[4 * b + 2] << 4)
                                      | (codes[4 * b + 3] << 6))
    elif bits == 4:
        for b in range(size // 2):
            packed[b0 + b] = np.uint8(codes[2 * b] | (codes[2 * b + 1] << 4))
    elif bits == 8:
        for b in range(size):
            packed[b0 + b] = np.uint8(codes[b])
    elif bits == 1:
        for b in range(size // 8):
            c = 8 * b
            packed[b0 + b] = np.uint8(codes[c] | (codes[c + 1] << 1) | (codes[c + 2] << 2) | (codes[c + 3] << 3)
                                      | (codes[c + 4] << 4) | (codes[c + 5] << 5) | (codes[c + 6] << 6)
                                      | (codes[c + 7] << 7))
    else:
        for u in range(size // 8):
            acc = _U64(0)
            for j in range(8):
                acc = put_code(acc, j, bits, codes[8 * u + j])
            store_unit(packed, unit0 + u, bits, acc, bits)


@nb.njit(parallel=True, cache=True)
def _quantize_groups(x: np.ndarray, group_size: int, bits: int, symmetric: bool, fmt: int,
                     mode: int, seed: np.uint64, rbits: int, packed: np.ndarray,
                     scale: np.ndarray, offset: np.ndarray, fmax: float) -> None:
    n_groups = scale.shape[0]
    n_tasks = (n_groups + _GROUPS_PER_TASK - 1) // _GROUPS_PER_TASK
    lo_q = -float((1 << (bits - 1)) - 1) if symmetric else 0.0
    hi_q = float((1 << (bits - 1)) - 1) if symmetric else float((1 << bits) - 1)
    for task in nb.prange(n_tasks):
        codes = np.empty(group_size, np.int32)
        for g in range(task * _GROUPS_PER_TASK, min(n_groups, (task + 1) * _GROUPS_PER_TASK)):
            base = g * group_size
            mn, mx, bad = minmax(x, base, group_size)
            if symmetric:
                step = max(abs(mn), abs(mx)) / hi_q
                off = 0.0
            elif fmt == 0:  # float32 scales: hardware rounding, same values
                off = round_to_float32(mn, False)
                step = (mx - off) / hi_q
            else:
                off = minifloat_round(mn, _SCALE_SPECS[fmt], DOWN)
                step = (mx - off) / hi_q
            if not step > 0.0:
                s = 1.0
            elif fmt == 0:
                s = round_to_float32(step, True)
            else:
                s = minifloat_round(step, _SCALE_SPECS[fmt], UP)
            overflow = s > fmax or abs(off) > fmax
            if not bad:
                # nearest_even, branch-free and exact: y = (x - off) / s as in encode_one (a
                # division, which vectorizes), clamped to [lo_q - 1, hi_q + 1] (which changes
                # no code and keeps |y| < 2**51), rounded by _RNE_MAGIC.  Other modes are
                # redone by encode_one.
                for j in range(group_size):
                    v = float(x[base + j])
                    y = (v - off) / s
                    y = y if y > lo_q - 1.0 else lo_q - 1.0
                    y = y if y < hi_q + 1.0 else hi_q + 1.0
                    r = (y + _RNE_MAGIC) - _RNE_MAGIC
                    r = r if r > lo_q else lo_q
                    r = r if r < hi_q else hi_q
                    codes[j] = np.int32(r - lo_q)
                if not overflow and mode != 0:
                    for j in range(group_size):
                        i = base + j
                        codes[j] = np.int32(encode_one(np.float64(x[i]), s, off, bits, symmetric,
                                                       mode, seed, i, rbits))
            skip = bad or overflow
            if skip:
                for j in range(group_size):
                    codes[j] = 0
            pack_group(codes, group_size, bits, packed, base // 8)
            scale[g] = np.nan if bad else (np.inf if overflow else s)
            offset[g] = 0.0 if skip else off
