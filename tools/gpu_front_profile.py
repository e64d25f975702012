"""Where the host time of lowbit.quantize / dequantize goes on a GPU (cProfile, small input).

CUDA-event timings of the fronts include host time during which the GPU idles; this prints
the Python functions that take it.  Usage: python tools/gpu_front_profile.py
"""

from __future__ import annotations

import cProfile
import pstats
import time

import cupy as cp
import torch

import lowbit

x = cp.random.standard_normal(1 << 20, dtype=cp.float32).astype(cp.float16)
xt = torch.randn(1 << 20, device="cuda", dtype=torch.float16)
for arr, label in ((x, "cupy"), (xt, "torch")):
    q = lowbit.quantize(arr, bits=2, scheme="rtn", group_size=128)
    q.dequantize()
    cp.cuda.runtime.deviceSynchronize()
    for name, fn in (("quantize", lambda a=arr: lowbit.quantize(a, bits=2, scheme="rtn", group_size=128)),
                     ("dequantize", q.dequantize)):
        t = time.perf_counter()
        for _ in range(200):
            fn()
        cp.cuda.runtime.deviceSynchronize()
        print(f"{label} {name}: {(time.perf_counter() - t) / 200 * 1e6:.1f} us per call (1 Mi elements)")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
