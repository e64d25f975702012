"""Small runs of the CUDA kvarn_encode / kvarn_decode kernels for compute-sanitizer.

Every kernel variant once (float16 / bfloat16 / float32 tokens, K and V tiles, both scale
formats, a partial tile, a 1-token tile, the unfused-rotation path; decode to every output
dtype), each checked against the CPU twin:
  compute-sanitizer --tool memcheck python tools/gpu_sanitize_kvarn.py
  compute-sanitizer --tool racecheck python tools/gpu_sanitize_kvarn.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit
import lowbit  # noqa: E402
import lowbit.cpu  # noqa: E402
from lowbit.cuda import kvarn as cuda_kvarn  # noqa: E402  (not yet in lowbit.cuda.KERNELS)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [(2, 128, 128, True), (2, 64, 128, True), (2, 7, 64, True), (1, 1, 64, True), (2, 16, 12, False)]
    for n, t, d, rotate in cases:
        x = (rng.standard_normal((n, t, d)) * np.exp(rng.standard_normal((n, t, 1)))).astype(np.float32)
        for dtype in ("float16", "bfloat16", "float32"):
            if dtype == "float16":
                stored = x.astype(np.float16)
                wide = stored.astype(np.float32)
            elif dtype == "bfloat16":
                stored = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncated: any bits will do
                wide = (stored.astype(np.uint32) << 16).view(np.float32)
            else:
                stored, wide = x, x
            for key in (True, False):
                for bits, fmt in ((2, 0), (3, 1), (4, 1)):  # D = 128 with 2 / 4 bits: kvarn_decode128.cu
                    rows, cols = (d, t) if key else (t, d)
                    shapes = ((n, (rows * cols * bits + 7) // 8), (n, rows), (n, rows), (n, cols), (n,))
                    dts = (np.uint8, np.uint16, np.uint16, np.uint16, np.int8)
                    want = [np.empty(s, dt) for s, dt in zip(shapes, dts, strict=True)]
                    lowbit.cpu.kvarn_encode(np.ascontiguousarray(wide), rotate, key, bits, 8, fmt, True, *want)
                    got = [cp.empty(s, dt) for s, dt in zip(shapes, dts, strict=True)]
                    cuda_kvarn.kvarn_encode(cp.asarray(stored), rotate, key, bits, 8, fmt, True, *got)
                    for w, g in zip(want, got, strict=True):
                        assert np.array_equal(cp.asnumpy(g), w), (n, t, d, dtype, key, bits, fmt)
                    if dtype != "float32":
                        continue
                    ref = np.empty((n, t, d), np.float32)
                    lowbit.cpu.kvarn_decode(want[0], rotate, key, bits, fmt, *want[1:], ref)
                    for out_dtype in ("float16", "uint16", "float32", "float64"):
                        for fast in (True, False):  # the fastest decoder that applies, and the generic one
                            cuda_kvarn.FAST_DECODE = fast
                            out = cp.empty((n, t, d), out_dtype)
                            cuda_kvarn.kvarn_decode(got[0], rotate, key, bits, fmt, *got[1:], out)
                            if out_dtype == "float32":
                                assert np.array_equal(cp.asnumpy(out), ref), (n, t, d, key, bits, fmt, fast)
                        cuda_kvarn.FAST_DECODE = True
    cp.cuda.Device().synchronize()
    print("gpu_sanitize_kvarn: all kernels ran and matched the CPU")


if __name__ == "__main__":
    main()
