"""Storing per-group scales and offsets in float32, float16 or bfloat16.

Scales are rounded *up* and offsets *down* to the storage dtype, so that the
stored grid still covers every value of its group (the error bound
|x - x_hat| <= scale / 2 then holds with the stored scale).
bfloat16 values are carried as uint16 bits (numpy has no bfloat16).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lowbit.arrays import Array, xp_of

#: Storage dtypes accepted for scales (``scale_dtype=``).
SCALE_DTYPES = ("float32", "float16", "bfloat16")

Direction = Literal["nearest", "up", "down"]

#: Largest finite value of each storage dtype.
_MAX = {"float32": float(np.finfo(np.float32).max), "float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def check_scale_dtype(scale_dtype: object) -> str:
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {scale_dtype!r}")
    return str(scale_dtype)


def _directed(xp: object, exact: Array, rounded: Array, direction: Direction) -> Array:
    """Step ``rounded`` (a float16/float32 array) one ulp so it lies on ``direction``'s side."""
    if direction == "up":
        return xp.where(rounded.astype(xp.float64) < exact, xp.nextafter(rounded, rounded.dtype.type(np.inf)), rounded)  # type: ignore[attr-defined]
    if direction == "down":
        return xp.where(rounded.astype(xp.float64) > exact, xp.nextafter(rounded, rounded.dtype.type(-np.inf)), rounded)  # type: ignore[attr-defined]
    return rounded


def store(values: Array, scale_dtype: str, direction: Direction = "nearest") -> Array:
    """Round float64 ``values`` to ``scale_dtype`` storage (bfloat16 as uint16 bits).

    Raises
    ------
    ValueError
        A finite value overflows the storage dtype.
    """
    xp = xp_of(values)
    v = values.astype(xp.float64)
    big = float(xp.max(xp.abs(v))) if v.size else 0.0
    if big > _MAX[scale_dtype]:
        raise ValueError(
            f"a scale or offset of magnitude {big:.6g} overflows scale_dtype={scale_dtype!r}; "
            "use scale_dtype='float32'"
        )
    if scale_dtype in ("float32", "float16"):
        out = _directed(xp, v, v.astype(scale_dtype), direction)
    else:
        f32 = _directed(xp, v, v.astype(xp.float32), direction)
        bits = f32.view(xp.uint32)
        if direction == "nearest":
            b = (bits + xp.uint32(0x7FFF) + ((bits >> 16) & xp.uint32(1))) >> 16
        else:
            trunc = bits >> 16  # toward zero
            lost = (bits & xp.uint32(0xFFFF)) != 0
            neg = (bits >> 31) == 1
            away = lost & (neg if direction == "down" else ~neg)
            b = trunc + away.astype(xp.uint32)
        out = b.astype(xp.uint16)
    if bool(xp.any(xp.isinf(load(out, scale_dtype)))):  # rounded up past the largest finite
        raise ValueError(
            f"a scale or offset of magnitude {big:.6g} overflows scale_dtype={scale_dtype!r}; "
            "use scale_dtype='float32'"
        )
    return out


def load(stored: Array, scale_dtype: str) -> Array:
    """Stored scales as float32 (exact for every storage dtype)."""
    xp = xp_of(stored)
    if scale_dtype == "bfloat16":
        return (stored.astype(xp.uint32) << 16).view(xp.float32)
    return stored.astype(xp.float32)
