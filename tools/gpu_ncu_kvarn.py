"""Launch the fused KVarN store and both decoders once on 8,192 tiles (D = G = 128, V, 2-bit) for
a profiler: ncu --kernel-name regex:kvarn --launch-count 3 python3 tools/gpu_ncu_kvarn.py"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit
from lowbit.cuda import kvarn as cuda_kvarn  # noqa: E402

n, g, d, bits = 8192, 128, 128, 2
x = cp.random.standard_normal((n, g, d), dtype=cp.float32).astype(cp.float16)
out = (cp.empty((n, g * d * bits // 8), cp.uint8), cp.empty((n, g), cp.uint16), cp.empty((n, g), cp.uint16),
       cp.empty((n, d), cp.uint16), cp.empty(n, cp.int8))
cuda_kvarn.kvarn_encode(x, True, False, bits, 8, 0, True, *out)
dec = cp.empty((n, g, d), cp.float16)
cuda_kvarn.kvarn_decode(out[0], True, False, bits, 0, *out[1:], dec)
cuda_kvarn.FAST_DECODE = False
cuda_kvarn.kvarn_decode(out[0], True, False, bits, 0, *out[1:], dec)
cp.cuda.Device().synchronize()
print("kvarn encode + two decoders ran", np.float32(cp.abs(dec.astype(cp.float32) - x.astype(cp.float32)).mean()))
