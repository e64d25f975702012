"""The format codec: one encoder and one decoder for every format record, on every array type.

Every conversion of a value into a format of :mod:`lowbit.formats` goes through here or
through the scalar kernels it wraps (``lowbit/cpu/codec.py``):

======================================  ===================================================
function                                what
======================================  ===================================================
:func:`encode` / :func:`decode`         element formats (MiniFloat up to 8 bits, FixedPoint)
                                        with block scales, codes packed (element and block
                                        schemes, NVFP4 block scales); :func:`decode` also
                                        decodes codebooks
:func:`absmax_scale` /                  ``scale="absmax"``: the smallest float32 scale per
:func:`encode_absmax`                   block with max|x| / scale <= the format's max, and
                                        the codes of x / scale (element schemes, KV fp8)
:func:`encode_levels`                   codebooks (:class:`~lowbit.formats.Codebook`) with
                                        block scales, codes packed (scheme ``codebook``,
                                        TurboQuant)
:func:`to_codes` / :func:`from_codes`   a whole array to / from codes of any MiniFloat, up
                                        to float32 (scale storage, bfloat16 conversion)
:func:`round_to_format`                 values rounded into a MiniFloat, as float64 (scale
                                        and offset rounding up / down / to nearest)
:func:`widen_exact` / :func:`narrow_exact`  float32 to / from float16 and bfloat16 codes of
                                        values both hold exactly (no rounding)
======================================  ===================================================

Host arrays run the Numba kernels, device (CuPy) arrays their CUDA twins (lowbit/cuda/codec.cu)
in :func:`encode` / :func:`decode`.  :func:`to_codes` / :func:`from_codes` on device arrays take
an array form of the same algorithm, written with CuPy's elementwise operations on float64 and
integers; ``tests/test_codec.py`` holds the array form bit-identical to the kernels.
:func:`encode_levels` runs the codebook kernels (lowbit/cpu/codebook.py, lowbit/cuda/codebook.cu).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lowbit.arrays import Array, backend, device_constant, is_cupy, xp_of
from lowbit.formats import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    OVERFLOW_POLICIES,
    Codebook,
    ElementFormat,
    FixedPoint,
    MiniFloat,
)
from lowbit.rounding.modes import mode_code
from lowbit.validate import check_invalid

#: Rounding modes of :func:`to_codes` / :func:`round_to_format` on device arrays (the array
#: form; host arrays take every mode but ``diffuse``).
ARRAY_FORM_MODES = ("nearest_even", "toward_zero", "up", "down")

_SATURATE, _NONFINITE, _ERROR = (OVERFLOW_POLICIES.index(p) for p in ("saturate", "nonfinite", "error"))


def code_dtype(fmt: MiniFloat | FixedPoint) -> np.dtype[Any]:
    """The unsigned dtype that holds one unpacked code of ``fmt``."""
    return np.dtype(np.uint8 if fmt.bits <= 8 else np.uint16 if fmt.bits <= 16 else np.uint32)


# -- element formats: packed codes with block scales -------------------------------------------

def check_overflow(overflow: Any, fmt: ElementFormat) -> int:
    """Kernel code of an overflow policy valid for ``fmt``."""
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    if overflow == "wrap" and not isinstance(fmt, FixedPoint):
        raise ValueError(f"overflow='wrap' applies to fixed point only, not {fmt.name}")
    if overflow == "nonfinite" and not (isinstance(fmt, MiniFloat) and fmt.has_nan):
        raise ValueError(f"overflow='nonfinite' needs a format with Inf or NaN; {fmt.name} has neither")
    return OVERFLOW_POLICIES.index(overflow)


@functools.cache
def decode_values(fmt: ElementFormat | Codebook) -> np.ndarray:
    """float64 value of every code of ``fmt`` (index = code), at most 2**16 codes."""
    if isinstance(fmt, (MiniFloat, Codebook)):
        return fmt.decode_table()
    return np.array([float(fmt.value_of(c)) for c in range(1 << fmt.bits)], np.float64)


@functools.cache
def codebook_table(cb: Codebook, which: str) -> np.ndarray:
    """``cb.levels`` or ``cb.thresholds`` as a float64 array (cached, read-only by use)."""
    return np.array(cb.levels if which == "levels" else cb.thresholds, np.float64)


def needs_status(fmt: ElementFormat, overflow: int) -> bool:
    """Whether an encode can produce an error: NaN/Inf the format cannot hold, or overflow='error'."""
    cannot_hold_nan = isinstance(fmt, FixedPoint) or not fmt.has_nan
    return cannot_hold_nan or OVERFLOW_POLICIES[overflow] == "error"


def encode(x: Array, fmt: ElementFormat, block_size: int, scale: Array, *, mode: int, seed: int,
           first_index: int, rbits: int, overflow: int, qmin: int | None = None,
           qmax: int | None = None, count: bool = True) -> tuple[Array, int, int]:
    """Run the encoder kernel of ``fmt`` on flat ``x``; returns (packed, n_invalid, n_overflow).

    ``count=False`` skips the counts (0, 0; on a GPU counting reads them back)."""
    xp = xp_of(x)
    k = backend(x)
    codes = xp.empty(x.size, code_dtype(fmt))
    status = xp.empty(x.size if needs_status(fmt, overflow) else 0, xp.uint8)
    if isinstance(fmt, MiniFloat):
        k.minifloat_encode(x, block_size, scale, fmt.spec, overflow, mode, np.uint64(seed), first_index,
                           rbits, codes, status)
    else:
        lo = fmt.code_min if qmin is None else qmin
        hi = fmt.code_max if qmax is None else qmax
        k.fixed_encode(x, block_size, scale, fmt.bits, fmt.frac_bits, lo, hi, overflow, mode,
                       np.uint64(seed), first_index, rbits, codes, status)
    n_invalid = n_over = 0
    if count and status.size and bool(status.any()):
        n_invalid = int(xp.count_nonzero(status & 1))
        n_over = int(xp.count_nonzero(status & 2))
    if fmt.bits == 8:
        return codes, n_invalid, n_over
    packed = xp.empty((x.size * fmt.bits + 7) // 8, xp.uint8)
    k.pack_codes(codes, fmt.bits, packed)
    return packed, n_invalid, n_over


def encode_levels(x: Array, cb: Codebook, block_size: int, scale: Array, *, mode: int, seed: int,
                  first_index: int, rbits: int) -> Array:
    """Packed codes of flat ``x`` / scale[block] in codebook ``cb``: the nearest level (``mode``
    0, ties to the even code) or stochastic rounding between the two neighbouring levels
    (``mode`` 6; ``seed``, ``rbits``, counter ``first_index`` + i), lowbit/cpu/codebook.py."""
    xp = xp_of(x)
    k = backend(x)
    codes = xp.empty(x.size, xp.uint8)
    levels = device_constant(codebook_table, cb, "levels", like=x)
    thresholds = device_constant(codebook_table, cb, "thresholds", like=x)
    k.codebook_encode(x, block_size, scale, levels, thresholds, mode, np.uint64(seed), first_index, rbits,
                      codes)
    if cb.bits == 8:
        return codes
    packed = xp.empty((x.size * cb.bits + 7) // 8, xp.uint8)
    k.pack_codes(codes, cb.bits, packed)
    return packed


def absmax_scale(amax: Array, fmt: ElementFormat, invalid: str = "raise") -> Array:
    """Per-group scale for ``scale="absmax"``: the smallest float32 s with amax / s <= fmt.max.

    Rounded *up* (as rtn's scales), so that no x / s of the group exceeds the format's max
    and ``overflow="error"`` never raises on finite data, whatever the rounding mode; 1 for
    an all-zero group.  Returned as float64 values that float32 represents exactly.
    A scale beyond float32's range (or a NaN / Inf ``amax``): ``invalid="raise"`` raises (on
    a GPU: one host synchronization), ``"nan"`` gives NaN there, reading nothing back.

    Raises
    ------
    ValueError
        With ``invalid="raise"``: a scale would exceed float32's range (float64 input beyond
        ~1.5e41 for fp8 e4m3).
    """
    xp = xp_of(amax)
    nan = check_invalid(invalid) == "nan"
    s = round_to_format(amax / fmt.max, FLOAT32, "up")
    # amax / max was rounded once in float64 and may sit just below the exact quotient; s * max
    # is exact (24 + at most 8 significant bits), so this comparison is exact, and the next
    # float32 up is then the answer (s * (1 + 2**-30) lies strictly between s and it).
    low = s * fmt.max < amax
    if nan or bool(low.any()):  # (the test reads a flag back; without it, always)
        s = xp.where(low, round_to_format(s * (1.0 + 2.0**-30), FLOAT32, "up"), s)
    s = xp.where(amax > 0, s, 1.0)
    if nan:
        return xp.where(xp.isfinite(amax) & (s <= FLOAT32.max), s, xp.nan)
    if not bool((s <= FLOAT32.max).all()):
        raise ValueError(f"scale='absmax' stores float32 scales; max|x| = {float(amax.max()):.6g} "
                         f"needs max|x| / {fmt.max:g} beyond float32's range")
    return s


def encode_absmax(x: Array, fmt: ElementFormat, block_size: int, *, mode: int, seed: int,
                  first_index: int, rbits: int, overflow: int,
                  invalid: str = "raise") -> tuple[Array, Array]:
    """Packed codes of flat ``x`` / scale per block of ``block_size`` elements, and the float32
    scales (:func:`absmax_scale`), for ``scale="absmax"`` (element schemes, the KV fp8 codec).

    ``invalid`` (:data:`lowbit.validate.INVALID_POLICIES`): "raise" (default) raises for the
    cases below, which on a GPU reads flags back (host synchronizations); "nan" checks
    nothing and reads nothing back: a block holding NaN/Inf, or whose scale exceeds float32's
    range, gets a NaN scale (it decodes to NaN), and overflows follow ``overflow`` uncounted.

    Raises
    ------
    ValueError
        With ``invalid="raise"``: NaN/Inf in ``x``; a scale beyond float32's range; values that
        overflow with ``overflow="error"`` (:func:`raise_on_counts`).
    """
    xp = xp_of(x)
    check = check_invalid(invalid) == "raise"
    amax = xp.empty(x.size // block_size, xp.float64)
    backend(x).block_absmax(x, block_size, amax)
    if check and not bool(xp.isfinite(amax).all()):
        raise ValueError("x contains NaN or Inf; scale='absmax' needs finite values")
    scale64 = absmax_scale(amax, fmt, invalid)
    packed, n_invalid, n_over = encode(x, fmt, block_size, scale64, mode=mode, seed=seed,
                                       first_index=first_index, rbits=rbits, overflow=overflow,
                                       count=check)
    raise_on_counts(fmt, n_invalid, n_over)
    return packed, to_codes(scale64, FLOAT32).view(xp.float32)  # exact


def raise_on_counts(fmt: ElementFormat, n_invalid: int, n_over: int) -> None:
    """Raise for the NaN/Inf values and overflows an :func:`encode` counted."""
    if n_invalid:
        raise ValueError(f"x holds {n_invalid} NaN/Inf value(s) that {fmt.name} cannot represent")
    if n_over:
        lo = fmt.min if isinstance(fmt, FixedPoint) else -fmt.max
        raise ValueError(f"{n_over} value(s) of x overflow {fmt.name} (range {lo} .. {fmt.max}) "
                         "and overflow='error'")


def decode(packed: Array, fmt: ElementFormat | Codebook, n: int, block_size: int, scale: Array,
           dtype: str) -> Array:
    """Flat backend array of ``dtype`` (bfloat16 as uint16 bits): table[code] * scale[block]."""
    from lowbit.arrays import decode_output_dtype, to_dtype

    xp = xp_of(packed)
    out = xp.empty(n, decode_output_dtype(packed, dtype))
    table = device_constant(decode_values, fmt, like=packed)
    backend(packed).decode_table(packed, fmt.bits, table, block_size, scale, out)
    want = np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)
    return out if out.dtype == want else to_dtype(out, dtype)


# -- whole arrays to / from codes of any MiniFloat ---------------------------------------------

def to_codes(values: Array, fmt: MiniFloat, mode: str = "nearest_even",
             overflow: str = "nonfinite", *, return_overflow: bool = False) -> Any:
    """Codes of ``values`` (float16, float32 or float64, any shape) in ``fmt``, one rounding.

    Parameters
    ----------
    values : numpy or cupy array
    fmt : MiniFloat
        Any record, e.g. :data:`~lowbit.formats.BFLOAT16` or :data:`~lowbit.formats.FP8_E4M3`.
    mode : str
        A rounding mode; on device arrays one of :data:`ARRAY_FORM_MODES`.
    overflow : {"nonfinite", "saturate"}
        IEEE 754 overflow (+-Inf, or NaN for formats without Inf; +-max where the mode rounds
        toward zero), or +-max.  NaN becomes the format's quiet NaN with its sign (0 for a
        format without NaN).
    return_overflow : bool
        Also return a bool array marking the elements that overflowed: the rounded value
        (unbounded exponent) lies beyond +-max, or the input is +-Inf.

    Returns
    -------
    codes : array of uint8 / uint16 / uint32 (the format's width), ``values``' shape and library
    overflowed : bool array (with ``return_overflow``)
    """
    pol = check_overflow(overflow, fmt)
    if pol not in (_SATURATE, _NONFINITE):
        raise ValueError(f"overflow must be 'nonfinite' or 'saturate', got {overflow!r}")
    code = mode_code(mode, allow_diffuse=False)
    xp = xp_of(values)
    flat = xp.ascontiguousarray(values).reshape(-1)
    if is_cupy(values):
        if mode not in ARRAY_FORM_MODES:
            raise ValueError(f"mode must be one of {ARRAY_FORM_MODES} for device arrays, got {mode!r}")
        codes, over = _to_codes_xp(flat, fmt, mode, pol)
    else:
        codes = np.empty(flat.size, code_dtype(fmt))
        if flat.dtype == np.float16:
            flat = flat.astype(np.float32)  # exact; Numba reads no float16
        status = np.empty(flat.size if return_overflow else 0, np.uint8)
        # with status wanted, the kernel's "error" policy flags overflows (written saturated);
        # nonfinite codes are put back below
        kpol = _ERROR if return_overflow else pol
        backend(flat).minifloat_encode(flat, max(flat.size, 1), np.ones(1), fmt.spec, kpol, code,
                                       np.uint64(0), 0, 16, codes, status)
        over = (status & 2).astype(bool)
        if return_overflow and pol == _NONFINITE and over.any():
            redo = np.flatnonzero(over)
            part = np.empty(redo.size, codes.dtype)
            backend(flat).minifloat_encode(np.ascontiguousarray(flat[redo]), max(redo.size, 1),
                                           np.ones(1), fmt.spec, pol, code, np.uint64(0), 0, 16,
                                           part, np.empty(0, np.uint8))
            codes[redo] = part
    codes = codes.reshape(values.shape)
    return (codes, over.reshape(values.shape)) if return_overflow else codes


def from_codes(codes: Array, fmt: MiniFloat, dtype: str = "float64") -> Array:
    """Values of ``codes`` (unsigned integers, any shape) in ``fmt``, as ``dtype``.

    Exact for ``dtype="float64"``, and for ``"float32"`` when ``fmt`` is no wider than
    float32 in range and precision (every record of lowbit.formats).  NaN codes give NaN of
    the same sign (payloads are not kept).
    """
    xp = xp_of(codes)
    flat = xp.ascontiguousarray(codes).reshape(-1)
    if is_cupy(codes):
        return _from_codes_xp(flat, fmt).astype(dtype, copy=False).reshape(codes.shape)
    out = np.empty(flat.size, dtype)
    backend(flat).minifloat_decode(flat, fmt.spec, out)
    return out.reshape(codes.shape)


def round_to_format(values: Array, fmt: MiniFloat, mode: str = "nearest_even") -> Array:
    """float64 ``values`` rounded into ``fmt`` with ``mode``, as exact float64 values.

    A result beyond +-max after rounding with an unbounded exponent (and +-Inf input) is
    +-Inf, whatever the mode, so that ``abs(result) > fmt.max`` detects overflow.  NaN stays
    NaN.
    """
    xp = xp_of(values)
    codes, over = to_codes(values, fmt, mode, "saturate", return_overflow=True)
    out = from_codes(codes, fmt, "float64")
    return xp.where(over, xp.copysign(xp.inf, values), out)


def widen_exact(codes: Array, fmt: MiniFloat) -> Array:
    """float32 values of ``codes`` of a format that float32 holds exactly (every record).

    float32, bfloat16 (the top half of a float32's bits) and float16 (IEEE binary16, which numpy
    and CuPy convert exactly) are bit operations or one native cast; other formats decode
    through :func:`from_codes`.
    """
    xp = xp_of(codes)
    if fmt == FLOAT32:
        return codes.view(xp.float32)
    if fmt == BFLOAT16:
        return (codes.astype(xp.uint32) << 16).view(xp.float32)
    if fmt == FLOAT16:
        return codes.view(xp.float16).astype(xp.float32)
    return from_codes(codes, fmt, "float32")


def narrow_exact(values: Array, fmt: MiniFloat) -> Array:
    """Codes of float32 ``values`` that ``fmt`` represents exactly (the inverse of
    :func:`widen_exact`; values that ``fmt`` cannot hold exactly take :func:`to_codes`'s
    nearest-even rounding for float16 and other formats, and are truncated for bfloat16)."""
    xp = xp_of(values)
    if fmt == FLOAT32:
        return values.view(xp.uint32)
    if fmt == BFLOAT16:
        return (values.view(xp.uint32) >> 16).astype(xp.uint16)
    if fmt == FLOAT16:
        return values.astype(xp.float16).view(xp.uint16)
    return to_codes(values, fmt)


# -- the array form for device arrays (same algorithm as minifloat_encode_one / _decode_one) ---

def _widen_exact(flat: Array) -> Array:
    """float64 copy of a float16 / float32 / float64 array, assembled from the bits (CuPy's
    float32 arithmetic flushes subnormals; integer operations and float64 do not)."""
    if flat.dtype == np.float64:
        return flat
    if flat.dtype == np.float32:
        return _from_codes_xp(flat.view(xp_of(flat).uint32), FLOAT32)
    return _from_codes_xp(flat.view(xp_of(flat).uint16), FLOAT16)


def _to_codes_xp(flat: Array, fmt: MiniFloat, mode: str, overflow: int) -> tuple[Array, Array]:
    xp = xp_of(flat)
    v = _widen_exact(flat)
    neg = xp.signbit(v)
    a = xp.abs(v)
    finite = xp.isfinite(a)
    safe = xp.where(finite & (a > 0), a, 1.0)
    e = xp.clip(xp.frexp(safe)[1].astype(xp.int32) - 1, fmt.emin, fmt.emax + 1)
    grid = xp.ldexp(xp.where(neg, -safe, safe), fmt.man_bits - e)  # exact, signed
    r = {"nearest_even": xp.rint, "toward_zero": xp.trunc, "up": xp.ceil, "down": xp.floor}[mode](grid)
    k = xp.abs(r)
    over = xp.ldexp(k, e - fmt.man_bits) > fmt.max
    k = xp.minimum(k, float(1 << (fmt.man_bits + 1)))  # beyond: overflow, replaced below
    code = ((e - fmt.emin).astype(xp.int64) << fmt.man_bits) + k.astype(xp.int64)
    code = xp.where(a == 0, 0, code)
    c_max, c_inf, c_nan = fmt.code_of_max, fmt.code_of_inf, fmt.code_of_nan
    c_big = c_max if c_nan is None else (c_inf if c_inf is not None else c_nan)
    if overflow == _NONFINITE:  # IEEE 754: +-max where the mode rounds toward zero
        toward_zero = {"toward_zero": xp.ones_like(neg), "down": ~neg, "up": neg}.get(mode, xp.zeros_like(neg))
        code = xp.where(over, xp.where(toward_zero, c_max, c_big), code)
        code = xp.where(xp.isinf(a), c_big, code)
    else:
        code = xp.where(over | xp.isinf(a), c_max, code)
    code = xp.where(xp.isnan(a), 0 if c_nan is None else c_nan, code)
    code = code | (neg.astype(xp.int64) << (fmt.bits - 1))
    return code.astype(code_dtype(fmt)), over | xp.isinf(a)


def _from_codes_xp(flat: Array, fmt: MiniFloat) -> Array:
    xp = xp_of(flat)
    c = flat.astype(xp.int64)
    mag = c & ((1 << (fmt.bits - 1)) - 1)
    neg = ((c >> (fmt.bits - 1)) & 1).astype(bool)
    field = (mag >> fmt.man_bits).astype(xp.int32)
    m = (mag & ((1 << fmt.man_bits) - 1)).astype(xp.float64)
    normal = field > 0
    sig = xp.where(normal, m + float(1 << fmt.man_bits), m)
    v = xp.ldexp(sig, xp.where(normal, field, 1) + (fmt.emin - 1 - fmt.man_bits))
    if fmt.code_of_inf is not None:
        v = xp.where(mag == fmt.code_of_inf, xp.inf, v)
        v = xp.where(mag > fmt.code_of_inf, xp.nan, v)
    elif fmt.code_of_nan is not None:
        v = xp.where(mag == fmt.code_of_nan, xp.nan, v)
    return xp.where(neg, -v, v)
