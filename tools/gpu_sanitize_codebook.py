"""Small runs of the CUDA codebook kernels (block_norm, codebook_encode, kvarn_grid_encode,
kvarn_grid_decode) for compute-sanitizer.

Every kernel variant once (float16 / bfloat16 / float32 / float64 inputs of the codebook
kernels, both rounding modes, a partial last block; K and V tiles of the grid kernels, both
scale formats, a partial tile, a 1-token tile, D = 12), each checked against the CPU twin:
  compute-sanitizer --tool memcheck python tools/gpu_sanitize_codebook.py
  compute-sanitizer --tool racecheck python tools/gpu_sanitize_codebook.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit
import lowbit.cpu  # noqa: E402
from lowbit import codebooks  # noqa: E402
from lowbit.cuda import codebook as cuda_codebook  # noqa: E402
from lowbit.cuda import kvarn_grid as cuda_grid  # noqa: E402
from lowbit.kv.kvarn_grid import FITS, grid_levels  # noqa: E402


def _codebook_kernels(rng: np.random.Generator) -> None:
    cb = codebooks.normal_float(4)
    levels, thresholds = np.array(cb.levels), np.array(cb.thresholds)
    n, block = 1001, 64
    x = rng.standard_normal(n) * 3
    scale = np.exp(rng.standard_normal(-(-n // block)))
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        if dtype == "bfloat16":
            stored = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # truncated: any bits
            wide = (stored.astype(np.uint32) << 16).view(np.float32)
        else:
            stored = x.astype(dtype)
            wide = stored.astype(np.float32) if dtype == "float16" else stored
        want = np.empty(scale.size, np.float64)
        lowbit.cpu.block_norm(wide, block, want)
        got = cp.empty(scale.size, np.float64)
        cuda_codebook.block_norm(cp.asarray(stored), block, got)
        assert np.array_equal(cp.asnumpy(got), want), dtype
        for mode in (0, 6):
            want_codes = np.empty(n, np.uint8)
            lowbit.cpu.codebook_encode(wide, block, scale, levels, thresholds, mode, np.uint64(5), np.int64(9), 16,
                                       want_codes)
            codes = cp.empty(n, np.uint8)
            cuda_codebook.codebook_encode(cp.asarray(stored), block, cp.asarray(scale), cp.asarray(levels),
                                          cp.asarray(thresholds), mode, np.uint64(5), 9, 16, codes)
            assert np.array_equal(cp.asnumpy(codes), want_codes), (dtype, mode)


def _grid_kernels(rng: np.random.Generator) -> None:
    for n, t, d in ((2, 128, 128), (2, 64, 64), (2, 7, 64), (1, 1, 64), (2, 16, 12)):
        x = (rng.standard_normal((n, t, d)) * np.exp(rng.standard_normal((n, t, 1)))).astype(np.float32)
        for key in (True, False):
            for bits, fmt, grid in ((2, 0, "lloyd-max"), (3, 1, "uniform-fit")):
                levels = grid_levels(grid, bits)
                thresholds = (levels[1:] + levels[:-1]) / 2
                rows, cols = (d, t) if key else (t, d)
                shapes = ((n, (rows * cols * bits + 7) // 8), (n, rows), (n, rows), (n, cols))
                dts = (np.uint8, np.uint16, np.uint16, np.uint16)
                want = [np.empty(s, dt) for s, dt in zip(shapes, dts, strict=True)]
                lowbit.cpu.kvarn_grid_encode(x, key, bits, levels, thresholds, 8, FITS, fmt, *want)
                got = [cp.empty(s, dt) for s, dt in zip(shapes, dts, strict=True)]
                cuda_grid.kvarn_grid_encode(cp.asarray(x), key, bits, cp.asarray(levels), cp.asarray(thresholds), 8,
                                            FITS, fmt, *got)
                for w, g in zip(want, got, strict=True):
                    assert np.array_equal(cp.asnumpy(g), w), (n, t, d, key, bits, fmt)
                ref = np.empty((n, t, d), np.float32)
                lowbit.cpu.kvarn_grid_decode(want[0], key, bits, levels, fmt, *want[1:], ref)
                out = cp.empty((n, t, d), np.float32)
                cuda_grid.kvarn_grid_decode(got[0], key, bits, cp.asarray(levels), fmt, *got[1:], out)
                assert np.array_equal(cp.asnumpy(out), ref), (n, t, d, key, bits, fmt)


def main() -> None:
    rng = np.random.default_rng(0)
    _codebook_kernels(rng)
    _grid_kernels(rng)
    cp.cuda.Device().synchronize()
    print("gpu_sanitize_codebook: all kernels ran and matched the CPU")


if __name__ == "__main__":
    main()
