"""Numba kernels: pack / unpack k-bit codes (layout in docs/packing.md), and the unit helpers
every kernel that reads or writes packed codes uses.

Element c occupies bits [c*k, c*k + k) of a little-endian bit stream, so 8 codes always fill
exactly k bytes ("a unit"): unit u is bytes [u*k, u*k + k), and code j of a unit sits at bit
j*k of the unit's 64-bit little-endian word.  :func:`put_code` / :func:`get_code` place and
read a code in a unit word, :func:`store_unit` / :func:`load_unit` move a word to / from the
bytes (the last unit of a stream may be partial: :func:`unit_bytes`), :func:`pack_unit` /
:func:`unpack_unit` do a whole unit from / to a code array.  The fused encoders and decoders
(rtn, KVarN, element formats, fused attention) call these; there is no other packer.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_U64 = nb.uint64


@nb.njit(inline="always", cache=True)
def put_code(acc: np.uint64, j: int, bits: int, code: np.integer | int) -> np.uint64:
    """The unit word ``acc`` with code ``j`` (< 2**bits, slot j still zero) set."""
    return acc | (_U64(code) << _U64(j * bits))


@nb.njit(inline="always", cache=True)
def get_code(acc: np.uint64, j: int, bits: int) -> np.int64:
    """Code ``j`` of the unit word ``acc``."""
    return np.int64((acc >> _U64(j * bits)) & ((_U64(1) << _U64(bits)) - _U64(1)))


@nb.njit(inline="always", cache=True)
def unit_bytes(packed: np.ndarray, unit: int, bits: int) -> int:
    """Bytes of unit ``unit`` that ``packed`` holds: ``bits``, fewer for a partial last unit."""
    return min(bits, packed.shape[0] - unit * bits)


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


@nb.njit(inline="always", cache=True)
def pack_unit(codes: np.ndarray, unit: int, bits: int, packed: np.ndarray) -> None:
    """Pack codes[8*unit : 8*unit + 8] (fewer at the end of ``codes``) into unit ``unit``."""
    start = unit * 8
    stop = min(start + 8, codes.shape[0])
    mask = (_U64(1) << _U64(bits)) - _U64(1)
    acc = _U64(0)
    for i in range(start, stop):
        acc = put_code(acc, i - start, bits, _U64(codes[i]) & mask)
    store_unit(packed, unit, bits, acc, unit_bytes(packed, unit, bits))


@nb.njit(inline="always", cache=True)
def unpack_unit(packed: np.ndarray, unit: int, bits: int, codes: np.ndarray) -> None:
    """Inverse of :func:`pack_unit`."""
    start = unit * 8
    stop = min(start + 8, codes.shape[0])
    acc = load_unit(packed, unit, bits, unit_bytes(packed, unit, bits))
    for i in range(start, stop):
        codes[i] = get_code(acc, i - start, bits)


@nb.njit(parallel=True, cache=True)
def pack_codes(codes: np.ndarray, bits: int, packed: np.ndarray) -> None:
    """Pack uint8 ``codes`` (values < 2**bits) into ``packed`` (ceil(n*bits/8) bytes)."""
    for u in nb.prange((codes.shape[0] + 7) // 8):
        pack_unit(codes, u, bits, packed)


@nb.njit(parallel=True, cache=True)
def unpack_codes(packed: np.ndarray, bits: int, codes: np.ndarray) -> None:
    """Inverse of :func:`pack_codes`: fill uint8 ``codes`` from ``packed``."""
    for u in nb.prange((codes.shape[0] + 7) // 8):
        unpack_unit(packed, u, bits, codes)
