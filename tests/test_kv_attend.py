"""kv_attend (lowbit.kv.attend): fused attention on packed codes vs float64 attention over the
dequantized cache — every scheme, GQA 1/4/8, ragged batches, region boundaries, multi-query.

Tolerance: the kernel accumulates in float32 over at most a few hundred tokens and D = 64
products (measured relative error ~1e-5); 1e-3 of the output's largest magnitude is the
issue's acceptance bound and still far below what a wrong mask, scale or region gives (> 1e-2).
The tensor-core CUDA kernel (lowbit.cuda.kv_attend.MMA) rounds its query-side operands to TF32;
on it each output element may also differ by the bound of tests/kv_attend_bound.py (TF32
rounding per product, propagated through the softmax; with the default hi + lo operands it is
~2^-17 of the products' absolute sums, below TOL for these inputs).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np
import pytest
from kv_attend_bound import tf32_bound

from lowbit.kv import QuantizedKVCache
from lowbit.kv.attend import TileStore, attend, kernel_layout, reference_attend, stack

SCHEMES = [
    ("kvarn-k2v2-g64", {}), ("kvarn-k4v2-g64", {"scale_dtype": "float8_e4m3"}),
    ("kvarn-k4v4-g128", {}), ("kivi", {"group_size": 64}), ("rtn", {"group_size": 64, "key_bits": 4}),
    ("quarot", {"group_size": 64}), ("fp8", {"group_size": 64}),
]
TOL = 1e-3


def kv(rng: np.random.Generator, b: int, h: int, t: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    k = rng.standard_normal((b, h, t, d)) * np.exp(rng.normal(0, 0.5, (b, h, t, 1)))
    v = rng.standard_normal((b, h, t, d))
    return k.astype(np.float32), v.astype(np.float32)


def on(backend: Any, store: TileStore) -> TileStore:
    if backend.name == "torch_cuda":
        pytest.skip("the kv_attend front takes numpy or CuPy arrays; torch goes through lowbit.kv.hf")
    moved = {f.name: getattr(store, f.name) for f in dataclasses.fields(store)}
    for name, value in moved.items():
        if isinstance(value, np.ndarray):
            moved[name] = backend.asarray(value)
        elif isinstance(value, dict):
            moved[name] = {k: backend.asarray(a) for k, a in value.items()}
    return TileStore(**moved)


def cuda_skips(backend: Any, scheme: str, n_q: int = 1) -> None:
    """The CUDA kernel: decode (L = 1) over kvarn and kivi tiles (lowbit/cuda/kv_attend.py)."""
    if backend.on_gpu and (n_q != 1 or not (scheme.startswith("kvarn") or scheme == "kivi")):
        pytest.skip("CUDA kv_attend: decode over kvarn / kivi tiles only (a known gap)")


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def assert_close(backend: Any, got: np.ndarray, want: np.ndarray, q: np.ndarray, store: TileStore,
                 keys: np.ndarray, values: np.ndarray, start: Any = None) -> None:
    """|got - want| <= TOL max|want| elementwise, plus on the tensor-core CUDA kernel its TF32
    bound (``store`` the numpy TileStore; keys, values as given to reference_attend)."""
    bound: Any = 0.0
    if backend.on_gpu:
        cuda_kv = importlib.import_module("lowbit.cuda.kv_attend")  # the module, not the function
        if cuda_kv.MMA:
            bound = tf32_bound(q, store, keys, values, start=start, split=cuda_kv.MMA_SPLIT)
    assert (np.abs(got - want) <= TOL * np.abs(want).max() + bound).all(), rel_err(got, want)


def filled(scheme: str, opts: dict, k: np.ndarray, v: np.ndarray, sink: int = 32,
           recent: int = 0) -> QuantizedKVCache:
    cache = QuantizedKVCache(scheme, k.shape[3], sink=sink, recent=recent, **opts)
    cache.append(k[:, :, :100], v[:, :, :100])
    for i in range(100, k.shape[2], 37):
        cache.append(k[:, :, i:i + 37], v[:, :, i:i + 37])
    return cache


@pytest.mark.parametrize(("scheme", "opts"), SCHEMES, ids=[s for s, _ in SCHEMES])
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_matches_float64_attention_over_the_dequantized_cache(backend: Any, rng: np.random.Generator,
                                                             scheme: str, opts: dict, ratio: int) -> None:
    cuda_skips(backend, scheme)
    k, v = kv(rng, 2, 2, 32 + 3 * 128 + 21, 64)
    cache = filled(scheme, opts, k, v)
    assert cache.n_tiles >= 3
    q = (rng.standard_normal((2, 2 * ratio, 1, 64)) * 2).astype(np.float32)
    got = backend.to_numpy(attend(on(backend, cache.tile_store()), backend.asarray(q)))
    keys, values = cache.dequantized_keys(), cache.dequantized_values()
    want = reference_attend(q, keys, values)
    assert got.dtype == np.float32 and got.shape == q.shape
    assert_close(backend, got, want, q, cache.tile_store(), keys, values)


@pytest.mark.parametrize(("scheme", "opts"), SCHEMES[:4], ids=[s for s, _ in SCHEMES[:4]])
def test_ragged_batch_and_left_padding(backend: Any, rng: np.random.Generator, scheme: str,
                                       opts: dict) -> None:
    """Sequences of their own lengths (sink only, tiles + recent, tiles exactly) in one batch,
    with ``start`` masking left padding (inside the sink, and inside a tile)."""
    cuda_skips(backend, scheme)
    caches, starts = [], [0, 5, 40, 0]
    for t in (20, 32 + 2 * 128 + 50, 32 + 3 * 128, 32 + 128 + 1):
        k, v = kv(rng, 1, 2, t, 64)
        caches.append(filled(scheme, opts, k, v))
    stores = [c.tile_store() for c in caches]
    for s, first in zip(stores, starts, strict=True):
        s.lengths[:, 0] = first
    batch = stack(stores)
    q = rng.standard_normal((4, 8, 1, 64)).astype(np.float32)
    got = backend.to_numpy(attend(on(backend, batch), backend.asarray(q)))
    for i, (c, first) in enumerate(zip(caches, starts, strict=True)):
        keys, values = c.dequantized_keys(), c.dequantized_values()
        want = reference_attend(q[i:i + 1], keys, values, start=np.array([first]))
        assert_close(backend, got[i:i + 1], want, q[i:i + 1], c.tile_store(), keys, values, np.array([first]))


@pytest.mark.parametrize("tokens", [31, 32, 33, 32 + 127, 32 + 128, 32 + 129, 32 + 256 + 127])
@pytest.mark.parametrize("recent", [0, 64])
def test_region_boundaries(backend: Any, rng: np.random.Generator, tokens: int, recent: int) -> None:
    k, v = kv(rng, 1, 2, tokens, 64)
    cache = filled("kvarn-k4v2-g128", {}, k, v, recent=recent)
    regions = cache.regions()
    assert regions["recent"][1] - regions["recent"][0] >= min(recent, tokens - 32)
    q = rng.standard_normal((1, 8, 1, 64)).astype(np.float32)
    got = backend.to_numpy(attend(on(backend, cache.tile_store()), backend.asarray(q)))
    keys, values = cache.dequantized_keys(), cache.dequantized_values()
    assert_close(backend, got, reference_attend(q, keys, values), q, cache.tile_store(), keys, values)


@pytest.mark.parametrize(("scheme", "opts"), SCHEMES, ids=[s for s, _ in SCHEMES])
def test_multi_query_causal(backend: Any, rng: np.random.Generator, scheme: str, opts: dict) -> None:
    """L queries: (a) a chunk of N >= L exact tokens not yet cached (queries = its last L);
    (b) queries at the cache's own last L positions, which lie inside quantized tiles (the
    causal mask cuts through tiles)."""
    cuda_skips(backend, scheme, 6)
    k, v = kv(rng, 2, 2, 32 + 2 * 128 + 10, 64)
    cache = filled(scheme, opts, k, v)
    store = on(backend, cache.tile_store())
    keys, values = cache.dequantized_keys(), cache.dequantized_values()
    nk, nv = kv(rng, 2, 2, 9, 64)
    for n_q in (1, 6, 9):
        q = rng.standard_normal((2, 8, n_q, 64)).astype(np.float32)
        got = backend.to_numpy(attend(store, backend.asarray(q), backend.asarray(nk), backend.asarray(nv)))
        want = reference_attend(q, np.concatenate([keys, nk], 2), np.concatenate([values, nv], 2))
        assert rel_err(got, want) <= TOL, n_q
    q = rng.standard_normal((2, 4, 150, 64)).astype(np.float32)
    got = backend.to_numpy(attend(store, backend.asarray(q)))
    assert rel_err(got, reference_attend(q, keys, values)) <= TOL
    assert cache.attend(q[:, :, 3:5]).shape == (2, 4, 2, 64)


def test_large_scores_stay_finite(backend: Any, rng: np.random.Generator) -> None:
    """Scores in the thousands: the online softmax subtracts the running max (no overflow)."""
    k, v = kv(rng, 1, 2, 32 + 2 * 128 + 10, 64)
    cache = filled("kvarn-k4v4-g128", {}, k, v)
    q = (rng.standard_normal((1, 4, 1, 64)) * 300).astype(np.float32)
    got = backend.to_numpy(attend(on(backend, cache.tile_store()), backend.asarray(q)))
    assert np.isfinite(got).all()
    keys, values = cache.dequantized_keys(), cache.dequantized_values()
    assert_close(backend, got, reference_attend(q, keys, values), q, cache.tile_store(), keys, values)


def test_kernel_writes_every_output_and_zero_for_empty_views(backend: Any, rng: np.random.Generator) -> None:
    """Outputs pre-filled with NaN are fully written; a sequence whose ``start`` lies past
    every position its queries see gets exactly 0."""
    from lowbit.arrays import backend as table

    k, v = kv(rng, 2, 2, 32 + 128 + 5, 64)
    cache = filled("kvarn-k2v2-g64", {}, k, v)
    store = cache.tile_store()
    store.lengths[1, 0] = 10_000
    store = on(backend, store)
    xp = np if backend.name == "numpy" else __import__("cupy")
    q = xp.asarray(rng.standard_normal((2, 4, 1, 64)).astype(np.float32))
    out_e = xp.full(q.shape, np.nan, np.float32)
    out_r = xp.full(q.shape, np.nan, np.float32)
    empty = xp.zeros((2, 2, 0, 64), np.float32)
    from lowbit.kv.attend import _field_arrays  # the kernel's A, Z, S (KVarN: S = s_col * 2**e)

    f, g = _field_arrays(store, "key", xp), _field_arrays(store, "value", xp)
    lut = xp.arange(4, dtype=np.float32)
    table(q).kv_attend(q, q, store.lengths, store.sink_k, store.sink_v, store.recent_k, store.recent_v,
                       empty, empty, store.k_codes, *f, store.v_codes, *g, lut, lut,
                       kernel_layout(cache.codec, 64, 64), 0.125, out_e, out_r)
    out_e, out_r = backend.to_numpy(out_e), backend.to_numpy(out_r)
    assert np.isfinite(out_e).all() and np.isfinite(out_r).all()
    assert (out_e[1] == 0).all() and (out_r[1] == 0).all()
    assert np.abs(out_e[0]).max() > 0


def test_cache_attend_arguments(rng: np.random.Generator) -> None:
    k, v = kv(rng, 1, 2, 300, 64)
    cache = filled("kvarn-k2v2-g64", {}, k, v)
    q = rng.standard_normal((1, 4, 3, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="both new_k and new_v"):
        cache.attend(q, new_k=k[:, :, :3])
    with pytest.raises(ValueError, match="fewer than"):
        cache.attend(q, new_k=k[:, :, :2], new_v=v[:, :, :2])
    got = cache.attend(q, new_k=k[:, :, :3], new_v=v[:, :, :3])
    np.testing.assert_allclose(got, cache.attend(q, new_k=k[:, :, :3], new_v=v[:, :, :3], fused=False),
                               rtol=0, atol=TOL * np.abs(got).max())


@pytest.mark.gpu
def test_cuda_decode_step_is_graph_capturable(rng: np.random.Generator) -> None:
    """kv_attend on device arrays makes no host sync: a decode step captured in a CUDA graph
    replays to the eager result, also after the query changes in place."""
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    import lowbit.cuda as table
    from lowbit.kv.attend import _field_arrays

    k, v = kv(rng, 4, 2, 32 + 4 * 128 + 9, 128)
    cache = filled("kvarn-k4v2-g128", {}, k, v)
    store = on(type("B", (), {"name": "cupy", "asarray": staticmethod(cupy.asarray)})(), cache.tile_store())
    q = cupy.asarray(rng.standard_normal((4, 8, 1, 128)).astype(np.float32))
    ka, kz, ks = _field_arrays(store, "key", cupy)
    va, vz, vs = _field_arrays(store, "value", cupy)
    lut = cupy.arange(16, dtype=cupy.float32)
    empty = cupy.zeros((4, 2, 0, 128), cupy.float32)
    outs = [cupy.empty_like(q) for _ in range(4)]
    args = (store.lengths, store.sink_k, store.sink_v, store.recent_k, store.recent_v, empty, empty,
            store.k_codes, ka, kz, ks, store.v_codes, va, vz, vs, lut, lut,
            kernel_layout(cache.codec, 128, 128), 0.088)
    import warnings

    stream = torch.cuda.Stream()
    with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream; its replacement needs the stream protocol
        warnings.simplefilter("ignore", DeprecationWarning)
        cupy_stream = cupy.cuda.ExternalStream(stream.cuda_stream)
    with torch.cuda.stream(stream), cupy_stream:
        table.kv_attend(q, q, *args, outs[0], outs[1])  # eager (compiles, allocates workspaces)
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            table.kv_attend(q, q, *args, outs[2], outs[3])
        graph.replay()
        stream.synchronize()
    cupy.testing.assert_array_equal(outs[2], outs[0])
    cupy.testing.assert_array_equal(outs[3], outs[1])
    q *= 2
    with torch.cuda.stream(stream), cupy_stream:
        graph.replay()
        table.kv_attend(q, q, *args, outs[0], outs[1])
        stream.synchronize()
    cupy.testing.assert_array_equal(outs[2], outs[0])
    cupy.testing.assert_array_equal(outs[3], outs[1])


@pytest.mark.gpu
def test_cuda_kv_attend_is_deterministic(rng: np.random.Generator) -> None:
    """The same inputs give the same bits on every call (the split's token slices are summed in
    a fixed order, not with atomics; the split count depends only on shapes)."""
    cupy = pytest.importorskip("cupy")
    k, v = kv(rng, 3, 2, 32 + 9 * 128 + 40, 128)
    cache = filled("kvarn-k2v2-g128", {}, k, v)
    store = on(type("B", (), {"name": "cupy", "asarray": staticmethod(cupy.asarray)})(), cache.tile_store())
    q = cupy.asarray(rng.standard_normal((3, 16, 1, 128)).astype(np.float32))
    first = cupy.asnumpy(attend(store, q))
    for _ in range(4):
        np.testing.assert_array_equal(cupy.asnumpy(attend(store, q)), first)
