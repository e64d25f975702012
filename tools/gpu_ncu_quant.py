"""Launch the rtn segment quantize kernel once on 1 GiB of float16 (2-bit, groups of 128), for a
profiler: ncu --kernel-name regex:quantize python3 tools/gpu_ncu_quant.py"""

from __future__ import annotations

import cupy as cp
import numpy as np

from lowbit.cuda._module import kernel
from lowbit.cuda.rtn import SEG_THREADS, _lane_defines, resident_grid

n, g, bits = 1 << 29, 128, 2
x = cp.random.standard_normal(n, dtype=cp.float32).astype(cp.float16)
items, ng = n // 32, n // g
packed, s, o, st = cp.empty(n * bits // 8, cp.uint8), cp.empty(ng, cp.float32), cp.empty(ng, cp.float32), cp.zeros(1, cp.int32)
args = (x, np.int64(items), np.int32(g // 32), np.int32(0), np.int32(0), np.int32(0), np.uint64(0), np.int32(16),
        packed, s, o, st)
k = kernel("rtn_seg", f"lowbit_rtn_quantize_seg_f16_b{bits}", _lane_defines(bits))
blocks = resident_grid(k, SEG_THREADS, items // 4)
k(blocks, (SEG_THREADS,), args)
cp.cuda.Device().synchronize()
print("seg", blocks, k.num_regs)
