"""CUDA wrappers for the fused KVarN store: same names and signatures as :mod:`lowbit.cpu.kvarn`.

``kvarn_encode`` runs ``lowbit/cuda/kvarn.cu``'s one-block-per-tile kernel over every tile of
the launch: tokens ``x [n, T, D]`` in float16, bfloat16 (uint16 bits) or float32 go straight to
the packed record (rotation, exponent, balance, RTN, fold, scale codes, packing), the tile held
in shared memory as float32 (D = G = 128: about 71 KiB and 256 threads, three blocks per H100 / H200
multiprocessor; the codes are written over the rows they came from).
``kvarn_decode`` writes ``out`` in float16, bfloat16 bits, float32 or float64 (the CPU twin
writes float32; the CUDA output is that float32 value rounded once, as the front's conversion)
with ``lowbit/cuda/kvarn_decode128.cu``'s one-warp-per-tile decoder for the presets' tiles
(D = 128, 2- or 4-bit codes, :func:`decode128_applies`; no shared memory), else
``lowbit/cuda/kvarn_decode.cu``'s register decoder when ``D`` is a power of two in 16..512
and ``out`` is 16-byte aligned (D = 128: about 24-36 KiB of shared memory per 256-thread
block), else with its generic in-shared-memory decoder; all give the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import check_operands, cupy_device, kernel, suffix
from lowbit.cuda.balance import _smem_limit, scratch_floats, threads_for

_TOKENS = ("float16", "uint16", "float32")  # uint16: bfloat16 bits
_OUTPUTS = ("float16", "uint16", "float32", "float64")
#: histogram bins (kvarn.cu LOWBIT_BINS) plus two counters
_HIST = 277 + 2
#: most blocks of one launch (each loops over tiles, grid-stride)
MAX_BLOCKS = 1 << 20
#: use the register decoder where it applies (tests switch it off to check the generic one)
FAST_DECODE = True
#: threads of a register-decoder block
DECODE_THREADS = 256
#: warps (one tile each) of a kvarn_decode128.cu block (LOWBIT_D128_WARPS)
DECODE128_WARPS = 4
#: use kvarn_decode128.cu where it applies (the benchmark switches it off to time the register
#: decoder on the same tiles)
DECODE128 = True
#: threads of an encode block for tiles of at least 128 x 128 (smaller tiles: balance.threads_for):
#: 8 warps per tile, three blocks (24 warps) per multiprocessor at 80 registers; the output does
#: not depend on it (tests vary it)
ENCODE_THREADS = 256


def encode_threads(rows: int, cols: int) -> int:
    """Threads of one encode block (kvarn.cu: any multiple of 32 up to 256)."""
    return ENCODE_THREADS if rows * cols >= 128 * 128 else threads_for(rows, cols)


def _defines() -> tuple[str, ...]:
    from lowbit.cpu import kvarn as cpu
    from lowbit.formats import FLOAT16, FP8_E4M3

    def spec(s: tuple[Any, ...]) -> str:
        return ",".join(repr(float(v)) if isinstance(v, float) else str(int(v)) for v in s)

    return (f"-DLOWBIT_MEDIAN_LOG={cpu.MEDIAN_LOG}", f"-DLOWBIT_EXPONENT_LIMIT={cpu.EXPONENT_LIMIT}",
            f"-DLOWBIT_EXPONENT_INVALID={cpu.EXPONENT_INVALID}", f"-DLOWBIT_RANGE_LOG={cpu.RANGE_LOG}",
            f"-DLOWBIT_F16_SPEC={spec(FLOAT16.spec)}", f"-DLOWBIT_E4M3_SPEC={spec(FP8_E4M3.spec)}")


def _pitch(cols: int) -> int:
    return cols if cols % 2 else cols + 1


def encode_smem_bytes(rows: int, cols: int, threads: int) -> int:
    """Dynamic shared memory of one encode block (kvarn.cu encode_smem_floats; the codes are
    written over the tile's rows)."""
    floats = rows * _pitch(cols) + cols + rows + scratch_floats(rows, cols, threads)
    return 4 * (floats + _HIST)


def decode_smem_bytes(tokens: int, dim: int, rows: int, cols: int) -> int:
    """Dynamic shared memory of one decode block (kvarn.cu decode_smem_floats)."""
    return 4 * (tokens * _pitch(dim) + 2 * rows + cols)


def fast_decode_smem_bytes(rows: int, cols: int, dim: int, tokens: int, bits: int) -> int:
    """Dynamic shared memory of one register-decoder block (kvarn_decode.cu fast_codes_offset,
    then the [tokens][dim + 16] code bytes)."""
    words = -(-((rows * cols * bits + 7) // 8) // 4)
    head = 4 * (2 * rows + cols) + 4 * (words + words // 32 + 1)
    return -(-head // 16) * 16 + tokens * (dim + 16)


def decode128_applies(tokens: int, dim: int, key: bool, bits: int, *arrays: Any) -> bool:
    """Whether kvarn_decode128.cu's one-warp-per-tile decoder takes the tiles: D = 128, 2- or 4-bit
    codes, K rows of whole 32-bit words (T * bits % 32 == 0: full G = 64 / 128 tiles), every array
    16-byte aligned (its vector loads and stores)."""
    return (dim == 128 and bits in (2, 4) and (not key or tokens * bits % 32 == 0)
            and all(a.data.ptr % 16 == 0 for a in arrays))


def _geometry(tokens: int, dim: int, key: bool, bits: int, rotate: bool) -> tuple[int, int]:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if tokens < 1 or dim < 1 or tokens * dim >= 2**31:
        raise ValueError(f"tiles of {tokens} tokens x {dim} channels exceed the kernels' int32 tile indexing")
    if rotate and dim & (dim - 1):
        raise ValueError(f"the fused rotation needs a power-of-two head_dim, got {dim}")
    return (dim, tokens) if key else (tokens, dim)


def _check_fields(n: int, rows: int, cols: int, code_bytes: int, packed: Any, row_scale: Any,
                  row_offset: Any, col_scale: Any, tile_exponent: Any) -> None:
    want = {"packed": (packed, np.uint8, (n, code_bytes)), "row_scale": (row_scale, np.uint16, (n, rows)),
            "row_offset": (row_offset, np.uint16, (n, rows)), "col_scale": (col_scale, np.uint16, (n, cols)),
            "tile_exponent": (tile_exponent, np.int8, (n,))}
    for name, (a, dtype, shape) in want.items():
        if a.dtype != dtype or tuple(a.shape) != shape:
            raise TypeError(f"{name} must be {np.dtype(dtype)} of shape {shape}, got {a.dtype} {tuple(a.shape)}")


def _launch(k: Any, n: int, threads: int, nbytes: int, args: tuple[Any, ...]) -> None:
    limit = _smem_limit(cupy_device())
    if nbytes > limit:
        raise ValueError(f"a tile needs {nbytes} bytes of shared memory; this device allows {limit} per block")
    if nbytes > 48 << 10 and k.max_dynamic_shared_size_bytes < nbytes:
        # the kernel's static shared memory counts against the opt-in limit too: ask for what
        # this launch needs, not the whole limit (which cuFuncSetAttribute refuses)
        k.max_dynamic_shared_size_bytes = nbytes
    k((min(n, MAX_BLOCKS),), (threads,), args, shared_mem=nbytes)


def kvarn_encode(x: Any, rotate: bool, key: bool, bits: int, iterations: int, scale_format: int,
                 normalize: bool, packed: Any, row_scale: Any, row_offset: Any, col_scale: Any,
                 tile_exponent: Any) -> None:
    check_operands(x=x, packed=packed, row_scale=row_scale, row_offset=row_offset, col_scale=col_scale,
                   tile_exponent=tile_exponent)
    if x.ndim != 3 or x.dtype.name not in _TOKENS:
        raise TypeError(f"x must be [n, T, D] float16, bfloat16 (uint16 bits) or float32, got {x.dtype} "
                        f"of shape {tuple(x.shape)}")
    n, tokens, dim = (int(s) for s in x.shape)
    rows, cols = _geometry(tokens, dim, key, bits, rotate)
    if scale_format not in (0, 1):
        raise ValueError(f"scale_format must be 0 (float16) or 1 (e4m3), got {scale_format}")
    if not 0 <= iterations < 2**31:
        raise ValueError(f"iterations must be in [0, 2**31), got {iterations}")
    _check_fields(n, rows, cols, (rows * cols * bits + 7) // 8, packed, row_scale, row_offset, col_scale,
                  tile_exponent)
    if n == 0:
        return
    threads = encode_threads(rows, cols)
    k = kernel("kvarn", f"lowbit_kvarn_encode_{suffix(x.dtype)}", _defines())
    i32 = np.int32
    _launch(k, n, threads, encode_smem_bytes(rows, cols, threads),
            (x, np.int64(n), i32(tokens), i32(dim), i32(bool(rotate)), i32(bool(key)), i32(bits), i32(iterations),
             i32(scale_format), i32(bool(normalize)), packed, row_scale, row_offset, col_scale, tile_exponent))


def kvarn_decode(packed: Any, rotate: bool, key: bool, bits: int, scale_format: int, row_scale: Any,
                 row_offset: Any, col_scale: Any, tile_exponent: Any, out: Any) -> None:
    check_operands(packed=packed, row_scale=row_scale, row_offset=row_offset, col_scale=col_scale,
                   tile_exponent=tile_exponent, out=out)
    if out.ndim != 3 or out.dtype.name not in _OUTPUTS:
        raise TypeError(f"out must be [n, T, D] float16, bfloat16 (uint16 bits), float32 or float64, got "
                        f"{out.dtype} of shape {tuple(out.shape)}")
    n, tokens, dim = (int(s) for s in out.shape)
    rows, cols = _geometry(tokens, dim, key, bits, rotate)
    if scale_format not in (0, 1):
        raise ValueError(f"scale_format must be 0 (float16) or 1 (e4m3), got {scale_format}")
    _check_fields(n, rows, cols, (rows * cols * bits + 7) // 8, packed, row_scale, row_offset, col_scale,
                  tile_exponent)
    if n == 0:
        return
    i32 = np.int32
    args = (packed, np.int64(n), i32(tokens), i32(dim), i32(bool(rotate)), i32(bool(key)), i32(bits),
            i32(scale_format), row_scale, row_offset, col_scale, tile_exponent, out)
    if FAST_DECODE and DECODE128 and decode128_applies(tokens, dim, key, bits, packed, row_scale, row_offset, col_scale, out):
        k = kernel("kvarn_decode128", f"lowbit_kvarn_decode128_{'k' if key else 'v'}{bits}_{suffix(out.dtype)}",
                   _defines())
        k((min(-(-n // DECODE128_WARPS), MAX_BLOCKS),), (32 * DECODE128_WARPS,), args)
        return
    fast_bytes = fast_decode_smem_bytes(rows, cols, dim, tokens, bits)
    if (FAST_DECODE and 16 <= dim <= 512 and dim & (dim - 1) == 0 and out.data.ptr % 16 == 0
            and fast_bytes <= _smem_limit(cupy_device())):
        variant = ("k" if key else "v") + ("128" if dim == 128 else "any")
        k = kernel("kvarn_decode", f"lowbit_kvarn_decode_fast_{variant}_{suffix(out.dtype)}", _defines())
        _launch(k, n, DECODE_THREADS, fast_bytes, args)
        return
    k = kernel("kvarn_decode", f"lowbit_kvarn_decode_{suffix(out.dtype)}", _defines())
    _launch(k, n, threads_for(rows, cols), decode_smem_bytes(tokens, dim, rows, cols), args)
