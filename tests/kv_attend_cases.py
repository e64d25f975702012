"""Inputs of the kv_attend checks, shared by tests/test_kv_attend.py and tools/gpu_attend_check.py
(the same cases for the CUDA-core and the tensor-core kernel)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lowbit.kv.attend import TileStore, stack


def kv(rng: np.random.Generator, b: int, h: int, t: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys with a log-normal scale per token (outlier tokens) and standard normal values, float32."""
    k = rng.standard_normal((b, h, t, d)) * np.exp(rng.normal(0, 0.5, (b, h, t, 1)))
    v = rng.standard_normal((b, h, t, d))
    return k.astype(np.float32), v.astype(np.float32)


#: a ragged batch: sink only, tiles + recent, tiles exactly, one tile + 1; ``start`` masking left
#: padding inside the sink and inside a tile (sink 32, G = 128, D = 64, Hk = 2, Hq = 8)
RAGGED_TOKENS = (20, 32 + 2 * 128 + 50, 32 + 3 * 128, 32 + 128 + 1)
RAGGED_STARTS = (0, 5, 40, 0)


def ragged_batch(rng: np.random.Generator, make: Callable[[np.ndarray, np.ndarray], Any]
                 ) -> tuple[list[Any], list[TileStore], TileStore, np.ndarray]:
    """The caches ``make(k, v)`` of :data:`RAGGED_TOKENS`, their tile stores with
    :data:`RAGGED_STARTS` as ``start``, those stacked into one batch, and queries [4, 8, 1, 64]:
    (caches, stores, batch, q)."""
    caches = []
    for t in RAGGED_TOKENS:
        k, v = kv(rng, 1, 2, t, 64)
        caches.append(make(k, v))
    stores = [c.tile_store() for c in caches]
    for s, first in zip(stores, RAGGED_STARTS, strict=True):
        s.lengths[:, 0] = first
    q = rng.standard_normal((4, 8, 1, 64)).astype(np.float32)
    return caches, stores, stack(stores), q
