"""A small kv_attend run for compute-sanitizer (ragged batch with left padding, kvarn and kivi)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cupy
import numpy as np

from lowbit.kv import QuantizedKVCache
from lowbit.kv.attend import TileStore, attend, stack


def main() -> None:
    rng = np.random.default_rng(0)
    for scheme, opts in (("kvarn-k4v2-g64", {}), ("kivi", {"group_size": 64})):
        stores = []
        for t in (20, 32 + 3 * 64 + 5):
            c = QuantizedKVCache(scheme, 64, sink=32, **opts)
            k = rng.standard_normal((1, 2, t, 64)).astype(np.float32)
            c.append(k, k)
            stores.append(c.tile_store())
        stores[1].lengths[:, 0] = 3
        s = stack(stores)
        moved = TileStore(s.codec, s.group_size, *(cupy.asarray(a) for a in (
            s.sink_k, s.sink_v, s.recent_k, s.recent_v, s.k_codes, s.v_codes)),
            {n: cupy.asarray(a) for n, a in s.k_fields.items()},
            {n: cupy.asarray(a) for n, a in s.v_fields.items()}, cupy.asarray(s.lengths))
        out = attend(moved, cupy.asarray(rng.standard_normal((2, 8, 1, 64)).astype(np.float32)))
        assert bool(cupy.isfinite(out).all())
    cupy.cuda.Device().synchronize()
    print("sanitize run done")


if __name__ == "__main__":
    main()
