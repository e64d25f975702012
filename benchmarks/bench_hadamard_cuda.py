"""GPU: FWHT-128 on 2^23 rows of float16 (2 GiB in, 2 GiB out) vs torch float16 ``x @ H`` (cuBLAS).

Skipped (no rows) without a CUDA device.  Traffic counted: x read once + the result written once
(4 bytes per float16 element).  "kernel" rows time ``lowbit.cuda.fwht`` on a preallocated output
(``lowbit.cuda.hadamard.VARIANTS``: hadamard.cu's compile-time knobs and the warp kernel's grid,
side by side, each checked bit for bit against the default on all rows); "front" rows ``lowbit.hadamard(x)``
on a torch tensor (it allocates its output and does not synchronize: timed back to back).
"""

from __future__ import annotations

import functools
import math
import sys

from cuda_common import event_time, event_time_stream, gpu_available, gpu_row

import lowbit


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("bench_hadamard_cuda: skipped (no CUDA device)", file=sys.stderr)
        return []
    import cupy as cp
    import numpy as np
    import torch

    from lowbit.cuda import hadamard as kh

    n = 128
    rows = (1 << 18) if quick else (1 << 23)
    x = torch.randn(rows, n, device="cuda", dtype=torch.float16)
    h = torch.from_numpy(lowbit.hadamard_matrix(n) / math.sqrt(n)).to("cuda", torch.float16)
    size = f"2^{rows.bit_length() - 1} x {n} f16"
    nbytes = 2 * x.numel() * x.element_size()

    # correctness gate, same run: float64 reference on a probe, bit-identical to the CPU twin
    probe = x[:4096]
    exact = probe.double() @ h.double()
    y = lowbit.hadamard(probe)
    err = (y.double() - exact).abs().max().item()
    err_mm = ((probe @ h).double() - exact).abs().max().item()
    assert err <= 2 * err_mm + 1e-3, f"FWHT error {err} vs matmul {err_mm}"
    assert torch.equal(y.cpu(), lowbit.hadamard(probe.cpu())), "GPU and CPU FWHT differ"

    out = torch.empty_like(x)
    t_mm = event_time(functools.partial(torch.matmul, x, h, out=out), repeat=20)
    t_copy = event_time(functools.partial(out.copy_, x), repeat=20)
    results = [gpu_row("copy (torch copy_), reference", size, t_copy, "torch fp16 x @ H (cuBLAS)", t_mm,
                       nbytes, x.numel()),
               gpu_row("torch fp16 x @ H (cuBLAS)", size, t_mm, "torch fp16 x @ H (cuBLAS)", t_mm,
                       nbytes, x.numel())]

    xc, oc = cp.from_dlpack(x), cp.from_dlpack(out)
    core = cp.ones((1, 1), cp.float32)
    none = cp.empty(0, cp.float32)
    signs = cp.empty(n, cp.float32)
    lowbit.cuda.hadamard_signs(np.uint64(1), signs)
    scale = np.float32(1 / math.sqrt(n))
    # the default first; 2026-12-01: E=8 59.5%, E=16 80.8%, E=8 unhinted 69.5% of copy (before the
    # resident grid, prefetch and one-FMA lane butterflies); 2026-12-03: E=32 81.5%
    variants = dict(kh.VARIANTS)
    ref = None
    for label, knobs in variants.items():
        run_kernel = functools.partial(kh._fwht, xc, core, none, True, scale, oc, knobs)
        run_kernel()
        assert torch.equal(out[:4096], y), f"variant {label} differs from the CPU"
        if ref is None:
            ref = out.clone()
        assert torch.equal(out, ref), f"variant {label} differs from the default"
        t = event_time(run_kernel, repeat=20)
        results.append(gpu_row(f"fwht-128 kernel, {label}", size, t, "torch fp16 x @ H (cuBLAS)", t_mm,
                               nbytes, x.numel()))
    del ref
    t = event_time(functools.partial(kh._fwht, xc, core, signs, True, scale, oc, kh.DEFAULT), repeat=20)
    results.append(gpu_row("fwht-128 kernel, random signs", size, t, "torch fp16 x @ H (cuBLAS)", t_mm,
                           nbytes, x.numel()))
    t = event_time_stream(functools.partial(lowbit.hadamard, x))
    results.append(gpu_row("lowbit.hadamard(torch f16) front", size, t, "torch fp16 x @ H (cuBLAS)", t_mm,
                           nbytes, x.numel()))
    xb = x.to(torch.bfloat16)
    t = event_time_stream(functools.partial(lowbit.hadamard, xb))
    results.append(gpu_row("lowbit.hadamard(torch bf16) front", size.replace("f16", "bf16"), t,
                           "torch fp16 x @ H (cuBLAS)", t_mm, nbytes, x.numel()))
    del xb
    x32 = x.float()
    h32 = h.float()
    o32 = torch.empty_like(x32)
    t_mm32 = event_time(functools.partial(torch.matmul, x32, h32, out=o32), repeat=10)
    x32c, o32c = cp.from_dlpack(x32), cp.from_dlpack(o32)
    for label in ("one group per warp, 4 blocks (default)", "resident, prefetch, 64 B/lane, 3 blocks"):
        t = event_time(functools.partial(kh._fwht, x32c, core, none, True, scale, o32c, kh.VARIANTS[label]),
                       repeat=10)
        results.append(gpu_row(f"fwht-128 kernel f32, {label}", size.replace("f16", "f32"), t,
                               "torch f32 x @ H (cuBLAS)", t_mm32, 2 * nbytes, x.numel()))
    return results


if __name__ == "__main__":
    from lowbit.benchrun import format_table

    print(format_table(run("--quick" in sys.argv)))
