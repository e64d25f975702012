"""CPU kernel table (Numba).  Kernels hold no policy: fronts validate and allocate.

Every name here has a twin with the same signature in :mod:`lowbit.cuda`, or is
listed in ``lowbit.cuda.KNOWN_GAPS``; ``tests/test_backends.py`` checks it.
"""

from lowbit.cpu.balance import balance_tiles
from lowbit.cpu.blockcodec import block_dequantize, block_quantize, finite_block_amax
from lowbit.cpu.codebook import block_norm, codebook_encode
from lowbit.cpu.codec import (
    block_absmax,
    decode_table,
    fixed_encode,
    minifloat_decode,
    minifloat_encode,
)
from lowbit.cpu.diffusion import diffuse_2d, diffuse_rows
from lowbit.cpu.hadamard import fwht, hadamard_signs
from lowbit.cpu.kv_attend import kv_attend
from lowbit.cpu.kvarn import kvarn_decode, kvarn_encode
from lowbit.cpu.kvarn_grid import kvarn_grid_decode, kvarn_grid_encode
from lowbit.cpu.packing import pack_codes, unpack_codes
from lowbit.cpu.rounding import round_elementwise
from lowbit.cpu.rtn import (
    group_abs_mean,
    group_range,
    rtn_decode,
    rtn_encode,
    rtn_quantize_groups,
)

KERNELS = (
    "balance_tiles",
    "fwht",
    "hadamard_signs",
    "block_absmax",
    "block_dequantize",
    "block_quantize",
    "finite_block_amax",
    "block_norm",
    "codebook_encode",
    "decode_table",
    "diffuse_2d",
    "diffuse_rows",
    "fixed_encode",
    "minifloat_decode",
    "minifloat_encode",
    "round_elementwise",
    "group_abs_mean",
    "group_range",
    "pack_codes",
    "rtn_decode",
    "rtn_encode",
    "rtn_quantize_groups",
    "unpack_codes",
    "kv_attend",
    "kvarn_decode",
    "kvarn_encode",
    "kvarn_grid_decode",
    "kvarn_grid_encode",
)

__all__ = list(KERNELS)

from lowbit.cpu._firstuse import watch as _watch  # noqa: E402

_watch(globals(), KERNELS)  # a one-line notice before a kernel's first (cold) compilation
