"""Small runs of the CUDA fwht / hadamard_signs / balance_tiles kernels for compute-sanitizer.

Every kernel variant once (warp, block and column passes; cores 1, 12, 20; 16/32/64-bit data;
the warp kernel's VARIANTS; balance on chip and from global memory), each checked against the
CPU twin:
  compute-sanitizer --tool memcheck python tools/gpu_sanitize_transforms.py
  compute-sanitizer --tool racecheck python tools/gpu_sanitize_transforms.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit
import lowbit  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [(5, 2, "float32"), (3, 128, "float16"), (3, 12, "float64"), (2, 640, "float32"),
             (2, 4096, "float16"), (1, 12 * 2**11, "float32"), (1, 32768, "float64")]
    for rows, n, dtype in cases:
        x = rng.standard_normal((rows, n)).astype(dtype)
        for seed in (None, 5):
            y = lowbit.hadamard(cp.asarray(x), seed=seed)
            assert np.array_equal(cp.asnumpy(y), lowbit.hadamard(x, seed=seed)), (n, dtype, seed)
            z = lowbit.inverse_hadamard(y, seed=seed)
            assert np.array_equal(cp.asnumpy(z), lowbit.inverse_hadamard(cp.asnumpy(y), seed=seed))
    # every warp-kernel variant (lowbit.cuda.hadamard.VARIANTS: resident grids whose warps loop,
    # the shared-memory lane levels) on more groups than a resident grid has warps
    from lowbit.cuda import hadamard as kh

    x = rng.standard_normal((25_001, 128)).astype(np.float16)
    expect = lowbit.hadamard(x)
    xg = cp.asarray(x)
    core, none = cp.ones((1, 1), cp.float32), cp.empty(0, cp.float32)
    for label, knobs in kh.VARIANTS.items():
        out = cp.empty_like(xg)
        kh._fwht(xg, core, none, True, np.float32(1 / np.sqrt(128)), out, knobs)
        assert np.array_equal(cp.asnumpy(out).view(np.uint16), expect.view(np.uint16)), label
    for shape in ((3, 128, 128), (2, 17, 33), (1, 256, 256)):
        t = (rng.standard_normal(shape) * np.exp(rng.standard_normal(shape[:2] + (1,)))).astype(np.float32)
        got = lowbit.balance(cp.asarray(t), return_imbalance=True)
        for g, e in zip(got, lowbit.balance(t, return_imbalance=True), strict=True):
            assert np.array_equal(cp.asnumpy(g), e), shape
    cp.cuda.Device().synchronize()
    print("gpu_sanitize_transforms: all kernels ran and matched the CPU")


if __name__ == "__main__":
    main()
