"""Run benchmarks/bench_kv_attend_cuda.py's k4v2 case at (B = 16, 32k) for a profiler:
ncu --kernel-name regex:kv_attend_split --launch-count 1 python3 tools/gpu_ncu_kv_attend.py"""

from __future__ import annotations

import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(root), str(root / "benchmarks")]  # this checkout's lowbit and benchmarks
import bench_kv_attend_cuda as bench  # noqa: E402

sec, read = bench.lowbit_case("kvarn-k4v2-g128", 16, 32768)
print(f"kv_attend k4v2 (16, 32k): {sec * 1e3:.3f} ms, {read / 1e9:.2f} GB read")
