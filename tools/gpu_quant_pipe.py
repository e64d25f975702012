"""A/B timing of the rtn quantize kernels: register double buffer ("lanes") against the cp.async
shared-memory pipeline ("pipe") at several stage counts and register budgets, plus variants that
leave one stage out (group parameters, tie test) to place the time.  Kernel only, CUDA events,
1 GiB of data; every variant that computes the real codes must match the shipped bytes.

Usage on a GPU machine: python tools/gpu_quant_pipe.py [--quick]
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

sys.path.insert(0, "benchmarks")
from cuda_common import device_copy_bandwidth, event_time  # noqa: E402

from lowbit.cuda._module import OPTIONS, source  # noqa: E402
from lowbit.cuda.rtn import lane_grid, resident_grid  # noqa: E402

PARAMS = "const LaneParams p = lane_params<BITS>(mn, mx, symmetric, fmt, mode);"
FAKE_PARAMS = ("LaneParams p; p.bad = false; p.overflow = false; p.fast = true; p.off = mn; "
               "p.s = (mx - mn) * (1.0f / 3.0f) + 1e-3f; p.inv32 = 1.0f / p.s; p.c32 = -p.off * p.inv32; "
               "p.lim = 0.49f;")
TIE = "near |= !(fabsf(__fsub_rn(y, __fsub_rn(t, 12582912.0f))) < p.lim);"


def main() -> None:
    quick = "--quick" in sys.argv
    bw = device_copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    base = source("rtn")
    assert PARAMS in base and TIE in base
    g = 128
    dtypes = [("f16", cp.float16, 1 << 29)] + ([] if quick else [("bf16", cp.uint16, 1 << 29), ("f32", cp.float32, 1 << 28)])
    for sfx, dt, n in dtypes:
        x32 = cp.random.standard_normal(n, dtype=cp.float32)
        if sfx == "bf16":
            x = (x32.view(cp.uint32) >> 16).astype(cp.uint16)
        else:
            x = x32.astype(dt)
        del x32
        items, ng = n // 32, n // g
        esize = x.itemsize
        w = 16 if esize == 2 else 32
        for bits in ((2, 4) if not quick else (2,)):
            packed = cp.empty(n * bits // 8, cp.uint8)
            s = cp.empty(ng, cp.float32)
            o = cp.empty(ng, cp.float32)
            st = cp.zeros(1, cp.int32)
            traffic = esize * n + n * bits // 8 + 8 * ng
            for symmetric in (0, 1):
                args = (x, np.int64(items), np.int32(g // 32), np.int32(symmetric), np.int32(0), np.int32(0),
                        np.uint64(0), np.int32(16), packed, s, o, st)
                ref = None
                cases = [("lanes (shipped)", base, (), "lanes", 256, True)]
                for stages in (3, 4, 6):
                    for mb in ((4, 6, 8) if w == 16 else (2, 3, 4)):
                        smem = stages * 32 * 16 * (esize * 32 // 16) * 4  # 128 threads
                        if smem > 48 * 1024 or (smem + 1024) * mb > 228 * 1024:
                            continue
                        defs = (f"-DPIPE_STAGES_{w}={stages}", f"-DPIPE_MIN_BLOCKS_{w}={mb}")
                        cases.append((f"pipe S={stages} minblocks={mb}", base, defs, "pipe", 128, True))
                if symmetric == 0:
                    best = ("-DPIPE_STAGES_16=4", "-DPIPE_MIN_BLOCKS_16=6") if w == 16 else ()
                    cases.append(("pipe, fake params", base.replace(PARAMS, FAKE_PARAMS), best, "pipe", 128, False))
                    cases.append(("pipe, no tie test", base.replace(TIE, ""), best, "pipe", 128, False))
                    cases.append(("lanes, fake params", base.replace(PARAMS, FAKE_PARAMS), (), "lanes", 256, False))
                for name, text, defs, kind, threads, exact in cases:
                    m = cp.RawModule(code=text, options=OPTIONS + (f"-DLOWBIT_LANE_BITS={bits}",) + defs)
                    k = m.get_function(f"lowbit_rtn_quantize_{kind}_{sfx}_b{bits}")
                    blocks = lane_grid(k, items) if kind == "lanes" else resident_grid(k, threads, items)
                    packed.fill(0xAB)
                    k(blocks, (threads,), args)
                    if ref is None:
                        ref = (cp.asnumpy(packed), cp.asnumpy(s), cp.asnumpy(o))
                    elif exact:
                        ok = (np.array_equal(ref[0], cp.asnumpy(packed)) and np.array_equal(ref[1], cp.asnumpy(s))
                              and np.array_equal(ref[2], cp.asnumpy(o)))
                        assert ok, name
                    t = event_time(lambda k=k, blocks=blocks, args=args, threads=threads: k(blocks, (threads,), args))
                    print(f"{sfx} {bits}-bit sym={symmetric} {name}: {t * 1e3:.3f} ms, "
                          f"{traffic / t / bw * 100:.1f}% of copy, regs {k.num_regs}, grid {blocks[0]}", flush=True)


if __name__ == "__main__":
    main()
