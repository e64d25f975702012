"""CUDA wrappers for packing kernels: same names and signatures as :mod:`lowbit.cpu.packing`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, grid, kernel


def pack_codes(codes: Any, bits: int, packed: Any) -> None:
    n = codes.shape[0]
    kernel("packing", "lowbit_pack_codes")(
        grid((n + 7) // 8), (THREADS,), (codes, np.int64(n), np.int32(bits), packed, np.int64(packed.shape[0]))
    )


def unpack_codes(packed: Any, bits: int, codes: Any) -> None:
    n = codes.shape[0]
    kernel("packing", "lowbit_unpack_codes")(
        grid((n + 7) // 8), (THREADS,), (packed, np.int64(packed.shape[0]), np.int32(bits), codes, np.int64(n))
    )
