"""Schemes ``fixed``, ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e2m3``, ``fp6_e3m2``, ``fp4_e2m1``.

Element formats (records in :mod:`lowbit.formats`).  With no ``scale`` the values are
converted directly (``q.dequantize()`` is x rounded into the format); ``scale="absmax"`` adds a
float32 scale per group, max|x| / format.max rounded *up* to float32 (so that no x / scale
exceeds the format's max), and converts x / scale:

==========  ============  =======================================================
axis        group_size    one scale per
==========  ============  =======================================================
None        None          tensor
a           None          fibre along axis a (default a = -1)
a           g             g consecutive elements along axis a (g divides the length)
==========  ============  =======================================================

Every conversion rounds once, with ``rounding=`` (any :class:`~lowbit.rounding.modes.RoundMode`;
``diffuse`` for ``fixed`` only), and applies ``overflow=`` to results out of range
(:data:`lowbit.formats.OVERFLOW_POLICIES`).  Codes are packed at the format's width.
"""

from __future__ import annotations

import math
from typing import Any

from lowbit import codec
from lowbit.arrays import Array, Origin, backend, kernel_input, xp_of
from lowbit.codec import check_overflow, decode, encode, raise_on_counts
from lowbit.formats import (
    FLOAT32,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    ElementFormat,
    FixedPoint,
    MiniFloat,
)
from lowbit.quantized import QuantizedArray
from lowbit.rounding.modes import mode_code
from lowbit.schema import ElementMeta, FixedMeta
from lowbit.validate import check_axis, check_group_size, check_rbits, check_seed

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def absmax_scale(amax: Array, fmt: ElementFormat) -> Array:
    """Per-group scale for ``scale="absmax"``: the smallest float32 s with amax / s <= fmt.max.

    Rounded *up* (as rtn's scales), so that no x / s of the group exceeds the format's max
    and ``overflow="error"`` never raises on finite data, whatever the rounding mode; 1 for
    an all-zero group.  Returned as float64 values that float32 represents exactly.

    Raises
    ------
    ValueError
        A scale would exceed float32's range (float64 input beyond ~1.5e41 for fp8 e4m3).
    """
    xp = xp_of(amax)
    s = codec.round_to_format(amax / fmt.max, FLOAT32, "up")
    # amax / max was rounded once in float64 and may sit just below the exact quotient; s * max
    # is exact (24 + at most 8 significant bits), so this comparison is exact, and the next
    # float32 up is then the answer (s * (1 + 2**-30) lies strictly between s and it).
    low = s * fmt.max < amax
    if bool(low.any()):
        s = xp.where(low, codec.round_to_format(s * (1.0 + 2.0**-30), FLOAT32, "up"), s)
    s = xp.where(amax > 0, s, 1.0)
    if not bool((s <= FLOAT32.max).all()):
        raise ValueError(f"scale='absmax' stores float32 scales; max|x| = {float(amax.max()):.6g} "
                         f"needs max|x| / {fmt.max:g} beyond float32's range")
    return s


def axis_last(arr: Array, ax: int | None) -> Array:
    return arr if ax is None else xp_of(arr).moveaxis(arr, ax, -1)


def axis_back(flat: Array, shape: tuple[int, ...], ax: int | None) -> Array:
    if ax is None:
        return flat.reshape(shape)
    moved = list(shape)
    moved.append(moved.pop(ax))
    return xp_of(flat).ascontiguousarray(xp_of(flat).moveaxis(flat.reshape(moved), -1, ax))


class ElementScheme:
    """Front of one element-format scheme (``lowbit.quantize(x, scheme=name)``)."""

    def __init__(self, name: str, fmt: MiniFloat | None) -> None:
        self.name = name
        self.fmt = fmt  # None: "fixed", whose format comes from bits / frac_bits / signed

    def format_of(self, bits: Any = 8, frac_bits: Any = 0, signed: Any = True) -> ElementFormat:
        if self.fmt is not None:
            return self.fmt
        return FixedPoint(bits=bits, frac_bits=frac_bits, signed=signed)

    def quantize(self, arr: Array, origin: Origin, *, rounding: str = "nearest_even",
                 seed: int | None = None, rbits: int = 16, overflow: str = "saturate",
                 scale: str | None = None, axis: int | None = -1, group_size: int | None = None,
                 order: int = 1, first_index: int = 0, **fixed: Any) -> QuantizedArray:
        """Convert ``arr`` to the scheme's format (parameters: module docstring).

        ``fixed`` only: ``bits`` (1..8, default 8), ``frac_bits`` (default 0), ``signed``
        (default True); ``rounding="diffuse"`` diffuses along ``axis`` with ``order`` 1 or 2.
        ``first_index`` is the generator counter of the first element (chunked stochastic rounding).
        """
        if self.fmt is not None and fixed:
            raise TypeError(f"scheme {self.name!r} got unexpected arguments {sorted(fixed)}")
        unknown = set(fixed) - {"bits", "frac_bits", "signed"}
        if unknown:
            raise TypeError(f"scheme {self.name!r} got unexpected arguments {sorted(unknown)}")
        fmt = self.format_of(**fixed)
        diffuse = rounding == "diffuse"
        if diffuse and self.fmt is not None:
            raise ValueError(f"rounding='diffuse' is available for scheme='fixed' only, not {self.name!r}")
        mode = mode_code(rounding)
        seed = check_seed(seed, rounding)
        rbits = check_rbits(rbits)
        ovf = check_overflow(overflow, fmt)
        from lowbit.rounding.core import check_first_index

        off = check_first_index(first_index)
        if scale not in (None, "absmax"):
            raise ValueError(f"scale must be None (direct conversion) or 'absmax', got {scale!r}")
        shape = tuple(int(s) for s in arr.shape)
        xp = xp_of(arr)
        if scale is None:
            if group_size is not None:
                raise ValueError("group_size needs scale='absmax' (without a scale, values convert directly)")
            ax = None
            gs = None
        else:
            ax = check_axis(axis, max(len(shape), 1)) if shape else None
            gs = check_group_size(group_size, ax, shape[ax] if ax is not None else 0)
        if diffuse:
            if axis is None:
                raise ValueError("rounding='diffuse' needs an axis to diffuse along; got axis=None")
            if scale is not None:
                raise ValueError("rounding='diffuse' works on unscaled values; use scale=None")
            if overflow not in ("saturate", "error"):
                raise ValueError(f"rounding='diffuse' saturates; overflow={overflow!r} is not available")
        x = kernel_input(axis_last(arr, ax), origin.dtype).reshape(-1)
        n = x.size
        block = n if ax is None else (gs or shape[ax])
        fields: dict[str, Array] = {}
        if scale == "absmax":
            amax = xp.empty(n // block, xp.float64)
            backend(x).block_absmax(x, block, amax)
            if not bool(xp.isfinite(amax).all()):
                raise ValueError("x contains NaN or Inf; scale='absmax' needs finite values")
            scale64 = absmax_scale(amax, fmt)
            fields["scale"] = codec.to_codes(scale64, FLOAT32).view(xp.float32)  # exact
        else:
            scale64 = xp.ones(1, xp.float64)
        if diffuse:
            packed, n_invalid, n_over = self._diffuse(arr, origin, fmt, shape, axis, order, ovf)  # type: ignore[arg-type]
        else:
            packed, n_invalid, n_over = encode(x, fmt, block, scale64, mode=mode, seed=seed or 0,
                                               first_index=off, rbits=rbits, overflow=ovf)
        raise_on_counts(fmt, n_invalid, n_over)
        common: dict[str, Any] = dict(scheme=self.name, shape=shape, dtype=origin.dtype, bits=fmt.bits,
                      rounding=rounding, seed=seed, rbits=rbits, overflow=overflow, scale=scale,
                      axis=ax, group_size=gs, first_index=off)
        if isinstance(fmt, FixedPoint):
            meta = FixedMeta(**common, frac_bits=fmt.frac_bits, signed=bool(fmt.signed)).to_meta()
        else:
            meta = ElementMeta(**common).to_meta()
        return QuantizedArray(packed, fields, meta, origin)

    def _diffuse(self, arr: Array, origin: Origin, fmt: FixedPoint, shape: tuple[int, ...],
                 axis: Any, order: int, ovf: int) -> tuple[Array, int, int]:
        """Fixed point by error diffusion in grid units, then an exact encode of the integers."""
        from lowbit.rounding.core import _diffuse

        xp = xp_of(arr)
        grid = kernel_input(arr, origin.dtype).astype(xp.float64) * math.ldexp(1.0, fmt.frac_bits)
        if isinstance(order, bool) or order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        y = _diffuse(grid, "float64", shape, axis, order, None, "raster",
                     float(fmt.code_min), float(fmt.code_max))
        flat = xp.ascontiguousarray(y).reshape(-1)
        unit = FixedPoint(bits=fmt.bits, frac_bits=0, signed=fmt.signed)
        return encode(flat, unit, flat.size, xp.ones(1, xp.float64), mode=0, seed=0, first_index=0,
                      rbits=16, overflow=ovf)

    def dequantize(self, q: QuantizedArray) -> Array:
        m = q.meta
        shape = tuple(m["shape"])
        fmt = self.format_of(m["bits"], m.get("frac_bits", 0), m.get("signed", True))
        xp = xp_of(q.codes)
        n = math.prod(shape)
        ax = m["axis"] if m["scale"] == "absmax" else None
        if m["scale"] == "absmax":
            block = n if ax is None else (m["group_size"] or shape[ax])
            scale64 = q.fields["scale"].astype(xp.float64)
        else:
            block, scale64 = max(n, 1), xp.ones(1, xp.float64)
        return axis_back(decode(q.codes, fmt, n, block, scale64, q.origin.dtype), shape, ax)

fixed = ElementScheme("fixed", None)
fp8_e4m3 = ElementScheme("fp8_e4m3", FP8_E4M3)
fp8_e5m2 = ElementScheme("fp8_e5m2", FP8_E5M2)
fp6_e2m3 = ElementScheme("fp6_e2m3", FP6_E2M3)
fp6_e3m2 = ElementScheme("fp6_e3m2", FP6_E3M2)
fp4_e2m1 = ElementScheme("fp4_e2m1", FP4_E2M1)
