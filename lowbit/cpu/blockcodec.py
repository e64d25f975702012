"""Numba kernels of the block formats (MX, NVFP4), one pass per block: block_quantize,
block_dequantize, finite_block_amax.  Twins: lowbit/cuda/blockcodec.cu.

Layout shared by the three: ``x`` (or ``out``) is flat and C-contiguous, rows of ``length``
elements (x.size = n_rows * length); each row is split into ceil(length / block_size) blocks,
the last one padded with zeros to ``block_size`` (a power of two from 8 to 256, so that a
block packs into whole units of 8 codes, lowbit/cpu/packing.py).  Block b of the padded
stream holds padded elements b * block_size ... (b + 1) * block_size - 1, and the random-bit
counter of padded element i is ``first_index + i``: exactly what the element codec
(:func:`lowbit.cpu.codec.minifloat_encode` with block scales, then ``pack_codes``) does on the
zero-padded array, in one pass.

Scales (``scales``, uint8 per block), from amax = max |x| over the block's real elements
(NaN if it holds NaN or +-Inf):

* ``tensor_scale == 0``: E8M0 (OCP MX v1.0): s = floor(log2 amax) - ``scale_emax`` clamped to
  [-127, 127] (-127 for amax = 0), code s + 127, 0xFF for a NaN block; the scale is 2**s.
* ``tensor_scale > 0`` (NVFP4): code = ``scale_spec``(amax / 6 / tensor_scale) (nearest even,
  saturating, float64 operations in that order), scale = value(code) * tensor_scale.

Elements: x / scale (``scaled``: signed zeros in a block whose scale is 0 or NaN) rounded with
``mode`` into the MiniFloat ``spec`` (saturating), or, when ``fixed = (bits, frac_bits, qmin,
qmax)`` has bits > 0, into that FixedPoint (MXINT8).  With a power-of-two scale a normal float32
element takes the integer path (:func:`lowbit.cpu.codec.minifloat_encode_bits`, the same code);
everything else the float64 encoder.  Block formats saturate (OCP), so nothing is counted.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.codec import (
    SATURATE,
    Spec,
    f64_bits,
    fixed_encode_one,
    float32_bits,
    minifloat_decode_one,
    minifloat_encode_bits,
    minifloat_encode_one,
    pow2,
    scaled,
    span_absmax,
)
from lowbit.cpu.packing import get_code, load_unit, store_unit
from lowbit.validate import NOT_FIXED, check_block_operands, check_tensor_scale  # noqa: F401

_U64 = nb.uint64


@nb.njit(inline="always", cache=True)
def block_scale(amax: float, scale_emax: int, scale_spec: Spec, tensor_scale: float) -> tuple[np.int64, float, np.int64]:
    """(scale code, float64 scale, exponent s of a power-of-two scale or -1024) of a block."""
    if tensor_scale == 0.0:
        if amax != amax:
            return np.int64(0xFF), np.nan, np.int64(-1024)
        s = np.int64(-127)
        if amax > 0.0:
            e = np.int64(f64_bits(amax) >> 52) - 1023  # type: ignore[call-arg]  # floor(log2 amax)
            s = min(max(e - scale_emax, -127), 127)
        return s + 127, pow2(s), s
    c, _, _ = minifloat_encode_one(amax / 6.0 / tensor_scale, scale_spec, SATURATE, 0, _U64(0), np.int64(0), 16)
    return np.int64(c), minifloat_decode_one(c, scale_spec) * tensor_scale, np.int64(-1024)


@nb.njit(inline="always", cache=True)
def element_code(x: float, sc: float, shift: int | np.integer, fast: bool, spec: Spec, fixed: tuple[int, int, int, int],
                 mode: int, seed: np.uint64, index: np.int64, rbits: int) -> np.uint64:
    """The code of x / sc (sc = 2**shift where ``fast``) in the block's element format."""
    fbits, frac_bits, qmin, qmax = fixed
    if fbits > 0:
        xi = np.float64(x) / sc if (sc != 0.0 and np.isfinite(sc)) else 0.0
        c, _, _ = fixed_encode_one(xi, fbits, frac_bits, qmin, qmax, SATURATE, mode, seed, index, rbits)
        return c
    b: int = float32_bits(x)  # type: ignore[call-arg]  # -1 for a float64 x
    if fast and b >= 0:
        if (b & 0x7FFFFFFF) == 0:  # +-0
            return _U64(b >> 31) << _U64(spec[0] - 1)
        field = (b >> 23) & 0xFF
        if field != 255 and field != 0:
            return minifloat_encode_bits(b, shift, spec, mode, seed, index, rbits)
    c, _, _ = minifloat_encode_one(scaled(np.float64(x), sc), spec, SATURATE, mode, seed, index, rbits)
    return c


@nb.njit(parallel=True, cache=True)
def _block_quantize(x: np.ndarray, length: int, block_size: int, spec: Spec, fixed: tuple[int, int, int, int],
                    scale_emax: int, scale_spec: Spec, tensor_scale: float, mode: int, seed: np.uint64,
                    first_index: np.int64, rbits: int, packed: np.ndarray, scales: np.ndarray) -> None:
    bits = fixed[0] if fixed[0] > 0 else spec[0]
    per_row = (length + block_size - 1) // block_size
    units = block_size // 8
    fast_format = fixed[0] == 0 and spec[1] <= 22 and spec[0] <= 16
    for blk in nb.prange(scales.shape[0]):
        row = blk // per_row
        start = row * length + (blk - row * per_row) * block_size
        stop = min(start + block_size, row * length + length)
        code, sc, shift = block_scale(span_absmax(x, start, stop), scale_emax, scale_spec, tensor_scale)
        scales[blk] = np.uint8(code)
        fast = fast_format and shift != -1024
        for u in range(units):
            acc = _U64(0)
            for j in range(8):
                i = start + u * 8 + j
                if i < stop:  # padding encodes as code 0 in every mode
                    c = element_code(x[i], sc, shift, fast, spec, fixed, mode, seed,
                                     first_index + blk * block_size + u * 8 + j, rbits)
                    acc |= c << _U64(j * bits)
            store_unit(packed, blk * units + u, bits, acc, bits)


def block_quantize(x: np.ndarray, length: int, block_size: int, spec: Spec, fixed: tuple[int, int, int, int],
                   scale_emax: int, scale_spec: Spec, tensor_scale: float, mode: int, seed: np.uint64,
                   first_index: int, rbits: int, packed: np.ndarray, scales: np.ndarray) -> None:
    """packed / scales of x in blocks (module docstring): ``packed`` holds n_blocks *
    block_size * bits / 8 bytes, ``scales`` n_blocks codes (n_blocks = n_rows *
    ceil(length / block_size)).  ValueError for sizes that do not fit."""
    bits = fixed[0] if fixed[0] > 0 else spec[0]
    check_block_operands(x.shape[0], length, block_size, bits, scales.shape[0], packed.shape[0])
    if scales.dtype != np.uint8 or packed.dtype != np.uint8:
        raise TypeError(f"packed and scales must be uint8, got {packed.dtype} and {scales.dtype}")
    tensor_scale = check_tensor_scale(tensor_scale)
    _block_quantize(x, length, block_size, spec, fixed, scale_emax, scale_spec, tensor_scale, mode,
                    np.uint64(seed), np.int64(first_index), rbits, packed, scales)


@nb.njit(parallel=True, cache=True)
def _block_dequantize(packed: np.ndarray, scales: np.ndarray, length: int, block_size: int, bits: int,
                      table: np.ndarray, scale_spec: Spec, tensor_scale: float, out: np.ndarray) -> None:
    per_row = (length + block_size - 1) // block_size
    units = block_size // 8
    for blk in nb.prange(scales.shape[0]):
        row = blk // per_row
        start = row * length + (blk - row * per_row) * block_size
        stop = min(start + block_size, row * length + length)
        code = np.int64(scales[blk])
        if tensor_scale == 0.0:
            sc = np.nan if code == 0xFF else pow2(code - 127)
        else:
            sc = minifloat_decode_one(_U64(code), scale_spec) * tensor_scale
        for u in range(units):
            if start + u * 8 >= stop:
                break
            acc = load_unit(packed, blk * units + u, bits, bits)
            for j in range(min(8, stop - start - u * 8)):
                out[start + u * 8 + j] = table[get_code(acc, j, bits)] * sc


def block_dequantize(packed: np.ndarray, scales: np.ndarray, length: int, block_size: int, bits: int,
                     table: np.ndarray, scale_spec: Spec, tensor_scale: float, out: np.ndarray) -> None:
    """out (rows of ``length``, padding dropped) = table[code] * scale of the code's block (one
    float64 product, then out's dtype); scales decoded as :func:`block_quantize` writes them."""
    check_block_operands(out.shape[0], length, block_size, bits, scales.shape[0], packed.shape[0], "out")
    check_tensor_scale(tensor_scale)
    if not 1 <= bits <= 8 or table.shape[0] < (1 << bits) or table.dtype != np.float64:
        raise ValueError(f"block_dequantize takes 1..8-bit codes and a float64 table of 2**bits values; "
                         f"got bits={bits}, {table.shape[0]} values of {table.dtype}")
    _block_dequantize(packed, scales, length, block_size, bits, table, scale_spec, float(tensor_scale), out)


@nb.njit(parallel=True, cache=True)
def _finite_block_amax(x: np.ndarray, length: int, block_size: int, out: np.ndarray) -> None:
    n_rows = x.shape[0] // length
    per_row = (length + block_size - 1) // block_size
    part = np.zeros(n_rows)
    for row in nb.prange(n_rows):
        m = 0.0
        for k in range(per_row):
            start = row * length + k * block_size
            a = span_absmax(x, start, min(start + block_size, row * length + length))
            if a == a:
                m = max(m, a)
        part[row] = m
    out[0] = part.max() if n_rows else 0.0


def finite_block_amax(x: np.ndarray, length: int, block_size: int, out: np.ndarray) -> None:
    """out[0] = the largest max |x| over the blocks (as :func:`block_quantize` forms them) that
    hold no NaN or +-Inf, 0.0 if none: NVFP4's tensor amax (float64)."""
    n_blocks = x.shape[0] // length * -(-length // block_size) if length > 0 else 0
    check_block_operands(x.shape[0], length, block_size, 0, n_blocks, 0)
    if out.shape[0] != 1 or out.dtype != np.float64:
        raise ValueError(f"out must be one float64, got shape {out.shape} of {out.dtype}")
    _finite_block_amax(x, length, block_size, out)


# the Numba dispatchers behind the checking wrappers (lowbit.cpu._firstuse announces their first compile)
block_quantize.dispatchers = (_block_quantize,)  # type: ignore[attr-defined]
block_dequantize.dispatchers = (_block_dequantize,)  # type: ignore[attr-defined]
finite_block_amax.dispatchers = (_finite_block_amax,)  # type: ignore[attr-defined]
