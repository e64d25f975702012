"""Schemes ``mxfp8``, ``mxfp8_e5m2``, ``mxfp6``, ``mxfp6_e3m2``, ``mxfp4``, ``mxint8``, ``nvfp4``.

Block formats (records in :mod:`lowbit.formats`): ``block_size`` consecutive elements along
``axis`` share one 8-bit scale.  An axis whose length is not a multiple of the block size is
padded with zeros to the next multiple (the padding is stored, and dropped on decoding).

OCP MX v1.0 (``e8m0`` scale): per block, amax = max |x|; the shared exponent is
s = floor(log2(amax)) - element.emax, clamped to [-127, 127] (s = -127 when amax = 0), stored as
the E8M0 code s + 127; elements are x / 2**s rounded into the element format (saturating, as
OCP prescribes).  A block holding NaN or +-Inf gets the NaN scale 0xFF and decodes to NaN.
MXINT8 elements are int8 with an implicit 2**-6 (FixedPoint Q1.6), clamped to -127..127.

NVFP4: one float32 tensor scale t = amax(x) / (6 * 448) (1 when amax = 0); per 16-element
block the e4m3 scale c = e4m3(amax_block / 6 / t) (nearest-even, saturating); elements are
x / (c * t) rounded to fp4 e2m1 (saturating).  Decoding: e2m1 * c * t.

Kernels: one pass per block on every backend, ``block_quantize`` (amax, scale, element codes,
packing) and ``block_dequantize`` (lowbit/cpu/blockcodec.py, lowbit/cuda/blockcodec.cu); NVFP4
reduces its tensor amax first (``finite_block_amax``, one read of x) unless ``tensor_amax`` is
given.  The padding is never materialized: the kernels read rows of the axis' length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.arrays import (
    Array,
    Origin,
    axis_back,
    axis_last,
    backend,
    decode_output_dtype,
    kernel_input,
    to_dtype,
    xp_of,
)
from lowbit.codec import decode_values
from lowbit.formats import (
    BLOCK_FORMATS,
    E8M0_BIAS,
    E8M0_NAN,
    FP8_E4M3,
    BlockFormat,
    FixedPoint,
)
from lowbit.quantized import QuantizedArray
from lowbit.rounding.modes import mode_code
from lowbit.schema import BlockMeta
from lowbit.validate import NOT_FIXED, check_axis, check_rbits, check_seed

#: NVFP4's tensor-scale denominator: fp4 e2m1 max times fp8 e4m3 max.
NVFP4_RANGE = 6.0 * 448.0


def e8m0_scales(amax: Array, element_emax: int) -> tuple[Array, Array]:
    """(E8M0 codes uint8, scale values float64) from per-block amax (NaN for non-finite blocks)."""
    xp = xp_of(amax)
    finite = xp.isfinite(amax)
    safe = xp.where(finite & (amax > 0), amax, 1.0)
    e = xp.frexp(safe)[1].astype(xp.int64) - 1  # floor(log2(amax)), exact
    s = xp.clip(e - element_emax, -127, 127)
    s = xp.where(amax > 0, s, -127)
    codes = xp.where(finite, s + E8M0_BIAS, E8M0_NAN).astype(xp.uint8)
    return codes, e8m0_values(codes)


def e8m0_values(codes: Array) -> Array:
    """float64 2**(code - 127), NaN for 0xFF."""
    xp = xp_of(codes)
    v = xp.ldexp(xp.ones(codes.shape, xp.float64), codes.astype(xp.int32) - E8M0_BIAS)
    return xp.where(codes == E8M0_NAN, xp.nan, v)


class BlockScheme:
    """Front of one block-format scheme (``lowbit.quantize(x, scheme=name)``)."""

    def __init__(self, fmt: BlockFormat) -> None:
        self.fmt = fmt
        self.name = fmt.name

    def quantize(self, arr: Array, origin: Origin, *, axis: int = -1, rounding: str = "nearest_even",
                 seed: int | None = None, rbits: int = 16,
                 tensor_amax: float | None = None) -> QuantizedArray:
        """Quantize ``arr`` in blocks along ``axis`` (module docstring); ``rounding`` applies to
        the elements (any mode but ``diffuse``), scales follow the format's rule.

        ``tensor_amax`` (NVFP4 only): :meth:`tensor_amax` of the whole tensor when ``arr`` is
        one part of it (chunked quantization, :mod:`lowbit.dask`); by default, of ``arr``.
        """
        fmt, elem = self.fmt, self.fmt.element
        mode = mode_code(rounding, allow_diffuse=False)
        seed = check_seed(seed, rounding)
        rbits = check_rbits(rbits)
        if tensor_amax is not None and not fmt.tensor_scale:
            raise ValueError(f"tensor_amax applies to formats with a tensor scale (nvfp4), not {self.name}")
        if tensor_amax is not None and not (isinstance(tensor_amax, (int, float, np.floating))
                                            and 0 <= tensor_amax < math.inf):
            raise ValueError(f"tensor_amax must be a finite number >= 0, got {tensor_amax!r}")
        x, shape, ax, length = self._rows(arr, origin, axis)
        xp = xp_of(x)
        bs = fmt.block_size
        padded = -(-length // bs) * bs
        n_blocks = (x.size // length if length else 0) * (padded // bs)
        fields: dict[str, Array] = {}
        tensor = 0.0  # the kernels' "E8M0 scales"
        if fmt.tensor_scale:
            top = self._finite_max(x, length) if tensor_amax is None else float(tensor_amax)
            t32 = np.float32(top / NVFP4_RANGE)
            if not t32 > 0:  # all zeros (or amax so small that the tensor scale underflows)
                t32 = np.float32(1.0)
            fields["tensor_scale"] = xp.asarray([t32], xp.float32)
            tensor = float(t32)
        packed = xp.empty(n_blocks * bs * elem.bits // 8, xp.uint8)
        fields["scale"] = xp.empty(n_blocks, xp.uint8)
        if n_blocks:
            fixed = (elem.bits, elem.frac_bits, -127, elem.code_max) if isinstance(elem, FixedPoint) else NOT_FIXED
            spec = FP8_E4M3.spec if isinstance(elem, FixedPoint) else elem.spec  # (unused for fixed point)
            backend(x).block_quantize(x, length, bs, spec, fixed, elem.emax, FP8_E4M3.spec, tensor, mode,
                                      np.uint64(seed or 0), 0, rbits, packed, fields["scale"])
        meta = BlockMeta(scheme=self.name, shape=shape, dtype=origin.dtype, bits=elem.bits, axis=ax,
                         block_size=bs, padded_length=padded, rounding=rounding,
                         seed=seed, rbits=rbits).to_meta()
        return QuantizedArray(packed, fields, meta, origin)

    def tensor_amax(self, arr: Array, origin: Origin, axis: int = -1) -> float:
        """The largest max|x| over the blocks of ``arr`` that hold no NaN or Inf (0.0 if none):
        NVFP4's tensor scale is ``float32(tensor_amax / (6 * 448))``.  The tensor amax of a
        whole is the max of its parts' (block-aligned parts)."""
        x, _, _, length = self._rows(arr, origin, axis)
        return self._finite_max(x, length)

    def _finite_max(self, x: Array, length: int) -> float:
        if not x.size:
            return 0.0
        out = xp_of(x).empty(1, np.float64)
        backend(x).finite_block_amax(x, length, self.fmt.block_size, out)
        return float(out[0])

    def _rows(self, arr: Array, origin: Origin, axis: Any) -> tuple[Array, tuple[int, ...], int, int]:
        """(flat C-contiguous kernel input with the block axis last, shape, axis, its length)."""
        shape = tuple(int(s) for s in arr.shape)
        if axis is None:
            raise ValueError(f"{self.name} needs an axis to form blocks along; got axis=None")
        if not shape:
            raise ValueError(f"{self.name} needs x.ndim >= 1, got a 0-d array")
        check_axis(axis, len(shape))
        ax = int(axis) % len(shape)
        moved = axis_last(arr, ax)
        x = kernel_input(moved, origin.dtype).reshape(-1)
        return x, shape, ax, int(moved.shape[-1])

    def block_scales(self, q: QuantizedArray) -> Array:
        """float64 scale of every block of ``q`` (NaN for NaN blocks)."""
        xp = xp_of(q.codes)
        if self.fmt.scale == "e8m0":
            return e8m0_values(q.fields["scale"])
        tensor = float(q.fields["tensor_scale"][0])
        return xp.asarray(FP8_E4M3.decode_table())[q.fields["scale"]] * tensor

    def dequantize(self, q: QuantizedArray) -> Array:
        m = q.meta
        shape = tuple(m["shape"])
        xp = xp_of(q.codes)
        length = shape[m["axis"]]
        out = xp.empty(math.prod(shape), decode_output_dtype(q.codes, q.origin.dtype))
        if out.size:
            tensor = float(q.fields["tensor_scale"][0]) if self.fmt.tensor_scale else 0.0
            table = xp.asarray(decode_values(self.fmt.element))
            backend(q.codes).block_dequantize(q.codes, q.fields["scale"], length, self.fmt.block_size,
                                              self.fmt.element.bits, table, FP8_E4M3.spec, tensor, out)
        want = np.dtype(np.uint16) if q.origin.dtype == "bfloat16" else np.dtype(q.origin.dtype)
        flat = out if out.dtype == want else to_dtype(out, q.origin.dtype)
        return axis_back(flat, shape, m["axis"])


mxfp8 = BlockScheme(BLOCK_FORMATS["mxfp8"])
mxfp8_e5m2 = BlockScheme(BLOCK_FORMATS["mxfp8_e5m2"])
mxfp6 = BlockScheme(BLOCK_FORMATS["mxfp6"])
mxfp6_e3m2 = BlockScheme(BLOCK_FORMATS["mxfp6_e3m2"])
mxfp4 = BlockScheme(BLOCK_FORMATS["mxfp4"])
mxint8 = BlockScheme(BLOCK_FORMATS["mxint8"])
nvfp4 = BlockScheme(BLOCK_FORMATS["nvfp4"])
