"""Small runs of every CUDA format / rounding / diffusion kernel for compute-sanitizer.

Each kernel variant once on a few odd sizes (partial units, unaligned views, every input dtype,
block scales, status arrays, the fused block kernels), each checked against the CPU twin:
  compute-sanitizer --tool memcheck python tools/gpu_sanitize_formats.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lowbit
import lowbit  # noqa: E402
import lowbit.cpu as cpu  # noqa: E402
import lowbit.cuda as cuda  # noqa: E402
from lowbit import formats as F  # noqa: E402


def check(got, want, what: str) -> None:
    g, w = cp.asnumpy(got), np.asarray(want)
    ok = np.array_equal(g, w, equal_nan=True) if g.dtype.kind == "f" else np.array_equal(g, w)
    assert ok, what


def main() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 9, 33, 1000):
        x64 = rng.standard_normal(n + 1) * 50
        for dtype in ("float16", "float32", "float64"):
            full = x64.astype(dtype)
            xc, xg = full[1:], cp.asarray(full)[1:]  # an unaligned view: the scalar paths
            xc32 = xc.astype(np.float32) if dtype == "float16" else xc
            for fmt in (F.FP8_E4M3, F.FP4_E2M1, F.FLOAT16, F.FLOAT32):
                cdt = np.uint8 if fmt.bits <= 8 else np.uint16 if fmt.bits <= 16 else np.uint32
                for block in (n, 4):
                    scale = np.ones(1) if block == n else rng.standard_normal(-(-n // 4))
                    cc, sc = np.empty(n, cdt), np.empty(n, np.uint8)
                    cpu.minifloat_encode(xc32, block, scale, fmt.spec, 3, 6, np.uint64(5), 3, 16, cc, sc)
                    cg, sg = cp.empty(n, cdt), cp.empty(n, cp.uint8)
                    cuda.minifloat_encode(xg, block, cp.asarray(scale), fmt.spec, 3, 6, np.uint64(5), 3, 16, cg, sg)
                    check(cg, cc, f"minifloat_encode {fmt.name} {dtype} {n}")
                    check(sg, sc, f"status {fmt.name} {dtype} {n}")
                    out = cp.empty(n, dtype)
                    want = np.empty(n)
                    cpu.minifloat_decode(cc, fmt.spec, want)
                    cuda.minifloat_decode(cg, fmt.spec, out)
                    check(out, want.astype(dtype), f"minifloat_decode {fmt.name}")
            cc, sc = np.empty(n, np.uint8), np.empty(n, np.uint8)
            cpu.fixed_encode(xc32, n, np.ones(1), 5, 1, -16, 15, 2, 6, np.uint64(1), 0, 8, cc, sc)
            cg, sg = cp.empty(n, cp.uint8), cp.empty(n, cp.uint8)
            cuda.fixed_encode(xg, n, cp.ones(1), 5, 1, -16, 15, 2, 6, np.uint64(1), 0, 8, cg, sg)
            check(cg, cc, "fixed_encode")
            for block in (1, 5, 300, 5000):
                nb = n // block
                if nb == 0:
                    continue
                want = np.empty(nb)
                cpu.block_absmax(xc32, block, want)
                got = cp.empty(nb)
                cuda.block_absmax(xg, block, got)
                check(got, want, f"block_absmax {block}")
            for bits in (1, 4, 6, 8):
                codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
                packed = np.empty((n * bits + 7) // 8, np.uint8)
                cpu.pack_codes(codes, bits, packed)
                table = rng.standard_normal(1 << bits)
                want = np.empty(n)
                cpu.decode_table(packed, bits, table, 3, np.full(-(-n // 3), 0.5), want)
                out = cp.empty(n + 1, dtype)[1:]
                cuda.decode_table(cp.asarray(packed), bits, cp.asarray(table), 3, cp.full(-(-n // 3), 0.5), out)
                check(out, want.astype(dtype), f"decode_table {bits}")
            check(lowbit.round(xg, mode="stochastic", seed=3), lowbit.round(xc, mode="stochastic", seed=3), "round")
    for shape, dtype in (((1, 5), "float32"), ((33, 70), "float32"), ((64, 33), "float64"), ((33, 256), "float16")):
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        for order in (1, 2):
            check(lowbit.round(cp.asarray(x), mode="diffuse", order=order),
                  lowbit.round(x, mode="diffuse", order=order), "diffuse_rows")
    x = rng.random((3, 9, 11)).astype(np.float32) * 3
    for kernel in ("floyd_steinberg", "jarvis_judice_ninke", "stucki", "atkinson"):
        for scan in ("raster", "serpentine"):
            check(lowbit.round(cp.asarray(x), mode="diffuse", kernel=kernel, scan=scan),
                  lowbit.round(x, mode="diffuse", kernel=kernel, scan=scan), f"diffuse_2d {kernel}")
    for scheme in ("mxfp4", "nvfp4", "mxint8", "fp6_e2m3"):
        y = rng.standard_normal((3, 50)).astype(np.float32)
        check(lowbit.quantize(cp.asarray(y), scheme=scheme).codes, lowbit.quantize(y, scheme=scheme).codes, scheme)
    # the fused block kernels: partial last blocks (length 50), unaligned inputs, every dtype
    for scheme in ("mxfp4", "mxfp8", "nvfp4", "mxint8", "mxfp6"):
        for dtype in ("float16", "float32", "float64"):
            y = (rng.standard_normal((3, 51)) * 5).astype(dtype)
            yc = y[:, 1:]
            yg = cp.asarray(y)[:, 1:]
            qg = lowbit.quantize(yg, scheme=scheme, rounding="stochastic", seed=2)
            qc = lowbit.quantize(yc, scheme=scheme, rounding="stochastic", seed=2)
            check(qg.codes, qc.codes, f"block_quantize {scheme} {dtype}")
            check(qg.fields["scale"], qc.fields["scale"], f"block scales {scheme} {dtype}")
            check(qg.dequantize(), qc.dequantize(), f"block_dequantize {scheme} {dtype}")
    cp.cuda.Device().synchronize()
    print("gpu_sanitize_formats: all kernels ran and matched the CPU")


if __name__ == "__main__":
    main()
