"""Shared timing helpers for lowbit benchmarks (CPU).

Every benchmark reports its baseline measured in the same process, the ratio,
and the fraction of this machine's measured memory-copy bandwidth.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def optional_baseline(module: str) -> Any:
    """Import ``module`` for a baseline, or print a one-line note and return None.

    A baseline that needs a package lowbit does not install (e.g. pychop) is skipped when the
    package is absent; the benchmark keeps its other rows.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = "not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == module else f"fails to import: {exc}"
        print(f"note: {module} baseline skipped ({module} {why}; `pip install {module}` adds it)",
              flush=True)
        return None


def best_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def copy_bandwidth(nbytes: int = 256 << 20) -> float:
    """Measured host copy bandwidth in bytes/s (read + write counted), numpy copyto."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    t = best_time(lambda: np.copyto(dst, src), repeat=5)
    return 2 * src.nbytes / t


def row(name: str, size: str, seconds: float, baseline: str, baseline_seconds: float,
        nbytes: int, elements: int, copy_bytes_per_s: float | None = None) -> dict[str, Any]:
    """One result row: ``nbytes`` is the minimum traffic (bytes read + written) of the op;
    ``copy_bytes_per_s`` defaults to the host's measured copy bandwidth."""
    bandwidth = copy_bytes_per_s if copy_bytes_per_s is not None else copy_bandwidth()
    return {
        "name": name,
        "size": size,
        "seconds": seconds,
        "baseline": baseline,
        "baseline_seconds": baseline_seconds,
        "ratio": baseline_seconds / seconds,
        "elements_per_s": elements / seconds,
        "gbps": nbytes / seconds / 1e9,
        "pct_copy": 100.0 * (nbytes / seconds) / bandwidth,
    }


def dynamic_cache_bytes(cache: Any) -> int:
    """Bytes of a transformers ``DynamicCache``'s key/value tensors."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def lowbit_cache_bytes(cache: Any) -> tuple[int, int]:
    """(bytes held, bytes allocated incl. spare tile capacity) of a ``lowbit.kv.hf`` cache."""
    held = cache.memory_bytes()["total"]
    alloc = 0
    for layer in cache.layers:
        c = getattr(layer, "cache", None)
        if c is None:
            continue
        s = c.tile_store()
        alloc += sum(int(a.nbytes) for a in (s.sink_k, s.sink_v, s.recent_k, s.recent_v, s.k_codes, s.v_codes))
        alloc += sum(int(a.nbytes) for a in list(s.k_fields.values()) + list(s.v_fields.values()))
    return held, alloc
