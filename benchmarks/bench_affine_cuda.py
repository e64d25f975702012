"""GPU: group-wise rtn quantize+pack of >= 1 GiB fp16 vs torch eager ops doing the same.

Skipped (no rows) without a CUDA device.  Traffic counted: x read once + codes and
scales written (the minimum any implementation must move).
"""

from __future__ import annotations

import functools

from cuda_common import event_time, event_time_stream, gpu_available, gpu_row

import lowbit


def torch_quantize_pack(x, bits: int, group: int):
    import torch

    g = x.view(-1, group)
    lo = g.amin(dim=1, keepdim=True)
    hi = g.amax(dim=1, keepdim=True)
    exact = (hi.double() - lo.double()) / (2**bits - 1)
    scale = exact.float()
    scale = torch.where(scale.double() < exact, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((g.double() - lo.double()) / scale.double()), 0, 2**bits - 1)
    codes = q.to(torch.uint8).view(-1, 8 // bits)
    shifts = torch.arange(0, 8, bits, device=x.device, dtype=torch.uint8)
    packed = (codes << shifts).sum(dim=1, dtype=torch.uint8)
    return packed, scale, lo


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("note: bench_affine_cuda skipped (no CUDA device)")
        return []
    import torch

    n = (1 << 24) if quick else (1 << 29)  # 1 GiB of fp16
    group = 128
    x = torch.randn(n, device="cuda", dtype=torch.float16)
    rows = []
    for bits in (2, 4):
        q = lowbit.quantize(x, bits=bits, scheme="rtn", group_size=group)
        ref = torch_quantize_pack(x, bits, group)[0]
        assert torch.equal(torch.from_dlpack(q.codes), ref), "baseline and lowbit disagree"
        t = event_time(functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=group))
        tb = event_time(functools.partial(torch_quantize_pack, x, bits, group), repeat=5)
        traffic = 2 * n + n * bits // 8 + 8 * (n // group)
        rows.append(gpu_row(f"cuda rtn quantize+pack {bits}-bit g{group}", f"{2 * n >> 20} MiB f16",
                            t, "torch eager", tb, traffic, n))
        # without the synchronizing NaN/overflow check, calls queue back to back as torch's do
        t = event_time_stream(functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=group,
                                                check_finite=False))
        rows.append(gpu_row(f"cuda rtn quantize+pack {bits}-bit g{group} check_finite=False",
                            f"{2 * n >> 20} MiB f16", t, "torch eager", tb, traffic, n))
        t = event_time_stream(q.dequantize)  # asynchronous: its host time overlaps the previous call
        rows.append(gpu_row(f"cuda rtn unpack+dequantize {bits}-bit", f"{2 * n >> 20} MiB f16",
                            t, "(same run, no baseline)", t, traffic, n))
        del q
    rows.extend(_kernel_rows(x, group))
    if not quick:
        rows.extend(_large_front_rows(group))
    return rows


def _large_front_rows(group: int) -> list[dict]:
    """The front on 4 GiB of fp16: its fixed per-call host time (~0.1 ms) against a 4x longer
    kernel (no baseline: the torch composition's float64 temporaries would need ~40 GiB)."""
    import torch

    n = 1 << 31
    x = torch.randn(n, device="cuda", dtype=torch.float16)
    rows = []
    for bits in (2, 4):
        traffic = 2 * n + n * bits // 8 + 8 * (n // group)
        for check in (True, False):
            t = event_time_stream(functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=group,
                                                    check_finite=check), calls=3)
            rows.append(gpu_row(f"cuda rtn quantize+pack {bits}-bit g{group}" + ("" if check else " check_finite=False"),
                                f"{2 * n >> 20} MiB f16", t, "(same run, no baseline)", t, traffic, n))
    return rows


def _kernel_rows(x, group: int) -> list[dict]:
    """The CUDA kernels alone (outputs preallocated): the operation without the Python front's
    per-call host time (argument checks, allocations, launch, the status read), which CUDA
    events around a front call also count while the GPU waits."""
    import cupy as cp
    import numpy as np
    import torch

    import lowbit.cuda as cuda

    rows = []
    n = x.numel()
    for label, xc in (("f16", cp.from_dlpack(x)),
                      ("bf16", cp.from_dlpack(x.to(torch.bfloat16).view(torch.int16)).view(cp.uint16))):
        ng = n // group
        for bits in (2, 4):
            packed = cp.empty(n * bits // 8, cp.uint8)
            scale, offset = cp.empty(ng, cp.float32), cp.empty(ng, cp.float32)
            status = cp.zeros(1, cp.int32)
            args = (xc, group, bits, False, 0, 0, np.uint64(0), 16, packed, scale, offset, status)
            t = event_time(functools.partial(cuda.rtn_quantize_groups, *args))
            traffic = 2 * n + n * bits // 8 + 8 * ng
            rows.append(gpu_row(f"cuda rtn quantize+pack kernel {bits}-bit g{group}", f"{2 * n >> 20} MiB {label}",
                                t, "(same run, no baseline)", t, traffic, n))
            out = cp.empty(n, cp.float16 if label == "f16" else cp.uint16)
            t = event_time(functools.partial(cuda.rtn_decode, packed, group, scale, offset, bits, False, out))
            rows.append(gpu_row(f"cuda rtn unpack+dequantize kernel {bits}-bit", f"{2 * n >> 20} MiB {label}",
                                t, "(same run, no baseline)", t, traffic, n))
            if bits == 2:
                rows.append(_midpoint_decode_row(cuda, packed, group, ng, out, label, traffic, n))
    return rows


def _midpoint_decode_row(cuda, packed, group: int, ng: int, out, label: str, traffic: int, n: int) -> dict:
    """The decode's worst case: offsets on 16-bit midpoints and scales far below them, so that
    every lane's float32 results hit midpoints and take the round-to-odd redo (rtn_decode_lanes.cu,
    decode_item); real data needs it in about 1 of 8,000 float16 outputs."""
    import cupy as cp

    man = 10 if label == "f16" else 7
    k = cp.random.randint(1 << man, 2 << man, ng).astype(cp.float64)
    offset = cp.ldexp(k + 0.5, 12 - man).astype(cp.float32)  # midpoints in [2^12, 2^13)
    scale = cp.full(ng, 2.0 ** (12 - 26), cp.float32)  # 3 * scale < half a float32 ulp
    t = event_time(functools.partial(cuda.rtn_decode, packed, group, scale, offset, 2, False, out))
    return gpu_row("cuda rtn unpack+dequantize kernel 2-bit, every lane at a 16-bit midpoint",
                   f"{2 * n >> 20} MiB {label}", t, "(same run, no baseline)", t, traffic, n)


if __name__ == "__main__":
    import sys

    from lowbit.benchrun import format_table

    print(format_table(run("--quick" in sys.argv)))
