"""Number formats as data: one record per format, everything else derived.

Element formats
    :class:`IntFormat`   plain integers (``bits``, ``signed``).
    :class:`FixedPoint`  Qm.n fixed point: a ``bits``-bit integer code q, value q * 2**-frac_bits.
    :class:`MiniFloat`   binary floating point up to 32 bits: OCP fp8 / fp6 / fp4, and the
                         IEEE 754 storage formats float16, bfloat16 and float32 that scales,
                         offsets and outputs are stored in (one codec serves all of them).
Block formats
    :class:`BlockFormat` ``block_size`` consecutive elements share one scale (OCP MX, NVFP4).
Codebooks
    :class:`Codebook`    a sorted table of levels indexed by a ``bits``-bit code (Lloyd-Max,
                         NormalFloat; designs in :mod:`lowbit.codebooks`).

Suffix conventions, defined once here (they follow OCP and ml_dtypes):
``fn`` ("finite, NaN") means the format has no infinities and reserves only the all-ones
magnitude code for NaN (fp8 e4m3: S.1111.111); a format with neither Inf nor NaN (fp6, fp4)
has every code finite.  ``e<E>m<M>`` means E exponent bits and M stored mantissa bits.

Value of a minifloat code ``S.E.M`` (E exponent field, M mantissa field)::

    E == 0 (subnormal):  (-1)**S * 2**(1 - bias) * M / 2**man_bits
    E >= 1 (normal):     (-1)**S * 2**(E - bias) * (1 + M / 2**man_bits)

with the reserved Inf/NaN codes described by ``has_inf`` / ``has_nan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

#: Bias of the E8M0 shared scale of the OCP MX formats: code c means 2**(c - 127).
E8M0_BIAS = 127
#: The E8M0 code reserved for NaN.
E8M0_NAN = 0xFF

#: Overflow policies of conversions (``overflow=``):
#:   saturate  -- out-of-range results become the largest finite value of their sign;
#:   nonfinite -- IEEE 754 overflow: +-Inf (NaN where the format has no Inf) when the mode rounds
#:                away from zero on the value's side, else +-max (minifloats only);
#:   wrap      -- two's-complement wrap-around modulo 2**bits (fixed point only);
#:   error     -- raise ValueError naming how many elements overflowed.
OVERFLOW_POLICIES = ("saturate", "nonfinite", "wrap", "error")


def _check_int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class IntFormat:
    """``bits``-bit integers, two's complement when ``signed``."""

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        _check_int(self.bits, "bits", 1, 8)

    @property
    def name(self) -> str:
        """"int8", "uint4", ..."""
        return f"{'' if self.signed else 'u'}int{self.bits}"

    @property
    def min(self) -> int:
        """The smallest code value: -2**(bits-1) (signed) or 0."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        """The largest code value: 2**(bits-1) - 1 (signed) or 2**bits - 1."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


@dataclass(frozen=True)
class FixedPoint:
    """Fixed point: a ``bits``-bit integer q (two's complement when ``signed``), value q / 2**frac_bits.

    ``FixedPoint(bits=8, frac_bits=4)`` is Q3.4 in the notation Qm.n that does not count the
    sign bit (m = bits - frac_bits - signed); ``frac_bits`` may be negative (a step above 1) or
    exceed ``bits`` (all values below 1).
    """

    bits: int
    frac_bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        _check_int(self.bits, "bits", 1, 8)
        _check_int(self.frac_bits, "frac_bits", -64, 64)
        if not isinstance(self.signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, got {self.signed!r}")

    @property
    def name(self) -> str:
        """"q3.4" (signed) or "uq4.4" (unsigned): Qm.n with m = bits - frac_bits - signed."""
        m = self.bits - self.frac_bits - int(self.signed)
        return f"{'' if self.signed else 'u'}q{m}.{self.frac_bits}"

    @property
    def step(self) -> float:
        """The value of one code step, 2**-frac_bits."""
        return 2.0 ** -self.frac_bits

    @property
    def code_min(self) -> int:
        """The smallest integer q."""
        return IntFormat(self.bits, self.signed).min

    @property
    def code_max(self) -> int:
        """The largest integer q."""
        return IntFormat(self.bits, self.signed).max

    @property
    def min(self) -> float:
        """The smallest value, code_min * step."""
        return self.code_min * self.step

    @property
    def max(self) -> float:
        """The largest value, code_max * step."""
        return self.code_max * self.step

    @property
    def emax(self) -> int:
        """floor(log2(max)): the exponent an OCP MX shared scale aligns to (MXINT8: 0)."""
        return int(np.frexp(self.max)[1]) - 1

    def value_of(self, code: int) -> Fraction:
        """Exact value of the ``bits``-bit pattern ``code`` (two's complement when signed)."""
        q = code - (1 << self.bits) if self.signed and code >> (self.bits - 1) else code
        return Fraction(q) * Fraction(2) ** -self.frac_bits


@dataclass(frozen=True)
class MiniFloat:
    """A small binary floating-point format with a sign bit, subnormals and an exponent bias.

    ``has_inf``: exponent field all ones with mantissa 0 is +-Inf and with mantissa != 0 is NaN
    (IEEE 754 style; the top exponent holds no finite values).  Otherwise, ``has_nan``: only the
    all-ones magnitude code is NaN ("fn").  Neither: every code is finite.
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    has_inf: bool
    has_nan: bool

    def __post_init__(self) -> None:
        _check_int(self.exp_bits, "exp_bits", 1, 8)
        _check_int(self.man_bits, "man_bits", 0, 23)
        _check_int(self.bits, "exp_bits + man_bits + 1", 2, 32)
        _check_int(self.bias, "bias", 0, (1 << self.exp_bits) - 1)
        if self.has_inf and not self.has_nan:
            raise ValueError(f"{self.name}: a format with Inf must also have NaN")
        if self.has_inf and self.exp_bits < 2:
            raise ValueError(f"{self.name}: Inf needs at least 2 exponent bits")

    @property
    def bits(self) -> int:
        """Code width: sign + exponent + mantissa."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal, 1 - bias (also the exponent of the subnormals)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value."""
        top = (1 << self.exp_bits) - 1
        return (top - 1 if self.has_inf else top) - self.bias

    @property
    def max_mantissa(self) -> int:
        """Mantissa field of the largest finite value (all ones, less one for "fn" formats)."""
        full = (1 << self.man_bits) - 1
        return full - 1 if (self.has_nan and not self.has_inf) else full

    @property
    def code_of_max(self) -> int:
        """Code of +max (sign bit clear)."""
        return ((self.emax + self.bias) << self.man_bits) | self.max_mantissa

    @property
    def max(self) -> float:
        """The largest finite value."""
        return float(2.0**self.emax * (1 + self.max_mantissa / 2**self.man_bits))

    @property
    def smallest_normal(self) -> float:
        """2**emin."""
        return float(2.0**self.emin)

    @property
    def smallest_subnormal(self) -> float:
        """2**(emin - man_bits), or smallest_normal when man_bits == 0."""
        return float(2.0 ** (self.emin - self.man_bits))

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value, 2**-man_bits (finfo-style)."""
        return float(2.0**-self.man_bits)

    @property
    def code_of_inf(self) -> int | None:
        """Code of +Inf, or None."""
        return ((1 << self.exp_bits) - 1) << self.man_bits if self.has_inf else None

    @property
    def code_of_nan(self) -> int | None:
        """Code of the (positive, quiet) NaN, or None: S.11..1.10..0 with Inf, S.11..1.11..1 without."""
        if not self.has_nan:
            return None
        top = ((1 << self.exp_bits) - 1) << self.man_bits
        if self.has_inf:
            return top | (1 << (self.man_bits - 1)) if self.man_bits else None
        return top | ((1 << self.man_bits) - 1)

    @property
    def spec(self) -> tuple[int, int, int, int, float, int, int, int]:
        """What the codec kernels take (lowbit/cpu/codec.py): (bits, man_bits, emin, emax, max,
        code_of_max, code_of_inf, code_of_nan), -1 for an absent Inf or NaN code."""
        inf = -1 if self.code_of_inf is None else self.code_of_inf
        nan = -1 if self.code_of_nan is None else self.code_of_nan
        return (self.bits, self.man_bits, self.emin, self.emax, self.max, self.code_of_max, inf, nan)

    def is_nan_code(self, code: int) -> bool:
        """Whether ``code`` (with or without the sign bit) encodes NaN."""
        mag = code & ((1 << (self.bits - 1)) - 1)
        top = ((1 << self.exp_bits) - 1) << self.man_bits
        if self.has_inf:
            return mag > top
        return self.has_nan and mag == (1 << (self.bits - 1)) - 1

    def value_of(self, code: int) -> Fraction | float:
        """Exact value of ``code``: a Fraction, or float +-NaN / +-Inf for reserved codes.

        Zero codes return Fraction(0) for both signs; see :meth:`decode_table` for -0.0.
        """
        sign = -1 if code >> (self.bits - 1) & 1 else 1
        mag = code & ((1 << (self.bits - 1)) - 1)
        if self.is_nan_code(code):
            return math.copysign(math.nan, sign)
        if self.has_inf and mag == self.code_of_inf:
            return sign * float("inf")
        e = mag >> self.man_bits
        m = mag & ((1 << self.man_bits) - 1)
        if e == 0:
            return sign * Fraction(2) ** self.emin * Fraction(m, 1 << self.man_bits)
        return sign * Fraction(2) ** (e - self.bias) * (1 + Fraction(m, 1 << self.man_bits))

    def decode_table(self) -> np.ndarray:
        """float64 value of every code 0 .. 2**bits - 1 (index = code), -0.0 for the negative zero.

        Raises
        ------
        ValueError
            The format has more than 16 bits (the table would have more than 65536 entries).
        """
        if self.bits > 16:
            raise ValueError(f"{self.name} has {self.bits}-bit codes; decode_table() covers up to 16")
        out = np.empty(1 << self.bits, np.float64)
        for c in range(1 << self.bits):
            v = self.value_of(c)
            out[c] = float(v)
        out[1 << (self.bits - 1)] = -0.0
        return out


ElementFormat = MiniFloat | FixedPoint


def _real(value: object, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class Codebook:
    """A scalar codebook: code c (``bits`` bits) stands for ``levels[c]``, levels strictly increasing.

    ``levels`` are stored as float32 values (each given value rounded to the nearest float32),
    so that a level times a float32 or 16-bit scale is exact in float64 and a dequantized value
    is rounded once, to the output dtype.  2 to 2**bits levels; codes at or above
    ``len(levels)`` never occur in valid data (:meth:`decode_table` maps them to the top level).

    Nearest-level encoding of a value v (``nearest_even``): the level nearest to v; a v exactly
    on a :attr:`thresholds` entry (the midpoint of two neighbouring levels) goes to the even
    code of the two; v below the lowest or above the highest level takes that level.
    Stochastic encoding: the neighbouring level above with probability (v - lo) / (hi - lo),
    else the one below (lowbit/cpu/codebook.py).

    ``distribution`` says what the levels were designed for (free text, e.g. "N(0, 1)").

    Raises
    ------
    ValueError
        ``bits`` outside 1..8, fewer than 2 or more than 2**bits levels, a non-finite level,
        levels not strictly increasing (also after rounding to float32), or two neighbouring
        levels so far apart in magnitude that their midpoint is not exact in float64.
    TypeError
        A level is not a real number.
    """

    name: str
    bits: int
    levels: tuple[float, ...]
    distribution: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        _check_int(self.bits, "bits", 1, 8)
        if isinstance(self.levels, (str, bytes)) or not hasattr(self.levels, "__len__"):
            raise TypeError(f"levels must be a sequence of numbers, got {self.levels!r:.80}")
        raw = [_real(v, f"levels[{i}]") for i, v in enumerate(self.levels)]
        if not 2 <= len(raw) <= 1 << self.bits:
            raise ValueError(f"a {self.bits}-bit codebook holds 2..{1 << self.bits} levels, got {len(raw)}")
        for i in range(len(raw) - 1):
            if not raw[i] < raw[i + 1]:
                raise ValueError(f"levels must be sorted strictly increasing; levels[{i}] = {raw[i]!r} "
                                 f">= levels[{i + 1}] = {raw[i + 1]!r}")
        stored = tuple(float(np.float32(v)) for v in raw)
        for i in range(len(stored) - 1):
            a, b = stored[i], stored[i + 1]
            if not a < b:
                raise ValueError(f"levels[{i}] = {raw[i]!r} and levels[{i + 1}] = {raw[i + 1]!r} "
                                 "round to the same float32 value")
            if Fraction(a) + Fraction(b) != 2 * Fraction((a + b) / 2):
                raise ValueError(f"levels[{i}] = {a!r} and levels[{i + 1}] = {b!r} are too far apart "
                                 "in magnitude for an exact float64 midpoint")
        object.__setattr__(self, "levels", stored)
        if not isinstance(self.distribution, str):
            raise TypeError(f"distribution must be a string, got {self.distribution!r}")

    @property
    def size(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Decision thresholds: the midpoint of each pair of neighbouring levels (exact in float64)."""
        lv = self.levels
        return tuple((lv[i] + lv[i + 1]) / 2 for i in range(len(lv) - 1))

    @property
    def max_abs(self) -> float:
        """max |level|: a group scaled by absmax maps its largest magnitude onto this level."""
        return max(-self.levels[0], self.levels[-1])

    def value_of(self, code: int) -> float:
        """The level of ``code``."""
        return self.levels[code]

    def decode_table(self) -> np.ndarray:
        """float64 value of every code 0 .. 2**bits - 1 (codes past the last level repeat it)."""
        out = np.full(1 << self.bits, self.levels[-1], np.float64)
        out[: self.size] = self.levels
        return out


@dataclass(frozen=True)
class BlockFormat:
    """``block_size`` consecutive elements along an axis share one scale.

    ``scale == "e8m0"`` (OCP MX v1.0): the scale is 2**s, stored as the E8M0 code s + 127
    (0xFF = NaN), with s = floor(log2(amax)) - element.emax clamped to [-127, 127] (amax = 0
    gives s = -127).  ``scale == "fp8_e4m3"`` (NVFP4): the block scale is an e4m3 value, and
    ``tensor_scale`` adds one float32 scale per tensor.
    """

    name: str
    element: ElementFormat
    block_size: int
    scale: str
    tensor_scale: bool = False

    def __post_init__(self) -> None:
        _check_int(self.block_size, "block_size", 1, 1 << 20)
        if self.scale not in ("e8m0", "fp8_e4m3"):
            raise ValueError(f"scale must be 'e8m0' or 'fp8_e4m3', got {self.scale!r}")

    @property
    def bits_per_element(self) -> float:
        """Storage per element: element bits + 8 scale bits per block (tensor scale not counted)."""
        return self.element.bits + 8 / self.block_size


# -- presets ------------------------------------------------------------------------------------
#: OCP fp8 E4M3 ("e4m3fn"): max 448, no Inf, NaN = S.1111.111.
FP8_E4M3 = MiniFloat("fp8_e4m3", exp_bits=4, man_bits=3, bias=7, has_inf=False, has_nan=True)
#: OCP fp8 E5M2: IEEE-style, max 57344, +-Inf, NaN = S.11111.xx (xx != 0).
FP8_E5M2 = MiniFloat("fp8_e5m2", exp_bits=5, man_bits=2, bias=15, has_inf=True, has_nan=True)
#: OCP fp6 E2M3: max 7.5, no Inf/NaN.
FP6_E2M3 = MiniFloat("fp6_e2m3", exp_bits=2, man_bits=3, bias=1, has_inf=False, has_nan=False)
#: OCP fp6 E3M2: max 28, no Inf/NaN.
FP6_E3M2 = MiniFloat("fp6_e3m2", exp_bits=3, man_bits=2, bias=3, has_inf=False, has_nan=False)
#: OCP fp4 E2M1: values 0, 0.5, 1, 1.5, 2, 3, 4, 6; no Inf/NaN.
FP4_E2M1 = MiniFloat("fp4_e2m1", exp_bits=2, man_bits=1, bias=1, has_inf=False, has_nan=False)
#: The MXINT8 element: int8 with an implicit scale 2**-6 (values -2 .. 1 + 63/64).
INT8_Q1_6 = FixedPoint(bits=8, frac_bits=6, signed=True)

MINIFLOATS: dict[str, MiniFloat] = {f.name: f for f in (FP8_E4M3, FP8_E5M2, FP6_E2M3, FP6_E3M2, FP4_E2M1)}

#: IEEE 754 binary16: max 65504, +-Inf, quiet NaN 0x7E00.
FLOAT16 = MiniFloat("float16", exp_bits=5, man_bits=10, bias=15, has_inf=True, has_nan=True)
#: bfloat16 (the top half of a float32): max 3.3895e38, +-Inf, quiet NaN 0x7FC0.
BFLOAT16 = MiniFloat("bfloat16", exp_bits=8, man_bits=7, bias=127, has_inf=True, has_nan=True)
#: IEEE 754 binary32: max 3.4028e38, +-Inf, quiet NaN 0x7FC00000.
FLOAT32 = MiniFloat("float32", exp_bits=8, man_bits=23, bias=127, has_inf=True, has_nan=True)

#: The storage formats of scales, offsets and 16/32-bit outputs, by dtype name.
IEEE_FLOATS: dict[str, MiniFloat] = {f.name: f for f in (FLOAT16, BFLOAT16, FLOAT32)}

#: OCP MX v1.0 formats (32-element blocks, E8M0 scale) and NVIDIA NVFP4.
MXFP8 = BlockFormat("mxfp8", FP8_E4M3, 32, "e8m0")
MXFP8_E5M2 = BlockFormat("mxfp8_e5m2", FP8_E5M2, 32, "e8m0")
MXFP6 = BlockFormat("mxfp6", FP6_E2M3, 32, "e8m0")
MXFP6_E3M2 = BlockFormat("mxfp6_e3m2", FP6_E3M2, 32, "e8m0")
MXFP4 = BlockFormat("mxfp4", FP4_E2M1, 32, "e8m0")
MXINT8 = BlockFormat("mxint8", INT8_Q1_6, 32, "e8m0")
NVFP4 = BlockFormat("nvfp4", FP4_E2M1, 16, "fp8_e4m3", tensor_scale=True)

BLOCK_FORMATS: dict[str, BlockFormat] = {
    f.name: f for f in (MXFP8, MXFP8_E5M2, MXFP6, MXFP6_E3M2, MXFP4, MXINT8, NVFP4)
}
