"""Storing per-group scales and offsets in float32, float16 or bfloat16.

Scales are rounded *up* and offsets *down* to the storage dtype, so that the
stored grid still covers every value of its group (the error bound
|x - x_hat| <= scale / 2 then holds with the stored scale).

The rounding is done in float64 with frexp/ldexp (:func:`round_to_format`), and
float32 storage is assembled from its bits: CuPy flushes float32 subnormals in
casts (``-ftz``), and this keeps numpy, CuPy and the fused kernels' twins
(``lowbit/cpu/rtn.py``, ``lowbit/cuda/rtn.cu``) bit-identical.
bfloat16 values are carried as uint16 bits (numpy has no bfloat16).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from lowbit.arrays import Array, xp_of


class ScaleFormat(NamedTuple):
    """A storage format for scales: precision p (with the implicit bit), min exponent, max."""

    code: int
    precision: int
    emin: int
    max: float


#: Storage formats accepted for scales (``scale_dtype=``); ``code`` is the kernels' number.
SCALE_FORMATS = {
    "float32": ScaleFormat(0, 24, -126, float(np.finfo(np.float32).max)),
    "float16": ScaleFormat(1, 11, -14, 65504.0),
    "bfloat16": ScaleFormat(2, 8, -126, 3.3895313892515355e38),
}
SCALE_DTYPES = tuple(SCALE_FORMATS)

Direction = Literal["nearest", "up", "down"]


def check_scale_dtype(scale_dtype: object) -> str:
    if scale_dtype not in SCALE_FORMATS:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {scale_dtype!r}")
    return str(scale_dtype)


def round_to_format(values: Array, scale_dtype: str, direction: Direction = "nearest") -> Array:
    """Round float64 ``values`` to the nearest / next-up / next-down value of ``scale_dtype``.

    Returns float64 values that ``scale_dtype`` represents exactly (subnormals included).
    """
    xp = xp_of(values)
    fmt = SCALE_FORMATS[scale_dtype]
    v = values.astype(xp.float64)
    _, e = xp.frexp(v)
    ulp_exp = xp.maximum(e.astype(xp.int32) - 1, fmt.emin) - (fmt.precision - 1)
    t = xp.ldexp(v, -ulp_exp)
    r = {"nearest": xp.rint, "up": xp.ceil, "down": xp.floor}[direction](t)
    return xp.ldexp(r, ulp_exp)


def _f32_bits(exact: Array) -> Array:
    """uint32 bits of float64 values that float32 represents exactly (no ftz anywhere)."""
    xp = xp_of(exact)
    a = xp.abs(exact)
    m, e = xp.frexp(a)
    e = e.astype(xp.int64) - 1  # a = 1.f * 2**e
    normal = (e >= -126) & (a > 0)
    mant = xp.where(normal, xp.ldexp(m, 24) - 2.0**23, xp.ldexp(a, 149)).astype(xp.uint32)
    expo = xp.where(normal, e + 127, 0).astype(xp.uint32)
    sign = xp.signbit(exact).astype(xp.uint32)
    return (sign << 31) | (expo << 23) | mant


def from_exact(exact: Array, scale_dtype: str) -> Array:
    """Storage array for float64 values exactly representable in ``scale_dtype``."""
    xp = xp_of(exact)
    if scale_dtype == "float16":
        return exact.astype(xp.float16)  # via float32: float16 subnormals are float32 normals
    bits = _f32_bits(exact)
    if scale_dtype == "float32":
        return bits.view(xp.float32)
    return (bits >> 16).astype(xp.uint16)


def from_f32(values: Array, scale_dtype: str) -> Array:
    """Storage array for float32 values exactly representable in ``scale_dtype``."""
    xp = xp_of(values)
    if scale_dtype == "float32":
        return values
    if scale_dtype == "float16":
        return values.astype(xp.float16)
    return (values.view(xp.uint32) >> 16).astype(xp.uint16)


def overflow_error(scale_dtype: str, magnitude: float | None = None) -> ValueError:
    size = f" of magnitude {magnitude:.6g}" if magnitude is not None else ""
    return ValueError(
        f"a scale or offset{size} overflows scale_dtype={scale_dtype!r}; use scale_dtype='float32'"
    )


def store(values: Array, scale_dtype: str, direction: Direction = "nearest") -> Array:
    """Round float64 ``values`` to ``scale_dtype`` storage (bfloat16 as uint16 bits).

    Raises
    ------
    ValueError
        A value overflows the storage dtype.
    """
    xp = xp_of(values)
    exact = round_to_format(values, scale_dtype, direction)
    big = float(xp.max(xp.abs(exact))) if exact.size else 0.0
    if not big <= SCALE_FORMATS[scale_dtype].max:
        raise overflow_error(scale_dtype, float(xp.max(xp.abs(values))))
    return from_exact(exact, scale_dtype)


def load(stored: Array, scale_dtype: str) -> Array:
    """Stored scales as float32 (exact for every storage dtype); float32 storage is returned
    as is, not copied (callers only read it)."""
    xp = xp_of(stored)
    if scale_dtype == "bfloat16":
        return (stored.astype(xp.uint32) << 16).view(xp.float32)
    return stored.astype(xp.float32, copy=False)
