"""lowbit: low-bit numerics on numpy, CuPy and PyTorch arrays.

Importing lowbit imports neither cupy, torch nor transformers.
"""

__version__ = "0.1.0"

from lowbit.api import dequantize, quantize
from lowbit.packing import pack, unpack
from lowbit.quantized import QuantizedArray, load
from lowbit.rounding import round  # noqa: A004 - lowbit.round is the public name
from lowbit import formats  # number-format records (lowbit.formats.FP8_E4M3, ...)
from lowbit import codebooks  # codebook designs (lowbit.codebooks.lloyd_max, normal_float)
from lowbit.transforms import balance, hadamard, hadamard_matrix, inverse_hadamard

__all__ = [
    "QuantizedArray",
    "balance",
    "codebooks",
    "dequantize",
    "formats",
    "hadamard",
    "hadamard_matrix",
    "inverse_hadamard",
    "load",
    "pack",
    "quantize",
    "round",
    "unpack",
]

from lowbit import api as _api  # noqa: E402

_api._document_schemes()  # help(lowbit.quantize) lists every scheme's options, read from them
