"""Diagnose the rtn CUDA kernels: registers/local memory, kernel-only vs front timings.

Usage: python tools/gpu_diag_rtn.py   (on a machine with a GPU; prints one line per timing)
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

sys.path.insert(0, "benchmarks")
from cuda_common import device_copy_bandwidth, event_time  # noqa: E402

import lowbit  # noqa: E402
from lowbit.cuda import rtn as crtn  # noqa: E402
from lowbit.cuda._module import kernel  # noqa: E402

n = 1 << 29  # 1 GiB of float16
x = cp.random.standard_normal(n, dtype=cp.float32).astype(cp.float16)
g = 128
ng = n // g
bw = device_copy_bandwidth()
print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
for bits in (2, 4):
    for name in (f"lowbit_rtn_quantize_seg_f16_b{bits}", f"lowbit_rtn_decode_lanes_f16_b{bits}"):
        k = kernel("rtn_seg" if "_seg_" in name else "rtn_decode_lanes", name, crtn._lane_defines(bits))
        print(name, "regs", k.num_regs, "local", k.local_size_bytes)
for bits in (2, 4):
    packed = cp.empty(n * bits // 8, cp.uint8)
    s = cp.empty(ng, cp.float32)
    o = cp.empty(ng, cp.float32)
    st = cp.zeros(1, cp.int32)
    traffic = 2 * n + n * bits // 8 + 8 * ng

    def pct(t: float) -> str:
        return f"{t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy"

    t = event_time(lambda: crtn.rtn_quantize_groups(x, g, bits, False, 0, 0, np.uint64(0), 16, packed, s, o, st))
    print(f"segment quantize kernel {bits}-bit: {pct(t)}")
    sym = (cp.empty(ng, cp.float32), cp.empty(ng, cp.float32))
    t = event_time(lambda: crtn.rtn_quantize_groups(x, g, bits, True, 0, 0, np.uint64(0), 16, packed, *sym, st))
    print(f"segment quantize kernel {bits}-bit symmetric: {pct(t)}")
    t = event_time(lambda: crtn.rtn_quantize_groups(x, g, bits, False, 1, 0, np.uint64(0), 16, packed, s, o, st))
    print(f"segment quantize kernel {bits}-bit float16 scales: {pct(t)}")
    k = kernel("rtn_groups", "lowbit_rtn_quantize_groups_f16_k4")  # the general warp-per-group kernel
    t = event_time(lambda: k((ng // 8,), (256,), (x, np.int64(ng), np.int32(bits), np.int32(0), np.int32(0),
                                                  np.int32(0), np.uint64(0), np.int32(16), packed, s, o, st)))
    print(f"warp-per-group kernel {bits}-bit: {pct(t)}")
    t = event_time(lambda: lowbit.quantize(x, bits=bits, scheme="rtn", group_size=g))
    print(f"front lowbit.quantize {bits}-bit (cupy): {pct(t)}")
    out = cp.empty(n, cp.float16)
    t = event_time(lambda: crtn.rtn_decode(packed, g, s, o, bits, False, out))
    print(f"lane decode kernel {bits}-bit: {pct(t)}")
    q = lowbit.quantize(x, bits=bits, scheme="rtn", group_size=g)
    t = event_time(q.dequantize)
    print(f"front dequantize {bits}-bit: {pct(t)}")
    del q
