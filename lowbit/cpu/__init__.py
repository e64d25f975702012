"""CPU kernel table (Numba).  Kernels hold no policy: fronts validate and allocate.

Every name here has a twin with the same signature in :mod:`lowbit.cuda`, or is
listed in ``lowbit.cuda.KNOWN_GAPS``; ``tests/test_backends.py`` checks it.
"""

from lowbit.cpu.packing import pack_codes, unpack_codes
from lowbit.cpu.rtn import group_abs_mean, group_range, rtn_decode, rtn_encode

KERNELS = (
    "group_abs_mean",
    "group_range",
    "pack_codes",
    "rtn_decode",
    "rtn_encode",
    "unpack_codes",
)

__all__ = list(KERNELS)
