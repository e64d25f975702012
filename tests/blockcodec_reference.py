"""The multi-pass composition the block-format fronts ran before the fused kernels (lowbit
2026-12-03, lowbit/blockfmt.py at 0ec0c65), kept as the reference the fused kernels must equal
byte for byte: block_absmax, E8M0 / e4m3 scales by array operations, the element encoder with
block scales, pack_codes; decoding by decode_table."""

from __future__ import annotations

import numpy as np

import lowbit.cpu as cpu
from lowbit.blockfmt import NVFP4_RANGE, e8m0_scales, e8m0_values
from lowbit.codec import decode_values
from lowbit.formats import FP8_E4M3, BlockFormat, FixedPoint


def padded_rows(x: np.ndarray, length: int, block_size: int) -> np.ndarray:
    rows = x.reshape(-1, length)
    padded = -(-length // block_size) * block_size
    if padded != length:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], padded - length), rows.dtype)], axis=1)
    return np.ascontiguousarray(rows).reshape(-1)


def tensor_amax(x: np.ndarray, length: int, block_size: int) -> float:
    flat = padded_rows(x, length, block_size)
    amax = np.empty(flat.size // block_size)
    cpu.block_absmax(flat, block_size, amax)
    finite = amax[np.isfinite(amax)]
    return float(finite.max()) if finite.size else 0.0


def tensor_scale_of(top: float) -> float:
    t = np.float32(top / NVFP4_RANGE)
    return float(t) if t > 0 else 1.0


def quantize(x: np.ndarray, length: int, fmt: BlockFormat, mode: int = 0, seed: int = 0, first_index: int = 0,
             rbits: int = 16, tensor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(packed, scale codes) of flat float32/float64 ``x`` in rows of ``length``."""
    bs, elem = fmt.block_size, fmt.element
    flat = padded_rows(x, length, bs)
    amax = np.empty(flat.size // bs)
    cpu.block_absmax(flat, bs, amax)
    if fmt.scale == "e8m0":
        codes, scale64 = e8m0_scales(amax, elem.emax)
    else:
        bsc = np.ascontiguousarray(amax / 6.0 / tensor)
        codes = np.empty(bsc.size, np.uint8)
        cpu.minifloat_encode(bsc, max(bsc.size, 1), np.ones(1), FP8_E4M3.spec, 0, 0, np.uint64(0), 0, 16, codes,
                             np.empty(0, np.uint8))
        scale64 = FP8_E4M3.decode_table()[codes] * tensor
    q = np.empty(flat.size, np.uint8)
    st = np.empty(0, np.uint8)
    if isinstance(elem, FixedPoint):
        cpu.fixed_encode(flat, bs, scale64, elem.bits, elem.frac_bits, -127, elem.code_max, 0, mode,
                         np.uint64(seed), first_index, rbits, q, st)
    else:
        cpu.minifloat_encode(flat, bs, scale64, elem.spec, 0, mode, np.uint64(seed), first_index, rbits, q, st)
    if elem.bits == 8:
        return q, codes.astype(np.uint8)
    packed = np.empty(flat.size * elem.bits // 8, np.uint8)
    cpu.pack_codes(q, elem.bits, packed)
    return packed, codes.astype(np.uint8)


def dequantize(packed: np.ndarray, scales: np.ndarray, length: int, n_rows: int, fmt: BlockFormat,
               tensor: float = 0.0) -> np.ndarray:
    """float64 values, rows of ``length`` (padding dropped)."""
    bs = fmt.block_size
    padded = -(-length // bs) * bs
    sc = e8m0_values(scales) if fmt.scale == "e8m0" else FP8_E4M3.decode_table()[scales] * tensor
    out = np.empty(n_rows * padded)
    cpu.decode_table(packed, fmt.element.bits, decode_values(fmt.element), bs, sc, out)
    return np.ascontiguousarray(out.reshape(n_rows, padded)[:, :length]).reshape(-1)
