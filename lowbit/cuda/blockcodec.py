"""CUDA wrappers for the block-format kernels: same names and signatures as :mod:`lowbit.cpu.blockcodec`.

Kernels in ``lowbit/cuda/blockcodec.cu`` (one pass: load, block amax by warp shuffles, scale,
element codes, packed store), bit-identical to the Numba twins.  The arguments are checked as
the CPU twins check them (:func:`lowbit.validate.check_block_operands`), and every array must
be a C-contiguous CuPy array on the current device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, check_operands, kernel, persistent_grid, suffix
from lowbit.cuda.codec import _spec_args, elem_defines, integer_path
from lowbit.formats import FP4_E2M1
from lowbit.validate import check_block_operands, check_tensor_scale

Spec = tuple[int, int, int, int, float, int, int, int]

#: Units of 8 codes per thread and iteration of block_dequantize (LOWBIT_DEQ_UNITS in blockcodec.cu).
DEQ_UNITS = 4
#: Units of 8 elements per thread and iteration of finite_block_amax (LOWBIT_AMAX_UNITS).
AMAX_UNITS = 4


def _uint8(**arrays: Any) -> None:
    for name, a in arrays.items():
        if a.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8, got {a.dtype}")


def _fp4_path(x: Any, spec: Spec, block_size: int, scale_spec: Spec, tensor: float, mode: int) -> bool:
    """Whether blockcodec_fp4.cu's kernels take the block format: fp4 e2m1 elements of
    float16 / bfloat16 / float32 input, in MX blocks of 32 (every mode) or NVFP4 blocks of 16
    (nearest even; a tensor scale of float32 precision and scale codes of at most 24
    significant bits: the kernels' exactness argument; at most 8 bits: the 128 magnitude codes
    of its scale table)."""
    if spec != FP4_E2M1.spec or x.dtype.itemsize > 4:
        return False
    if tensor == 0.0:
        return block_size == 32
    return (block_size == 16 and int(mode) == 0 and scale_spec[1] <= 23 and scale_spec[0] <= 8
            and float(np.float32(tensor)) == tensor)


def block_quantize(x: Any, length: int, block_size: int, spec: Spec, fixed: tuple[int, int, int, int],
                   scale_emax: int, scale_spec: Spec, tensor_scale: float, mode: int, seed: np.uint64,
                   first_index: int, rbits: int, packed: Any, scales: Any) -> None:
    bits = fixed[0] if fixed[0] > 0 else spec[0]
    n_blocks = check_block_operands(x.shape[0], length, block_size, bits, scales.shape[0], packed.shape[0])
    _uint8(packed=packed, scales=scales)
    tensor = check_tensor_scale(tensor_scale)
    check_operands(x=x, packed=packed, scales=scales)
    if n_blocks == 0:
        return
    fbits, frac_bits, qmin, qmax = fixed
    units = n_blocks * (block_size // 8)
    if fbits == 0 and _fp4_path(x, spec, block_size, scale_spec, tensor, mode):
        # fp4 e2m1 (blockcodec_fp4.cu): a thread per block
        fp4 = kernel("blockcodec_fp4", f"lowbit_block_quantize_fp4_{'nv' if tensor else f'mx{int(mode)}'}_"
                     f"{suffix(x.dtype)}", elem_defines(FP4_E2M1.spec))
        if tensor:
            fp4(persistent_grid(n_blocks), (THREADS,),
                (x, np.int64(length), *_spec_args(scale_spec), np.float64(tensor), packed, scales, np.int64(n_blocks)))
        else:
            fp4(persistent_grid(n_blocks), (THREADS,),
                (x, np.int64(length), np.int32(scale_emax), np.uint64(seed), np.int64(first_index), np.int32(rbits),
                 packed, scales, np.int64(n_blocks)))
        return
    if tensor == 0.0 and fbits == 0 and integer_path(x, spec):
        # MX: the integer kernels, one per mode, two units of 16-bit input per thread
        per_thread = 2 if x.dtype.itemsize <= 2 else 1
        k = kernel("blockcodec", f"lowbit_block_quantize_mx{int(mode)}_{suffix(x.dtype)}", elem_defines(spec))
        k(persistent_grid(-(-units // per_thread)), (THREADS,),
          (x, np.int64(length), np.int32(block_size), *_spec_args(spec), np.int32(scale_emax),
           np.uint64(seed), np.int64(first_index), np.int32(rbits), packed, scales, np.int64(n_blocks)))
        return
    k = kernel("blockcodec", f"lowbit_block_quantize_{suffix(x.dtype)}")
    k(persistent_grid(units), (THREADS,),  # a thread per unit of 8 elements
      (x, np.int64(x.shape[0]), np.int64(length), np.int32(block_size), *_spec_args(spec), np.int32(fbits),
       np.int32(frac_bits), np.int64(qmin), np.int64(qmax), np.int32(scale_emax), *_spec_args(scale_spec),
       np.float64(tensor), np.int32(mode), np.uint64(seed), np.int64(first_index), np.int32(rbits), packed, scales,
       np.int64(n_blocks)))


def block_dequantize(packed: Any, scales: Any, length: int, block_size: int, bits: int, table: Any,
                     scale_spec: Spec, tensor_scale: float, out: Any) -> None:
    n_blocks = check_block_operands(out.shape[0], length, block_size, bits, scales.shape[0], packed.shape[0],
                                    "out")
    tensor = check_tensor_scale(tensor_scale)
    if not 1 <= bits <= 8 or table.shape[0] < (1 << bits) or table.dtype != np.float64:
        raise ValueError(f"block_dequantize takes 1..8-bit codes and a float64 table of 2**bits values; "
                         f"got bits={bits}, {table.shape[0]} values of {table.dtype}")
    _uint8(packed=packed, scales=scales)
    check_operands(packed=packed, scales=scales, table=table, out=out)
    if n_blocks == 0:
        return
    k = kernel("blockcodec", f"lowbit_block_dequantize_{suffix(out.dtype)}")
    k(persistent_grid(-(-n_blocks * (block_size // 8) // DEQ_UNITS)), (THREADS,),  # DEQ_UNITS units per thread
      (packed, scales, np.int64(length), np.int32(block_size), np.int32(bits), table, *_spec_args(scale_spec),
       np.float64(tensor), out, np.int64(n_blocks)))


def finite_block_amax(x: Any, length: int, block_size: int, out: Any) -> None:
    n_blocks = x.shape[0] // length * -(-length // block_size) if length > 0 else 0
    check_block_operands(x.shape[0], length, block_size, 0, n_blocks, 0)
    if out.shape[0] != 1 or out.dtype != np.float64:
        raise ValueError(f"out must be one float64, got shape {out.shape} of {out.dtype}")
    check_operands(x=x, out=out)
    out.fill(0)
    if n_blocks == 0:
        return
    k = kernel("blockcodec", f"lowbit_finite_block_amax_{suffix(x.dtype)}")
    k(persistent_grid(-(-n_blocks * (block_size // 8) // AMAX_UNITS)), (THREADS,),  # AMAX_UNITS units per thread
      (x, np.int64(length), np.int32(block_size), out, np.int64(n_blocks)))
