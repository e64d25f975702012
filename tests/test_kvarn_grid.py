"""KVarN on codebook grids (lowbit/kv/kvarn_grid.py, lowbit/cpu/kvarn_grid.py): exact scale
folding, nearest-level codes on the stored grid, uniform kinds bit-identical to KVarN, storage,
cache and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.kv import QuantizedKVCache, reference_attention
from lowbit.kv.codecs import rotate
from lowbit.kv.kvarn_grid import GRIDS, KVarNGridCodec, grid_levels
from lowbit.packing import unpack


def _tokens(rng: np.random.Generator, shape: tuple[int, ...] = (2, 3, 256, 64)) -> np.ndarray:
    # channels of very different scales, as real keys have
    return (rng.standard_normal(shape) * np.exp(rng.standard_normal(shape[-1]))).astype(np.float32)


def test_grid_levels() -> None:
    from lowbit.codebooks import lloyd_max

    np.testing.assert_array_equal(grid_levels("lloyd-max", 2), np.array(lloyd_max(2).levels))
    uf = grid_levels("uniform-fit", 3)
    np.testing.assert_allclose(np.diff(uf), np.diff(uf)[0], rtol=1e-12)
    assert uf[0] == lloyd_max(3).levels[0] and uf[-1] == lloyd_max(3).levels[-1]
    with pytest.raises(ValueError, match="uniform"):
        grid_levels("uniform", 2)


def test_uniform_kinds_are_plain_kvarn(rng: np.random.Generator) -> None:
    x = _tokens(rng)
    plain = lowbit.quantize(x, scheme="kvarn", bits=2, kind="key")
    both = lowbit.quantize(x, scheme="kvarn", bits=2, kind="key", key_grid="uniform", value_grid="uniform")
    assert both.meta == plain.meta  # no grid keys: plain KVarN metadata
    np.testing.assert_array_equal(both.codes, plain.codes)
    mixed = lowbit.quantize(x, scheme="kvarn", bits=2, kind="key", value_grid="lloyd-max")
    np.testing.assert_array_equal(mixed.codes, plain.codes)  # keys stay on the uniform grid
    for k in plain.fields:
        np.testing.assert_array_equal(mixed.fields[k], plain.fields[k])
    assert mixed.meta["value_grid"] == "lloyd-max" and mixed.meta["key_grid"] == "uniform"


@pytest.mark.parametrize("grid", ["lloyd-max", "uniform-fit"])
@pytest.mark.parametrize("kind", ["key", "value"])
@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
def test_reconstruction_is_the_folded_formula_and_codes_are_nearest(
        grid: str, kind: str, scale_dtype: str, rng: np.random.Generator) -> None:
    """x_hat = (levels[code] * A + Z) * s_col exactly (float64 oracle from the stored fields),
    and every code is the nearest grid point to the rotated input (on the stored grid)."""
    bits, n, t, d = 2, 4, 128, 64
    x = _tokens(rng, (n, t, d))
    codec = KVarNGridCodec(bits, bits, scale_dtype=scale_dtype, key_grid=grid, value_grid=grid)
    xr = rotate(x)
    codes, fields = codec.encode(xr, kind)
    got = codec.decode(codes, fields, kind, t, d)
    levels = grid_levels(grid, bits)
    ml_dtypes = pytest.importorskip("ml_dtypes")

    def value(f: np.ndarray) -> np.ndarray:  # ml_dtypes as the independent e4m3 decoder
        if f.dtype == np.float16:
            return f.astype(np.float64)
        return f.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)

    a, z, s = value(fields["row_scale"]), fields["row_offset"].astype(np.float64), value(fields["col_scale"])
    rows, cols = (d, t) if kind == "key" else (t, d)
    q = unpack(np.ascontiguousarray(codes).reshape(-1), bits, n * rows * cols).reshape(n, rows, cols)
    grid_rc = levels[:, None, None, None] * a[None, :, :, None] + z[None, :, :, None]  # [L, n, R, 1]
    oracle = np.take_along_axis(grid_rc[..., 0].transpose(1, 2, 0), q.astype(np.int64), axis=2) * s[:, None, :]
    want = oracle if kind == "value" else oracle.transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # float32 output of a float64 product
    target = xr if kind == "value" else xr.transpose(0, 2, 1)  # [n, R, C]
    dist = np.abs(grid_rc * s[None, :, None, :] - target[None].astype(np.float64))  # [L, n, R, C]
    best = dist.min(axis=0)
    chosen = np.take_along_axis(dist, q[None].astype(np.int64), axis=0)[0]
    # the kernel compares (u - Z) / A with the thresholds; allow float rounding at ties
    assert np.all(chosen <= best * (1 + 1e-6) + 1e-7)


@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
def test_fitted_grid_lowers_the_error_on_gaussian_rows(scale_dtype: str, rng: np.random.Generator) -> None:
    x = _tokens(rng)
    err = {}
    for grid in ("uniform", "lloyd-max", "uniform-fit"):
        for kind in ("key", "value"):
            q = lowbit.quantize(x, scheme="kvarn", bits=2, kind=kind, key_grid=grid, value_grid=grid,
                                scale_dtype=scale_dtype)
            err[grid, kind] = float(np.sum((q.dequantize() - x) ** 2) / np.sum(x ** 2))
            # KVarN's fields (its optional 8-bit tile exponent applies to uniform kinds only)
            assert q.bits_per_element == lowbit.quantize(
                x, scheme="kvarn", bits=2, kind=kind, scale_dtype=scale_dtype,
                tile_exponent=grid == "uniform").bits_per_element
    for kind in ("key", "value"):
        # min-max rows of 64/256 Gaussian-like values waste range: ~0.16-0.2 vs ~0.09
        assert err["lloyd-max", kind] < 0.7 * err["uniform", kind]
        assert err["uniform-fit", kind] < 0.7 * err["uniform", kind]


def test_constant_and_tiny_tiles_are_finite(rng: np.random.Generator, backend) -> None:
    x = np.zeros((1, 128, 64), np.float32)
    q = lowbit.quantize(backend.asarray(x), scheme="kvarn", bits=2, kind="value", value_grid="lloyd-max")
    assert np.all(backend.to_numpy(q.dequantize()) == 0)
    x = np.full((1, 128, 64), 3.0, np.float32)
    q = lowbit.quantize(backend.asarray(x), scheme="kvarn", bits=2, kind="key", key_grid="lloyd-max")
    np.testing.assert_allclose(backend.to_numpy(q.dequantize()), x, rtol=1e-2)
    y = _tokens(rng, (1, 5, 64))  # a narrow tail block, and a 1-token one
    for t in (5, 1):
        q = lowbit.quantize(backend.asarray(y[:, :t]), scheme="kvarn", bits=3, kind="key", key_grid="lloyd-max")
        assert np.isfinite(backend.to_numpy(q.dequantize())).all()


@pytest.mark.parametrize("kw", [
    dict(bits=2, key_grid="lloyd-max", value_grid="lloyd-max"),
    dict(bits=3, key_grid="uniform-fit", value_grid="lloyd-max", scale_dtype="float8_e4m3"),
    dict(bits=1, key_grid="lloyd-max", value_grid="uniform", group_size=64),
    dict(bits=4, key_grid="uniform", value_grid="uniform-fit", iterations=2),
], ids=str)
@pytest.mark.parametrize("kind", ["key", "value"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_device_arrays_give_the_host_bytes(backend, kw: dict, kind: str, dtype: str,
                                           rng: np.random.Generator) -> None:
    """Array type in = out; codes, fields and reconstruction equal the numpy path's bit for bit
    (the rotation and both kernels are bit-identical twins), full tiles and a narrower tail."""
    x = _tokens(rng, (2, 2, 200, 64)).astype(dtype)
    want = lowbit.quantize(x, scheme="kvarn", kind=kind, **kw)
    got = lowbit.quantize(backend.asarray(x), scheme="kvarn", kind=kind, **kw)
    backend.assert_same_as_host(got, want, x.shape)


def test_save_load_and_tampering(tmp_path, rng: np.random.Generator) -> None:
    x = _tokens(rng, (2, 200, 64))
    q = lowbit.quantize(x, scheme="kvarn", bits=2, kind="value", value_grid="lloyd-max",
                        scale_dtype="float8_e4m3")
    q.save(tmp_path / "q.npz")
    back = lowbit.load(tmp_path / "q.npz")
    assert back.meta == q.meta
    np.testing.assert_array_equal(back.dequantize(), q.dequantize())
    for meta, key in (({**q.meta, "value_grid": "nf4"}, "value_grid"),
                      ({k: v for k, v in q.meta.items() if k != "key_grid"}, "key_grid"),
                      ({**lowbit.quantize(x, scheme="quarot", bits=2, kind="value").meta, "key_grid": "uniform",
                        "value_grid": "uniform"}, "grid")):
        fields = q.fields if meta["scheme"] == "kvarn" else lowbit.quantize(x, scheme="quarot", bits=2, kind="value").fields
        codes = q.codes if meta["scheme"] == "kvarn" else lowbit.quantize(x, scheme="quarot", bits=2, kind="value").codes
        lowbit.QuantizedArray(codes, fields, meta, q.origin).save(tmp_path / "bad.npz")
        with pytest.raises(ValueError, match=key):
            lowbit.load(tmp_path / "bad.npz")


def test_cache_with_a_codebook_grid(rng: np.random.Generator) -> None:
    cache = QuantizedKVCache("kvarn", 64, sink=16, value_grid="lloyd-max")
    k = _tokens(rng, (1, 2, 16 + 256 + 3, 64))
    v = _tokens(rng, k.shape)
    cache.append(k, v)
    keys, values = cache.dequantized_tiles()
    for kind, x, got in (("key", k, keys), ("value", v, values)):
        want = lowbit.quantize(x[:, :, 16:272], scheme="kvarn", bits=2, kind=kind,
                               value_grid="lloyd-max").dequantize()
        np.testing.assert_array_equal(got, want)
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    # the fused float32 kernel (float32 level table) against float64 attention on the
    # dequantized tiles: float32 rounding of sums over ~290 tokens of O(1) outputs
    np.testing.assert_allclose(cache.attend(q), reference_attention(
        q, cache.dequantized_keys(), cache.dequantized_values()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"key_grid": "nf4"}, "key_grid"),
    ({"value_grid": None}, "value_grid"),
    ({"key_grid": "lloyd-max", "scale_dtype": "float32"}, "scale_dtype"),
    ({"key_grid": "lloyd-max", "iterations": -1}, "iterations"),
])
def test_bad_arguments(kwargs: dict, match: str, rng: np.random.Generator, backend) -> None:
    with pytest.raises(ValueError, match=match):
        lowbit.quantize(backend.asarray(_tokens(rng, (1, 128, 64))), scheme="kvarn", bits=2, kind="key", **kwargs)
    assert set(GRIDS) == {"uniform", "lloyd-max", "uniform-fit"}


def test_preset(rng: np.random.Generator, backend) -> None:
    x = _tokens(rng, (1, 128, 64))
    q = lowbit.quantize(backend.asarray(x), scheme="kvarn-lm-k2v2-g128", kind="key", scale_dtype="float8_e4m3")
    want = lowbit.quantize(x, scheme="kvarn", bits=2, kind="key", key_grid="lloyd-max",
                           value_grid="lloyd-max", scale_dtype="float8_e4m3")
    np.testing.assert_array_equal(backend.to_numpy(q.codes), want.codes)
    assert q.meta["scheme"] == "kvarn-lm-k2v2-g128" and q.meta["key_grid"] == "lloyd-max"
    with pytest.raises(ValueError, match="key_grid"):
        lowbit.quantize(x, scheme="kvarn-lm-k2v2-g128", kind="key", key_grid="uniform")
    cache = QuantizedKVCache("kvarn-lm-k2v2-g128", 64, sink=0)
    cache.append(x[None], x[None])
    assert cache.n_tiles == 1
