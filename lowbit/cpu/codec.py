"""Numba kernels of the format codec: encode to / decode from MiniFloat and FixedPoint codes.

A :class:`~lowbit.formats.MiniFloat` record reaches the kernels as its *spec*, the tuple
``(bits, man_bits, emin, emax, max_value, code_of_max, code_of_inf, code_of_nan)``
(:attr:`MiniFloat.spec <lowbit.formats.MiniFloat.spec>`; ``code_of_inf`` / ``code_of_nan`` are
-1 where the format has none).  One compiled encoder and one decoder serve every format, from fp4 e2m1 to float32,
and every kernel that stores a value in a format calls them: element formats and block
formats here, rtn's scale storage (``lowbit/cpu/rtn.py``), KVarN's scale codes
(``lowbit/cpu/kvarn.py``), 16-bit conversions of whole arrays (``lowbit/codec.py``).

Layout shared by every kernel here: ``x`` is flat and C-contiguous, split into consecutive
blocks of ``block_size`` elements; block b is divided by ``scale[b]`` before rounding
(``scale = [1.0]`` with ``block_size = x.size`` is a direct conversion).  Encoders write
unpacked codes (the front packs them with ``pack_codes``); :func:`decode_table` reads packed
codes unit by unit (``lowbit/cpu/packing.py``).

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
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from lowbit.cpu.packing import get_code, load_unit, unit_bytes
from lowbit.cpu.scalar import (
    DOWN,
    NEAREST_AWAY,
    NEAREST_EVEN,
    ODD,
    TOWARD_ZERO,
    UP,
    bits_f64,
    f64_bits,
    random_bits,
    round_grid,
)

_U64 = nb.uint64


@intrinsic
def float32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE 754 bits of a float32 as int64 (CUDA: __float_as_uint); -1 for a float64, whose
    callers then take the float64 path."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        if signature.args[0].bitwidth == 32:
            return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))
        return ir.Constant(ir.IntType(64), -1)

    return types.int64(x), codegen


@nb.njit(inline="always", cache=True)
def pow2(k: int | np.integer) -> float:
    """2.0**k for -1022 <= k <= 1023, built from its bits."""
    return bits_f64(np.int64(k + 1023) << 52)  # type: ignore[call-arg, no-any-return]

# overflow policy codes (lowbit.formats.OVERFLOW_POLICIES order)
SATURATE, NONFINITE, WRAP, ERROR = 0, 1, 2, 3


#: The spec of a format without Inf/NaN handling, for type declarations and tests.
Spec = tuple[int, int, int, int, float, int, int, int]


@nb.njit(inline="always", cache=True)
def minifloat_encode_one(x: float, spec: Spec, overflow: int, mode: int, seed: np.uint64,
                         index: np.int64, rbits: int) -> tuple[np.uint64, int, int]:
    """One float64 value -> (code, invalid, overflowed) in the format ``spec``."""
    bits, man_bits, emin, emax, max_value, code_of_max, code_of_inf, code_of_nan = spec
    neg = f64_bits(x) < 0  # type: ignore[call-arg]  # the sign bit, also of -0.0 and NaN
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
    # float64 subnormals give -1023, below every emin
    e = np.int64(f64_bits(a) >> 52) - 1023  # type: ignore[call-arg]
    e = min(max(e, emin), emax + 1)
    v = x * pow2(man_bits - e)  # exact: a power-of-two scaling of a float64
    k = abs(round_grid(v, mode, seed, index, rbits))  # 0 .. 2**(man_bits+1) unless e = emax+1
    if k * pow2(e - man_bits) <= max_value:
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


@nb.njit(inline="always", cache=True)
def minifloat_encode_bits(b: np.int64, shift: int, spec: Spec, mode: int, seed: np.uint64,
                          index: np.int64, rbits: int) -> np.uint64:
    """The code of v = x * 2**-shift in the format ``spec``, saturating, for a normal float32 x
    given by its bits ``b`` (exponent field 1..254), any ``shift``: the same code as
    ``minifloat_encode_one(v, spec, SATURATE, mode, ...)``, in integer arithmetic only.

    v's binade is E = field - 127 - shift, exactly; the grid exponent e = clip(E, emin,
    emax + 1), and v in grid units is sig * 2**-sh (sig the 24-bit significand, sh = 23 -
    man_bits + e - min(E, emax + 1) >= 1 for man_bits <= 22): k = sig >> sh is floor(|v|), the
    remainder r = sig mod 2**sh its fraction, which ``mode`` rounds as round_grid does
    (stochastic: the threshold rint(frac * 2**rbits) from r exactly).  A shift beyond 25 leaves
    k = 0 and the same decisions as 25 for the deterministic modes.  Rounding past the binade
    carries into the exponent field, and the code is monotone in the value, so overflow is
    ``mag > code_of_max`` (saturated to it).  Twin: minifloat_mag_bits in codec.cuh (the same
    rounding; its minifloat_encode_any_bits adds zeros, subnormals, NaN / Inf and the policies).
    """
    bits, man_bits, emin, emax, _, code_of_max, _, _ = spec
    neg = (b >> 31) & 1
    big_e = ((b >> 23) & 0xFF) - 127 - shift
    ec: int = min(big_e, emax + 1)  # type: ignore[assignment]
    e: int = max(ec, emin)
    sh = 23 - man_bits + e - ec
    shc = min(sh, 25)
    sig = (b & 0x7FFFFF) | 0x800000
    k = sig >> shc
    r = sig & ((np.int64(1) << shc) - 1)
    half = np.int64(1) << (shc - 1)
    if mode == NEAREST_EVEN:
        up = r > half or (r == half and (k & 1) == 1)
    elif mode == NEAREST_AWAY:
        up = r >= half
    elif mode == TOWARD_ZERO:
        up = False
    elif mode == UP:
        up = r != 0 and neg == 0
    elif mode == DOWN:
        up = r != 0 and neg == 1
    elif mode == ODD:
        up = r != 0 and (k & 1) == 0
    else:  # STOCHASTIC: threshold = rint(r * 2**(rbits - sh)), nearest even
        d = sh - rbits
        if d <= 0:
            thr = r << (-d)
        elif d >= 26:
            thr = np.int64(0)
        else:
            thr = r >> d
            rem = r & ((np.int64(1) << d) - 1)
            hd = np.int64(1) << (d - 1)
            if rem > hd or (rem == hd and (thr & 1) == 1):
                thr += 1
        u = np.int64(random_bits(seed, index) >> _U64(64 - rbits))
        up = u < thr
    mag = ((e - emin) << man_bits) + k + np.int64(up)
    mag = min(mag, np.int64(code_of_max))
    return _U64((neg << (bits - 1)) | mag)


@nb.njit(inline="always", cache=True)
def minifloat_decode_one(code: np.uint64, spec: Spec) -> float:
    """The float64 value of ``code`` in the format ``spec`` (exact; NaN keeps its sign)."""
    bits, man_bits, emin, _, _, _, code_of_inf, code_of_nan = spec
    c = np.int64(code)
    mag = c & ((np.int64(1) << (bits - 1)) - 1)
    neg = (c >> (bits - 1)) & 1
    if (code_of_inf >= 0 and mag > code_of_inf) or (code_of_inf < 0 and mag == code_of_nan):
        v = np.nan
    elif mag == code_of_inf:
        v = np.inf
    else:
        field = mag >> man_bits
        m = mag & ((np.int64(1) << man_bits) - 1)
        if field == 0:  # subnormal (or zero)
            v = float(m) * pow2(emin - man_bits)
        else:
            v = float(m + (np.int64(1) << man_bits)) * pow2(field + emin - 1 - man_bits)
    return -v if neg else v


@nb.njit(inline="always", cache=True)
def minifloat_round(v: float, spec: Spec, mode: int) -> float:
    """v rounded into the format ``spec`` with a deterministic ``mode``, as a float64 value.

    A result beyond +-max after rounding with an unbounded exponent (and +-Inf input) is
    +-Inf, whatever the mode: callers compare the result with the format's max to detect
    overflow.  NaN stays NaN.
    """
    code, _, over = minifloat_encode_one(v, spec, ERROR, mode, _U64(0), np.int64(0), 16)
    if over:
        return math.copysign(np.inf, v)
    return minifloat_decode_one(code, spec)


@nb.njit(inline="always", cache=True)
def block_of(i: int, block_size: int, inv_block: float) -> np.int64:
    """i // block_size without an integer division (inv_block = 1.0 / block_size)."""
    b = np.int64(i * inv_block)  # off by at most one for i < 2**50
    if b * block_size > i:
        b -= 1
    elif (b + 1) * block_size <= i:
        b += 1
    return b


@nb.njit(inline="always", cache=True)
def scaled(x: float, scale: float) -> float:
    """x / scale; signed zero for a block whose scale is 0 or not finite."""
    if scale == 0.0 or not np.isfinite(scale):
        return math.copysign(0.0, x) if x == x else 0.0
    return x / scale


@nb.njit(parallel=True, cache=True)
def minifloat_encode(x: np.ndarray, block_size: int, scale: np.ndarray, spec: Spec, overflow: int,
                     mode: int, seed: np.uint64, first_index: np.int64, rbits: int, codes: np.ndarray,
                     status: np.ndarray) -> None:
    """codes[i] = code of x[i] / scale[i // block_size] in the format ``spec`` (unpacked; codes
    of uint8, uint16 or uint32 as the format's width needs).

    ``first_index`` is the global flat index of x[0] (the random-bit counter, for chunking).
    If ``status`` has x's length, status[i] = invalid | overflowed << 1; else it is not written.
    """
    n = x.shape[0]
    direct = block_size >= n and scale[0] == 1.0
    want_status = status.shape[0] == n
    # One flat loop per case: a loop-invariant branch inside the loop body costs Numba's
    # parfor loops up to 2x, so the cases are unswitched here by hand.
    if direct and not want_status:
        for i in nb.prange(n):
            c, bad, over = minifloat_encode_one(np.float64(x[i]), spec, overflow, mode, seed,
                                                first_index + i, rbits)
            codes[i] = c
    elif direct:
        for i in nb.prange(n):
            c, bad, over = minifloat_encode_one(np.float64(x[i]), spec, overflow, mode, seed,
                                                first_index + i, rbits)
            codes[i] = c
            status[i] = np.uint8(bad | (over << 1))
    else:
        inv_block = 1.0 / block_size
        for i in nb.prange(n):
            s = scale[block_of(i, block_size, inv_block)]
            c, bad, over = minifloat_encode_one(scaled(np.float64(x[i]), s), spec, overflow, mode,
                                                seed, first_index + i, rbits)
            codes[i] = c
            if want_status:
                status[i] = np.uint8(bad | (over << 1))


@nb.njit(parallel=True, cache=True)
def minifloat_decode(codes: np.ndarray, spec: Spec, out: np.ndarray) -> None:
    """out[i] = value of codes[i] in the format ``spec`` (float64, then out's dtype: exact for
    a float32 ``out`` when the format is no wider than float32)."""
    for i in nb.prange(codes.shape[0]):
        out[i] = minifloat_decode_one(_U64(codes[i]), spec)


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
    r = round_grid(x * pow2(frac_bits), mode, seed, index, rbits)
    if r > qmax or r < qmin:
        if overflow == WRAP:
            w = r - np.floor(r * pow2(-bits)) * pow2(bits)  # r mod 2**bits, exact
            return _U64(np.int64(w) & mask), 0, 0
        q = qmax if r > qmax else qmin
        return _U64(np.int64(q) & mask), 0, (1 if overflow == ERROR else 0)
    return _U64(np.int64(r) & mask), 0, 0


@nb.njit(parallel=True, cache=True)
def fixed_encode(x: np.ndarray, block_size: int, scale: np.ndarray, bits: int, frac_bits: int,
                 qmin: int, qmax: int, overflow: int, mode: int, seed: np.uint64, first_index: np.int64,
                 rbits: int, codes: np.ndarray, status: np.ndarray) -> None:
    """codes[i] = low ``bits`` bits of q = round(x[i] / scale[block] * 2**frac_bits) in [qmin, qmax].

    ``status`` as in :func:`minifloat_encode` (a block whose scale is 0 or not finite encodes 0).
    """
    n = x.shape[0]
    direct = block_size >= n and scale[0] == 1.0
    want_status = status.shape[0] == n
    if direct and not want_status:
        for i in nb.prange(n):
            c, bad, over = fixed_encode_one(np.float64(x[i]), bits, frac_bits, qmin, qmax,
                                            overflow, mode, seed, first_index + i, rbits)
            codes[i] = np.uint8(c)
    elif direct:
        for i in nb.prange(n):
            c, bad, over = fixed_encode_one(np.float64(x[i]), bits, frac_bits, qmin, qmax,
                                            overflow, mode, seed, first_index + i, rbits)
            codes[i] = np.uint8(c)
            status[i] = np.uint8(bad | (over << 1))
    else:
        inv_block = 1.0 / block_size
        for i in nb.prange(n):
            s = scale[block_of(i, block_size, inv_block)]
            xi = float(x[i]) / s if (s != 0.0 and np.isfinite(s)) else 0.0
            c, bad, over = fixed_encode_one(xi, bits, frac_bits, qmin, qmax, overflow, mode, seed,
                                            first_index + i, rbits)
            codes[i] = np.uint8(c)
            if want_status:
                status[i] = np.uint8(bad | (over << 1))


@nb.njit(parallel=True, cache=True)
def decode_table(packed: np.ndarray, bits: int, table: np.ndarray, block_size: int,
                 scale: np.ndarray, out: np.ndarray) -> None:
    """out[i] = table[code_i] * scale[i // block_size] (float64 product, then out's dtype)."""
    n = out.shape[0]
    inv_block = 1.0 / block_size
    if block_size >= n and scale[0] == 1.0:  # unswitched by hand, as in minifloat_encode
        for u in nb.prange((n + 7) // 8):
            acc = load_unit(packed, u, bits, unit_bytes(packed, u, bits))
            for i in range(u * 8, min(u * 8 + 8, n)):
                out[i] = table[get_code(acc, i - u * 8, bits)]
    else:
        for u in nb.prange((n + 7) // 8):
            acc = load_unit(packed, u, bits, unit_bytes(packed, u, bits))
            for i in range(u * 8, min(u * 8 + 8, n)):
                s = scale[block_of(i, block_size, inv_block)]
                out[i] = table[get_code(acc, i - u * 8, bits)] * s


@nb.njit(inline="always", cache=True)
def span_absmax(x: np.ndarray, start: int, stop: int) -> float:
    """max |x[start:stop]| (float64, 0 for an empty span); NaN if the span holds NaN or +-Inf."""
    m = 0.0
    bad = False
    for i in range(start, stop):
        v = abs(np.float64(x[i]))
        bad |= not v < np.inf
        m = max(m, v)
    return np.nan if bad else m


@nb.njit(parallel=True, cache=True)
def block_absmax(x: np.ndarray, block_size: int, out: np.ndarray) -> None:
    """out[b] = max |x| over block b (float64); NaN if the block holds NaN or +-Inf.

    The last block may be shorter than ``block_size``.
    """
    n = x.shape[0]
    for b in nb.prange(out.shape[0]):
        out[b] = span_absmax(x, b * block_size, min(b * block_size + block_size, n))
