"""Timing of the rtn quantize kernels: for 16-bit data the segment kernel (128 elements per
lane, cp.async-fed) at several warp/register budgets, for float32 the lane kernel (32 elements
per lane, register double buffer).  Kernel only, CUDA events,
1 GiB of data; every variant must give the same bytes as the first.

Usage on a GPU machine: python tools/gpu_quant_pipe.py [--quick]
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

sys.path.insert(0, "benchmarks")
from cuda_common import device_copy_bandwidth, event_time  # noqa: E402

from lowbit.cuda._module import OPTIONS, source  # noqa: E402
from lowbit.cuda.rtn import LANE_THREADS, resident_grid  # noqa: E402


def main() -> None:
    quick = "--quick" in sys.argv
    bw = device_copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    base = {"lanes": source("rtn_lanes"), "seg": source("rtn_seg")}
    g = 128
    dtypes = [("f16", cp.float16, 1 << 29)] + ([] if quick else [("bf16", cp.uint16, 1 << 29),
                                                                   ("f32", cp.float32, 1 << 28)])
    for sfx, dt, n in dtypes:
        x32 = cp.random.standard_normal(n, dtype=cp.float32)
        # bfloat16 by rounding to nearest even, as torch's .to(torch.bfloat16) does
        x = (((x32.view(cp.uint32) + 0x7FFF + ((x32.view(cp.uint32) >> 16) & 1)) >> 16).astype(cp.uint16)
             if sfx == "bf16" else x32.astype(dt))
        del x32
        items, ng = n // 32, n // g
        for bits in ((2, 4) if not quick else (2,)):
            packed = cp.empty(n * bits // 8, cp.uint8)
            s = cp.empty(ng, cp.float32)
            o = cp.empty(ng, cp.float32)
            st = cp.zeros(1, cp.int32)
            traffic = x.itemsize * n + n * bits // 8 + 8 * ng
            for symmetric in (0, 1):
                args = (x, np.int64(items), np.int32(g // 32), np.int32(symmetric), np.int32(0), np.int32(0),
                        np.uint64(0), np.int32(16), packed, s, o, st)
                ref = None
                cases = [] if x.itemsize == 2 else [("lanes", base["lanes"], (), "lanes", True)]
                if x.itemsize == 2:
                    for mask in (0, 1):  # near-ties: the warp item by item, or each lane its own elements
                        defs = (f"-DSEG_NEAR_MASK_F16={mask}", f"-DSEG_NEAR_MASK_BF16={mask}")
                        cases.append((f"seg near_mask={mask}", base["seg"], defs, "seg", True))
                for name, text, defs, kind, exact in cases:
                    m = cp.RawModule(code=text, options=OPTIONS + (f"-DLOWBIT_LANE_BITS={bits}",) + defs)
                    k = m.get_function(f"lowbit_rtn_quantize_{kind}_{sfx}_b{bits}")
                    if kind == "lanes":
                        threads, blocks = LANE_THREADS, resident_grid(k, LANE_THREADS, items)
                    else:
                        threads = 32 * int(dict(d[2:].split("=") for d in defs).get("SEG_WARPS", 1))
                        blocks = resident_grid(k, threads, items // 4)
                    packed.fill(0xAB)
                    s.fill(-1.0)
                    k(blocks, (threads,), args)
                    if ref is None:
                        ref = (cp.asnumpy(packed), cp.asnumpy(s), cp.asnumpy(o))
                    elif exact:
                        ok = (np.array_equal(ref[0], cp.asnumpy(packed)) and np.array_equal(ref[1], cp.asnumpy(s))
                              and np.array_equal(ref[2], cp.asnumpy(o)))
                        if not ok:
                            print(f"MISMATCH {name}", flush=True)
                    t = event_time(lambda k=k, blocks=blocks, args=args, threads=threads: k(blocks, (threads,), args))
                    print(f"{sfx} {bits}-bit sym={symmetric} {name}: {t * 1e3:.3f} ms, "
                          f"{traffic / t / bw * 100:.1f}% of copy, regs {k.num_regs}, grid {blocks[0]}x{threads}",
                          flush=True)


if __name__ == "__main__":
    main()
