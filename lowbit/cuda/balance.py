"""CUDA wrapper for the KVarN balance kernel: same name and signature as :mod:`lowbit.cpu.balance`.

One thread block per tile (lowbit/cuda/balance.cu), ``min(256, 32 * ceil(max(R, C) / 32))``
threads.  The tile is held in shared memory as float32 when it fits with its row and column
vectors (128 x 128: 72 KiB, three blocks per H200 multiprocessor); larger tiles are read from
global memory (through the caches) with only the vectors on chip; tiles whose vectors alone
exceed the device's shared memory per block raise ``ValueError``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lowbit.cuda._module import check_operands, cupy_device, kernel, suffix

_STORAGE = ("float16", "uint16", "float32")  # uint16: bfloat16 bits


def threads_for(rows: int, cols: int) -> int:
    """Threads per block for R x C tiles: one per column (row), at most 256."""
    return min(256, max(32, -(-max(rows, cols) // 32) * 32))


def scratch_floats(rows: int, cols: int, threads: int) -> int:
    """Shared floats of balance.cuh's BalanceScratch (balance_scratch_floats): four [C] and four
    [R] vectors, five floats per warp."""
    return 4 * cols + 4 * rows + 5 * -(-threads // 32)


def smem_floats(rows: int, cols: int, threads: int, on_chip: bool) -> int:
    """Shared floats per block (balance.cu: tile with an odd pitch, scales, balance.cuh scratch)."""
    pitch = cols if cols % 2 else cols + 1
    return (rows * pitch if on_chip else 0) + (rows + cols) + scratch_floats(rows, cols, threads)


@functools.cache
def _smem_limit(device: int) -> int:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device)
    if "sharedMemPerBlockOptin" in props:
        return int(props["sharedMemPerBlockOptin"])
    return int(cupy.cuda.runtime.deviceGetAttribute(97, device))  # cudaDevAttrMaxSharedMemoryPerBlockOptin


def balance_tiles(tiles: Any, iterations: int, std_min: np.float32, std_max: np.float32,
                  log_min: np.float32, log_max: np.float32, imbalance_floor: np.float32,
                  balanced: Any, col_scale: Any, row_scale: Any, imbalance: Any) -> None:
    check_operands(tiles=tiles, balanced=balanced, col_scale=col_scale, row_scale=row_scale,
                   imbalance=imbalance)
    if tiles.ndim != 3 or tiles.dtype.name not in _STORAGE or balanced.dtype != tiles.dtype \
            or balanced.shape != tiles.shape:
        raise TypeError(f"tiles and balanced must be [B, R, C] arrays of one dtype in float16, bfloat16 "
                        f"(uint16 bits), float32; got {tiles.dtype} {tiles.shape}, {balanced.dtype} {balanced.shape}")
    b, rows, cols = tiles.shape
    want = {"col_scale": (col_scale, (b, cols)), "row_scale": (row_scale, (b, rows)), "imbalance": (imbalance, (b,))}
    for name, (a, shape) in want.items():
        if a.dtype != np.float32 or a.shape != shape:
            raise TypeError(f"{name} must be float32 of shape {shape}, got {a.dtype} {a.shape}")
    if rows < 2 or cols < 2:
        raise ValueError(f"tiles need R >= 2 and C >= 2, got R={rows}, C={cols}")
    if not 0 <= iterations < 2**31:
        raise ValueError(f"iterations must be in [0, 2**31), got {iterations}")
    if b == 0:
        return
    threads = threads_for(rows, cols)
    limit = _smem_limit(cupy_device())
    on_chip = 4 * smem_floats(rows, cols, threads, True) <= limit
    nbytes = 4 * smem_floats(rows, cols, threads, on_chip)
    if nbytes > limit:
        raise ValueError(f"tiles of {rows} x {cols} need {nbytes} bytes of shared memory for their row and "
                         f"column vectors; this device allows {limit} per block")
    name = f"lowbit_balance_tiles_{'' if on_chip else 'global_'}{suffix(tiles.dtype)}"
    k = kernel("balance", name)
    if nbytes > 48 << 10 and k.max_dynamic_shared_size_bytes < nbytes:
        k.max_dynamic_shared_size_bytes = limit
    f32 = np.float32
    k((min(b, 2**31 - 1),), (threads,),
      (tiles, np.int64(b), np.int32(rows), np.int32(cols), np.int32(iterations), f32(std_min), f32(std_max),
       f32(log_min), f32(log_max), f32(imbalance_floor), balanced, col_scale, row_scale, imbalance),
      shared_mem=nbytes)
