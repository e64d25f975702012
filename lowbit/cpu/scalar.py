"""Scalar helpers inlined into the Numba kernels (not kernels themselves).

Every function here has a line-for-line twin in ``lowbit/cuda/common.cuh``;
keeping them identical is what makes CPU and GPU results bit-identical.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_U64 = nb.uint64

# Rounding mode codes (lowbit.rounding.modes.RoundMode); duplicated as literals
# because Numba freezes globals into compiled code anyway.
NEAREST_EVEN, NEAREST_AWAY, TOWARD_ZERO, UP, DOWN, ODD, STOCHASTIC = 0, 1, 2, 3, 4, 5, 6


@nb.njit(inline="always", cache=True)
def mix64(z: np.uint64) -> np.uint64:
    """splitmix64 finalizer: a bijective 64-bit mixing function."""
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


@nb.njit(inline="always", cache=True)
def random_bits(seed: np.uint64, index: np.int64) -> np.uint64:
    """64 random bits for (seed, global element index).

    Equals output number ``index`` of splitmix64 started from state mix64(seed):
    mix64(mix64(seed) + 0x9E3779B97F4A7C15 * (index + 1)), all arithmetic mod 2**64.
    """
    k = mix64(_U64(seed))
    return mix64(k + _U64(0x9E3779B97F4A7C15) * (_U64(index) + _U64(1)))


@nb.njit(inline="always", cache=True)
def round_grid(v: float, mode: int, seed: np.uint64, index: np.int64, rbits: int) -> float:
    """Round v (float64, in grid units) to an integer-valued float64 with ``mode``.

    NaN and +-Inf come back unchanged; the sign of zero results follows v.
    ``stochastic`` works on |v| (sign-magnitude, so SR(-v) = -SR(v) for the same
    random bits): with a = |v|, i = floor(a), f = a - i (exact), the fraction is
    rounded to ``rbits`` bits, F = rint(f * 2**rbits) (nearest-even, exact in
    float64), and the result is sign(v) * (i + 1) when u < F, else sign(v) * i,
    where u is the top ``rbits`` bits of ``random_bits(seed, index)``.  So
    P(away from zero) = F / 2**rbits: exactly f whenever f is a multiple of
    2**-rbits, and within 2**-(rbits+1) of f otherwise (docs/rounding.md).
    """
    if mode == NEAREST_EVEN:
        return np.rint(v)
    if mode == DOWN:
        return np.floor(v)
    if mode == UP:
        return np.ceil(v)
    if mode == TOWARD_ZERO:
        return np.trunc(v)
    if mode == ODD:
        f = np.floor(v)
        if f == v:
            return v
        half = f * 0.5  # exact; f is odd iff f / 2 is not an integer
        return f if half != np.floor(half) else f + 1.0
    a = abs(v)
    i = np.floor(a)
    frac = a - i  # exact: i == 0, or a/2 <= i <= a (Sterbenz)
    if not frac > 0.0:  # integer, +-Inf (frac is NaN) or NaN
        return v
    if mode == NEAREST_AWAY:
        r = i + 1.0 if frac >= 0.5 else i
        return math.copysign(r, v)
    # STOCHASTIC
    threshold = np.int64(np.rint(frac * float(np.int64(1) << rbits)))  # 0 .. 2**rbits, exact
    u = np.int64(random_bits(seed, index) >> _U64(64 - rbits))
    r = i + np.float64(u < threshold)  # branch-free: the outcome is random
    return math.copysign(r, v)


@nb.njit(inline="always", cache=True)
def clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


# -- exp and log in float64 from IEEE basic operations only ------------------------------------
# libm's exp/log differ between glibc (Numba) and CUDA, so kernels that must agree bit for bit
# across backends (the KVarN balance) use these instead: every step is an IEEE add, subtract,
# multiply or divide in float64 (no fused multiply-add on either side), frexp/ldexp (exact) or
# rint, in the same order as the twins in lowbit/cuda/common.cuh.  Relative error is a few
# float64 ulp, so the float32 results (exp_f32, log_f32) are correctly rounded except within
# ~2^-29 relative of a float32 rounding midpoint -- and identical on both backends always.

#: ln 2 = LN2_HI + LN2_LO, with LN2_HI's low 21 bits zero so that k * LN2_HI is exact for |k| < 2**21.
LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
SQRT_HALF = float.fromhex("0x1.6a09e667f3bcdp-1")
#: Largest and smallest arguments whose exp is finite / nonzero in float64.
EXP_MAX = 709.782712893384
EXP_MIN = -745.1332191019412
#: 1/k! for k = 0..13 (Taylor series of exp on |r| <= ln2/2: truncation error < 4e-18).
_E = tuple(float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.0000000000000p+0", "0x1.0000000000000p-1", "0x1.5555555555555p-3",
    "0x1.5555555555555p-5", "0x1.1111111111111p-7", "0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-13",
    "0x1.a01a01a01a01ap-16", "0x1.71de3a556c734p-19", "0x1.27e4fb7789f5cp-22", "0x1.ae64567f544e4p-26",
    "0x1.1eed8eff8d898p-29", "0x1.6124613a86d09p-33"))
#: 1/(2k+1) for k = 0..11 (log m = 2 atanh f, |f| <= 0.1716: truncation error < 1e-18).
_L = tuple(float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.5555555555555p-2", "0x1.999999999999ap-3", "0x1.2492492492492p-3",
    "0x1.c71c71c71c71cp-4", "0x1.745d1745d1746p-4", "0x1.3b13b13b13b14p-4", "0x1.1111111111111p-4",
    "0x1.e1e1e1e1e1e1ep-5", "0x1.af286bca1af28p-5", "0x1.8618618618618p-5", "0x1.642c8590b2164p-5"))
E0, E1, E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13 = _E
L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11 = _L


@intrinsic
def f64_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE 754 bits of a float64 as int64 (CUDA: __double_as_longlong)."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def bits_f64(typingctx, b):  # type: ignore[no-untyped-def]
    """The float64 with IEEE 754 bits ``b`` (int64) (CUDA: __longlong_as_double)."""
    if not isinstance(b, types.Integer) or b.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


#: 1.5 * 2**52: adding it to an integer-valued float64 k (|k| < 2**51) leaves k in the low
#: bits of the sum's significand (two's complement), exactly.
_ROUND_MAGIC = 6755399441055744.0
_ROUND_MAGIC_BITS = 0x4338000000000000
#: Smallest normal float64, and 2**54 (scales a subnormal to a normal exactly).
MIN_NORMAL = 2.2250738585072014e-308
TWO54 = 18014398509481984.0


@nb.njit(inline="always", cache=True)
def _exp_poly(x: float, k: float) -> float:
    """e**r for x = k ln2 + r: the Taylor polynomial of :func:`exp_f64` (Horner)."""
    r = (x - k * LN2_HI) - k * LN2_LO
    p = E13
    p = p * r + E12
    p = p * r + E11
    p = p * r + E10
    p = p * r + E9
    p = p * r + E8
    p = p * r + E7
    p = p * r + E6
    p = p * r + E5
    p = p * r + E4
    p = p * r + E3
    p = p * r + E2
    p = p * r + E1
    p = p * r + E0
    return p


@nb.njit(inline="always", cache=True)
def _pow2(k: np.int64) -> float:
    """2.0**k for -1022 <= k <= 1023, built from its bits."""
    return bits_f64((k + 1023) << 52)  # type: ignore[call-arg, no-any-return]


@nb.njit(inline="always", cache=True)
def exp_f64(x: float) -> float:
    """e**x: x = k ln2 + r (|r| <= ln2/2), e**r by its Taylor polynomial (Horner), times 2**k.

    Branch-free (selects only), so that loops of it vectorize: ``ldexp(p, k)`` is
    ``(p * 2**(k >> 1)) * 2**(k - (k >> 1))``, the first product exact, the second rounded once
    (subnormal results included), i.e. ldexp's correctly rounded result; NaN -> NaN, above
    EXP_MAX -> inf, below EXP_MIN -> 0.
    """
    k = np.rint(x * INV_LN2)
    p = _exp_poly(x, k)
    kbits = f64_bits(k + _ROUND_MAGIC) - _ROUND_MAGIC_BITS  # type: ignore[call-arg]  # int(k)
    k1 = kbits >> 1
    v = (p * _pow2(k1)) * _pow2(kbits - k1)
    v = math.inf if x > EXP_MAX else v
    v = 0.0 if x < EXP_MIN else v
    return x if x != x else v


@nb.njit(inline="always", cache=True)
def log_f64(x: float) -> float:
    """ln x: x = m 2**e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1) / (m + 1)) by its
    series, plus e ln2.  NaN or negative -> NaN, 0 -> -inf, inf -> inf.

    Branch-free (selects only), so that loops of it vectorize: frexp is read from the bits
    (a subnormal x scaled by 2**54 first, exactly)."""
    sub = x < MIN_NORMAL
    xs = x * TWO54 if sub else x
    b: int = f64_bits(xs)  # type: ignore[call-arg]
    m = bits_f64((b & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000)  # type: ignore[call-arg]
    e = np.float64(((b >> 52) & 0x7FF) - 1022) - (54.0 if sub else 0.0)
    low = m < SQRT_HALF
    m = m + m if low else m
    e = e - 1.0 if low else e
    v = _log_tail(m, e)
    v = x if x == math.inf else v
    v = -math.inf if x == 0.0 else v
    return v if x > 0.0 else (v if x == 0.0 else math.nan)


@nb.njit(inline="always", cache=True)
def _log_tail(m: float, k: float) -> float:
    """ln(m * 2**k) for m in [sqrt(1/2), sqrt(2)): the series of :func:`log_f64`."""
    f = (m - 1.0) / (m + 1.0)
    s = f * f
    p = L11
    p = p * s + L10
    p = p * s + L9
    p = p * s + L8
    p = p * s + L7
    p = p * s + L6
    p = p * s + L5
    p = p * s + L4
    p = p * s + L3
    p = p * s + L2
    p = p * s + L1
    p = p * s + L0
    t = f * p
    t = t + t
    return k * LN2_HI + (k * LN2_LO + t)


@nb.njit(inline="always", cache=True)
def exp_f32(x: np.float32) -> np.float32:
    """e**x for float32 x, rounded once to float32 (from :func:`exp_f64`)."""
    return nb.float32(exp_f64(np.float64(x)))


@nb.njit(inline="always", cache=True)
def log_f32(x: np.float32) -> np.float32:
    """ln x for float32 x, rounded once to float32 (from :func:`log_f64`)."""
    return nb.float32(log_f64(np.float64(x)))


@nb.njit(inline="always", cache=True)
def clip_f32(v: np.float32, lo: np.float32, hi: np.float32) -> np.float32:
    """``lo`` if v < lo, ``hi`` if v > hi, else v (NaN passes through), as common.cuh's clip_f32."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v
