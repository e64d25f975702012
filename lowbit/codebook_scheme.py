"""Scheme ``codebook``: one code per element indexing a :class:`~lowbit.formats.Codebook`, one
scale per group.

``lowbit.quantize(x, scheme="codebook", codebook=..., scale=..., axis=-1, group_size=None)``
stores code c = encode(x / s) and reconstructs x_hat = levels[c] * s, with the group scale s:

===========  =================================================================================
``scale``    s for each group
===========  =================================================================================
"absmax"     max|x| / max|level| (default): the group's largest magnitude lands on the
             codebook's outermost level (NF4's [-1, 1] convention)
"norm"       ||x||_2: the codebook describes x / ||x||, e.g. ``"lloyd-max-sphere"`` (the
             coordinates of a rotated unit vector; TurboQuant)
"rms"        ||x||_2 / sqrt(n) for n elements per group: for codebooks of unit variance
             (``"lloyd-max-gaussian"``)
None         1 (direct encoding of the values; no field stored)
===========  =================================================================================

Groups: ``axis`` (default -1; None: one per tensor) and ``group_size`` (None: the whole
fibre), as for the element formats (:func:`lowbit.validate.check_grouping`).

``codebook``: a record or a name of :data:`lowbit.codebooks.NAMES` (``"nf4"``,
``"lloyd-max-gaussian"`` with ``bits=``, ``"lloyd-max-sphere"`` with ``bits=``, designed for
the group length).  ``rounding``: ``"nearest_even"`` (nearest level; a value exactly halfway
between two levels goes to the even code) or ``"stochastic"`` (the level above or below with
probabilities that make E[x_hat] = x inside the codebook's range; ``seed``, ``rbits``, counter
``first_index`` + element index of the axis-last layout).  The scale is stored in ``scale_dtype``
(float32, float16 or bfloat16), rounded to nearest, and the codes encode x divided by the
*stored* scale, so decoding multiplies by exactly the scale the codes were chosen for.
Dequantization is exact: levels (float32 values) times stored scales are exact in float64,
rounded once to the output dtype.  Codes are packed at the codebook's width
(docs/packing.md).
"""

from __future__ import annotations

import math
from typing import Any, cast

from lowbit import codebooks, scales
from lowbit.arrays import Array, Origin, axis_back, axis_last, backend, kernel_input, xp_of
from lowbit.codec import decode, encode_levels
from lowbit.formats import Codebook
from lowbit.quantized import QuantizedArray
from lowbit.rounding.modes import mode_code
from lowbit.schema import CodebookMeta, parse
from lowbit.validate import check_grouping, check_rbits, check_seed

#: ``scale=`` choices (None: no scale).
SCALES = ("absmax", "norm", "rms")
#: Rounding modes a codebook encodes with.
ROUNDINGS = ("nearest_even", "stochastic")


def group_scales(x: Array, block: int, scale: str, cb: Codebook, scale_dtype: str) -> Array:
    """Stored scales (``scale_dtype`` storage) of the groups of flat ``x``, rounded to nearest.

    Raises
    ------
    ValueError
        NaN/Inf in ``x``; a scale beyond ``scale_dtype``'s range, or a non-zero one below its
        smallest normal (where its relative precision is lost).
    """
    xp = xp_of(x)
    k = backend(x)
    s = xp.empty(x.size // block, xp.float64)
    if scale == "absmax":
        k.block_absmax(x, block, s)
        s = s / cb.max_abs
    else:
        k.block_norm(x, block, s)
        if scale == "rms":
            s = s / math.sqrt(block)
    if not bool(xp.isfinite(s).all()):
        raise ValueError("x contains NaN or Inf; scheme 'codebook' needs finite values")
    stored = scales.store(s, scale_dtype, "nearest")
    tiny = scales.SCALE_FORMATS[scale_dtype].smallest_normal
    low = (s > 0) & (scales.load(stored, scale_dtype) < tiny)
    if bool(low.any()):
        raise ValueError(f"a group scale of magnitude {float(s[low].min()):.3g} lies below "
                         f"scale_dtype={scale_dtype!r}'s normal range ({tiny:.3g}); use "
                         "scale_dtype='float32'")
    return stored


class CodebookScheme:
    """Front of ``lowbit.quantize(x, scheme="codebook", ...)`` (module docstring)."""

    name = "codebook"

    def quantize(self, arr: Array, origin: Origin, *, codebook: Any, bits: int | None = None,
                 scale: str | None = "absmax", axis: int | None = -1, group_size: int | None = None,
                 scale_dtype: str = "float32", rounding: str = "nearest_even",
                 seed: int | None = None, rbits: int = 16, first_index: int = 0) -> QuantizedArray:
        """Encode ``arr`` with a codebook (parameters: module docstring).

        Raises
        ------
        ValueError
            No or an unknown ``codebook``, ``bits`` in conflict with it, bad ``scale``,
            ``axis``, ``group_size``, ``scale_dtype``, ``rounding``, ``seed`` or ``rbits``,
            NaN/Inf in ``x``, or a scale ``scale_dtype`` cannot hold.
        """
        from lowbit.rounding.core import check_first_index

        if codebook is None:
            raise ValueError(f"scheme 'codebook' needs codebook= (a lowbit.formats.Codebook or one "
                             f"of {codebooks.NAMES})")
        if scale is not None and scale not in SCALES:
            raise ValueError(f"scale must be None or one of {SCALES}, got {scale!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS} for scheme 'codebook', got {rounding!r}")
        scale_dtype = scales.check_scale_dtype(scale_dtype)
        mode = mode_code(rounding)
        seed = check_seed(seed, rounding)
        rbits = check_rbits(rbits)
        off = check_first_index(first_index)
        shape = tuple(int(s) for s in arr.shape)
        ax, gs, block = check_grouping(shape, axis, group_size, scaled=scale is not None)
        cb = codebooks.resolve(codebook, bits=bits, dim=block)
        x = kernel_input(axis_last(arr, ax), origin.dtype).reshape(-1)
        xp = xp_of(x)
        fields: dict[str, Array] = {}
        if scale is None:
            # the absmax kernel reads every dtype (bfloat16 bits on the GPU too): NaN if non-finite
            amax = xp.empty(1, xp.float64)
            backend(x).block_absmax(x, max(x.size, 1), amax)
            if not bool(xp.isfinite(amax).all()):
                raise ValueError("x contains NaN or Inf; scheme 'codebook' needs finite values")
            scale64 = xp.ones(1, xp.float64)
        else:
            fields["scale"] = group_scales(x, block, scale, cb, scale_dtype)
            scale64 = scales.load(fields["scale"], scale_dtype).astype(xp.float64)
        packed = encode_levels(x, cb, block, scale64, mode=mode, seed=seed or 0, first_index=off, rbits=rbits)
        meta = CodebookMeta(
            shape=shape, dtype=origin.dtype, bits=cb.bits, codebook=cb.name, levels=cb.levels,
            distribution=cb.distribution, scale=scale, axis=ax, group_size=gs, scale_dtype=scale_dtype,
            rounding=rounding, seed=seed, rbits=rbits, first_index=off).to_meta()
        return QuantizedArray(packed, fields, meta, origin)

    def dequantize(self, q: QuantizedArray) -> Array:
        m = cast(CodebookMeta, parse(q.meta))
        ax, _, block = check_grouping(m.shape, m.axis, m.group_size, scaled=m.scale is not None)
        xp = xp_of(q.codes)
        if m.scale is None:
            scale64 = xp.ones(1, xp.float64)
        else:
            scale64 = scales.load(q.fields["scale"], m.scale_dtype).astype(xp.float64)
        return axis_back(decode(q.codes, m.format, m.size, block, scale64, q.origin.dtype), m.shape, ax)


codebook = CodebookScheme()
