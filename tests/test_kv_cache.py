"""lowbit.kv.QuantizedKVCache: regions, quantize-once, fused attend, memory, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.kv import QuantizedKVCache, reference_attention


def kv(rng: np.random.Generator, b: int, h: int, t: int, d: int, dtype: str = "float32") -> tuple:
    k = rng.standard_normal((b, h, t, d)) * np.exp(rng.normal(0, 0.5, (b, h, t, 1)))
    v = rng.standard_normal((b, h, t, d))
    return k.astype(dtype), v.astype(dtype)


def fill(cache: QuantizedKVCache, k: np.ndarray, v: np.ndarray, prefill: int) -> None:
    cache.append(k[:, :, :prefill], v[:, :, :prefill])
    for i in range(prefill, k.shape[2]):
        cache.append(k[:, :, i:i + 1], v[:, :, i:i + 1])


def assert_close_f32(got: np.ndarray, want: np.ndarray) -> None:
    """float32 tolerance: |got - want| <= 1e-4 * max|want| (logits of size ~10 summed in float32)."""
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def snapshot(cache: QuantizedKVCache) -> list[np.ndarray]:
    out = []
    for tiles in (cache._k, cache._v):
        codes, fields = tiles.used()
        out.append(codes.copy())
        out.extend(f.copy() for _, f in sorted(fields.items()))
    return out


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("recent", [0, 128])
def test_sink_and_recent_are_exact(rng: np.random.Generator, dtype: str, recent: int) -> None:
    k, v = kv(rng, 2, 2, 600, 64, dtype)
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64, sink=128, recent=recent)
    fill(cache, k, v, 200)
    regions = cache.regions()
    assert regions["sink"] == (0, 128)
    n_tiles = (600 - 128 - recent) // 128
    assert regions["tiles"] == (128, 128 + 128 * n_tiles) and cache.n_tiles == n_tiles
    assert regions["recent"] == (128 + 128 * n_tiles, 600)
    assert regions["recent"][1] - regions["recent"][0] >= recent
    for got, want in ((cache.dequantized_keys(), k), (cache.dequantized_values(), v)):
        for name in ("sink", "recent"):
            lo, hi = regions[name]
            np.testing.assert_array_equal(got[:, :, lo:hi], want[:, :, lo:hi].astype(np.float32))
        lo, hi = regions["tiles"]
        assert not np.array_equal(got[:, :, lo:hi], want[:, :, lo:hi].astype(np.float32))


def test_each_tile_is_quantized_once(rng: np.random.Generator) -> None:
    """A tile's storage never changes after it completes, and chunking does not matter."""
    k, v = kv(rng, 1, 2, 700, 128)
    cache = QuantizedKVCache("kvarn-k4v2-g128", 128, sink=128)
    fill(cache, k, v, 300)  # tiles complete at tokens 256 (in the prefill), 384, 512, 640
    first = snapshot(cache)
    cache.append(k[:, :, -10:], v[:, :, -10:])
    again = snapshot(cache)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b[:, :, : a.shape[2]])
    one_shot = QuantizedKVCache("kvarn-k4v2-g128", 128, sink=128)
    one_shot.append(k, v)
    for a, b in zip(first, snapshot(one_shot), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiles_equal_lowbit_quantize(rng: np.random.Generator) -> None:
    """Cache tiles are exactly lowbit.quantize of the same tokens (same codec)."""
    import lowbit

    k, v = kv(rng, 1, 1, 128 + 256, 64)
    cache = QuantizedKVCache("kvarn-k4v2-g128", 64, sink=128)
    cache.append(k, v)
    for got, x, kind in ((cache.dequantized_keys(), k, "key"), (cache.dequantized_values(), v, "value")):
        q = lowbit.quantize(np.ascontiguousarray(x[0, 0, 128:]), scheme="kvarn-k4v2-g128", kind=kind)
        np.testing.assert_array_equal(got[0, 0, 128:], q.dequantize())


@pytest.mark.parametrize("scheme", ["kvarn-k2v2-g128", "kvarn-k4v2-g64", "kvarn-k4v4-g128"])
@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
@pytest.mark.parametrize(("hk", "hq"), [(1, 1), (2, 8)])
def test_fused_attend_equals_dequantize_then_attention(rng: np.random.Generator, scheme: str,
                                                       scale_dtype: str, hk: int, hq: int) -> None:
    k, v = kv(rng, 2, hk, 520, 128)
    cache = QuantizedKVCache(scheme, 128, sink=64, scale_dtype=scale_dtype)
    fill(cache, k, v, 400)
    assert cache.n_tiles >= 3
    q = rng.standard_normal((2, hq, 128)).astype(np.float32) * 2
    fused = cache.attend(q)
    ref = reference_attention(q, cache.dequantized_keys(), cache.dequantized_values())
    assert fused.dtype == np.float32 and fused.shape == q.shape
    assert_close_f32(fused, ref)
    np.testing.assert_allclose(cache.attend(q, fused=False), ref, rtol=1e-6, atol=1e-6)
    scale = 0.3
    assert_close_f32(cache.attend(q, scale), reference_attention(
        q, cache.dequantized_keys(), cache.dequantized_values(), scale))


def test_attend_without_sink(rng: np.random.Generator) -> None:
    k, v = kv(rng, 1, 2, 256, 64)
    cache = QuantizedKVCache("kvarn-k4v4-g64", 64, sink=0)
    cache.append(k, v)
    assert cache.n_tiles == 4 and cache.regions()["sink"] == (0, 0)
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    ref = reference_attention(q, cache.dequantized_keys(), cache.dequantized_values())
    assert_close_f32(cache.attend(q), ref)


def test_attend_close_to_exact_attention(rng: np.random.Generator) -> None:
    """Relative error of the attention output vs unquantized attention, 1000 tokens."""
    k, v = kv(rng, 1, 2, 1000, 128)
    q = rng.standard_normal((1, 4, 128)).astype(np.float32)
    exact = reference_attention(q, k, v)
    errs = {}
    for scheme in ("kvarn-k4v4-g128", "kvarn-k4v2-g128", "kvarn-k2v2-g128"):
        cache = QuantizedKVCache(scheme, 128)
        cache.append(k, v)
        errs[scheme] = float(np.linalg.norm(cache.attend(q) - exact) / np.linalg.norm(exact))
    assert errs["kvarn-k4v4-g128"] < errs["kvarn-k4v2-g128"] < errs["kvarn-k2v2-g128"]
    assert errs["kvarn-k4v4-g128"] < 0.1, errs


def test_only_exact_tokens(rng: np.random.Generator) -> None:
    k, v = kv(rng, 1, 1, 100, 64)
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    cache.append(k, v)
    assert cache.n_tiles == 0
    q = rng.standard_normal((1, 2, 64)).astype(np.float32)
    assert_close_f32(cache.attend(q), reference_attention(q, k, v))  # the fused kernel, float32


@pytest.mark.parametrize("scheme", ["kivi", "quarot", "rtn", "fp8"])
def test_baselines_in_the_cache(rng: np.random.Generator, scheme: str) -> None:
    k, v = kv(rng, 1, 2, 500, 64)
    cache = QuantizedKVCache(scheme, 64, sink=32, **({} if scheme == "fp8" else {"key_bits": 4, "value_bits": 4}))
    fill(cache, k, v, 300)
    regions = cache.regions()
    lo, hi = regions["recent"]
    np.testing.assert_array_equal(cache.dequantized_keys()[:, :, lo:hi], k[:, :, lo:hi])
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    exact = reference_attention(q, k, v)
    err = np.linalg.norm(cache.attend(q) - exact) / np.linalg.norm(exact)
    assert err < (0.1 if scheme == "fp8" else 0.2)


def test_memory_bytes(rng: np.random.Generator) -> None:
    """k4v2-g128 at D = 128 stores 13 824 bytes per (tile, head), 4.375 + 2.375 bits/element,
    plus one int8 exponent per K and V tile."""
    k, v = kv(rng, 1, 2, 128 + 3 * 128 + 5, 128, "float16")
    cache = QuantizedKVCache("kvarn-k4v2-g128", 128)
    cache.append(k, v)
    mem = cache.memory_bytes()
    assert mem["codes"] + mem["scales"] == 3 * 2 * (13824 + 2)
    assert mem["codes"] == 3 * 2 * (8192 + 4096)
    assert mem["sink"] == 2 * 2 * 128 * 128 * 2 and mem["recent"] == 2 * 2 * 5 * 128 * 2
    assert mem["total"] == sum(v for name, v in mem.items() if name != "total")
    fp8 = QuantizedKVCache("kvarn-k2v2-g128", 128, scale_dtype="float8_e4m3")
    fp8.append(k, v)
    m8 = fp8.memory_bytes()
    assert 8 * (m8["codes"] + m8["scales"] - 3 * 2 * 2) / (3 * 2 * 2 * 128 * 128) == 2.25


def test_select_batch_and_drop_recent(rng: np.random.Generator) -> None:
    k, v = kv(rng, 3, 1, 300, 64)
    cache = QuantizedKVCache("kvarn-k4v4-g128", 64)
    cache.append(k, v)
    full = cache.dequantized_keys()
    cache.select_batch([2, 0])
    np.testing.assert_array_equal(cache.dequantized_keys(), full[[2, 0]])
    cache.drop_recent(4)
    assert len(cache) == 296
    with pytest.raises(ValueError, match="never re-opened"):
        cache.drop_recent(100)


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


def test_bad_appends_leave_the_cache_unchanged(rng: np.random.Generator) -> None:
    k, v = kv(rng, 2, 2, 300, 64)
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    cache.append(k, v)
    before = (len(cache), cache.memory_bytes(), cache.dequantized_keys(), cache.dequantized_values())
    nan_k = k[:, :, :130].copy()
    nan_k[1, 0, 129, 3] = np.nan  # the chunk would complete a tile
    inf_v = v[:, :, :1].copy()
    inf_v[0, 1, 0, 0] = -np.inf
    bad = [
        ((nan_k, v[:, :, :130]), ValueError, "NaN"),
        ((k[:, :, :1], inf_v), ValueError, "NaN or Inf"),
        ((k[:1, :, :1], v[:1, :, :1]), ValueError, "batch"),
        ((k[:, :1, :1], v[:, :1, :1]), ValueError, "kv_heads"),
        ((k[:, :, :1], v[:, :, :2]), ValueError, "same shape"),
        ((k[0], v[0]), ValueError, "shape"),
        ((k[..., :32], v[..., :32]), ValueError, "head_dim"),
        ((k.astype(np.int32), v), TypeError, "float"),
        ((list(k), v), TypeError, "numpy"),
    ]
    for args, err, match in bad:
        with pytest.raises(err, match=match):
            cache.append(*args)
        after = (len(cache), cache.memory_bytes(), cache.dequantized_keys(), cache.dequantized_values())
        assert after[:2] == before[:2]
        np.testing.assert_array_equal(after[2], before[2])
        np.testing.assert_array_equal(after[3], before[3])


def test_bad_queries(rng: np.random.Generator) -> None:
    cache = QuantizedKVCache("kvarn-k2v2-g128", 64)
    with pytest.raises(ValueError, match="empty"):
        cache.attend(np.ones((1, 2, 64), np.float32))
    k, v = kv(rng, 1, 2, 300, 64)
    cache.append(k, v)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        cache.attend(np.ones((1, 3, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        cache.attend(np.ones((2, 2, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        cache.attend(np.ones((1, 2, 1, 1, 64), np.float32))
    q = np.ones((1, 2, 64), np.float32)
    q[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.attend(q)
