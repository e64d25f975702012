"""CUDA kernel table (CuPy raw kernels).  Kernels hold no policy.

Each wrapper has the same name and signature as its CPU twin in :mod:`lowbit.cpu`,
takes CuPy arrays, and launches on the current CuPy stream.  CuPy is imported
lazily, inside the wrappers, so this table can be inspected without a GPU.
"""

from lowbit.cuda.balance import balance_tiles
from lowbit.cuda.hadamard import fwht, hadamard_signs
from lowbit.cuda.packing import pack_codes, unpack_codes
from lowbit.cuda.rtn import (
    group_abs_mean,
    group_range,
    rtn_decode,
    rtn_encode,
    rtn_quantize_groups,
)

KERNELS: tuple[str, ...] = (
    "balance_tiles",
    "fwht",
    "group_abs_mean",
    "group_range",
    "hadamard_signs",
    "pack_codes",
    "rtn_decode",
    "rtn_encode",
    "rtn_quantize_groups",
    "unpack_codes",
)

#: CPU kernels that have no CUDA twin yet (a known gap, documented in docs/backends.md).
#: A CuPy array reaching one of these raises NotImplementedError naming the kernel.
KNOWN_GAPS: tuple[str, ...] = (
    # rounding and formats (issue 3)
    "block_absmax",
    "decode_table",
    "diffuse_2d",
    "diffuse_rows",
    "fixed_encode",
    "minifloat_decode",
    "minifloat_encode",
    "pack_pow2_codes",
    "round_elementwise",
    # KV cache (issue 5)
    "kv_attend",
    "kvarn_decode",
    "kvarn_encode",
)

__all__ = list(KERNELS)


def __getattr__(name: str) -> object:
    if name in KNOWN_GAPS:
        raise NotImplementedError(
            f"kernel {name!r} has no CUDA twin yet (a known gap, see docs/backends.md); "
            "copy the data to the host explicitly (e.g. cupy.asnumpy) to use the CPU kernel"
        )
    raise AttributeError(f"module 'lowbit.cuda' has no attribute {name!r}")
