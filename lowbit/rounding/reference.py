"""Readable scalar references for every rounding mode and format conversion.

Written for clarity, not speed: exact rational arithmetic (:class:`fractions.Fraction`) and
Python integers, taking the same parameters as the Numba kernels.  Tests use these as the
ground truth next to ``ml_dtypes``; docs/rounding.md and docs/formats.md quote them.
"""

from __future__ import annotations

import math
from fractions import Fraction

from lowbit.formats import FixedPoint, MiniFloat

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    """splitmix64 finalizer on a 64-bit unsigned integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def random_bits(seed: int, index: int) -> int:
    """The 64 random bits of element ``index`` under ``seed``: splitmix64 output number index."""
    return mix64((mix64(seed & MASK64) + GOLDEN * (index + 1)) & MASK64)


def stochastic_threshold(frac: Fraction, rbits: int) -> int:
    """F = round_half_even(frac * 2**rbits): round away from zero iff u < F, u uniform in [0, 2**rbits)."""
    return round(frac * (1 << rbits))  # Python's round() on a Fraction is half-to-even


def round_value(v: Fraction, mode: str, seed: int = 0, index: int = 0, rbits: int = 16) -> int:
    """Round an exact value ``v`` (grid units) to an integer with ``mode`` (RoundMode names)."""
    lo = math.floor(v)
    hi = lo + 1
    if v == lo:
        return lo
    if mode == "down":
        return lo
    if mode == "up":
        return hi
    if mode == "toward_zero":
        return lo if v > 0 else hi
    if mode == "odd":
        return lo if lo % 2 else hi
    if mode in ("nearest_even", "nearest_away"):
        d = v - lo
        if d != Fraction(1, 2):
            return lo if d < Fraction(1, 2) else hi
        if mode == "nearest_even":
            return lo if lo % 2 == 0 else hi
        return hi if v > 0 else lo
    if mode == "stochastic":
        a = abs(v)
        whole = math.floor(a)
        u = random_bits(seed, index) >> (64 - rbits)
        away = u < stochastic_threshold(a - whole, rbits)
        r = whole + 1 if away else whole
        return r if v > 0 else -r
    raise ValueError(f"unknown mode {mode!r}")


def encode_minifloat(x: float, fmt: MiniFloat, mode: str = "nearest_even", overflow: str = "saturate",
                     seed: int = 0, index: int = 0, rbits: int = 16) -> int | None:
    """Code of ``x`` (a Python float, i.e. float64) in ``fmt``; None where the kernel reports invalid
    (NaN into a format without NaN) or an overflow under ``overflow='error'``."""
    sign = 1 << (fmt.bits - 1) if math.copysign(1.0, x) < 0 else 0
    if math.isnan(x):
        return None if fmt.code_of_nan is None else sign | fmt.code_of_nan
    if math.isinf(x):
        if overflow == "nonfinite":
            return sign | (fmt.code_of_inf if fmt.has_inf else fmt.code_of_nan)  # type: ignore[operator]
        return None if overflow == "error" else sign | fmt.code_of_max
    if x == 0:
        return sign
    a = Fraction(abs(x))
    e = max(min(math.floor(math.log2(abs(x))), fmt.emax + 1), fmt.emin)
    # exact floor(log2): correct a possible off-by-one of math.log2 near powers of two
    while e < fmt.emax + 1 and Fraction(2) ** (e + 1) <= a:
        e += 1
    while e > fmt.emin and Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (e - fmt.man_bits)
    k = abs(round_value(Fraction(x) / ulp, mode, seed, index, rbits))
    if k * ulp <= Fraction(fmt.max):
        return sign | (((e - fmt.emin) << fmt.man_bits) + k)
    if overflow == "nonfinite":
        neg = sign != 0
        if mode in ("toward_zero", "odd") or (mode == "down" and not neg) or (mode == "up" and neg):
            return sign | fmt.code_of_max
        return sign | (fmt.code_of_inf if fmt.has_inf else fmt.code_of_nan)  # type: ignore[operator]
    return None if overflow == "error" else sign | fmt.code_of_max


def decode_minifloat(code: int, fmt: MiniFloat) -> float:
    """float64 value of ``code`` (NaN/Inf for reserved codes, -0.0 for the negative zero)."""
    v = fmt.value_of(code)
    if isinstance(v, float):
        return v
    if v == 0:
        return -0.0 if code >> (fmt.bits - 1) else 0.0
    return float(v)


def encode_fixed(x: float, fmt: FixedPoint, mode: str = "nearest_even", overflow: str = "saturate",
                 seed: int = 0, index: int = 0, rbits: int = 16, qmin: int | None = None,
                 qmax: int | None = None) -> int | None:
    """Two's-complement ``fmt.bits``-bit code of ``x``; None where the kernel reports invalid/overflow."""
    qmin = fmt.code_min if qmin is None else qmin
    qmax = fmt.code_max if qmax is None else qmax
    mask = (1 << fmt.bits) - 1
    if math.isnan(x) or (math.isinf(x) and overflow == "wrap"):
        return None
    if math.isinf(x):
        return None if overflow == "error" else (qmax if x > 0 else qmin) & mask
    q = round_value(Fraction(x) * Fraction(2) ** fmt.frac_bits, mode, seed, index, rbits)
    if qmin <= q <= qmax:
        return q & mask
    if overflow == "wrap":
        return q & mask
    return None if overflow == "error" else min(max(q, qmin), qmax) & mask


def mx_shared_exponent(amax: float, element_emax: int) -> int | None:
    """OCP MX v1.0 shared exponent s (scale 2**s, E8M0 code s + 127); None (NaN) for non-finite amax."""
    if not math.isfinite(amax):
        return None
    if amax == 0:
        return -127
    e = math.frexp(amax)[1] - 1  # floor(log2(amax)), exact
    return max(-127, min(127, e - element_emax))


def diffuse_row(values: list[float], order: int = 1, lo: float = -math.inf,
                hi: float = math.inf) -> list[float]:
    """Sigma-delta error diffusion of one sequence (grid units), float64 as the kernel.

    w_i = x_i + e_{i-1} (order 1) or x_i + 2 e_{i-1} - e_{i-2} (order 2); y_i = clip(rne(w_i));
    e_i = clip(w_i - y_i, -1/2, 1/2).
    """
    e1 = e2 = 0.0
    out = []
    for x in values:
        w = x + e1 if order == 1 else x + 2.0 * e1 - e2
        y = min(max(float(round(w)), lo), hi)  # Python round() on a float is half-to-even
        e2, e1 = e1, min(max(w - y, -0.5), 0.5)
        out.append(y)
    return out


def diffuse_image(image: list[list[float]], taps: tuple[tuple[int, int, int], ...], divisor: int,
                  serpentine: bool = False, lo: float = -math.inf,
                  hi: float = math.inf) -> list[list[float]]:
    """2-D error diffusion of one image with ``taps`` (dy, dx, numerator) / ``divisor``."""
    h, w = len(image), len(image[0])
    pending = [[0.0] * w for _ in range(h)]  # error diffused into each pixel so far
    out = [[0.0] * w for _ in range(h)]
    for i in range(h):
        reverse = serpentine and i % 2 == 1
        for j in (range(w - 1, -1, -1) if reverse else range(w)):
            v = float(image[i][j]) + pending[i][j]
            y = min(max(float(round(v)), lo), hi)
            e = min(max(v - y, -0.5), 0.5)
            out[i][j] = y
            for dy, dx, num in taps:
                ti, tj = i + dy, (j - dx if reverse else j + dx)
                if ti < h and 0 <= tj < w:
                    pending[ti][tj] += (num / divisor) * e
    return out
