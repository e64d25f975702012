"""Pack and unpack k-bit codes, k in 1..8.

Layout (``docs/packing.md``): code c occupies bits [c*k, c*k + k) of a
little-endian bit stream, least significant bit first.  For k in {1, 2, 4, 8}
this is "code c lives in byte c // (8/k) at bit shift (c mod (8/k)) * k";
3-, 5-, 6- and 7-bit codes straddle byte boundaries.  n codes take ceil(n*k/8) bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.arrays import backend, contiguous, from_backend, to_backend, xp_of

#: Code widths the packer supports.
PACK_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or bits not in PACK_BITS:
        raise ValueError(f"bits must be one of {PACK_BITS}, got {bits!r}")
    return int(bits)


def packed_size(n: int, bits: int) -> int:
    """Bytes needed for ``n`` codes of ``bits`` bits."""
    return (n * _check_bits(bits) + 7) // 8


def pack(codes: Any, bits: int) -> Any:
    """Pack unsigned codes into bytes.

    Parameters
    ----------
    codes : uint8 array (numpy, cupy or torch), any shape
        Values in [0, 2**bits); flattened in C order.
    bits : int
        Code width, 1..8.

    Returns
    -------
    uint8 array, shape (ceil(codes.size * bits / 8),), same library and device.

    Raises
    ------
    TypeError
        ``codes`` is not uint8.
    ValueError
        ``bits`` unsupported, or a code does not fit in ``bits`` bits.
    """
    bits = _check_bits(bits)
    arr, origin = to_backend(codes, "codes", allow_empty=True, dtypes=("uint8",))
    flat = contiguous(arr).reshape(-1)
    xp = xp_of(flat)
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"codes must be < 2**bits = {1 << bits}, got a code {int(flat.max())}")
    out = xp.empty((flat.size * bits + 7) // 8, xp.uint8)
    if flat.size:
        backend(flat).pack_codes(flat, bits, out)
    return from_backend(out, origin)


def unpack(packed: Any, bits: int, count: int) -> Any:
    """Inverse of :func:`pack`: the first ``count`` codes as a flat uint8 array.

    Raises
    ------
    ValueError
        ``bits`` unsupported, or ``packed`` is shorter than ceil(count * bits / 8) bytes.
    """
    bits = _check_bits(bits)
    arr, origin = to_backend(packed, "packed", allow_empty=True, dtypes=("uint8",))
    flat = contiguous(arr).reshape(-1)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    need = (int(count) * bits + 7) // 8
    if flat.size < need:
        raise ValueError(f"packed holds {flat.size} bytes; {count} codes of {bits} bits need {need}")
    out = xp_of(flat).empty(int(count), np.uint8)
    if count:
        backend(flat).unpack_codes(flat[:need], bits, out)
    return from_backend(out, origin)
