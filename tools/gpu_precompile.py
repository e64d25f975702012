"""Compile lowbit's CUDA modules in parallel into CuPy's on-disk kernel cache (on a GPU box).

A fresh machine compiles each module on first use, one after another (NVRTC is single-threaded;
rtn.cu takes seconds per bit width).  Run this first, and the tests and benchmarks that follow
in the same machine load the cached modules instead.

Usage: python tools/gpu_precompile.py [source ...]   (default: every module in MODULES)
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit

_LANE_BITS = [(f"-DLOWBIT_LANE_BITS={b}",) for b in range(1, 9)]
#: (source, defines) of every module the wrappers build (lowbit/cuda/rtn.py: the lane, segment
#: and lane-decode modules once per bit width).
def _kvarn_defines() -> tuple[str, ...]:
    from lowbit.cuda.kvarn import _defines

    return _defines()


MODULES = {
    "rtn": [()],
    "rtn_groups": [()],
    "rtn_lanes": _LANE_BITS,
    "rtn_seg": _LANE_BITS,
    "rtn_decode_lanes": _LANE_BITS,
    "packing": [()],
    "codec": [()],
    "blockcodec": [()],
    "rounding": [()],
    "diffusion": [()],
    "kvarn": [_kvarn_defines()],
    "kvarn_decode": [_kvarn_defines()],
    "kvarn_decode128": [_kvarn_defines()],
    "codebook": [()],
    "kvarn_grid": [_kvarn_defines()],
    "kv_attend": [("-DLOWBIT_M=4",)],
}


def _compile(job: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...], float]:
    from lowbit.cuda._module import _module

    t = time.perf_counter()
    _module(job[0], 0, job[1]).compile()  # RawModule compiles lazily otherwise
    return job[0], job[1], time.perf_counter() - t


def main() -> int:
    names = sys.argv[1:] or list(MODULES)
    jobs = [(name, d) for name in names for d in MODULES[name]]
    t = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
        for name, defines, seconds in pool.map(_compile, jobs):
            print(f"{name} {' '.join(defines) or '(main)'}: {seconds:.1f} s", flush=True)
    print(f"{len(jobs)} modules in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
