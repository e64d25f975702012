"""CUDA wrappers for rtn kernels: same names and signatures as :mod:`lowbit.cpu.rtn`."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lowbit.cuda._module import THREADS, cupy_device, grid, kernel, resident_grid, suffix

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
    if _lanes_ok(out, packed, group_size) and packed.shape[0] == n * bits // 8:
        items = n // 32
        k = kernel("rtn_decode_lanes", f"lowbit_rtn_decode_lanes_{suffix(out.dtype)}_b{bits}", _lane_defines(bits))
        k(grid(items, LANE_THREADS), (LANE_THREADS,),
          (packed, np.int64(items), np.int32((group_size // 32).bit_length() - 1), scale, offset,
           np.int32(symmetric), out))
        return
    k = kernel("rtn", f"lowbit_rtn_decode_{suffix(out.dtype)}")
    k(grid((n + 7) // 8), (THREADS,),
      (packed, np.int64(packed.shape[0]), np.int64(group_size), scale, offset, np.int32(bits),
       np.int32(symmetric), out, np.int64(n)))


#: Group sizes with a fused kernel instantiation (G = 32 * K).
FUSED_K = {32: 1, 64: 2, 128: 4, 256: 8, 512: 16}
FUSED_WARPS = 8  # warps per block, as in rtn_groups.cu
#: Lane kernels (rtn_lanes.cu, rtn_decode_lanes.cu), 32 elements per thread, groups of 32 * 2^k elements: decode of
#: 16/32-bit data, quantize of float32 data (16-bit data quantize by the segment kernels).
LANE_THREADS = 256
LANE_SUFFIXES = ("f16", "bf16", "f32")
#: Segment kernels (rtn_seg.cu, 16-bit data, 128 elements per lane): threads per block (SEG_WARPS).
SEG_THREADS = 32


def _lane_defines(bits: int) -> tuple[str, ...]:
    return (f"-DLOWBIT_LANE_BITS={bits}",)


def _lane_layout(dtype: Any, group_size: int) -> bool:
    """Whether the lane kernels take this dtype and group size: power-of-two groups of
    32..1024 elements."""
    lpg = group_size // 32
    return suffix(dtype) in LANE_SUFFIXES and group_size % 32 == 0 and 1 <= lpg <= 32 and lpg & (lpg - 1) == 0


def _aligned(x: Any, packed: Any) -> bool:
    """16-byte aligned data and codes (lane kernels use 16-byte vector accesses)."""
    return x.data.ptr % 16 == 0 and packed.data.ptr % 16 == 0


def _lanes_ok(x: Any, packed: Any, group_size: int) -> bool:
    """Whether the lane kernels apply to these arrays (layout and alignment)."""
    return _lane_layout(x.dtype, group_size) and _aligned(x, packed)


def rtn_quantize_groups(x: Any, group_size: int, bits: int, symmetric: bool, fmt: int, mode: int,
                        seed: np.uint64, rbits: int, packed: Any, scale: Any, offset: Any,
                        status: Any) -> None:
    n_groups = scale.shape[0]
    if group_size not in FUSED_K:
        raise ValueError(f"no fused kernel for group_size={group_size}; sizes {tuple(FUSED_K)}")
    tail = (np.int32(symmetric), np.int32(fmt), np.int32(mode), np.uint64(seed), np.int32(rbits),
            packed, scale, offset, status)
    kind, k, threads = _quantize_kernel(x.dtype, bits, group_size, cupy_device(), _aligned(x, packed))
    if kind == "groups":
        k(grid(n_groups, FUSED_WARPS), (threads,), (x, np.int64(n_groups), np.int32(bits), *tail))
        return
    items = n_groups * group_size // 32
    per_thread = 4 if kind == "seg" else 1  # the segment kernel's lanes own 4 items each
    k(resident_grid(k, threads, -(-items // per_thread)), (threads,),
      (x, np.int64(items), np.int32(group_size // 32), *tail))


@functools.cache
def _quantize_kernel(dtype: Any, bits: int, group_size: int, device: int, aligned: bool) -> tuple[str, Any, int]:
    """(kind, kernel, threads per block) of the fused quantizer for these parameters, looked up
    once: "seg" (16-bit data), "lanes" (float32) or "groups" (the rest, and unaligned data)."""
    sfx = suffix(dtype)
    if aligned and _lane_layout(dtype, group_size):
        if np.dtype(dtype).itemsize == 2:  # segment kernel: 128 elements per lane, cp.async-fed
            return "seg", kernel("rtn_seg", f"lowbit_rtn_quantize_seg_{sfx}_b{bits}", _lane_defines(bits)), SEG_THREADS
        return "lanes", kernel("rtn_lanes", f"lowbit_rtn_quantize_lanes_{sfx}_b{bits}", _lane_defines(bits)), LANE_THREADS
    return "groups", kernel("rtn_groups", f"lowbit_rtn_quantize_groups_{sfx}_k{FUSED_K[group_size]}"), 32 * FUSED_WARPS
