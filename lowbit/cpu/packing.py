"""Numba kernels: pack / unpack k-bit codes (layout in docs/packing.md).

Element c occupies bits [c*k, c*k + k) of a little-endian bit stream, so
8 codes always fill exactly k bytes ("a unit"); kernels work unit by unit.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_U64 = nb.uint64


@nb.njit(inline="always", cache=True)
def store_unit(packed: np.ndarray, unit: int, bits: int, acc: np.uint64, nbytes: int) -> None:
    base = unit * bits
    for b in range(nbytes):
        packed[base + b] = np.uint8((acc >> _U64(8 * b)) & _U64(0xFF))


@nb.njit(inline="always", cache=True)
def load_unit(packed: np.ndarray, unit: int, bits: int, nbytes: int) -> np.uint64:
    base = unit * bits
    acc = _U64(0)
    for b in range(nbytes):
        acc |= _U64(packed[base + b]) << _U64(8 * b)
    return acc


@nb.njit(parallel=True, cache=True)
def pack_codes(codes: np.ndarray, bits: int, packed: np.ndarray) -> None:
    """Pack uint8 ``codes`` (values < 2**bits) into ``packed`` (ceil(n*bits/8) bytes)."""
    n = codes.shape[0]
    units = (n + 7) // 8
    mask = _U64((1 << bits) - 1)
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = _U64(0)
        for i in range(start, stop):
            acc |= (_U64(codes[i]) & mask) << _U64((i - start) * bits)
        nbytes = min(bits, packed.shape[0] - u * bits)
        store_unit(packed, u, bits, acc, nbytes)


@nb.njit(parallel=True, cache=True)
def unpack_codes(packed: np.ndarray, bits: int, codes: np.ndarray) -> None:
    """Inverse of :func:`pack_codes`: fill uint8 ``codes`` from ``packed``."""
    n = codes.shape[0]
    units = (n + 7) // 8
    mask = _U64((1 << bits) - 1)
    for u in nb.prange(units):
        start = u * 8
        stop = min(start + 8, n)
        acc = load_unit(packed, u, bits, min(bits, packed.shape[0] - u * bits))
        for i in range(start, stop):
            codes[i] = np.uint8((acc >> _U64((i - start) * bits)) & mask)
