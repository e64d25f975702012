"""Schemes ``fixed``, ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e2m3``, ``fp6_e3m2``, ``fp4_e2m1``.

Element formats (records in :mod:`lowbit.formats`).  With no ``scale`` the values are
converted directly (``q.dequantize()`` is x rounded into the format); ``scale="absmax"`` adds a
float32 scale per group, max|x| / format.max rounded *up* to float32 (so that no x / scale
exceeds the format's max), and converts x / scale (the shared codec,
:func:`lowbit.codec.encode_absmax`).  Groups: ``axis`` (default -1; None: one per tensor) and
``group_size`` (None: the whole fibre), as :func:`lowbit.validate.check_grouping` tabulates.

Every conversion rounds once, with ``rounding=`` (any :class:`~lowbit.rounding.modes.RoundMode`;
``diffuse`` for ``fixed`` only), and applies ``overflow=`` to results out of range
(:data:`lowbit.formats.OVERFLOW_POLICIES`).  Codes are packed at the format's width.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from lowbit.arrays import Array, Origin, axis_back, axis_last, kernel_input, xp_of
from lowbit.codec import check_overflow, decode, encode, encode_absmax, raise_on_counts
from lowbit.formats import (
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
from lowbit.validate import check_grouping, check_rbits, check_seed


class ElementScheme:
    """Front of one element-format scheme (``lowbit.quantize(x, scheme=name)``)."""

    def __init__(self, name: str, fmt: MiniFloat | None) -> None:
        self.name = name
        self.fmt = fmt  # None: "fixed", whose format comes from bits / frac_bits / signed

    def format_of(self, bits: Any = 8, frac_bits: Any = 0, signed: Any = True) -> ElementFormat:
        if self.fmt is not None:
            return self.fmt
        return FixedPoint(bits=bits, frac_bits=frac_bits, signed=signed)

    def options_signature(self) -> inspect.Signature:
        """The options of ``lowbit.quantize(x, scheme=name)`` (``lowbit.api.scheme_options``):
        :meth:`quantize`'s keyword parameters, for ``fixed`` with its format's parameters in
        place of ``**fixed`` (``bits`` required: no width is guessed), for the other formats
        without it (their width is the format's)."""
        P = inspect.Parameter
        params = [q for q in inspect.signature(self.quantize).parameters.values() if q.kind is not P.VAR_KEYWORD]
        if self.fmt is None:
            fmt = [q.replace(kind=P.KEYWORD_ONLY) for q in inspect.signature(self.format_of).parameters.values()]
            n = sum(q.kind is not P.KEYWORD_ONLY for q in params)  # (arr, origin) stay first
            params = [*params[:n], fmt[0].replace(default=P.empty), *fmt[1:], *params[n:]]
        return inspect.Signature(params)

    def quantize(self, arr: Array, origin: Origin, *, rounding: str = "nearest_even",
                 seed: int | None = None, rbits: int = 16, overflow: str = "saturate",
                 scale: str | None = None, axis: int | None = -1, group_size: int | None = None,
                 order: int = 1, first_index: int = 0, **fixed: Any) -> QuantizedArray:
        """Convert ``arr`` to the scheme's format (parameters: module docstring).

        ``fixed`` only: ``bits`` (1..8, required by ``lowbit.quantize``), ``frac_bits`` (default 0), ``signed``
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
        ax, gs, block = check_grouping(shape, axis, group_size, scaled=scale is not None)
        if diffuse:
            if axis is None:
                raise ValueError("rounding='diffuse' needs an axis to diffuse along; got axis=None")
            if scale is not None:
                raise ValueError("rounding='diffuse' works on unscaled values; use scale=None")
            if overflow not in ("saturate", "error"):
                raise ValueError(f"rounding='diffuse' saturates; overflow={overflow!r} is not available")
        x = kernel_input(axis_last(arr, ax), origin.dtype).reshape(-1)
        fields: dict[str, Array] = {}
        if diffuse:
            packed, n_invalid, n_over = self._diffuse(arr, origin, fmt, shape, axis, order, ovf)  # type: ignore[arg-type]
            raise_on_counts(fmt, n_invalid, n_over)
        elif scale == "absmax":
            packed, fields["scale"] = encode_absmax(x, fmt, block, mode=mode, seed=seed or 0,
                                                    first_index=off, rbits=rbits, overflow=ovf)
        else:
            packed, n_invalid, n_over = encode(x, fmt, block, xp.ones(1, xp.float64), mode=mode,
                                               seed=seed or 0, first_index=off, rbits=rbits, overflow=ovf)
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
        scaled = m["scale"] == "absmax"
        ax, _, block = check_grouping(shape, m["axis"], m["group_size"], scaled=scaled)
        scale64 = q.fields["scale"].astype(xp.float64) if scaled else xp.ones(1, xp.float64)
        return axis_back(decode(q.codes, fmt, math.prod(shape), block, scale64, q.origin.dtype), shape, ax)

fixed = ElementScheme("fixed", None)
fp8_e4m3 = ElementScheme("fp8_e4m3", FP8_E4M3)
fp8_e5m2 = ElementScheme("fp8_e5m2", FP8_E5M2)
fp6_e2m3 = ElementScheme("fp6_e2m3", FP6_E2M3)
fp6_e3m2 = ElementScheme("fp6_e3m2", FP6_E3M2)
fp4_e2m1 = ElementScheme("fp4_e2m1", FP4_E2M1)
