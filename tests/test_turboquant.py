"""TurboQuant KV codec (lowbit/kv/turboquant.py): rotation, norms, Lloyd-Max distortion, QJL
unbiasedness, storage, presets, caches and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lowbit
from lowbit.kv import QuantizedKVCache
from lowbit.kv.turboquant import TurboQuantCodec, qjl_matrix, rotation
from lowbit.rounding.reference import random_bits
from lowbit.rounding.streams import random_bits_array, standard_normal


def test_vectorized_generator_matches_the_reference() -> None:
    for seed, start in ((0, 0), (12345, 7), ((1 << 64) - 1, 1 << 40)):
        got = random_bits_array(seed, start, 33)
        assert [int(v) for v in got] == [random_bits(seed, start + i) for i in range(33)]


def test_standard_normal_moments() -> None:
    z = standard_normal(3, 0, 200_000)
    # 5 standard errors: mean 1/sqrt(n), variance sqrt(2/n)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    assert abs(np.mean(np.abs(z)) - math.sqrt(2 / math.pi)) < 5 * 0.6 / math.sqrt(z.size)
    np.testing.assert_array_equal(standard_normal(3, 10, 5), standard_normal(3, 10, 5))


@pytest.mark.parametrize("dim", [2, 64, 128, 96])
def test_rotation_is_orthogonal_and_seeded(dim: int) -> None:
    pi = rotation(7, dim)
    # float64 QR: orthogonality to a few hundred ulp
    np.testing.assert_allclose(pi.T @ pi, np.eye(dim), atol=1e-12)
    assert not pi.flags.writeable
    assert rotation(7, dim) is pi  # cached
    assert not np.allclose(rotation(8, dim), pi)
    # deterministic: rebuilt from the generator, not from a cache
    rotation.cache_clear()
    np.testing.assert_array_equal(rotation(7, dim), pi)


def test_rotation_inverse_round_trip(rng: np.random.Generator) -> None:
    """At 8 bits with float32 norms the codec is a near-identity: the decode applies Pi^T to
    what the encode rotated by Pi (an error in either direction would be O(1))."""
    x = rng.standard_normal((3, 16, 64)).astype(np.float32)
    codec = TurboQuantCodec(8, 8, seed=5, norm_dtype="float32")
    codes, fields = codec.encode(x, "value")
    x_hat = codec.decode(codes, fields, "value", 16, 64)
    rel = np.linalg.norm(x_hat - x) / np.linalg.norm(x)
    assert rel < 0.01  # Lloyd-Max 8 bits on the sphere: ~ 0.0036 relative RMS
    pi = rotation(5, 64)
    v = x.reshape(-1, 64).astype(np.float64)
    np.testing.assert_allclose((v @ pi) @ pi.T, v, atol=1e-12)


def _sphere_distortion(bits: int, dim: int) -> float:
    """dim * E[(T - Q(T))^2] for one coordinate T of a random unit vector (scipy quadrature)."""
    from scipy import integrate, special

    from lowbit.codebooks import lloyd_max

    cb = lloyd_max(bits, "sphere", dim=dim)
    a = (dim - 1) / 2

    def pdf(t: float) -> float:
        return (1 - t * t) ** (a - 1) / special.beta(0.5, a)

    edges = [-1.0, *cb.thresholds, 1.0]
    total = 0.0
    for i, level in enumerate(cb.levels):
        total += integrate.quad(lambda t, m=level: (t - m) ** 2 * pdf(t), edges[i], edges[i + 1],
                                epsabs=1e-14, epsrel=1e-12)[0]
    return dim * total


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_distortion_matches_the_lloyd_max_design(bits: int, rng: np.random.Generator) -> None:
    """Mean ||v - v_hat||^2 over random unit vectors equals the codebook's designed distortion
    (paper, Theorem 1: about 0.36, 0.117, 0.03, 0.009 for 1..4 bits)."""
    dim, n = 64, 4000
    v = rng.standard_normal((1, n, dim))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    codec = TurboQuantCodec(bits, bits, norm_dtype="float32")
    codes, fields = codec.encode(v.astype(np.float32), "key")
    err = ((codec.decode(codes, fields, "key", n, dim) - v) ** 2).sum(-1)
    want = _sphere_distortion(bits, dim)
    # the per-vector error has a spread of about its mean / sqrt(dim / 2): 5 standard errors
    assert abs(err.mean() - want) < 5 * err.std() / math.sqrt(n) + 1e-6, (err.mean(), want)


@pytest.mark.parametrize("variant", ["mse", "prod"])
def test_zero_vectors_decode_to_zero(variant: str, rng: np.random.Generator, backend) -> None:
    x = rng.standard_normal((2, 8, 64)).astype(np.float32)
    x[0, 3] = 0
    x[1] = 0
    q = lowbit.quantize(backend.asarray(x), scheme="turboquant", bits=2, kind="key", variant=variant)
    x_hat = backend.to_numpy(q.dequantize())
    assert np.all(x_hat[0, 3] == 0) and np.all(x_hat[1] == 0)
    assert np.isfinite(x_hat).all() and backend.to_numpy(q.fields["norm"])[8:].max() == 0


@pytest.mark.parametrize("variant", ["mse", "prod"])
@pytest.mark.parametrize("power", [100, -100])
def test_huge_and_tiny_norms_scale_exactly(variant: str, power: int, rng: np.random.Generator, backend) -> None:
    """With float32 norms, x * 2**power encodes to the codes of x and decodes to exactly
    2**power times x's reconstruction (rotation, norm and scaling are exact in float64 for a
    power of two), on every backend."""
    x = rng.standard_normal((2, 8, 64)).astype(np.float32)
    c = np.float32(2.0 ** power)
    kw = dict(scheme="turboquant", bits=3, kind="key", variant=variant, norm_dtype="float32")
    q = lowbit.quantize(backend.asarray(x), **kw)
    q_c = lowbit.quantize(backend.asarray(x * c), **kw)
    np.testing.assert_array_equal(backend.to_numpy(q_c.codes), backend.to_numpy(q.codes))
    for k in q.fields:
        np.testing.assert_array_equal(backend.to_numpy(q_c.fields[k]), backend.to_numpy(q.fields[k]) * c)
    np.testing.assert_array_equal(backend.to_numpy(q_c.dequantize()), backend.to_numpy(q.dequantize()) * c)


@pytest.mark.parametrize(("scheme", "kw", "kind"), [
    ("turboquant", {"bits": 2}, "key"),
    ("turboquant-prod-k3v2", {}, "key"),
    ("turboquant-prod-k2v2", {"norm_dtype": "float32"}, "key"),
    ("turboquant-mse-k4v2", {}, "value"),
    ("turboquant", {"bits": 1, "variant": "prod"}, "key"),  # no MSE codes: the sketch of v itself
    ("turboquant", {"bits": 3, "seed": 7}, "value"),
])
def test_device_arrays_match_the_host(backend, scheme: str, kw: dict, kind: str, rng: np.random.Generator) -> None:
    """Array type in = out; the kernels are bit-identical twins, the rotations float64 GEMMs of
    the device's BLAS: codes and norms equal the numpy path's except for a coordinate within
    the GEMMs' last-bit differences of a threshold, the reconstruction to float32 rounding."""
    x = rng.standard_normal((2, 3, 40, 64)).astype(np.float32)
    x[0, 1, 5] = 0
    want = lowbit.quantize(x, scheme=scheme, kind=kind, **kw)
    got = lowbit.quantize(backend.asarray(x), scheme=scheme, kind=kind, **kw)
    assert got.meta == want.meta and set(got.fields) == set(want.fields)
    assert np.mean(backend.to_numpy(got.codes) == want.codes) > 0.999
    for k, v in want.fields.items():
        g = backend.to_numpy(got.fields[k]).astype(np.float64)
        assert np.mean(g == v.astype(np.float64)) > 0.99, k
        np.testing.assert_allclose(g, v.astype(np.float64), rtol=2**-10, err_msg=k)  # a float16 ulp
    y = got.dequantize()
    assert backend.is_native(y) and tuple(y.shape) == x.shape
    y, ref = backend.to_numpy(y), want.dequantize()
    assert np.mean(np.abs(y - ref) <= 1e-5 * np.abs(ref).max()) > 0.99


@pytest.mark.parametrize("scale, match", [(1e6, "overflows norm_dtype"), (1e-7, "below norm_dtype")])
def test_float16_norms_out_of_range_raise(scale: float, match: str, rng: np.random.Generator, backend) -> None:
    x = rng.standard_normal((1, 8, 64)).astype(np.float32)
    x[0, 2] *= np.float32(scale)
    with pytest.raises(ValueError, match=match + ".*float32"):
        lowbit.quantize(backend.asarray(x), scheme="turboquant", bits=2, kind="value")
    q = lowbit.quantize(backend.asarray(x), scheme="turboquant", bits=2, kind="value", norm_dtype="float32")
    x_hat = backend.to_numpy(q.dequantize())
    row = np.linalg.norm(x_hat[0, 2] - x[0, 2]) / np.linalg.norm(x[0, 2])
    assert row < 0.6  # a 2-bit reconstruction, at the row's own scale


def test_qjl_inner_products_are_unbiased(rng: np.random.Generator) -> None:
    """E over the seed of <q, x_hat> equals <q, x> for the prod variant (keys), within 5
    standard errors; the mse variant at 1 bit is measurably biased (shrunk by about 2/pi,
    paper section 3), so the test can tell the two apart."""
    dim, seeds = 64, 600
    x = rng.standard_normal((1, 1, dim)).astype(np.float32)
    q = rng.standard_normal(dim)
    exact = float(q @ x.reshape(-1).astype(np.float64))
    est = {"prod2": [], "prod1": [], "mse1": []}
    for seed in range(seeds):
        for name, codec in (("prod2", TurboQuantCodec(2, 2, "prod", seed, "float32")),
                            ("prod1", TurboQuantCodec(1, 1, "prod", seed, "float32")),
                            ("mse1", TurboQuantCodec(1, 1, "mse", seed, "float32"))):
            codes, fields = codec.encode(x, "key")
            est[name].append(float(q @ codec.decode(codes, fields, "key", 1, dim).reshape(-1)))
        rotation.cache_clear()
        qjl_matrix.cache_clear()
    for name in ("prod2", "prod1"):
        e = np.array(est[name])
        assert abs(e.mean() - exact) < 5 * e.std() / math.sqrt(seeds), (name, e.mean(), exact)
    e = np.array(est["mse1"])
    assert abs(e.mean() - exact) > 5 * e.std() / math.sqrt(seeds)


@pytest.mark.parametrize("scheme, kw, kind, bpe", [
    ("turboquant", {"bits": 2}, "key", 2 + 16 / 64),
    ("turboquant", {"bits": 2, "norm_dtype": "float32"}, "value", 2 + 32 / 64),
    ("turboquant-mse-k4v2", {}, "key", 4 + 16 / 64),
    ("turboquant-prod-k2v2", {}, "key", 2 + 32 / 64),
    ("turboquant-prod-k2v2", {}, "value", 2 + 16 / 64),
    ("turboquant-prod-k3v2", {}, "key", 3 + 32 / 64),
])
def test_bits_per_element_and_save_load(scheme: str, kw: dict, kind: str, bpe: float, tmp_path,
                                        rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 200, 64)).astype(np.float32)
    q = lowbit.quantize(x, scheme=scheme, kind=kind, **kw)
    assert q.bits_per_element == pytest.approx(bpe, rel=1e-12)
    path = tmp_path / "q.npz"
    q.save(path)
    back = lowbit.load(path)
    assert back.meta == q.meta
    np.testing.assert_array_equal(back.dequantize(), q.dequantize())


def test_tampered_metadata_is_refused(tmp_path, rng: np.random.Generator) -> None:
    import json

    x = rng.standard_normal((1, 16, 64)).astype(np.float32)
    q = lowbit.quantize(x, scheme="turboquant-prod-k2v2", kind="key")
    for key, value in (("variant", "mse"), ("variant", "sum"), ("seed", -1), ("norm_dtype", "float8")):
        meta = dict(q.meta, **{key: value})
        bad = lowbit.QuantizedArray(q.codes, q.fields, meta, q.origin)
        path = tmp_path / "bad.npz"
        bad.save(path)
        with pytest.raises(ValueError, match=key):
            lowbit.load(path)
    meta = {k: v for k, v in q.meta.items() if k != "seed"}
    lowbit.QuantizedArray(q.codes, q.fields, meta, q.origin).save(tmp_path / "noseed.npz")
    with pytest.raises(ValueError, match="seed"):
        lowbit.load(tmp_path / "noseed.npz")
    assert json.dumps(q.meta)  # JSON-able


def test_seed_changes_the_rotation_and_is_recorded(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 32, 64)).astype(np.float32)
    a = lowbit.quantize(x, scheme="turboquant", bits=2, kind="value", seed=1)
    b = lowbit.quantize(x, scheme="turboquant", bits=2, kind="value", seed=2)
    assert a.meta["seed"] == 1 and b.meta["seed"] == 2
    assert not np.array_equal(a.codes, b.codes)
    for q in (a, b):  # each decodes with its own rotation
        assert np.linalg.norm(q.dequantize() - x) / np.linalg.norm(x) < 0.4


def test_cache_tiles_equal_the_scheme(rng: np.random.Generator) -> None:
    """The streaming cache stores exactly what lowbit.quantize gives for each tile."""
    cache = QuantizedKVCache("turboquant-prod-k3v2", 64, sink=16)
    k = rng.standard_normal((1, 2, 16 + 256 + 5, 64)).astype(np.float32)
    v = rng.standard_normal(k.shape).astype(np.float32)
    cache.append(k[:, :, :100], v[:, :, :100])
    cache.append(k[:, :, 100:], v[:, :, 100:])
    assert cache.n_tiles == 2
    keys, values = cache.dequantized_tiles()
    for kind, x, got in (("key", k, keys), ("value", v, values)):
        for t in range(2):
            tile = x[:, :, 16 + 128 * t: 16 + 128 * (t + 1)]
            want = lowbit.quantize(tile, scheme="turboquant-prod-k3v2", kind=kind).dequantize()
            np.testing.assert_array_equal(got[:, :, 128 * t: 128 * (t + 1)], want)
    q = rng.standard_normal((1, 4, 64)).astype(np.float32)
    from lowbit.kv import reference_attention

    np.testing.assert_allclose(cache.attend(q), reference_attention(
        q, cache.dequantized_keys(), cache.dequantized_values()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="variant"):
        QuantizedKVCache("turboquant-prod-k3v2", 64, variant="mse")


def test_transformers_layers_take_turboquant(rng: np.random.Generator) -> None:
    """The memory-saving layer (attention on the dequantized tiles: no fused layout) equals
    float64 attention over what the fake-quant layer returns."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lowbit.kv.attend import reference_attend
    from lowbit.kv.hf import FakeQuantKVLayer, QuantizedKVLayer

    layer = QuantizedKVLayer("turboquant-prod-k3v2", sink=8)
    fake = FakeQuantKVLayer("turboquant-prod-k3v2", sink=8)
    k = rng.standard_normal((1, 2, 200, 64)).astype(np.float32)
    v = rng.standard_normal((1, 2, 200, 64)).astype(np.float32)
    for lo, hi in ((0, 150), (150, 151), (151, 200)):
        kt, vt = torch.from_numpy(k[:, :, lo:hi]), torch.from_numpy(v[:, :, lo:hi])
        q = torch.from_numpy(rng.standard_normal((1, 4, hi - lo, 64)).astype(np.float32))
        layer.update(kt, vt)
        got = layer.attend(q, 0.125).numpy()
        keys, values = fake.update(kt, vt)
        want = reference_attend(q.numpy(), keys.numpy(), values.numpy(), 0.125)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (lo, hi)
    assert layer.cache is not None and layer.cache.n_tiles == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "sum"}, "variant"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"norm_dtype": "bfloat16"}, "norm_dtype"),
    ({"bits": 0}, "bits"),
    ({"bits": 9}, "bits"),
    ({"group_size": 128}, "no token groups"),
    ({"iterations": 3}, "iterations"),
])
def test_bad_arguments(kwargs: dict, match: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 16, 64)).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        lowbit.quantize(x, scheme="turboquant", kind="key", **{"bits": 2, **kwargs})


def test_bad_values_and_presets(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 16, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="variant"):
        lowbit.quantize(x, scheme="turboquant-prod-k2v2", kind="key", variant="mse")
    with pytest.raises(ValueError, match="preset"):
        lowbit.quantize(x, scheme="turboquant-prod-k2v2", kind="key", bits=3)
    y = x.copy()
    y[0, 3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lowbit.quantize(y, scheme="turboquant", bits=2, kind="value")
    with pytest.raises(ValueError, match="head_dim"):
        lowbit.quantize(x[..., :1], scheme="turboquant", bits=2, kind="value")
