"""GPU timing helpers: CUDA events, device copy bandwidth (shared by bench_*_cuda.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from common import row


def gpu_available() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except ImportError:
        return False


def event_time(fn: Callable[[], Any], repeat: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` measured with CUDA events on the current stream."""
    return event_time_stream(fn, calls=1, repeat=repeat, warmup=warmup)


def event_time_stream(fn: Callable[[], Any], calls: int = 10, repeat: int = 5, warmup: int = 3) -> float:
    """Median seconds per call of ``calls`` back-to-back ``fn()`` between two CUDA events: the
    throughput of an asynchronous front, whose host time overlaps the previous call's kernel
    (for a front that synchronizes, the same as :func:`event_time`)."""
    import cupy

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3 / calls)
    times.sort()
    return times[len(times) // 2]


@functools.cache
def device_copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted)."""
    import cupy

    src = cupy.ones(nbytes // 4, cupy.float32)
    dst = cupy.empty_like(src)
    t = event_time(functools.partial(cupy.copyto, dst, src))
    return 2 * nbytes / t


def gpu_row(name: str, size: str, seconds: float, baseline: str, baseline_seconds: float,
            nbytes: int, elements: int) -> dict[str, Any]:
    """One result row against the device's measured copy bandwidth."""
    return row(name, size, seconds, baseline, baseline_seconds, nbytes, elements,
               device_copy_bandwidth())
