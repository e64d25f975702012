"""GPU: element and block formats, stochastic rounding, decoding and error diffusion on 1 GiB of
float16, against the device's measured copy bandwidth (read + write counted).

Skipped (no rows) without a CUDA device.  Each row's traffic is the fewest bytes the operation
must move: the float16 input read once, codes (packed) and scales written once; decoding reads
codes and writes float16.  Baselines, same run: the copy itself, and torch's
``x.to(torch.float8_e4m3fn)`` for the direct fp8 conversion.  torch's cast and lowbit differ
out of range: torch maps |x| > 448 (after rounding) to NaN (e4m3fn has no Inf; it does not
saturate), lowbit's default ``overflow="saturate"`` writes +-448 (OCP's saturating mode);
within range both round to nearest even, so their codes agree there (checked below).
Run: ``python benchmarks/bench_formats_cuda.py [--quick]``.
"""

from __future__ import annotations

import functools
import sys

from cuda_common import device_copy_bandwidth, event_time, gpu_available, gpu_row

import lowbit
import lowbit.blockfmt
import lowbit.codec


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("bench_formats_cuda: skipped (no CUDA device)", file=sys.stderr)
        return []
    import cupy as cp
    import numpy as np
    import torch

    import lowbit.cuda as cuda
    from lowbit.formats import FP8_E4M3

    n = (1 << 26) if quick else (1 << 29)  # 1 GiB of float16
    xt = (torch.randn(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 100).half()
    x = cp.from_dlpack(xt)
    copy_t = 2 * n * 2 / device_copy_bandwidth()
    rows: list[dict] = []

    def add(name: str, fn, nbytes: int, baseline: str = "device copy of the same bytes",
            baseline_t: float | None = None) -> float:
        t = event_time(fn, repeat=10, warmup=2)
        rows.append(gpu_row(name, f"{n * 2 >> 20} MiB float16", t, baseline,
                            baseline_t if baseline_t is not None else copy_t, nbytes, n))
        print(f"{name}: {t * 1e3:.3f} ms, {rows[-1]['pct_copy']:.1f}% of copy", flush=True)
        return t

    ones = cp.ones(1, cp.float64)
    codes = cp.empty(n, cp.uint8)
    none = cp.empty(0, cp.uint8)
    spec = FP8_E4M3.spec

    # fp8 e4m3, nearest even, direct: kernel, front, torch's cast
    enc = functools.partial(cuda.minifloat_encode, x, n, ones, spec, 0, 0, np.uint64(0), 0, 16, codes, none)
    enc()
    tt = event_time(lambda: xt.to(torch.float8_e4m3fn), repeat=10, warmup=2)
    mine = cp.asnumpy(codes[: 1 << 20])
    theirs = xt[: 1 << 20].to(torch.float8_e4m3fn).view(torch.uint8).cpu().numpy()
    inside = np.abs(cp.asnumpy(x[: 1 << 20]).astype(np.float32)) <= 448
    assert np.array_equal(mine[inside], theirs[inside]), "fp8 codes differ from torch's within range"
    add("fp8_e4m3 nearest_even kernel (minifloat_encode)", enc, 3 * n)
    rows.append(gpu_row("torch x.to(float8_e4m3fn) (NaN beyond 448, no saturation)", f"{n * 2 >> 20} MiB float16",
                        tt, "device copy of the same bytes", copy_t, 3 * n, n))
    print(f"torch x.to(float8_e4m3fn): {tt * 1e3:.3f} ms, {rows[-1]['pct_copy']:.1f}% of copy", flush=True)
    add("lowbit.quantize fp8_e4m3 (front, saturating)", lambda: lowbit.quantize(x, scheme="fp8_e4m3"), 3 * n,
        "torch x.to(float8_e4m3fn)", tt)
    # stochastic
    sto = functools.partial(cuda.minifloat_encode, x, n, ones, spec, 0, 6, np.uint64(1), 0, 16, codes, none)
    add("fp8_e4m3 stochastic kernel (minifloat_encode)", sto, 3 * n)
    add("lowbit.quantize fp8_e4m3 stochastic (front)",
        lambda: lowbit.quantize(x, scheme="fp8_e4m3", rounding="stochastic", seed=1), 3 * n)
    # block formats: front, quantize + pack (scales of 32 / 16 elements written too)
    x2 = x.reshape(-1, 4096)
    for scheme, bits, block, extra in (("mxfp4", 4, 32, 0), ("mxfp8", 8, 32, 0), ("nvfp4", 4, 16, 0)):
        traffic = 2 * n + n * bits // 8 + n // block
        add(f"lowbit.quantize {scheme} (front: {'finite_block_amax + ' if scheme == 'nvfp4' else ''}block_quantize)",
            lambda s=scheme: lowbit.quantize(x2, scheme=s), traffic + extra)
    add("lowbit.quantize mxfp4 stochastic", lambda: lowbit.quantize(x2, scheme="mxfp4", rounding="stochastic", seed=3),
        2 * n + n // 2 + n // 32)
    # the fused kernels alone (one pass: load, block amax, scale, encode, pack), beside the front rows;
    # the old multi-pass composition they replace, same process: block_absmax + minifloat_encode + pack_codes
    from lowbit.formats import BLOCK_FORMATS
    from lowbit.validate import NOT_FIXED

    nvfp4_tensor = float(lowbit.quantize(x2[:64], scheme="nvfp4").fields["tensor_scale"][0])
    for scheme, mode in (("mxfp4", 0), ("mxfp8", 0), ("nvfp4", 0), ("mxfp4", 6)):
        fmt = BLOCK_FORMATS[scheme]
        bits, block = fmt.element.bits, fmt.block_size
        packed, scales = cp.empty(n * bits // 8, cp.uint8), cp.empty(n // block, cp.uint8)
        tensor = nvfp4_tensor if fmt.tensor_scale else 0.0
        fused = functools.partial(cuda.block_quantize, x, 4096, block, fmt.element.spec, NOT_FIXED, fmt.element.emax,
                                  spec, tensor, mode, np.uint64(3), 0, 16, packed, scales)
        label = "stochastic " if mode else ""
        add(f"{scheme} {label}block_quantize (fused kernel, one pass)", fused, 2 * n + n * bits // 8 + n // block)

        def multi_pass(fmt=fmt, mode=mode, bits=bits, block=block, packed=packed):
            amax = cp.empty(n // block, cp.float64)
            cuda.block_absmax(x, block, amax)
            scale64 = lowbit.blockfmt.e8m0_scales(amax, fmt.element.emax)[1] if not fmt.tensor_scale else amax
            q = cp.empty(n, cp.uint8)
            cuda.minifloat_encode(x, block, scale64, fmt.element.spec, 0, mode, np.uint64(3), 0, 16, q, none)
            if bits < 8:
                cuda.pack_codes(q, bits, packed)

        if not fmt.tensor_scale:  # (NVFP4's old composition also encoded its e4m3 scales: not rebuilt here)
            add(f"{scheme} {label}block_absmax + scales + minifloat_encode + pack_codes (old multi-pass kernels)",
                multi_pass, 2 * n + n * bits // 8 + n // block)
    add("nvfp4 finite_block_amax (the tensor amax pass, kernel)",
        functools.partial(cuda.finite_block_amax, x, 4096, 16, cp.empty(1, cp.float64)), 2 * n)
    add("block_absmax, blocks of 32 (kernel)",
        functools.partial(cuda.block_absmax, x, 32, cp.empty(n // 32, cp.float64)), 2 * n + n // 4)
    # decoding
    q8 = lowbit.quantize(x, scheme="fp8_e4m3")
    out = cp.empty(n, cp.float16)
    table = cp.asarray(FP8_E4M3.decode_table())
    add("fp8_e4m3 decode_table -> float16 (kernel)",
        functools.partial(cuda.decode_table, q8.codes, 8, table, n, ones, out), 3 * n)
    add("fp8_e4m3 dequantize (front)", q8.dequantize, 3 * n)
    q4 = lowbit.quantize(x2, scheme="mxfp4")
    add("mxfp4 dequantize (front)", q4.dequantize, n // 2 + n // 32 + 2 * n)
    table4 = cp.asarray(lowbit.codec.decode_values(BLOCK_FORMATS["mxfp4"].element))
    add("mxfp4 block_dequantize -> float16 (fused kernel)",
        functools.partial(cuda.block_dequantize, q4.codes, q4.fields["scale"], 4096, 32, 4, table4, spec, 0.0, out),
        n // 2 + n // 32 + 2 * n)
    # first-order diffusion along rows of (65536, 4096) float16
    rows_x = x.reshape(-1, 4096)
    dout = cp.empty_like(rows_x)
    add("diffuse_rows order 1, (65536, 4096) float16 (kernel)",
        functools.partial(cuda.diffuse_rows, rows_x, 1, -np.inf, np.inf, dout), 4 * n)
    return rows


if __name__ == "__main__":
    from lowbit.benchrun import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
