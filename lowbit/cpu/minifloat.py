"""Numba kernels: encode to / decode from minifloat and fixed-point codes, with block scales.

Layout shared by every kernel here: ``x`` is flat and C-contiguous, split into consecutive
blocks of ``block_size`` elements; block b is divided by ``scale[b]`` before rounding
(``scale = [1.0]`` with ``block_size = x.size`` is a direct conversion).  Codes are packed
on the fly (docs/packing.md), 8 codes = ``bits`` bytes per unit.

Every value is rounded exactly once: x (float32 or float64) is widened to float64 exactly,
divided by a power-of-two scale exactly, and brought to grid units at its own binade by an
exact power-of-two scaling, where ``round_grid`` rounds it.  A non-power-of-two scale costs
one float64 division first (docs/formats.md, "single rounding").

Encoders return ``(n_invalid, n_overflow)``: NaN/Inf inputs the format cannot hold, and
elements whose rounded value left the format's range (all are written saturated unless the
policy says otherwise); the front turns non-zero counts into errors where the policy asks.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from lowbit.cpu.packing import load_unit, store_unit
from lowbit.cpu.scalar import DOWN, ODD, TOWARD_ZERO, UP, round_grid

_U64 = nb.uint64

# overflow policy codes (lowbit.formats.OVERFLOW_POLICIES order)
SATURATE, NONFINITE, WRAP, ERROR = 0, 1, 2, 3


@nb.njit(inline="always", cache=True)
def minifloat_encode_one(x: float, bits: int, man_bits: int, emin: int, emax: int,
                         max_value: float, code_of_max: int, code_of_inf: int, code_of_nan: int,
                         overflow: int, mode: int, seed: np.uint64, index: np.int64,
                         rbits: int) -> tuple[np.uint64, int, int]:
    """One float64 value -> (code, invalid, overflowed).  ``code_of_inf/nan`` < 0: absent."""
    neg = math.copysign(1.0, x) < 0.0
    sign = (_U64(1) << _U64(bits - 1)) if neg else _U64(0)
    if x != x:
        if code_of_nan < 0:
            return sign, 1, 0
        return sign | _U64(code_of_nan), 0, 0
    a = abs(x)
    if a == np.inf:
        if overflow == NONFINITE:
            if code_of_inf >= 0:
                return sign | _U64(code_of_inf), 0, 0
            return sign | _U64(code_of_nan), 0, 0
        return sign | _U64(code_of_max), 0, (1 if overflow == ERROR else 0)
    if a == 0.0:
        return sign, 0, 0
    # exponent of the grid at x's binade: floor(log2 a), within [emin, emax + 1]
    e = math.frexp(a)[1] - 1
    e = min(max(e, emin), emax + 1)
    v = math.ldexp(x, man_bits - e)  # exact: a power-of-two scaling of a float64
    k = abs(round_grid(v, mode, seed, index, rbits))  # 0 .. 2**(man_bits+1) unless e = emax+1
    if math.ldexp(k, e - man_bits) <= max_value:
        return sign | _U64(((e - emin) << man_bits) + np.int64(k)), 0, 0
    if overflow == NONFINITE:
        toward_zero = (mode == TOWARD_ZERO or mode == ODD or (mode == DOWN and not neg)
                       or (mode == UP and neg))
        if toward_zero:
            return sign | _U64(code_of_max), 0, 0
        if code_of_inf >= 0:
            return sign | _U64(code_of_inf), 0, 0
        return sign | _U64(code_of_nan), 0, 0
    return sign | _U64(code_of_max), 0, (1 if overflow == ERROR else 0)


@nb.njit(parallel=True, cache=True)
def minifloat_encode(x: np.ndarray, block_size: int, scale: np.ndarray, bits: int, man_bits: int,
                     emin: int, emax: int, max_value: float, code_of_max: int, code_of_inf: int,
                     code_of_nan: int, overflow: int, mode: int, seed: np.uint64, offset: np.int64,
                     rbits: int, packed: np.ndarray) -> tuple[int, int]:
    """Encode x / scale[block] to minifloat codes, packed ``bits`` bits each.

    ``offset`` is the global flat index of x[0] (the random-bit counter, for chunking).
    A block whose scale is 0 or not finite encodes as signed zeros.
    """
    n = x.shape[0]
    units = (n + 7) // 8
    n_invalid = 0
    n_over = 0
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = _U64(0)
        bad = 0
        ovf = 0
        for i in range(start, stop):
            s = scale[i // block_size]
            xi = np.float64(x[i])
            if s == 0.0 or not np.isfinite(s):
                xi = math.copysign(0.0, xi) if xi == xi else 0.0
            elif s != 1.0:
                xi = xi / s
            c, b, o = minifloat_encode_one(xi, bits, man_bits, emin, emax, max_value, code_of_max,
                                           code_of_inf, code_of_nan, overflow, mode, seed,
                                           offset + i, rbits)
            bad += b
            ovf += o
            acc |= c << _U64((i - start) * bits)
        store_unit(packed, u, bits, acc, min(bits, packed.shape[0] - u * bits))
        n_invalid += bad
        n_over += ovf
    return n_invalid, n_over


@nb.njit(inline="always", cache=True)
def fixed_encode_one(x: float, bits: int, frac_bits: int, qmin: int, qmax: int, overflow: int,
                     mode: int, seed: np.uint64, index: np.int64,
                     rbits: int) -> tuple[np.uint64, int, int]:
    """One float64 value -> (two's-complement code in ``bits`` bits, invalid, overflowed)."""
    mask = (np.int64(1) << bits) - 1
    if x != x:
        return _U64(0), 1, 0
    if abs(x) == np.inf:
        if overflow == WRAP:
            return _U64(0), 1, 0
        q = qmax if x > 0 else qmin
        return _U64(np.int64(q) & mask), 0, (1 if overflow == ERROR else 0)
    r = round_grid(math.ldexp(x, frac_bits), mode, seed, index, rbits)
    if r > qmax or r < qmin:
        if overflow == WRAP:
            w = r - math.ldexp(math.floor(math.ldexp(r, -bits)), bits)  # r mod 2**bits, exact
            return _U64(np.int64(w) & mask), 0, 0
        q = qmax if r > qmax else qmin
        return _U64(np.int64(q) & mask), 0, (1 if overflow == ERROR else 0)
    return _U64(np.int64(r) & mask), 0, 0


@nb.njit(parallel=True, cache=True)
def fixed_encode(x: np.ndarray, block_size: int, scale: np.ndarray, bits: int, frac_bits: int,
                 qmin: int, qmax: int, overflow: int, mode: int, seed: np.uint64, offset: np.int64,
                 rbits: int, packed: np.ndarray) -> tuple[int, int]:
    """Encode x / scale[block] to fixed point q = round(x * 2**frac_bits) in [qmin, qmax].

    Codes are q's low ``bits`` bits (two's complement), packed.  A block whose scale is 0 or
    not finite encodes as zeros.
    """
    n = x.shape[0]
    units = (n + 7) // 8
    n_invalid = 0
    n_over = 0
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = _U64(0)
        bad = 0
        ovf = 0
        for i in range(start, stop):
            s = scale[i // block_size]
            xi = np.float64(x[i])
            if s == 0.0 or not np.isfinite(s):
                xi = 0.0
            elif s != 1.0:
                xi = xi / s
            c, b, o = fixed_encode_one(xi, bits, frac_bits, qmin, qmax, overflow, mode, seed,
                                       offset + i, rbits)
            bad += b
            ovf += o
            acc |= c << _U64((i - start) * bits)
        store_unit(packed, u, bits, acc, min(bits, packed.shape[0] - u * bits))
        n_invalid += bad
        n_over += ovf
    return n_invalid, n_over


@nb.njit(parallel=True, cache=True)
def decode_table(packed: np.ndarray, bits: int, table: np.ndarray, block_size: int,
                 scale: np.ndarray, out: np.ndarray) -> None:
    """out[i] = table[code_i] * scale[i // block_size] (float64 product, then out's dtype)."""
    n = out.shape[0]
    units = (n + 7) // 8
    mask = _U64((1 << bits) - 1)
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = load_unit(packed, u, bits, min(bits, packed.shape[0] - u * bits))
        for i in range(start, stop):
            c = (acc >> _U64((i - start) * bits)) & mask
            out[i] = table[c] * scale[i // block_size]


@nb.njit(parallel=True, cache=True)
def block_absmax(x: np.ndarray, block_size: int, out: np.ndarray) -> None:
    """out[b] = max |x| over block b (float64); NaN if the block holds NaN or +-Inf.

    The last block may be shorter than ``block_size``.
    """
    n = x.shape[0]
    for b in nb.prange(out.shape[0]):
        start = b * block_size
        stop = min(start + block_size, n)
        m = 0.0
        bad = False
        for i in range(start, stop):
            v = abs(np.float64(x[i]))
            bad |= not v < np.inf
            m = max(m, v)
        out[b] = np.nan if bad else m
