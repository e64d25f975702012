"""CUDA wrappers for the format codec kernels: same names and signatures as :mod:`lowbit.cpu.codec`.

Kernels in ``lowbit/cuda/codec.cu`` (scalar codec in ``codec.cuh``, the decode_table and
block_absmax loops in ``codec_table.cuh``), bit-identical to the Numba twins: the same float64
and integer operations on the same values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, check_operands, kernel, persistent_grid, suffix
from lowbit.formats import MINIFLOATS

#: Code dtypes of the encoders / decoders (the format's width) -> kernel-name suffix.
_CODE_SUFFIX = {1: "u8", 2: "u16", 4: "u32"}
#: Units of 8 codes per thread and iteration of decode_table's vector loop (LOWBIT_DT_UNITS in codec_table.cuh).
DT_UNITS = 4
#: Elements per thread of block_absmax when a block is longer (then a multiple of 32 runs).
ABSMAX_RUN = 256


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _code_suffix(codes: Any) -> str:
    if codes.dtype.kind != "u" or codes.dtype.itemsize not in _CODE_SUFFIX:
        raise TypeError(f"codes must be uint8, uint16 or uint32, got {codes.dtype}")
    return _CODE_SUFFIX[codes.dtype.itemsize]


def _float64(name: str, a: Any) -> None:
    if a.dtype != np.float64:
        raise TypeError(f"{name} must be float64, got {a.dtype}")


def _spec_args(spec: tuple[int, int, int, int, float, int, int, int]) -> tuple[Any, ...]:
    bits, man_bits, emin, emax, max_value, code_of_max, code_of_inf, code_of_nan = spec
    return (np.int32(bits), np.int32(man_bits), np.int32(emin), np.int32(emax), np.float64(max_value),
            np.int64(code_of_max), np.int64(code_of_inf), np.int64(code_of_nan))


def integer_path(x: Any, spec: tuple[int, int, int, int, float, int, int, int]) -> bool:
    """Whether the integer-only encoders (minifloat_encode_any_bits in codec.cuh) take ``x`` into
    the format ``spec``: float16 / bfloat16 / float32 input, at most 16 bits and 22 mantissa bits."""
    return x.dtype.itemsize <= 4 and spec[0] <= 16 and spec[1] <= 22


#: Element formats whose integer kernels are compiled with the format's fields as constants
#: (``-DLOWBIT_ELEM_SPEC``, codec.cuh's MiniConst; one module per format, built on first use):
#: the OCP minifloats, every element format of the MX / NVFP4 presets.  Other formats take the
#: same kernels with the fields as arguments.
SPECIALIZED = frozenset(f.spec for f in MINIFLOATS.values())


def elem_defines(spec: tuple[int, int, int, int, float, int, int, int]) -> tuple[str, ...]:
    """The compile options of the kernels specialized for the format ``spec`` (in
    :data:`SPECIALIZED`), ``()`` for the kernels that take it as arguments: the one place that
    decides which build an element format's integer kernels come from."""
    if spec not in SPECIALIZED:
        return ()
    bits, man_bits, emin, emax, _, code_of_max, code_of_inf, code_of_nan = spec
    return (f"-DLOWBIT_ELEM_SPEC={bits},{man_bits},{emin},{emax},{code_of_max},{code_of_inf},{code_of_nan}",)


def minifloat_encode(x: Any, block_size: int, scale: Any, spec: tuple[int, int, int, int, float, int, int, int],
                     overflow: int, mode: int, seed: np.uint64, first_index: Any, rbits: int, codes: Any,
                     status: Any) -> None:
    check_operands(x=x, scale=scale, codes=codes, status=status)
    _float64("scale", scale)
    n = x.shape[0]
    if block_size >= n and integer_path(x, spec):
        # a direct conversion: the integer kernels, one per mode (a float64 loop inside for a scale
        # that is not a power of two); a thread per 16 elements of 16-bit input, 8 of float32
        name = f"lowbit_minifloat_encode_bits{int(mode)}_{suffix(x.dtype)}_{_code_suffix(codes)}"
        kernel("codec", name, elem_defines(spec) if codes.dtype.itemsize == 1 else ())(
            persistent_grid(n // (32 // x.dtype.itemsize) + 1), (THREADS,),
            (x, np.int64(n), np.int64(block_size), scale, *_spec_args(spec), np.int32(overflow), np.uint64(seed),
             np.int64(first_index), np.int32(rbits), codes, status, np.int64(status.shape[0])))
        return
    k = kernel("codec", f"lowbit_minifloat_encode_{suffix(x.dtype)}_{_code_suffix(codes)}")
    k(persistent_grid(n), (THREADS,),  # the float64 kernel: a thread per element
      (x, np.int64(n), np.int64(block_size), scale, *_spec_args(spec), np.int32(overflow), np.int32(mode),
       np.uint64(seed), np.int64(first_index), np.int32(rbits), codes, status, np.int64(status.shape[0])))


def minifloat_decode(codes: Any, spec: tuple[int, int, int, int, float, int, int, int], out: Any) -> None:
    check_operands(codes=codes, out=out)
    n = codes.shape[0]
    k = kernel("codec", f"lowbit_minifloat_decode_{_code_suffix(codes)}_{suffix(out.dtype)}")
    k(persistent_grid(n), (THREADS,), (codes, np.int64(n), *_spec_args(spec), out))


def fixed_encode(x: Any, block_size: int, scale: Any, bits: int, frac_bits: int, qmin: int, qmax: int,
                 overflow: int, mode: int, seed: np.uint64, first_index: Any, rbits: int, codes: Any,
                 status: Any) -> None:
    check_operands(x=x, scale=scale, codes=codes, status=status)
    _float64("scale", scale)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    n = x.shape[0]
    k = kernel("codec", f"lowbit_fixed_encode_{suffix(x.dtype)}")
    k(persistent_grid(n), (THREADS,),
      (x, np.int64(n), np.int64(block_size), scale, np.int32(bits), np.int32(frac_bits), np.int64(qmin),
       np.int64(qmax), np.int32(overflow), np.int32(mode), np.uint64(seed), np.int64(first_index),
       np.int32(rbits), codes, status, np.int64(status.shape[0])))


def decode_table(packed: Any, bits: int, table: Any, block_size: int, scale: Any, out: Any) -> None:
    check_operands(packed=packed, table=table, scale=scale, out=out)
    _float64("table", table)
    _float64("scale", scale)
    if not 1 <= bits <= 8 or table.shape[0] < (1 << bits):
        raise ValueError(f"decode_table takes 1..8-bit codes and a table of 2**bits values; got bits={bits}, "
                         f"{table.shape[0]} values")
    n = out.shape[0]
    k = kernel("codec", f"lowbit_decode_table_{suffix(out.dtype)}")
    k(persistent_grid(_ceil_div(_ceil_div(n, 8), DT_UNITS)), (THREADS,),  # DT_UNITS units of 8 codes per thread
      (packed, np.int64(packed.shape[0]), np.int32(bits), table, np.int64(block_size), scale, out, np.int64(n)))


def block_absmax(x: Any, block_size: int, out: Any) -> None:
    check_operands(x=x, out=out)
    _float64("out", out)
    n, n_blocks = x.shape[0], out.shape[0]
    if block_size <= ABSMAX_RUN:
        run, runs = block_size, 1
    else:  # runs of one block fill whole warps, merged by atomicMax into the zeroed out
        run = ABSMAX_RUN
        runs = _ceil_div(_ceil_div(block_size, run), 32) * 32
        out.fill(0)
    k = kernel("codec", f"lowbit_block_absmax_{suffix(x.dtype)}")
    k(persistent_grid(n_blocks * runs), (THREADS,),
      (x, np.int64(n), np.int64(block_size), np.int64(run), np.int64(runs), out, np.int64(n_blocks)))
