"""Where the quantize front's time goes on a GPU: host before the launch, host after it, the
status read, and the price of each building block (one call on a GPU box).

CUDA events around ``lowbit.quantize`` charge the host time before the launch (the GPU idles,
having finished the previous call's kernel before that call's status read returned) plus the
kernel plus the status read's wake-up.  This prints that split for 1 GiB of fp16 and the host
cost of each primitive the front uses.  Usage: python tools/gpu_front_timeline.py
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

import cupy as cp
import numpy as np
import torch
import torch.utils.dlpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from cuda_common import device_copy_bandwidth, event_time, event_time_stream  # noqa: E402

import lowbit  # noqa: E402
import lowbit.affine as affine  # noqa: E402
import lowbit.cuda as cuda  # noqa: E402

marks: dict[str, list[float]] = {}


def _mark(name: str) -> None:
    marks.setdefault(name, []).append(time.perf_counter())


def _wrap(owner, attr: str, label: str):  # type: ignore[no-untyped-def]
    fn = getattr(owner, attr)

    def wrapped(*a, **k):  # type: ignore[no-untyped-def]
        _mark(f"{label}>")
        r = fn(*a, **k)
        _mark(f"{label}<")
        return r

    setattr(owner, attr, wrapped)
    return fn


def timeline(x, bits: int, reps: int = 50) -> None:
    """Host timestamps inside the front: start, launch (before/after), status read, end."""
    f = lambda: lowbit.quantize(x, bits=bits, scheme="rtn", group_size=128)  # noqa: E731
    for _ in range(3):
        f()
    marks.clear()
    orig_launch = _wrap(cuda, "rtn_quantize_groups", "launch")
    orig_status = _wrap(affine, "_check_status", "status")
    try:
        for _ in range(reps):
            _mark("call>")
            f()
            _mark("call<")
    finally:
        cuda.rtn_quantize_groups = orig_launch
        affine._check_status = orig_status
    m = {k: np.array(v) for k, v in marks.items()}
    us = lambda a, b: statistics.median((m[b] - m[a]) * 1e6)  # noqa: E731
    print(f"  host before launch {us('call>', 'launch>'):6.1f} us | launch call {us('launch>', 'launch<'):5.1f} us"
          f" | launch->status {us('launch<', 'status>'):5.1f} us | status read {us('status>', 'status<'):6.1f} us"
          f" | after {us('status<', 'call<'):4.1f} us | total {us('call>', 'call<'):6.1f} us")


def per_call(fn, n: int = 2000) -> float:
    for _ in range(20):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def primitives() -> None:
    """Host microseconds of each operation the front does (small arrays; no waiting on the GPU
    except where the operation itself synchronizes)."""
    xt = torch.randn(1 << 20, device="cuda", dtype=torch.float16)
    xc = cp.from_dlpack(xt)
    st = cp.zeros(1, cp.int32)
    k = cuda.rtn.kernel("rtn_seg", "lowbit_rtn_quantize_seg_f16_b2", ("-DLOWBIT_LANE_BITS=2",))
    packed = cp.empty(xc.size // 4, cp.uint8)
    sc = cp.empty(2 * xc.size // 128, cp.float32)
    args = (xc, np.int64(xc.size // 32), np.int32(4), np.int32(0), np.int32(0), np.int32(0), np.uint64(0),
            np.int32(16), packed, sc[: xc.size // 128], sc[xc.size // 128:], st)
    ts = torch.cuda.current_stream()
    ext = cp.cuda.Stream.from_external(ts)
    dev = cp.cuda.Device(0)

    def dev_ctx():
        with cp.cuda.Device(0):
            pass

    def stream_ctx():
        with ext:
            pass

    items = {
        "torch.cuda.current_stream()": lambda: torch.cuda.current_stream(0),
        "to_dlpack + cupy.from_dlpack": lambda: cp.from_dlpack(torch.utils.dlpack.to_dlpack(xt)),
        "cupy.from_dlpack(tensor)": lambda: cp.from_dlpack(xt),
        "tensor.detach()": xt.detach,
        "with cupy.cuda.Device(0)": dev_ctx,
        "cupy.cuda.Device().id": lambda: cp.cuda.Device().id,
        "dev.id (cached Device)": lambda: dev.id,
        "with external stream": stream_ctx,
        "cupy.empty(1 Mi uint8)": lambda: cp.empty(1 << 20, cp.uint8),
        "cupy.empty(16 Ki f32)": lambda: cp.empty(1 << 14, cp.float32),
        "memset_async 4 B": lambda: st.data.memset_async(0, 4),
        "ascontiguousarray(contig)": lambda: cp.ascontiguousarray(xc),
        "reshape(-1)": lambda: xc.reshape(-1),
        "slice + view": lambda: sc[:10].view(cp.int32),
        "kernel launch (seg f16 b2, 1 Mi)": lambda: k(cuda.rtn.resident_grid(k, 32, xc.size // 128), (32,), args),
        "status.get() (idle GPU)": st.get,
        "cupy stream synchronize": lambda: cp.cuda.get_current_stream().synchronize(),
        "torch.from_dlpack(cupy)": lambda: torch.from_dlpack(packed),
        "lowbit.quantize torch 1 Mi": lambda: lowbit.quantize(xt, bits=2, scheme="rtn", group_size=128),
        "lowbit.quantize cupy 1 Mi": lambda: lowbit.quantize(xc, bits=2, scheme="rtn", group_size=128),
    }
    for name, fn in items.items():
        print(f"  {name:36s} {per_call(fn):7.2f} us")
        cp.cuda.runtime.deviceSynchronize()


def main() -> None:
    print(f"device {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, torch {torch.__version__}, "
          f"cupy {cp.__version__}, python {sys.version.split()[0]}")
    print("primitives (host us per call):")
    primitives()
    bw = device_copy_bandwidth()
    n = 1 << 29
    xt = torch.randn(n, device="cuda", dtype=torch.float16)
    xc = cp.from_dlpack(xt)
    for label, x in (("torch", xt), ("cupy", xc)):
        for bits in (2, 4):
            traffic = 2 * n + n * bits // 8 + 8 * (n // 128)
            print(f"{label} 1 GiB fp16, {bits}-bit g128:")
            timeline(x, bits)
            front = functools.partial(lowbit.quantize, x, bits=bits, scheme="rtn", group_size=128)
            t = event_time(front, repeat=20)
            print(f"  events, one call: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")
            t = event_time_stream(functools.partial(front, check_finite=False), calls=10)
            print(f"  events, check_finite=False, 10 back to back: {t * 1e3:.3f} ms per call, "
                  f"{traffic / t / bw * 100:.1f}% of copy")
    for bits in (2, 4):
        packed = cp.empty(n * bits // 8, cp.uint8)
        sc, off, st = cp.empty(n // 128, cp.float32), cp.empty(n // 128, cp.float32), cp.zeros(1, cp.int32)
        args = (xc, 128, bits, False, 0, 0, np.uint64(0), 16, packed, sc, off, st)
        t = event_time(functools.partial(cuda.rtn_quantize_groups, *args), repeat=20)
        traffic = 2 * n + n * bits // 8 + 8 * (n // 128)
        print(f"kernel only {bits}-bit: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% of copy")


if __name__ == "__main__":
    main()
