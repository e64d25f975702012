"""CUDA wrappers for the Walsh–Hadamard kernels: same names and signatures as :mod:`lowbit.cpu.hadamard`.

``fwht`` plans one to a few passes over the data (``lowbit/cuda/hadamard.cu``):

* rows of ``n = M * 2**k`` with ``k <= log2(E / M) + 5`` (E elements per thread: 16 for 16-bit
  data, 8 for float32, 4 for float64, M for the cores 12 and 20): one pass of the warp kernel,
  the data read and written once (n = 128 float16: 8 lanes per row, 2 tiles of 32 bytes per
  thread and group); by default one group per warp, the grid covering the data (a variant
  launches only the resident blocks, each warp looping over groups with its next group's loads
  in flight: slower on an H100, see :data:`DEFAULT`);
* longer rows whose segment fits a block's shared memory (40 KiB of compute values, 1024
  threads): one pass of the block kernel;
* longer still (float32 rows of 16384 and 32768, 12 * 2**k for k >= 10, ...): the block kernel
  on segments of the row, then column passes for the remaining strides (up to 64 elements per
  thread each); 16-bit data then goes through a float32 scratch array, so it is rounded once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.cuda._module import check_operands, kernel, resident_grid, suffix


@dataclass(frozen=True)
class Knobs:
    """Compile-time knobs of hadamard.cu (its ``LOWBIT_*`` defines); benchmarks try variants."""

    #: Bytes per thread and tile, by storage itemsize (M = 1).
    #: 16-bit data: 32 (E = 16) measured 1.32 ms for FWHT-128 on 2^23 rows, 16 (E = 8) 1.79 ms.
    thread_bytes: tuple[tuple[int, int], ...] = ((2, 32), (4, 32), (8, 32))
    #: Bytes each thread of the warp kernel loads before it computes.
    bytes_in_flight: int = 64
    #: Streaming cache hints on 16-byte accesses.
    streaming: bool = True
    #: Warp kernel grid: only the blocks resident at once, each warp looping over groups (else
    #: one group per warp, the grid covering the data).
    resident: bool = True
    #: Warp kernel: a warp's next group loaded before the butterflies of this one (in flight
    #: while it computes; with ``resident``).
    prefetch: bool = True
    #: Warp kernel: blocks of THREADS per multiprocessor its registers must allow
    #: (``__launch_bounds__``: 3 = at most 80 registers, 4 = 64).
    min_blocks: int = 3
    #: Warp kernel, rows of 128 16-bit values: the lane levels through shared memory (a padded
    #: transpose within each 8-lane segment) instead of xor shuffles.
    exchange: bool = False

    def elems(self, m: int, itemsize: int) -> int:
        """Elements per thread and tile (the .cu's thread_elems)."""
        return m if m > 1 else dict(self.thread_bytes)[itemsize] // itemsize

    def vectors(self, m: int, itemsize: int) -> int:
        """Tiles per thread of the warp kernel (the .cu's VEC)."""
        return max(1, self.bytes_in_flight // (self.elems(m, itemsize) * itemsize))

    def defines(self) -> tuple[str, ...]:
        tb = dict(self.thread_bytes)
        return (f"-DLOWBIT_THREAD_BYTES_16={tb[2]}", f"-DLOWBIT_THREAD_BYTES_32={tb[4]}",
                f"-DLOWBIT_THREAD_BYTES_64={tb[8]}", f"-DLOWBIT_BYTES_IN_FLIGHT={self.bytes_in_flight}",
                f"-DLOWBIT_STREAMING={int(self.streaming)}", f"-DLOWBIT_WARP_PREFETCH={int(self.prefetch)}",
                f"-DLOWBIT_WARP_MIN_BLOCKS={self.min_blocks}", f"-DLOWBIT_WARP_EXCHANGE={int(self.exchange)}")


#: The launch every front uses: one group per warp, the grid covering the data (H100, 2026-12-08,
#: FWHT-128 on 2^23 float16 rows: 1.47 ms = 98.6% of copy and 1.05x cuBLAS x @ H, against 1.59 ms =
#: 91.2% for the resident grid with prefetch; float32 97.5% against 91.5%).
DEFAULT = Knobs(resident=False, prefetch=False, min_blocks=4)
_E32 = ((2, 64), (4, 32), (8, 32))
#: Variants that benchmarks/bench_hadamard_cuda.py times side by side and
#: tests/test_gpu_hadamard.py checks bit for bit (the default first).
VARIANTS: dict[str, Knobs] = {
    "one group per warp, 4 blocks (default)": DEFAULT,
    "resident, prefetch, 64 B/lane, 3 blocks": Knobs(),
    "resident, prefetch, 32 B/lane, 4 blocks": Knobs(bytes_in_flight=32, min_blocks=4),
    "resident, no prefetch, 4 blocks": Knobs(prefetch=False, min_blocks=4),
    "resident, prefetch, no streaming hints": Knobs(streaming=False),
    "E=32 (16-bit), resident, prefetch, 2 blocks": Knobs(thread_bytes=_E32, min_blocks=2),
    "shared-memory lane levels, 64 B/lane, 3 blocks": Knobs(exchange=True),
    "shared-memory lane levels, 32 B/lane, 4 blocks": Knobs(exchange=True, bytes_in_flight=32, min_blocks=4),
}
#: Threads per block of the warp and column kernels (the warp kernel's LOWBIT_WARP_THREADS).
THREADS = 256
#: Shared memory (bytes of compute values) and threads of one block-kernel segment.
BLOCK_SMEM = 40 << 10
BLOCK_THREADS = 1024
#: Most levels per column pass, by compute itemsize (2**levels registers per thread).
COLUMN_LEVELS = {4: 6, 8: 5}
_NULL = np.uint64(0)  # a null pointer argument
_STORAGE = ("float16", "uint16", "float32", "float64")  # uint16: bfloat16 bits


@functools.cache
def plan(n: int, m: int, itemsize: int, knobs: Knobs = DEFAULT) -> tuple[tuple[str, int, int], ...]:
    """The passes for rows of ``n = m * 2**k`` of ``itemsize``-byte data.

    Each pass is ``("warp", seg_log, 0)``, ``("block", seg_log, 0)`` (segments of
    ``m * 2**seg_log`` elements) or ``("columns", stride, levels)``.
    """
    k = (n // m).bit_length() - 1
    csize = 8 if itemsize == 8 else 4
    e = knobs.elems(m, itemsize)
    if k <= (e // m).bit_length() - 1 + 5:
        return (("warp", k, 0),)
    k2 = k
    while (m << k2) * csize > BLOCK_SMEM or (m << k2) // e > BLOCK_THREADS:
        k2 -= 1
    passes = [("block", k2, 0)]
    rest, stride = k - k2, m << k2
    while rest:
        levels = min(rest, COLUMN_LEVELS[csize])
        passes.append(("columns", stride, levels))
        stride <<= levels
        rest -= levels
    return tuple(passes)


def _row_defines(m: int, knobs: Knobs) -> tuple[str, ...]:
    return (f"-DLOWBIT_CORE={m}", "-DLOWBIT_STAGE=0", *knobs.defines())


def hadamard_signs(seed: np.uint64, out: Any) -> None:
    check_operands(out=out)
    if out.ndim != 1 or out.dtype not in (np.float32, np.float64):
        raise TypeError(f"out must be a 1-D float32 or float64 array, got {out.dtype} of shape {out.shape}")
    n = out.shape[0]
    if n:
        k = kernel("hadamard", f"lowbit_hadamard_signs_{suffix(out.dtype)}", _row_defines(1, DEFAULT))
        k((min(-(-n // THREADS), 4096),), (THREADS,), (np.uint64(seed), out, np.int64(n)))


def fwht(x: Any, core: Any, signs: Any, signs_first: bool, scale: np.floating, out: Any) -> None:
    _fwht(x, core, signs, signs_first, scale, out, DEFAULT)


def _check(x: Any, core: Any, signs: Any, out: Any) -> tuple[int, int]:
    check_operands(x=x, core=core, signs=signs, out=out)
    if x.ndim != 2 or out.shape != x.shape or out.dtype != x.dtype or x.dtype.name not in _STORAGE:
        raise TypeError(f"x and out must be 2-D arrays of one dtype in float16, bfloat16 (uint16 bits), "
                        f"float32, float64 and one shape; got x {x.dtype} {x.shape}, out {out.dtype} {out.shape}")
    rows, n = x.shape
    compute = np.float64 if x.dtype == np.float64 else np.float32
    m = core.shape[0] if core.ndim == 2 else 0
    if core.shape != (m, m) or m not in (1, 12, 20) or n % m or (n // m) & (n // m - 1):
        raise ValueError(f"core must be [m, m] with m in (1, 12, 20) and n / m a power of two; "
                         f"got core {core.shape} for n = {n}")
    if core.dtype != compute or signs.dtype != compute or signs.shape not in ((0,), (n,)):
        raise TypeError(f"core and signs must be {np.dtype(compute)} (signs of length 0 or {n}); "
                        f"got {core.dtype}, {signs.dtype} {signs.shape}")
    if n >= 2**31:
        raise ValueError(f"rows of {n} elements exceed the kernels' int32 row length")
    return n, m


def _fwht(x: Any, core: Any, signs: Any, signs_first: bool, scale: np.floating, out: Any, knobs: Knobs) -> None:
    import cupy

    n, m = _check(x, core, signs, out)
    total = x.size
    if total == 0:
        return
    compute = np.float64 if x.dtype == np.float64 else np.float32
    has_signs = signs.shape[0] == n
    signs_in = signs if has_signs and signs_first else _NULL
    signs_out = signs if has_signs and not signs_first else _NULL
    passes = plan(n, m, x.dtype.itemsize, knobs)
    scratch = out
    if len(passes) > 1 and x.dtype.itemsize == 2:
        scratch = cupy.empty(x.shape, np.float32)  # exact intermediate, rounded once at the end
    scale = compute(scale)
    for i, (kind, a, b) in enumerate(passes):
        final = i == len(passes) - 1
        src = x if i == 0 else scratch
        dst = out if final else scratch
        name = f"lowbit_fwht_{kind}_{suffix(src.dtype)}_{suffix(dst.dtype)}"
        if kind == "columns":
            f = 1 << b
            k = kernel("hadamard", name, ("-DLOWBIT_STAGE=1", f"-DLOWBIT_COLUMN_LOG={b}", *knobs.defines()))
            k((-(-(total // f) // THREADS),), (THREADS,),
              (src, dst, np.int64(total), np.int64(a), np.int32(n), signs_out, scale, np.int32(final)))
            continue
        k = kernel("hadamard", name, _row_defines(m, knobs))
        tail = (core, signs_in, signs_out if final else _NULL, scale, np.int32(final))
        e = knobs.elems(m, x.dtype.itemsize)
        if kind == "warp":
            per_warp = 32 * knobs.vectors(m, x.dtype.itemsize) * e
            threads = 32 * -(-total // per_warp)  # one warp per group
            blocks = resident_grid(k, THREADS, threads) if knobs.resident else (-(-threads // THREADS),)
            k(blocks, (THREADS,), (src, dst, np.int64(total), np.int32(a), np.int32(n), *tail))
        else:
            seg = m << a
            k((total // seg,), (seg // e,), (src, dst, np.int32(a), np.int32(n), *tail),
              shared_mem=seg * np.dtype(compute).itemsize)
