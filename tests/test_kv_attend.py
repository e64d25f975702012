"""kv_attend (lowbit.kv.attend): fused attention on packed codes vs float64 attention over the
dequantized cache — every scheme, GQA 1/4/8, ragged batches, region boundaries, multi-query,
and NaN / Inf propagation (against a float64 oracle written out query by query).

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
import functools
import importlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kv_attend_bound import tf32_bound
from kv_attend_cases import RAGGED_STARTS, kv, ragged_batch

from lowbit.kv import QuantizedKVCache
from lowbit.kv.attend import (
    TileStore,
    attend,
    code_values,
    kernel_layout,
    reference_attend,
    rotate,
    stack,
)

SCHEMES = [
    ("kvarn-k2v2-g64", {}), ("kvarn-k4v2-g64", {"scale_dtype": "float8_e4m3"}),
    ("kvarn-k4v4-g128", {}), ("kivi", {"group_size": 64}), ("rtn", {"group_size": 64, "key_bits": 4}),
    ("quarot", {"group_size": 64}), ("fp8", {"group_size": 64}),
]
TOL = 1e-3


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


def cuda_skips(backend: Any, n_q: int) -> None:
    """The CUDA kernel: decode (L = 1) only (lowbit/cuda/kv_attend.py), every scheme's tiles."""
    if backend.on_gpu and n_q != 1:
        pytest.skip("CUDA kv_attend: decode (one query per head) only (a known gap)")


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def assert_close(backend: Any, got: np.ndarray, want: np.ndarray, q: np.ndarray, store: TileStore,
                 keys: np.ndarray, values: np.ndarray, start: Any = None) -> None:
    """|got - want| <= TOL max|want| elementwise, plus on the tensor-core CUDA kernel its TF32
    bound (``store`` the numpy TileStore; keys, values as given to reference_attend)."""
    bound: Any = 0.0
    if backend.on_gpu:
        cuda_kv = importlib.import_module("lowbit.cuda.kv_attend")  # the module, not the function
        d = q.shape[3]
        if cuda_kv.uses_mma(kernel_layout(store.codec, d, store.group_size), d):  # kvarn / kivi only
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
    k, v = kv(rng, 2, 2, 32 + 3 * 128 + 21, 64)
    cache = filled(scheme, opts, k, v)
    assert cache.n_tiles >= 3
    q = (rng.standard_normal((2, 2 * ratio, 1, 64)) * 2).astype(np.float32)
    got = backend.to_numpy(attend(on(backend, cache.tile_store()), backend.asarray(q)))
    keys, values = cache.dequantized_keys(), cache.dequantized_values()
    want = reference_attend(q, keys, values)
    assert got.dtype == np.float32 and got.shape == q.shape
    assert_close(backend, got, want, q, cache.tile_store(), keys, values)


@pytest.mark.parametrize(("scheme", "opts"), SCHEMES, ids=[s for s, _ in SCHEMES])
def test_ragged_batch_and_left_padding(backend: Any, rng: np.random.Generator, scheme: str,
                                       opts: dict) -> None:
    """Sequences of their own lengths (sink only, tiles + recent, tiles exactly) in one batch,
    with ``start`` masking left padding (inside the sink, and inside a tile)."""
    caches, _, batch, q = ragged_batch(rng, lambda k, v: filled(scheme, opts, k, v))
    got = backend.to_numpy(attend(on(backend, batch), backend.asarray(q)))
    for i, (c, first) in enumerate(zip(caches, RAGGED_STARTS, strict=True)):
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
    cuda_skips(backend, 6)
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


@pytest.mark.parametrize(("scheme", "opts"), SCHEMES, ids=[s for s, _ in SCHEMES])
def test_kernel_writes_every_output_and_zero_for_empty_views(backend: Any, rng: np.random.Generator,
                                                             scheme: str, opts: dict) -> None:
    """Outputs pre-filled with NaN (poisoned) are fully written, with the bits of the front's
    result (:func:`attend`, which allocates them; the same kernel); a sequence whose ``start``
    lies past every position its queries see gets exactly 0."""
    from lowbit.arrays import backend as table

    k, v = kv(rng, 2, 2, 32 + 2 * 128 + 5, 64)
    cache = filled(scheme, opts, k, v)
    assert cache.n_tiles >= 2
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
    k_lut, v_lut = (xp.asarray(code_values(cache.codec, kind)) for kind in ("key", "value"))
    q_rot = rotate(q) if cache.codec.rotated else q
    table(q).kv_attend(q, q_rot, store.lengths, store.sink_k, store.sink_v, store.recent_k, store.recent_v,
                       empty, empty, store.k_codes, *f, store.v_codes, *g, k_lut, v_lut,
                       kernel_layout(cache.codec, 64, cache.group_size), 0.125, out_e, out_r)
    both = backend.to_numpy(out_e + (rotate(out_r) if cache.codec.rotated else out_r))
    out_e, out_r = backend.to_numpy(out_e), backend.to_numpy(out_r)
    assert np.isfinite(out_e).all() and np.isfinite(out_r).all()
    assert (out_e[1] == 0).all() and (out_r[1] == 0).all()
    assert np.abs(out_e[0]).max() > 0 and np.abs(out_r[0]).max() > 0
    np.testing.assert_array_equal(both, backend.to_numpy(attend(store, q, scale=0.125)))


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
@pytest.mark.parametrize("scheme", ["kvarn-k4v2-g128", "quarot", "fp8"])  # key codes [D, G] / [G, D]
def test_cuda_decode_step_is_graph_capturable(rng: np.random.Generator, scheme: str) -> None:
    """kv_attend on device arrays makes no host sync: a decode step captured in a CUDA graph
    replays to the eager result, also after the query changes in place."""
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    import lowbit.cuda as table
    from lowbit.kv.attend import _field_arrays

    k, v = kv(rng, 4, 2, 32 + 4 * 128 + 9, 128)
    cache = filled(scheme, {}, k, v)
    store = on(type("B", (), {"name": "cupy", "asarray": staticmethod(cupy.asarray)})(), cache.tile_store())
    q = cupy.asarray(rng.standard_normal((4, 8, 1, 128)).astype(np.float32))
    ka, kz, ks = _field_arrays(store, "key", cupy)
    va, vz, vs = _field_arrays(store, "value", cupy)
    k_lut, v_lut = (cupy.asarray(code_values(cache.codec, kind)) for kind in ("key", "value"))
    empty = cupy.zeros((4, 2, 0, 128), cupy.float32)
    outs = [cupy.empty_like(q) for _ in range(4)]
    args = (store.lengths, store.sink_k, store.sink_v, store.recent_k, store.recent_v, empty, empty,
            store.k_codes, ka, kz, ks, store.v_codes, va, vz, vs, k_lut, v_lut,
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
@pytest.mark.parametrize("scheme", ["kvarn-k2v2-g128", "rtn", "fp8"])
def test_cuda_kv_attend_is_deterministic(rng: np.random.Generator, scheme: str) -> None:
    """The same inputs give the same bits on every call (the split's token slices are summed in
    a fixed order, not with atomics; the split count depends only on shapes)."""
    cupy = pytest.importorskip("cupy")
    k, v = kv(rng, 3, 2, 32 + 9 * 128 + 40, 128)
    cache = filled(scheme, {}, k, v)
    store = on(type("B", (), {"name": "cupy", "asarray": staticmethod(cupy.asarray)})(), cache.tile_store())
    q = cupy.asarray(rng.standard_normal((3, 16, 1, 128)).astype(np.float32))
    first = cupy.asnumpy(attend(store, q))
    for _ in range(4):
        np.testing.assert_array_equal(cupy.asnumpy(attend(store, q)), first)


# ---- NaN / Inf: they reach exactly the outputs that attend them (issue #14) ------------------


def oracle(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Float64 attention written out query by query (the tests' own oracle, not lowbit's):
    softmax over the positions start[b] .. the query's own (T - L + i), then the weighted sum
    of those positions' values only.  IEEE arithmetic throughout, elementwise (a BLAS may skip
    zero weights): a NaN max, inf - inf, -inf - -inf and weight * NaN all give NaN, as in
    torch's math ``scaled_dot_product_attention``; masked positions are never read."""
    b, hq, nq, d = q.shape
    hk, t = k.shape[1], k.shape[2]
    out = np.zeros((b, hq, nq, d))
    with np.errstate(invalid="ignore"):
        for bi, h, i in np.ndindex(b, hq, nq):
            seen = slice(max(int(start[bi]), 0), max(t - nq + i + 1, 0))
            kk = k[bi, h // (hq // hk), seen].astype(np.float64)
            if kk.shape[0] == 0:
                continue
            s = (kk * q[bi, h, i].astype(np.float64)).sum(-1) / np.sqrt(d)
            w = np.exp(s - s.max())
            w = w / w.sum()
            out[bi, h, i] = (w[:, None] * v[bi, h // (hq // hk), seen].astype(np.float64)).sum(0)
    return out


@dataclasses.dataclass(frozen=True)
class NanCase:
    """A scheme of the NaN tests and what its tile fields reach, from the separable form
    x_hat = (code A + Z) S: ``key_rows`` the rows of the key codes ("channels": [D, G],
    "tokens": [G, D]; value codes are [G, D]); ``roles`` maps each field to "row" (A, Z: one
    value per code row, or per (row, column group)), "col" (S: one per column) or "tile" (one
    value for the whole tile: fp8's float32 scale); ``rotated``: a NaN channel of the tiles'
    frame reaches every channel of the original one."""

    opts: dict
    key_rows: str
    rotated: bool
    roles: dict

    def reached(self, kind: str, name: str, index: int, n: int, d: int, g: int) -> tuple[slice, slice]:
        """(tile tokens, original-frame channels) that field element ``index`` (of ``n``) reaches."""
        channel_rows = kind == "key" and self.key_rows == "channels"
        rows, cols = (d, g) if channel_rows else (g, d)
        if self.roles[name] == "tile":
            return slice(None), slice(None)
        if self.roles[name] == "row":
            per = n // rows  # column groups per row
            r, grp = divmod(index, per)
            row, col = slice(r, r + 1), slice(grp * cols // per, (grp + 1) * cols // per)
        else:
            row, col = slice(None), slice(index, index + 1)
        tokens, channels = (col, row) if channel_rows else (row, col)
        return tokens, slice(None) if self.rotated else channels


NAN_CASES = {
    "kvarn-k4v2-g64": NanCase({}, "channels", True,
                              {"row_scale": "row", "row_offset": "row", "col_scale": "col"}),
    "kivi": NanCase({"group_size": 64}, "channels", False, {"scale": "row", "offset": "row"}),
    "rtn": NanCase({"group_size": 64, "key_bits": 4}, "tokens", False, {"scale": "row", "offset": "row"}),
    "quarot": NanCase({"group_size": 64}, "tokens", True, {"scale": "row", "offset": "row"}),
    "fp8": NanCase({"group_size": 64}, "tokens", False, {"scale": "tile"}),
}
#: sink 32, tiles at 32 and 96 (G = 64), recent 160 .. 179; the chunk's new tokens 180 .. 185
NAN_T, NAN_NEW = 32 + 2 * 64 + 20, 6


@functools.cache
def nan_setup(scheme: str) -> tuple[TileStore, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(store, dequantized keys, dequantized values, new_k, new_v) of a 2-sequence, 2-kv-head
    cache (numpy; each test copies what it changes)."""
    rng = np.random.default_rng(20261206)
    k, v = kv(rng, 2, 2, NAN_T, 64)
    cache = filled(scheme, NAN_CASES[scheme].opts, k, v)
    assert cache.n_tiles == 2 and cache.tile_store().lengths[0, 3] == 20
    nk, nv = kv(rng, 2, 2, NAN_NEW, 64)
    return cache.tile_store(), cache.dequantized_keys(), cache.dequantized_values(), nk, nv


def copied(store: TileStore) -> TileStore:
    fields = {f.name: getattr(store, f.name) for f in dataclasses.fields(store)}
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            fields[name] = value.copy()
        elif isinstance(value, dict):
            fields[name] = {k: a.copy() for k, a in value.items()}
    return TileStore(**fields)


def assert_nan_where_the_oracle_has_it(got: np.ndarray, want: np.ndarray, clean: np.ndarray) -> None:
    """NaN exactly where the oracle has NaN; rows the NaN does not reach are the bits of the
    run without it; finite elements within TOL of the oracle."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    rows = ~np.isnan(want).any(-1)
    np.testing.assert_array_equal(got[rows], clean[rows])
    fin = ~np.isnan(want)
    assert np.isfinite(got[fin]).all()
    assert np.abs(got[fin] - want[fin]).max() <= TOL * max(np.abs(want[fin]).max(), 1e-30)


@pytest.mark.parametrize("scheme", list(NAN_CASES))
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_nan_reaches_exactly_the_outputs_that_attend_it(backend: Any, scheme: str, data: st.DataObject) -> None:
    """One NaN in a query, an exact key / value (sink, recent, the chunk's new tokens) or a
    A / Z / S field of a quantized tile: the queries that attend it get NaN (the whole
    row for a score, the channels a value reaches), every other output — other queries (masked
    by ``start`` or causally), heads, kv heads, batch rows — keeps its bits."""
    case = NAN_CASES[scheme]
    store0, keys0, values0, nk0, nv0 = nan_setup(scheme)
    where = data.draw(st.sampled_from(["q", "sink_k", "sink_v", "recent_k", "recent_v", "new_k",
                                       "new_v", "key", "value"]), "where")
    if backend.on_gpu:
        n_q = 1
    elif where.startswith("new"):
        n_q = data.draw(st.sampled_from([1, 3, 6]), "n_q")
    else:
        n_q = data.draw(st.sampled_from([1, 3, 100]), "n_q")  # 100: queries before, in and after tile 1
    use_new = where.startswith("new") or (n_q <= NAN_NEW and data.draw(st.booleans(), "new"))
    starts = np.array([data.draw(st.integers(0, 130), "start") for _ in range(2)], np.int32)
    b, kvh, dd = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1)), data.draw(st.integers(0, 63))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    q = rng.standard_normal((2, 8, n_q, 64)).astype(np.float32)
    keys, values = keys0, values0
    if use_new:
        keys, values = np.concatenate([keys, nk0], 2), np.concatenate([values, nv0], 2)
    keys, values, nk, nv = keys.copy(), values.copy(), nk0.copy(), nv0.copy()
    store = copied(store0)
    store.lengths[:, 0] = starts
    clean_store = copied(store)
    n_sink, n_tiles = int(store.lengths[b, 1]), int(store.lengths[b, 2])
    q_nan = q.copy()
    if where == "q":
        q_nan[b, data.draw(st.integers(0, 7)), data.draw(st.integers(0, n_q - 1)), dd] = np.nan
    elif where in ("key", "value"):
        fields = store.k_fields if where == "key" else store.v_fields
        name = data.draw(st.sampled_from(sorted(case.roles)), "field")
        tile = data.draw(st.integers(0, n_tiles - 1), "tile")
        n = fields[name].shape[3]
        index = data.draw(st.integers(0, n - 1), "index")
        fields[name][b, kvh, tile, index] = np.nan
        tokens, channels = case.reached(where, name, index, n, 64, 64)
        target = keys if where == "key" else values
        pos0 = n_sink + tile * 64
        target[b, kvh, pos0:pos0 + 64][tokens, channels] = np.nan
    else:
        region, kind = where.split("_")
        size = {"sink": n_sink, "recent": int(store.lengths[b, 3]), "new": NAN_NEW}[region]
        p = data.draw(st.integers(0, size - 1), "token")
        first = {"sink": 0, "recent": n_sink + n_tiles * 64, "new": NAN_T}[region]
        array = (nk if kind == "k" else nv) if region == "new" else getattr(store, where)
        array[b, kvh, p, dd] = np.nan
        (keys if kind == "k" else values)[b, kvh, first + p, dd] = np.nan
    extra = (backend.asarray(nk), backend.asarray(nv)) if use_new else ()
    clean_extra = (backend.asarray(nk0), backend.asarray(nv0)) if use_new else ()
    got = backend.to_numpy(attend(on(backend, store), backend.asarray(q_nan), *extra))
    clean = backend.to_numpy(attend(on(backend, clean_store), backend.asarray(q), *clean_extra))
    assert_nan_where_the_oracle_has_it(got, oracle(q_nan, keys, values, starts), clean)


@pytest.mark.parametrize("scheme", list(NAN_CASES))
def test_inf_scores_follow_dense_attention(backend: Any, scheme: str) -> None:
    """An exact key with a +inf element: a query whose score becomes +inf gets NaN (inf - inf);
    one whose score becomes -inf gives that token weight 0 (finite: the attention without it),
    unless it attends nothing else (every attended score -inf: 0 / 0 = NaN), as dense attention."""
    store0, keys, values, _, _ = nan_setup(scheme)
    store, keys = copied(store0), keys.copy()
    store.recent_k[:, 0, 19, 0] = np.inf  # position NAN_T - 1, kv head 0
    keys[:, 0, NAN_T - 1, 0] = np.inf
    store.lengths[1, 0] = NAN_T - 1  # sequence 1 attends only that position
    q = np.random.default_rng(5).standard_normal((2, 8, 1, 64)).astype(np.float32)
    q[:, :4, 0, 0] = np.array([1.5, -1.5, 2.0, -0.5], np.float32)  # the heads of kv head 0
    clean_store = copied(store0)
    clean_store.lengths[1, 0] = NAN_T - 1
    got = backend.to_numpy(attend(on(backend, store), backend.asarray(q)))
    want = oracle(q, keys, values, store.lengths[:, 0])
    rows_nan = np.isnan(want).all(-1)[:, :, 0]
    np.testing.assert_array_equal(rows_nan, [[True, False, True, False, False, False, False, False],
                                             [True, True, True, True, False, False, False, False]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~rows_nan
    assert rel_err(got[fin], want[fin]) <= TOL
    clean = backend.to_numpy(attend(on(backend, clean_store), backend.asarray(q)))
    np.testing.assert_array_equal(got[:, 4:], clean[:, 4:])  # kv head 1


@pytest.mark.parametrize("scheme", list(NAN_CASES))
def test_masked_positions_never_contribute(backend: Any, scheme: str) -> None:
    """NaN in everything no query attends — left padding (the sink and the first tokens of a
    tile), the slots past a shorter sequence's tiles and recent tokens (ragged batch), garbage
    codes there — changes no bit of the output."""
    case = NAN_CASES[scheme]
    rng = np.random.default_rng(11)
    caches = []
    for t in (NAN_T, 32 + 64 + 5):
        k, v = kv(rng, 1, 2, t, 64)
        caches.append(filled(scheme, case.opts, k, v))
    clean = stack([c.tile_store() for c in caches])
    clean.lengths[0, 0] = 50  # positions 0 .. 49: the sink and tile 0's tokens 0 .. 17
    assert clean.lengths[1].tolist() == [0, 32, 1, 5]
    dirty = copied(clean)
    dirty.sink_k[0], dirty.sink_v[0] = np.nan, np.nan
    dirty.recent_k[1, :, 5:], dirty.recent_v[1, :, 5:] = np.nan, np.nan
    dirty.k_codes[1, :, 1:] = rng.integers(0, 256, dirty.k_codes[1, :, 1:].shape, np.uint8)
    dirty.v_codes[1, :, 1:] = rng.integers(0, 256, dirty.v_codes[1, :, 1:].shape, np.uint8)
    masked = 0
    for kind, fields in (("key", dirty.k_fields), ("value", dirty.v_fields)):
        for name in case.roles:
            fields[name][1, :, 1:] = np.nan
            n = fields[name].shape[3]
            for index in range(n):
                tokens, _ = case.reached(kind, name, index, n, 64, 64)
                if range(64)[tokens][-1] < 18:  # reaches only tile 0's masked tokens
                    fields[name][0, :, 0, index] = np.nan
                    masked += 1
    assert masked > 0 or set(case.roles.values()) == {"tile"}  # fp8: no field of masked tokens only
    q = rng.standard_normal((2, 8, 1, 64)).astype(np.float32)
    want = backend.to_numpy(attend(on(backend, clean), backend.asarray(q)))
    got = backend.to_numpy(attend(on(backend, dirty), backend.asarray(q)))
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(got, want)
