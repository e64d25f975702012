"""CUDA wrappers for rtn kernels: same names and signatures as :mod:`lowbit.cpu.rtn`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, grid, kernel, suffix

WARPS_PER_BLOCK = THREADS // 32


def group_range(x: Any, group_size: int, lo: Any, hi: Any) -> None:
    n_groups = lo.shape[0]
    k = kernel("rtn", f"lowbit_group_range_{suffix(x.dtype)}")
    k(grid(n_groups, WARPS_PER_BLOCK), (THREADS,), (x, np.int64(group_size), lo, hi, np.int64(n_groups)))


def group_abs_mean(x: Any, group_size: int, out: Any) -> None:
    n_groups = out.shape[0]
    k = kernel("rtn", f"lowbit_group_abs_mean_{suffix(x.dtype)}")
    k(grid(n_groups, WARPS_PER_BLOCK), (THREADS,), (x, np.int64(group_size), out, np.int64(n_groups)))


def rtn_encode(x: Any, group_size: int, scale: Any, offset: Any, bits: int, symmetric: bool,
               mode: int, seed: np.uint64, rbits: int, packed: Any) -> None:
    n = x.shape[0]
    k = kernel("rtn", f"lowbit_rtn_encode_{suffix(x.dtype)}")
    k(grid((n + 7) // 8), (THREADS,),
      (x, np.int64(n), np.int64(group_size), scale, offset, np.int32(bits), np.int32(symmetric),
       np.int32(mode), np.uint64(seed), np.int32(rbits), packed, np.int64(packed.shape[0])))


def rtn_decode(packed: Any, group_size: int, scale: Any, offset: Any, bits: int, symmetric: bool,
               out: Any) -> None:
    n = out.shape[0]
    k = kernel("rtn", f"lowbit_rtn_decode_{suffix(out.dtype)}")
    k(grid((n + 7) // 8), (THREADS,),
      (packed, np.int64(packed.shape[0]), np.int64(group_size), scale, offset, np.int32(bits),
       np.int32(symmetric), out, np.int64(n)))


#: Group sizes with a fused kernel instantiation (G = 32 * K).
FUSED_K = {32: 1, 64: 2, 128: 4, 256: 8, 512: 16}
FUSED_WARPS = 8  # warps per block, as in rtn.cu
#: (dtype suffix, group size) with a thread-per-group instantiation (bits 2, 4, 8), see rtn.cu.
THREAD_VARIANTS = {("f16", 64), ("f16", 128), ("bf16", 64), ("bf16", 128), ("f32", 64)}


def rtn_quantize_groups(x: Any, group_size: int, bits: int, symmetric: bool, fmt: int, mode: int,
                        seed: np.uint64, rbits: int, packed: Any, scale: Any, offset: Any) -> None:
    n_groups = scale.shape[0]
    try:
        K = FUSED_K[group_size]
    except KeyError:
        raise ValueError(f"no fused kernel for group_size={group_size}; sizes {tuple(FUSED_K)}") from None
    tail = (np.int32(symmetric), np.int32(fmt), np.int32(mode), np.uint64(seed), np.int32(rbits),
            packed, scale, offset)
    if (suffix(x.dtype), group_size) in THREAD_VARIANTS and bits in (2, 4, 8) and x.data.ptr % 16 == 0:
        # whole group in one thread's registers: enough loads in flight for memory speed
        name = f"lowbit_rtn_quantize_groups_thread_{suffix(x.dtype)}_g{group_size}_b{bits}"
        kernel("rtn", name)(grid(n_groups, 128), (128,), (x, np.int64(n_groups), *tail))
        return
    k = kernel("rtn", f"lowbit_rtn_quantize_groups_{suffix(x.dtype)}_k{K}")
    k(grid(n_groups, FUSED_WARPS), (32 * FUSED_WARPS,), (x, np.int64(n_groups), np.int32(bits), *tail))
