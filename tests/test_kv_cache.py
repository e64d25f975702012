"""lowbit.kv.QuantizedKVCache: regions, quantize-once, fused attend, memory, bad input.

The bodies take the ``backend`` fixture (tests/conftest.py): numpy, and on a GPU CuPy (the
storage then lives on the device).  The cache front takes numpy or CuPy arrays; torch
tensors go through lowbit.kv.hf (tests/test_kv_hf.py), so ``torch_cuda`` is skipped here.
On CuPy every cache is built twice, from the same tokens on the device and on the host, and
the device cache's codes, fields and exact regions must equal the numpy cache's bit for bit
(the kernels are bit-identical); attention outputs agree within float32 tolerance
(:func:`assert_close_f32`, as tests/test_kv_attend.py documents for the kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from torch_syncs import capture

from lowbit.kv import QuantizedKVCache, reference_attention


def kv(rng: np.random.Generator, b: int, h: int, t: int, d: int, dtype: str = "float32") -> tuple:
    k = rng.standard_normal((b, h, t, d)) * np.exp(rng.normal(0, 0.5, (b, h, t, 1)))
    v = rng.standard_normal((b, h, t, d))
    return k.astype(dtype), v.astype(dtype)


def fill(cache: QuantizedKVCache, k: Any, v: Any, prefill: int | None = None) -> None:
    """One append of everything (``prefill=None``), or a prefill then one token at a time."""
    if prefill is None:
        cache.append(k, v)
        return
    cache.append(k[:, :, :prefill], v[:, :, :prefill])
    for i in range(prefill, k.shape[2]):
        cache.append(k[:, :, i:i + 1], v[:, :, i:i + 1])


def assert_close_f32(got: np.ndarray, want: np.ndarray) -> None:
    """float32 tolerance: |got - want| <= 1e-4 * max|want| (logits of size ~10 summed in float32)."""
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def to_host(a: Any) -> np.ndarray:
    """The test's own explicit copy of a numpy / CuPy array to the host."""
    return a if isinstance(a, np.ndarray) else a.get()


def on(backend: Any) -> Any:
    if backend.name == "torch_cuda":
        pytest.skip("QuantizedKVCache takes numpy or CuPy arrays; torch goes through lowbit.kv.hf "
                    "(tests/test_kv_hf.py)")
    return backend


def host(backend: Any, a: Any) -> np.ndarray:
    """A cache result: of the backend's type (array type in = array type out), as numpy."""
    assert backend.is_native(a), type(a)
    return to_host(a)


def snapshot(cache: QuantizedKVCache) -> list[np.ndarray]:
    out = []
    for tiles in (cache._k, cache._v):
        if tiles.codes is None:  # no tile completed yet
            continue
        codes, fields = tiles.used()
        out.append(to_host(codes).copy())
        out.extend(to_host(f).copy() for _, f in sorted(fields.items()))
    return out


def assert_same_storage(cache: QuantizedKVCache, ref: QuantizedKVCache) -> None:
    """cache (any backend) holds exactly what the numpy cache ``ref`` holds, bit for bit."""
    assert cache.regions() == ref.regions() and cache.n_tiles == ref.n_tiles
    assert cache.memory_bytes() == ref.memory_bytes()
    for a, b in zip(snapshot(cache), snapshot(ref), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    for a, b in zip(cache.exact_tokens(), ref.exact_tokens(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(to_host(a), b)


def build(backend: Any, scheme: str, head_dim: int, k: np.ndarray, v: np.ndarray,
          prefill: int | None = None, **options: Any) -> tuple[QuantizedKVCache, QuantizedKVCache]:
    """(the cache filled on ``backend``, the numpy cache filled the same way); on a GPU backend
    the two hold the same bytes (checked here), on numpy they are one object."""
    on(backend)
    cache = QuantizedKVCache(scheme, head_dim, **options)
    fill(cache, backend.asarray(k), backend.asarray(v), prefill)
    if not backend.on_gpu:
        return cache, cache
    ref = QuantizedKVCache(scheme, head_dim, **options)
    fill(ref, k, v, prefill)
    assert_same_storage(cache, ref)
    store = cache.tile_store()
    for a in (store.sink_k, store.recent_v, store.k_codes, store.v_codes, store.lengths,
              *store.k_fields.values(), *store.v_fields.values()):
        assert backend.is_native(a)
    return cache, ref


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("recent", [0, 128])
def test_sink_and_recent_are_exact(backend: Any, rng: np.random.Generator, dtype: str, recent: int) -> None:
    k, v = kv(rng, 2, 2, 600, 64, dtype)
    cache, _ = build(backend, "kvarn-k2v2-g128", 64, k, v, 200, sink=128, recent=recent)
    regions = cache.regions()
    assert regions["sink"] == (0, 128)
    n_tiles = (600 - 128 - recent) // 128
    assert regions["tiles"] == (128, 128 + 128 * n_tiles) and cache.n_tiles == n_tiles
    assert regions["recent"] == (128 + 128 * n_tiles, 600)
    assert regions["recent"][1] - regions["recent"][0] >= recent
    for got, want in ((cache.dequantized_keys(), k), (cache.dequantized_values(), v)):
        got = host(backend, got)
        for name in ("sink", "recent"):
            lo, hi = regions[name]
            np.testing.assert_array_equal(got[:, :, lo:hi], want[:, :, lo:hi].astype(np.float32))
        lo, hi = regions["tiles"]
        assert not np.array_equal(got[:, :, lo:hi], want[:, :, lo:hi].astype(np.float32))


def test_each_tile_is_quantized_once(backend: Any, rng: np.random.Generator) -> None:
    """A tile's storage never changes after it completes, and chunking does not matter."""
    k, v = kv(rng, 1, 2, 700, 128)
    cache, _ = build(backend, "kvarn-k4v2-g128", 128, k, v, 300, sink=128)
    first = snapshot(cache)  # tiles complete at tokens 256 (in the prefill), 384, 512, 640
    cache.append(backend.asarray(k[:, :, -10:]), backend.asarray(v[:, :, -10:]))
    again = snapshot(cache)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b[:, :, : a.shape[2]])
    one_shot, _ = build(backend, "kvarn-k4v2-g128", 128, k, v, sink=128)
    for a, b in zip(first, snapshot(one_shot), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiles_equal_lowbit_quantize(backend: Any, rng: np.random.Generator) -> None:
    """Cache tiles are exactly lowbit.quantize of the same tokens (same codec, same backend)."""
    import lowbit

    k, v = kv(rng, 1, 1, 128 + 256, 64)
    cache, _ = build(backend, "kvarn-k4v2-g128", 64, k, v, sink=128)
    for got, x, kind in ((cache.dequantized_keys(), k, "key"), (cache.dequantized_values(), v, "value")):
        q = lowbit.quantize(backend.asarray(np.ascontiguousarray(x[0, 0, 128:])), scheme="kvarn-k4v2-g128",
                            kind=kind)
        np.testing.assert_array_equal(host(backend, got)[0, 0, 128:], host(backend, q.dequantize()))


@pytest.mark.parametrize("scheme", ["kvarn-k2v2-g128", "kvarn-k4v2-g64", "kvarn-k4v4-g128"])
@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
@pytest.mark.parametrize(("hk", "hq"), [(1, 1), (2, 8)])
def test_fused_attend_equals_dequantize_then_attention(backend: Any, rng: np.random.Generator, scheme: str,
                                                       scale_dtype: str, hk: int, hq: int) -> None:
    k, v = kv(rng, 2, hk, 520, 128)
    cache, ref_cache = build(backend, scheme, 128, k, v, 400, sink=64, scale_dtype=scale_dtype)
    assert cache.n_tiles >= 3
    q = rng.standard_normal((2, hq, 128)).astype(np.float32) * 2
    qb = backend.asarray(q)
    fused = host(backend, cache.attend(qb))
    keys, values = host(backend, cache.dequantized_keys()), host(backend, cache.dequantized_values())
    ref = reference_attention(q, keys, values)
    assert fused.dtype == np.float32 and fused.shape == q.shape
    assert_close_f32(fused, ref)
    assert_close_f32(fused, ref_cache.attend(q))
    np.testing.assert_allclose(host(backend, cache.attend(qb, fused=False)), ref, rtol=1e-6, atol=1e-6)
    scale = 0.3
    assert_close_f32(host(backend, cache.attend(qb, scale)), reference_attention(q, keys, values, scale))


def test_attend_without_sink(backend: Any, rng: np.random.Generator) -> None:
    k, v = kv(rng, 1, 2, 256, 64)
    cache, _ = build(backend, "kvarn-k4v4-g64", 64, k, v, sink=0)
    assert cache.n_tiles == 4 and cache.regions()["sink"] == (0, 0)
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    ref = reference_attention(q, host(backend, cache.dequantized_keys()), host(backend, cache.dequantized_values()))
    assert_close_f32(host(backend, cache.attend(backend.asarray(q))), ref)


def test_attend_close_to_exact_attention(backend: Any, rng: np.random.Generator) -> None:
    """Relative error of the attention output vs unquantized attention, 1000 tokens."""
    k, v = kv(rng, 1, 2, 1000, 128)
    q = rng.standard_normal((1, 4, 128)).astype(np.float32)
    exact = reference_attention(q, k, v)
    errs = {}
    for scheme in ("kvarn-k4v4-g128", "kvarn-k4v2-g128", "kvarn-k2v2-g128"):
        cache, _ = build(backend, scheme, 128, k, v)
        errs[scheme] = float(np.linalg.norm(host(backend, cache.attend(backend.asarray(q))) - exact)
                             / np.linalg.norm(exact))
    assert errs["kvarn-k4v4-g128"] < errs["kvarn-k4v2-g128"] < errs["kvarn-k2v2-g128"]
    assert errs["kvarn-k4v4-g128"] < 0.1, errs


def test_only_exact_tokens(backend: Any, rng: np.random.Generator) -> None:
    k, v = kv(rng, 1, 1, 100, 64)
    cache, _ = build(backend, "kvarn-k2v2-g128", 64, k, v)
    assert cache.n_tiles == 0
    q = rng.standard_normal((1, 2, 64)).astype(np.float32)
    assert_close_f32(host(backend, cache.attend(backend.asarray(q))), reference_attention(q, k, v))


@pytest.mark.parametrize("scheme", ["kivi", "quarot", "rtn", "fp8"])
def test_baselines_in_the_cache(backend: Any, rng: np.random.Generator, scheme: str) -> None:
    """On CuPy: kivi attends with the fused CUDA kernel; quarot, rtn and fp8 (layouts it does
    not cover) on tiles dequantized on the device."""
    k, v = kv(rng, 1, 2, 500, 64)
    cache, ref_cache = build(backend, scheme, 64, k, v, 300, sink=32,
                             **({} if scheme == "fp8" else {"key_bits": 4, "value_bits": 4}))
    regions = cache.regions()
    lo, hi = regions["recent"]
    np.testing.assert_array_equal(host(backend, cache.dequantized_keys())[:, :, lo:hi], k[:, :, lo:hi])
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    exact = reference_attention(q, k, v)
    got = host(backend, cache.attend(backend.asarray(q)))
    assert_close_f32(got, ref_cache.attend(q))
    err = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert err < (0.1 if scheme == "fp8" else 0.2)


@pytest.mark.parametrize(("scheme", "opts"), [
    ("kvarn-k4v2-g64", {}), ("kvarn", {"key_bits": 3, "value_bits": 3, "group_size": 64}),
    ("quarot", {"group_size": 64}),
], ids=["kvarn-k4v2-g64", "kvarn-k3v3", "quarot"])
def test_multi_query_chunk_and_wide_gqa(backend: Any, rng: np.random.Generator, scheme: str, opts: dict) -> None:
    """L = 3 queries with the chunk's exact keys/values, left padding (``start``) and 16 query
    heads per kv head: on CuPy layouts the CUDA kernel does not take (L > 1, 3-bit codes,
    Hq/Hk > 8) attend on tiles dequantized on the device, equal to the numpy cache's fused
    attention within float32 tolerance; decode (L = 1) with 2 query heads per kv head too."""
    k, v = kv(rng, 2, 2, 32 + 3 * 64 + 20, 64)
    cache, ref_cache = build(backend, scheme, 64, k, v, 100, sink=32, **opts)
    nk, nv = kv(rng, 2, 2, 5, 64)
    start = np.array([0, 7], np.int32)
    keys, values = host(backend, cache.dequantized_keys()), host(backend, cache.dequantized_values())
    from lowbit.kv.attend import reference_attend

    for hq, nq, new in ((32, 3, True), (4, 1, False)):
        q = rng.standard_normal((2, hq, nq, 64)).astype(np.float32)
        kwargs = {"new_k": nk, "new_v": nv} if new else {}
        got = host(backend, cache.attend(backend.asarray(q), start=backend.asarray(start),
                                         **{n: backend.asarray(a) for n, a in kwargs.items()}))
        assert got.shape == q.shape and got.dtype == np.float32
        assert_close_f32(got, ref_cache.attend(q, start=start, **kwargs))
        kk = np.concatenate([keys, nk], 2) if new else keys
        vv = np.concatenate([values, nv], 2) if new else values
        want = reference_attend(q, kk, vv, None, start)
        assert_close_f32(got, want)
        got_ref = host(backend, cache.attend(backend.asarray(q), start=[0, 7], fused=False,
                                             **{n: backend.asarray(a) for n, a in kwargs.items()}))
        np.testing.assert_allclose(got_ref, want, rtol=1e-6, atol=1e-6)


def test_memory_bytes(backend: Any, rng: np.random.Generator) -> None:
    """k4v2-g128 at D = 128 stores 13 824 bytes per (tile, head), 4.375 + 2.375 bits/element,
    plus one int8 exponent per K and V tile."""
    k, v = kv(rng, 1, 2, 128 + 3 * 128 + 5, 128, "float16")
    cache, _ = build(backend, "kvarn-k4v2-g128", 128, k, v)
    mem = cache.memory_bytes()
    assert mem["codes"] + mem["scales"] == 3 * 2 * (13824 + 2)
    assert mem["codes"] == 3 * 2 * (8192 + 4096)
    assert mem["sink"] == 2 * 2 * 128 * 128 * 2 and mem["recent"] == 2 * 2 * 5 * 128 * 2
    assert mem["total"] == sum(v for name, v in mem.items() if name != "total")
    fp8, _ = build(backend, "kvarn-k2v2-g128", 128, k, v, scale_dtype="float8_e4m3")
    m8 = fp8.memory_bytes()
    assert 8 * (m8["codes"] + m8["scales"] - 3 * 2 * 2) / (3 * 2 * 2 * 128 * 128) == 2.25


def test_select_batch_and_drop_recent(backend: Any, rng: np.random.Generator) -> None:
    k, v = kv(rng, 3, 1, 300, 64)
    cache, ref = build(backend, "kvarn-k4v4-g128", 64, k, v)
    full = host(backend, cache.dequantized_keys())
    cache.select_batch([2, 0])
    np.testing.assert_array_equal(host(backend, cache.dequantized_keys()), full[[2, 0]])
    if backend.on_gpu:
        ref.select_batch([2, 0])
        assert_same_storage(cache, ref)
        cache.select_batch(backend.asarray(np.array([1, 1, 0])))  # an index on the device
        ref.select_batch(np.array([1, 1, 0]))
        assert_same_storage(cache, ref)
        with pytest.raises(ValueError, match="out of range"):
            cache.select_batch(backend.asarray(np.array([3])))
        assert cache.batch == 3
        cache.select_batch([0, 2])
        ref.select_batch([0, 2])
    cache.drop_recent(4)
    assert len(cache) == 296
    with pytest.raises(ValueError, match="never re-opened"):
        cache.drop_recent(100)
    if backend.on_gpu:
        ref.drop_recent(4)
        assert_same_storage(cache, ref)
        q = rng.standard_normal((2, 2, 64)).astype(np.float32)
        assert_close_f32(host(backend, cache.attend(backend.asarray(q))), ref.attend(q))


# -- bad input ----------------------------------------------------------------------------------------

def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="Hadamard"):
        QuantizedKVCache("kvarn-k4v2-g128", 56)
    with pytest.raises(ValueError, match="multiple of 8"):
        QuantizedKVCache("kvarn-k4v2-g128", 60)
    with pytest.raises(ValueError, match="scheme"):
        QuantizedKVCache("kvarn-k3v3-g128", 64)
    with pytest.raises(ValueError, match="fixes key_bits"):
        QuantizedKVCache("kvarn-k4v2-g128", 64, key_bits=2)
    with pytest.raises(ValueError, match="group"):
        QuantizedKVCache("kvarn", 64, group_size=100)
    with pytest.raises(ValueError, match="sink"):
        QuantizedKVCache("kvarn", 64, sink=-1)
    with pytest.raises(ValueError, match="value_group_size"):
        QuantizedKVCache("kivi", 48)
    with pytest.raises(ValueError, match="scale_dtype"):
        QuantizedKVCache("kvarn", 64, scale_dtype="float32")


def test_bad_appends_leave_the_cache_unchanged(backend: Any, rng: np.random.Generator) -> None:
    k, v = kv(rng, 2, 2, 300, 64)
    cache, _ = build(backend, "kvarn-k2v2-g128", 64, k, v)
    before = (len(cache), cache.memory_bytes(), host(backend, cache.dequantized_keys()),
              host(backend, cache.dequantized_values()))
    nan_k = k[:, :, :130].copy()
    nan_k[1, 0, 129, 3] = np.nan  # the chunk would complete a tile
    inf_v = v[:, :, :1].copy()
    inf_v[0, 1, 0, 0] = -np.inf
    kb, vb = backend.asarray(k), backend.asarray(v)
    bad = [
        ((backend.asarray(nan_k), vb[:, :, :130]), ValueError, "NaN"),
        ((kb[:, :, :1], backend.asarray(inf_v)), ValueError, "NaN or Inf"),
        ((kb[:1, :, :1], vb[:1, :, :1]), ValueError, "batch"),
        ((kb[:, :1, :1], vb[:, :1, :1]), ValueError, "kv_heads"),
        ((kb[:, :, :1], vb[:, :, :2]), ValueError, "same shape"),
        ((kb[0], vb[0]), ValueError, "shape"),
        ((kb[..., :32], vb[..., :32]), ValueError, "head_dim"),
        ((kb.astype(np.int32), vb), TypeError, "float"),
        ((list(kb), vb), TypeError, "numpy"),
    ]
    if backend.on_gpu:  # host arrays into a device cache: never copied silently
        bad += [((k[:, :, :1], v[:, :, :1]), TypeError, "never copies"),
                ((kb[:, :, :1], v[:, :, :1]), TypeError, "never copies")]
    for args, err, match in bad:
        with pytest.raises(err, match=match):
            cache.append(*args)
        after = (len(cache), cache.memory_bytes(), host(backend, cache.dequantized_keys()),
                 host(backend, cache.dequantized_values()))
        assert after[:2] == before[:2]
        np.testing.assert_array_equal(after[2], before[2])
        np.testing.assert_array_equal(after[3], before[3])


def test_bad_queries(backend: Any, rng: np.random.Generator) -> None:
    on(backend)
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    ones = lambda shape: backend.asarray(np.ones(shape, np.float32))  # noqa: E731
    with pytest.raises(ValueError, match="empty"):
        cache.attend(ones((1, 2, 64)))
    k, v = kv(rng, 1, 2, 300, 64)
    cache.append(backend.asarray(k), backend.asarray(v))
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        cache.attend(ones((1, 3, 64)))
    with pytest.raises(ValueError, match="shape"):
        cache.attend(ones((2, 2, 64)))
    with pytest.raises(ValueError, match="shape"):
        cache.attend(ones((1, 2, 1, 1, 64)))
    with pytest.raises(ValueError, match="start"):
        cache.attend(ones((1, 2, 64)), start=[0, 0])
    q = np.ones((1, 2, 64), np.float32)
    q[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.attend(backend.asarray(q))
    nan_v = v[:, :, :2].copy()
    nan_v[0, 1, 1, 5] = np.inf
    with pytest.raises(ValueError, match="new_v contains NaN or Inf"):
        cache.attend(ones((1, 2, 2, 64)), new_k=backend.asarray(k[:, :, :2]), new_v=backend.asarray(nan_v))
    assert len(cache) == 300
    if backend.on_gpu:  # host arrays for a device cache: never copied silently
        for kwargs in ({"q": np.ones((1, 2, 64), np.float32)},
                       {"q": ones((1, 2, 64)), "start": np.zeros(1, np.int32)},
                       {"q": ones((1, 2, 1, 64)), "new_k": k[:, :, :1], "new_v": v[:, :, :1]}):
            with pytest.raises(TypeError, match="never copies"):
                cache.attend(**kwargs)
        with pytest.raises(TypeError, match="never copies"):
            QuantizedKVCache("kvarn-k2v2-g128", 64).append(backend.asarray(k), v)


def _decode_steps(cache: QuantizedKVCache, backend: Any, k: np.ndarray, v: np.ndarray,
                  q: np.ndarray) -> list[np.ndarray]:
    """A prefill of 250 tokens, then one token at a time up to k's length, attending after
    each (decode queries [B, Hq, D], and a chunk of 2 queries with its exact tokens at the end)."""
    cache.append(backend.asarray(k[:, :, :250]), backend.asarray(v[:, :, :250]))
    outs = []
    for i in range(250, k.shape[2]):
        cache.append(backend.asarray(k[:, :, i:i + 1]), backend.asarray(v[:, :, i:i + 1]))
        outs.append(host(backend, cache.attend(backend.asarray(q[:, :, i - 250]))))
    outs.append(host(backend, cache.attend(backend.asarray(q[:, :, :2]), new_k=backend.asarray(k[:, :, :2]),
                                           new_v=backend.asarray(v[:, :, :2]))))
    return outs


def test_check_finite_false_skips_the_checks(backend: Any, rng: np.random.Generator,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """check_finite=False: append / attend never call the NaN/Inf check (patched to fail) and
    give bit for bit what the default cache gives on finite input (storage and outputs),
    through the completion of a tile (sink 128 + G 128: token 256) by a one-token append."""
    on(backend)
    k, v = kv(rng, 2, 2, 262, 64)
    q = rng.standard_normal((2, 4, 12, 64)).astype(np.float32)
    checked = QuantizedKVCache("kvarn-k4v2-g128", 64)
    want = _decode_steps(checked, backend, k, v, q)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("check_finite was called")

    import lowbit.kv.cache
    import lowbit.kv.storage

    monkeypatch.setattr(lowbit.kv.cache, "check_finite", fail)
    monkeypatch.setattr(lowbit.kv.storage, "check_finite", fail)
    with pytest.raises(AssertionError, match="was called"):  # the patch is where the cache looks
        QuantizedKVCache("kvarn-k4v2-g128", 64).append(backend.asarray(k[:, :, :1]), backend.asarray(v[:, :, :1]))
    unchecked = QuantizedKVCache("kvarn-k4v2-g128", 64, check_finite=False)
    got = _decode_steps(unchecked, backend, k, v, q)
    assert unchecked.n_tiles == checked.n_tiles == 1 and unchecked.check_finite is False
    for a, b in zip(snapshot(unchecked), snapshot(checked), strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_check_finite_false_lets_nan_through(backend: Any, rng: np.random.Generator) -> None:
    """NaN / Inf input: the default cache raises as before (nothing appended); with
    check_finite=False nothing raises and the bad values stay in the (sequence, kv head) they
    were given for: a tile holding NaN reproduces as NaN (NaN scales, no garbage), and every
    other tile, exact token and attention output is bit for bit what a cache given finite
    values there holds (the affected outputs themselves are not specified)."""
    on(backend)
    k, v = kv(rng, 2, 2, 300, 64)
    fine_k, fine_v = k.copy(), v.copy()
    k[1, 0, 200, 3] = np.nan  # inside the first tile (tokens 128 .. 255) of sequence 1, kv head 0
    v[0, 1, 10, 0] = np.inf  # in the sink of sequence 0, kv head 1
    default = QuantizedKVCache("kvarn-k4v2-g128", 64)
    with pytest.raises(ValueError, match=r"^k contains NaN or Inf; nothing was appended$"):
        default.append(backend.asarray(k), backend.asarray(v))
    with pytest.raises(ValueError, match=r"^v contains NaN or Inf; nothing was appended$"):
        default.append(backend.asarray(k[:, :, :100]), backend.asarray(v[:, :, :100]))
    assert default.batch is None and len(default) == 0
    cache = QuantizedKVCache("kvarn-k4v2-g128", 64, check_finite=False)
    cache.append(backend.asarray(k), backend.asarray(v))
    default.append(backend.asarray(fine_k), backend.asarray(fine_v))
    assert cache.n_tiles == default.n_tiles == 1 and len(cache) == 300
    keys, want_keys = (host(backend, c.dequantized_keys()) for c in (cache, default))
    assert np.isnan(keys[1, 0, 128:256]).all()
    keys[1, 0, 128:256] = want_keys[1, 0, 128:256]
    np.testing.assert_array_equal(keys, want_keys)
    values, want_values = (host(backend, c.dequantized_values()) for c in (cache, default))
    assert values[0, 1, 10, 0] == np.inf
    values[0, 1, 10, 0] = want_values[0, 1, 10, 0]
    np.testing.assert_array_equal(values, want_values)
    q = rng.standard_normal((2, 4, 64)).astype(np.float32)  # query heads 0, 1 read kv head 0
    out, want = (host(backend, c.attend(backend.asarray(q))) for c in (cache, default))
    np.testing.assert_array_equal(out[0, :2], want[0, :2])
    np.testing.assert_array_equal(out[1, 2:], want[1, 2:])
    q[0, 0, 0] = np.nan
    out = host(backend, cache.attend(backend.asarray(q)))  # a NaN query does not raise either
    np.testing.assert_array_equal(out[0, 1], want[0, 1])
    np.testing.assert_array_equal(out[1, 2:], want[1, 2:])
    with pytest.raises(ValueError, match=r"^q contains NaN or Inf$"):  # the default still raises
        default.attend(backend.asarray(q))


@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
def test_check_finite_false_stores_unrepresentable_tiles_as_nan(backend: Any, rng: np.random.Generator,
                                                                scale_dtype: str) -> None:
    """A finite tile whose magnitudes KVarN's per-tile exponent cannot represent (here the
    median |x| below 2**-128 after the rotation): the default raises when the tile completes;
    with check_finite=False it is stored with NaN scales instead (nothing is read back)."""
    from lowbit.kv.codecs import KVarNCodec

    on(backend)
    k, v = kv(rng, 1, 1, 128, 64)
    k *= 2.0**-140  # float32 subnormals: finite, but out of the exponent's range
    opts = {"sink": 0, "scale_dtype": scale_dtype}
    with pytest.raises(ValueError, match="per-tile exponent cannot represent"):
        QuantizedKVCache("kvarn-k4v2-g128", 64, **opts).append(backend.asarray(k), backend.asarray(v))
    cache = QuantizedKVCache("kvarn-k4v2-g128", 64, check_finite=False, **opts)
    cache.append(backend.asarray(k), backend.asarray(v))
    assert cache.n_tiles == 1
    assert np.isnan(host(backend, cache.dequantized_keys())).all()
    assert np.isfinite(host(backend, cache.dequantized_values())).all()
    with pytest.raises(ValueError, match=r"invalid must be one of \('raise', 'nan'\), got 'zero'"):
        KVarNCodec().encode_tokens(backend.asarray(k[0]), "key", invalid="zero")


#: one scheme per codec (and encode path) the cache offers: KVarN (uniform grid, codebook
#: grid), KIVI, QuaRot, per-token RTN, fp8, TurboQuant (mse, prod)
EVERY_SCHEME = ["kvarn-k4v2-g128", "kvarn-lm-k2v2-g128", "kivi", "quarot", "rtn", "fp8",
                "turboquant-mse-k2v2", "turboquant-prod-k2v2"]


#: the schemes whose decode attend runs the fused CUDA kv_attend (kvarn, kivi: key codes [D, G];
#: quarot, rtn, fp8: [G, D]; 2/4/8-bit, D = G = 128)
FUSED_ON_CUDA = ("kvarn-k4v2-g128", "kivi", "quarot", "rtn", "fp8")


def nan_unit(scheme: str, kind: str, token: int, channel: int, group: int, dim: int) -> np.ndarray:
    """bool [G, D]: the values of a tile that one bad input value (at ``token``, ``channel``
    of the tile) makes unstorable, by the scheme's unit of scaling: the whole tile (kvarn,
    fp8: one scale per (head, tile)), a key channel over the tile's tokens or a value token's
    group of 32 channels (kivi), the token vector (rtn, quarot, turboquant)."""
    unit = np.zeros((group, dim), bool)
    if scheme.startswith("kvarn") or scheme == "fp8":
        unit[:] = True
    elif scheme == "kivi" and kind == "key":
        unit[:, channel] = True
    elif scheme == "kivi":
        unit[token, channel // 32 * 32:(channel // 32 + 1) * 32] = True
    else:
        unit[token] = True
    return unit


@pytest.mark.parametrize("head_dim", [64, 96])  # 96: RTN's two-pass encoder, KVarN's unfused rotation
@pytest.mark.parametrize("scheme", EVERY_SCHEME)
def test_check_finite_false_stores_nan_for_every_scheme(backend: Any, rng: np.random.Generator, scheme: str,
                                                        head_dim: int) -> None:
    """NaN / Inf input with check_finite=False, every scheme: nothing raises; exactly the
    values sharing a scale (or norm) with a bad one reproduce as NaN (not Inf, not finite
    garbage), every other stored value is bit for bit what a cache given finite values
    holds, and so are the attention outputs of the (sequence, kv head)s without bad input.
    The default cache raises naming the argument, and appends nothing."""
    on(backend)
    g = 128
    k, v = kv(rng, 2, 2, 300, head_dim)
    fine_k, fine_v = k.copy(), v.copy()
    k[1, 0, 200, 3] = np.nan  # the first tile (tokens 128 .. 255) of sequence 1, kv head 0
    v[0, 1, 150, 37] = np.inf  # the first tile of sequence 0, kv head 1
    default = QuantizedKVCache(scheme, head_dim)
    with pytest.raises(ValueError, match=r"^k contains NaN or Inf; nothing was appended$"):
        default.append(backend.asarray(k), backend.asarray(v))
    assert default.batch is None
    default.append(backend.asarray(fine_k), backend.asarray(fine_v))
    cache = QuantizedKVCache(scheme, head_dim, check_finite=False)
    cache.append(backend.asarray(k), backend.asarray(v))
    assert cache.n_tiles == default.n_tiles == 1 and len(cache) == 300
    for got, want, (b, h, t, c), kind in ((cache.dequantized_keys(), default.dequantized_keys(), (1, 0, 200, 3), "key"),
                                          (cache.dequantized_values(), default.dequantized_values(), (0, 1, 150, 37),
                                           "value")):
        got, want = host(backend, got), host(backend, want)
        expect = np.zeros(got.shape, bool)
        expect[b, h, 128:128 + g] = nan_unit(scheme, kind, t - 128, c, g, head_dim)
        np.testing.assert_array_equal(np.isnan(got), expect)
        np.testing.assert_array_equal(got[~expect], want[~expect])
    q = rng.standard_normal((2, 4, head_dim)).astype(np.float32)  # query heads 0, 1 read kv head 0
    out, ref = (host(backend, c.attend(backend.asarray(q))) for c in (cache, default))
    np.testing.assert_array_equal(out[0, :2], ref[0, :2])
    np.testing.assert_array_equal(out[1, 2:], ref[1, 2:])
    q[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^q contains NaN or Inf$"):
        default.attend(backend.asarray(q))
    out = host(backend, cache.attend(backend.asarray(q)))  # does not raise
    np.testing.assert_array_equal(out[1, 2:], ref[1, 2:])


@pytest.mark.parametrize("scheme", ["kivi", "quarot", "rtn", "turboquant-mse-k2v2"])
def test_check_finite_false_stores_overflowing_groups_as_nan(backend: Any, rng: np.random.Generator,
                                                             scheme: str) -> None:
    """Finite input whose scale (or norm) float16 cannot hold (one token 1e6 times larger):
    the default raises when the tile completes; with check_finite=False the units it
    overflows are stored as NaN instead (nothing read back), and every other value as the
    default stores it given finite values there."""
    on(backend)
    k, v = kv(rng, 1, 1, 128, 64)
    k_big = k.copy()
    k_big[0, 0, 5] *= 1e6
    with pytest.raises(ValueError, match="overflows"):
        QuantizedKVCache(scheme, 64, sink=0).append(backend.asarray(k_big), backend.asarray(v))
    cache = QuantizedKVCache(scheme, 64, sink=0, check_finite=False)
    cache.append(backend.asarray(k_big), backend.asarray(v))
    got = host(backend, cache.dequantized_keys())[0, 0]
    expect = np.zeros(got.shape, bool)
    if scheme == "kivi":  # per channel over the tokens: the channels where token 5 overflows
        expect[:] = np.isnan(got).all(axis=0)
        assert expect[0, np.abs(k_big[0, 0, 5]).argmax()]
    else:
        expect[5] = True
    np.testing.assert_array_equal(np.isnan(got), expect)
    ref = QuantizedKVCache(scheme, 64, sink=0)  # given the same tokens, but finite ones where NaN came out
    ref.append(backend.asarray(np.where(expect, k, k_big)), backend.asarray(v))
    np.testing.assert_array_equal(got[~expect], host(backend, ref.dequantized_keys())[0, 0][~expect])
    np.testing.assert_array_equal(host(backend, cache.dequantized_values()), host(backend, ref.dequantized_values()))


@pytest.mark.parametrize("scheme", EVERY_SCHEME)
def test_every_codec_takes_invalid(scheme: str) -> None:
    """``invalid=`` is one switch of every codec (lowbit.validate.INVALID_POLICIES)."""
    codec = QuantizedKVCache(scheme, 64).codec
    with pytest.raises(ValueError, match=r"invalid must be one of \('raise', 'nan'\), got 'zero'"):
        codec.encode_tokens(np.zeros((1, 128, 64), np.float32), "key", invalid="zero")


def test_start_as_integers_is_written_without_a_host_copy(rng: np.random.Generator) -> None:
    """attend(start=[ints]) equals attend(start=array), and the ints are written by scalar
    fills (storage.device_ints: no host-to-device copy on a GPU)."""
    from lowbit.kv.storage import device_ints

    k, v = kv(rng, 3, 2, 300, 64)
    cache = QuantizedKVCache("kvarn-k4v2-g128", 64)
    cache.append(k, v)
    q = rng.standard_normal((3, 4, 64)).astype(np.float32)
    np.testing.assert_array_equal(cache.attend(q, start=[0, 7, 0]), cache.attend(q, start=np.array([0, 7, 0])))
    for values in ([5], [0, 3, 3, 9], [2, 2]):
        host_values = np.array(values, np.int32)
        got = device_ints(np, host_values)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, host_values)


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", FUSED_ON_CUDA)  # codebook grids, TurboQuant: CuPy's cuBLAS einsum
def test_check_finite_false_decode_steps_capture_in_a_cuda_graph(rng: np.random.Generator, scheme: str) -> None:
    """check_finite=False on CuPy, every scheme of the fused CUDA kv_attend: a decode step
    (append one token, here one that completes a tile and one that does not, then attend)
    makes no host synchronization.
    Each step is captured in a torch.cuda.CUDAGraph (a read-back or a host-to-device copy
    breaks the capture; torch's own syncs raise under set_sync_debug_mode("error")) from
    static inputs holding zeros, the step's token and query are then copied into them, and
    one replay gives the eager step's storage and output bit for bit (the fused kv_attend;
    the other schemes' dense fallback calls cuBLAS, which CuPy refuses under capture).  CuPy allocates from torch's caching allocator
    (lowbit.arrays.cupy_uses_torch_memory), so that the graph's memory comes from its private
    pool.  A first eager run of both steps on a third cache, on the same static inputs,
    compiles the kernels, allocates kv_attend's workspaces and uploads the constants."""
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    from lowbit.arrays import cupy_uses_torch_memory

    b, hk, hq, d, prefill = 2, 2, 8, 128, 128 + 128 + 127  # sink, one tile, G - 1 recent tokens
    k, v = kv(rng, b, hk, prefill + 2, d)
    q = rng.standard_normal((2, b, hq, d)).astype(np.float32)
    stream = torch.cuda.Stream()
    with cupy_uses_torch_memory(), torch.cuda.stream(stream), cupy.cuda.Stream.from_external(stream):
        kd, vd, qd = cupy.asarray(k), cupy.asarray(v), cupy.asarray(q)
        static_k = cupy.zeros((b, hk, 1, d), cupy.float32)
        static_v = cupy.zeros((b, hk, 1, d), cupy.float32)
        static_q = cupy.zeros((b, hq, d), cupy.float32)
        warm, eager, graphed = (QuantizedKVCache(scheme, d, check_finite=False) for _ in range(3))
        for cache in (warm, eager, graphed):
            cache.append(kd[:, :, :prefill], vd[:, :, :prefill])

        def step(cache: QuantizedKVCache, k_t: Any, v_t: Any, q_t: Any) -> Any:
            cache.append(k_t, v_t)
            return cache.attend(q_t)

        def token(a: Any, i: int) -> Any:
            return a[:, :, prefill + i:prefill + i + 1]

        def load(i: int) -> None:  # step i's token and query into the static inputs
            static_k[...] = token(kd, i)
            static_v[...] = token(vd, i)
            static_q[...] = qd[i]

        def eager_step(cache: QuantizedKVCache, i: int) -> Any:  # on the static inputs too: the
            load(i)  # same array layouts, so the capture meets no kernel it has not compiled
            return step(cache, static_k, static_v, static_q)

        for i in range(2):
            eager_step(warm, i)
        want = [eager_step(eager, i) for i in range(2)]
        stream.synchronize()
        for i, tiles_before in ((0, 1), (1, 2)):  # step 0 completes the second tile
            assert graphed.n_tiles == tiles_before
            for static in (static_k, static_v, static_q):
                static.fill(0)
            graph, got = capture(torch, stream, lambda: step(graphed, static_k, static_v, static_q))
            load(i)
            graph.replay()
            stream.synchronize()
            assert graphed.n_tiles == eager.n_tiles == 2 and len(graphed) == prefill + i + 1
            np.testing.assert_array_equal(to_host(got), to_host(want[i]))
        for a, c in zip(snapshot(graphed), snapshot(eager), strict=True):
            np.testing.assert_array_equal(a.view(np.uint8), c.view(np.uint8))
        for a, c in zip(graphed.exact_tokens(), eager.exact_tokens(), strict=True):
            np.testing.assert_array_equal(to_host(a), to_host(c))


@pytest.mark.parametrize("flag", [1, 0, "no", None, 1.0])
def test_check_finite_must_be_a_bool(flag: Any) -> None:
    with pytest.raises(TypeError, match=r"check_finite must be a bool, got"):
        QuantizedKVCache("kvarn-k4v2-g128", 64, check_finite=flag)
    assert QuantizedKVCache("kvarn", 64, check_finite=np.bool_(False)).check_finite is False


def test_torch_tensors_go_through_lowbit_kv_hf() -> None:
    torch = pytest.importorskip("torch")
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    k = torch.zeros(1, 2, 3, 64)
    with pytest.raises(TypeError, match="lowbit.kv.hf"):
        cache.append(k, k)
    assert cache.batch is None


@pytest.mark.gpu
def test_a_numpy_cache_refuses_device_arrays(rng: np.random.Generator) -> None:
    """The reverse direction: a host cache given CuPy keys, queries, chunk or index."""
    cupy = pytest.importorskip("cupy")
    k, v = kv(rng, 2, 2, 300, 64)
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    cache.append(k, v)
    kd, qd = cupy.asarray(k[:, :, :1]), cupy.asarray(np.ones((2, 4, 64), np.float32))
    with pytest.raises(TypeError, match="never copies"):
        cache.append(kd, kd)
    with pytest.raises(TypeError, match="never copies"):
        cache.attend(qd)
    with pytest.raises(TypeError, match="never copies"):
        cache.attend(np.ones((2, 4, 1, 64), np.float32), new_k=kd, new_v=kd)
    with pytest.raises(TypeError, match="never copies"):
        cache.attend(np.ones((2, 4, 64), np.float32), start=cupy.zeros(2, cupy.int32))
    with pytest.raises(TypeError, match="never copies"):
        cache.select_batch(cupy.asarray([1, 0]))
    assert len(cache) == 300 and cache.batch == 2


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["kvarn-lm-k2v2-g128", "turboquant-prod-k3v2"])
def test_codebook_schemes_on_device_arrays(rng: np.random.Generator, scheme: str) -> None:
    """KVarN's codebook grids and TurboQuant on CuPy keys: tiles on the device, equal to the
    numpy cache's (KVarN-lm bit for bit; TurboQuant's float64 rotations are cuBLAS GEMMs, so to
    float32 rounding), and attention on the device close to the numpy cache's."""
    cupy = pytest.importorskip("cupy")
    k, v = kv(rng, 1, 2, 300, 64)
    host = QuantizedKVCache(scheme, 64, sink=16)
    host.append(k, v)
    dev = QuantizedKVCache(scheme, 64, sink=16)
    dev.append(cupy.asarray(k), cupy.asarray(v))
    assert dev.n_tiles == host.n_tiles == 2
    for got, want in zip(dev.dequantized_tiles(), host.dequantized_tiles(), strict=True):
        assert isinstance(got, cupy.ndarray)
        if scheme.startswith("kvarn"):
            np.testing.assert_array_equal(got.get(), want)
        else:  # a near-tie coordinate may take the neighbouring code: compare the bulk
            close = np.abs(got.get() - want) <= 1e-5 * np.abs(want).max()
            assert close.mean() > 0.99
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    out = dev.attend(cupy.asarray(q))
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(out.get(), host.attend(q), rtol=1e-3, atol=1e-3)
