"""Diagnose the rtn CUDA kernels: registers/local memory, kernel-only vs front timings."""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

sys.path.insert(0, "benchmarks")
from cuda_common import device_copy_bandwidth, event_time  # noqa: E402

import lowbit  # noqa: E402
from lowbit.cuda import rtn as crtn  # noqa: E402
from lowbit.cuda._module import kernel  # noqa: E402

n = 1 << 29
x = cp.random.standard_normal(n, dtype=cp.float32).astype(cp.float16)
g = 128
ng = n // g
bw = device_copy_bandwidth()
print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
for name in ("lowbit_rtn_quantize_groups_f16_k4", "lowbit_rtn_encode_f16", "lowbit_rtn_decode_f16",
             "lowbit_group_range_f16"):
    k = kernel("rtn", name)
    print(name, "regs", k.num_regs, "local", k.local_size_bytes, "shared", k.shared_size_bytes,
          "max threads", k.max_threads_per_block)
for bits in (2, 4):
    packed = cp.empty(n * bits // 8, cp.uint8)
    s = cp.empty(ng, cp.float32)
    o = cp.empty(ng, cp.float32)
    t = event_time(lambda: crtn.rtn_quantize_groups(x, g, bits, False, 0, 0, np.uint64(0), 16, packed, s, o))
    traffic = 2 * n + n * bits // 8 + 8 * ng
    print(f"fused kernel only {bits}-bit: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")
    t = event_time(lambda: crtn.rtn_encode(x, g, s, o, bits, False, 0, np.uint64(0), 16, packed))
    print(f"two-pass encode kernel {bits}-bit: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")
    lo = cp.empty(ng, cp.float64)
    hi = cp.empty(ng, cp.float64)
    t = event_time(lambda: crtn.group_range(x, g, lo, hi))
    print(f"group_range kernel: {t * 1e3:.3f} ms, {2 * n / t / bw * 100:.1f}% of copy")
    t = event_time(lambda: lowbit.quantize(x, bits=bits, scheme="rtn", group_size=g))
    print(f"front lowbit.quantize {bits}-bit: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")
    out = cp.empty(n, cp.float16)
    t = event_time(lambda: crtn.rtn_decode(packed, g, s, o, bits, False, out))
    print(f"decode kernel only {bits}-bit: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")
