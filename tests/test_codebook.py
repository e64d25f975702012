"""Codebook formats: Lloyd-Max optimality by numerical integration (scipy), NF4 against its
published values, exhaustive float16 encoding against a brute-force nearest-level search,
stochastic rounding's mean, exact decoding, files and bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate, special, stats

import lowbit
from lowbit import codebooks
from lowbit.formats import Codebook

#: The NF4 table of QLoRA / bitsandbytes (float32 values as published, e.g. in
#: bitsandbytes' dequantization kernels).
NF4_PUBLISHED = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


def codes_of(q) -> np.ndarray:
    """The unpacked codes of q as a numpy array (q's codes on any backend)."""
    codes = lowbit.unpack(q.codes, q.bits, q.size)
    return codes if isinstance(codes, np.ndarray) else codes.get()


# -- designs -----------------------------------------------------------------------------------

def _sphere_pdf(d: int):
    a = (d - 1) / 2  # (1 + T) / 2 ~ Beta(a, a)
    return lambda t: stats.beta.pdf((1 + t) / 2, a, a) / 2


CASES = [("gaussian", None, stats.norm.pdf, (-math.inf, math.inf), 1.0)] + [
    ("sphere", d, _sphere_pdf(d), (-1.0, 1.0), 1 / math.sqrt(d)) for d in (3, 16, 64, 128)]


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dist, dim, pdf, support, std", CASES, ids=lambda v: str(v) if not callable(v) else "")
def test_lloyd_max_conditions_by_numerical_integration(bits, dist, dim, pdf, support, std):
    cb = codebooks.lloyd_max(bits, dist, dim=dim)
    assert cb.bits == bits and cb.size == 2**bits
    lv = cb.levels
    for i, t in enumerate(cb.thresholds):  # each threshold the exact midpoint of its neighbours
        assert 2 * Fraction(t) == Fraction(lv[i]) + Fraction(lv[i + 1])
    edges = (support[0],) + cb.thresholds + (support[1],)
    for i in range(cb.size):
        a, b = edges[i], edges[i + 1]
        mass = integrate.quad(pdf, a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
        moment = integrate.quad(lambda t: t * pdf(t), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
        # levels are float32 roundings (2**-24 relative) of float64 solutions converged to
        # 1e-12 std; quad is good to ~1e-10: 1e-6 std leaves room for all of it
        assert abs(lv[i] - moment / mass) <= 1e-6 * std, (i, lv[i], moment / mass)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_lloyd_max_matches_an_independent_iteration(bits):
    # plain Lloyd iteration on scipy's normal CDF, from quantile-spaced levels
    n = 2**bits
    lv = stats.norm.ppf((np.arange(n) + 0.5) / n)
    for _ in range(2000):
        e = np.r_[-np.inf, (lv[1:] + lv[:-1]) / 2, np.inf]
        lv = (np.exp(-e[:-1] ** 2 / 2) - np.exp(-e[1:] ** 2 / 2)) / math.sqrt(2 * math.pi) \
            / (special.ndtr(e[1:]) - special.ndtr(e[:-1]))
    # ours are rounded to float32 (half an ulp: <= 2**-24 relative, up to 2**-23 near a power of 2)
    np.testing.assert_allclose(codebooks.lloyd_max(bits).levels, lv, rtol=2**-23, atol=1e-10)
    if bits == 1:  # closed form: MSE = 1 - 2/pi
        e = (-np.inf, 0.0, np.inf)
        mse = sum(integrate.quad(lambda t, c=c: (t - c) ** 2 * stats.norm.pdf(t), a, b)[0]
                  for c, a, b in zip(codebooks.lloyd_max(1).levels, e[:-1], e[1:], strict=True))
        assert abs(mse - (1 - 2 / math.pi)) < 1e-7


def test_closed_forms():
    # 1 bit, N(0, 1): +-E|X| = +-sqrt(2/pi); d = 3: T is uniform on [-1, 1], whose Lloyd-Max
    # quantizer is the uniform one with levels at the cell centres
    assert codebooks.lloyd_max(1).levels == (float(np.float32(-math.sqrt(2 / math.pi))),
                                             float(np.float32(math.sqrt(2 / math.pi))))
    for bits in (1, 2, 3):
        n = 2**bits
        want = tuple(float(np.float32((2 * i + 1) / n - 1)) for i in range(n))
        assert codebooks.lloyd_max(bits, "sphere", dim=3).levels == want
    # large d: close to N(0, 1/d)
    g, s = codebooks.lloyd_max(2), codebooks.lloyd_max(2, "sphere", dim=4096)
    assert max(abs(a - b * 64) for a, b in zip(g.levels, s.levels, strict=True)) < 2e-3


def test_sphere_cdf_against_scipy():
    for a in (0.5, 1.0, 31.5, 63.5):
        for x in (1e-6, 0.01, 0.2, 0.45, 0.5, 0.7):
            assert abs(codebooks.beta_inc(a, a, x) - special.betainc(a, a, x)) <= 1e-12


def test_normal_ppf_against_scipy():
    for p in (1e-300, 1e-12, 1e-3, 0.1, 0.3, 0.5 - 1e-9, 0.5 + 1e-9, 0.9, 0.9677083, 1 - 1e-12):
        assert abs(codebooks.normal_ppf(p) - stats.norm.ppf(p)) <= 4e-16 * max(1, abs(stats.norm.ppf(p)))


def test_nf4_matches_its_published_values():
    cb = codebooks.normal_float(4)
    assert cb.name == "nf4" and cb.size == 16
    assert abs(codebooks.normal_float_offset(4) - 0.9677083) < 5e-8  # bitsandbytes' constant
    # published values come from float32 probabilities (torch.linspace): their quantiles move by
    # up to ~2**-24 * dppf/dp / ppf(delta) ~ 2e-7; ours are exact-probability quantiles
    assert np.max(np.abs(np.array(cb.levels) - NF4_PUBLISHED)) <= 1e-6
    assert cb.levels[7] == 0.0 and cb.levels[0] == -1.0 and cb.levels[-1] == 1.0


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_normal_float_definition(bits):
    cb = codebooks.normal_float(bits)
    half = 2 ** (bits - 1)
    delta = codebooks.normal_float_offset(bits)
    pos = stats.norm.ppf(np.linspace(delta, 0.5, half + 1)[:-1])
    neg = -stats.norm.ppf(np.linspace(delta, 0.5, half)[:-1])
    want = np.sort(np.concatenate([pos, [0.0], neg])) / pos.max()
    assert cb.size == 2**bits and cb.levels.count(0.0) == 1
    np.testing.assert_allclose(cb.levels, want, rtol=0, atol=2**-24)  # float32 rounding


def test_designs_are_cached():
    assert codebooks.lloyd_max(3) is codebooks.lloyd_max(3)
    assert codebooks.lloyd_max(2, "sphere", dim=64) is codebooks.lloyd_max(2, "sphere", dim=64)
    assert codebooks.normal_float(4) is codebooks.resolve("nf4")


# -- encoding ------------------------------------------------------------------------------------

TIES = Codebook("ties", 3, (-2.0, -0.5, 0.0, 0.25, 1.0, 3.0), "hand-made: every threshold is a float16")


def _brute_nearest(v: np.ndarray, levels: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """Nearest level index per value; exact ties to the even index.  The distances are exact:
    a float16 value and a float32 level differ by a number of at most 2**15 / 2**-27 span,
    which float64 holds exactly."""
    lv = np.array(levels)
    d = np.abs(v[:, None] - lv[None, :])
    best = d.min(axis=1, keepdims=True)
    cand = d == best
    n_ties = int((cand.sum(axis=1) > 1).sum())
    idx = np.where(cand, np.arange(lv.size), 10**6)
    even = np.where(cand & (np.arange(lv.size) % 2 == 0), np.arange(lv.size), 10**6)
    return np.where(cand.sum(axis=1) > 1, even.min(axis=1), idx.min(axis=1)), n_ties


@pytest.mark.parametrize("cb", [codebooks.normal_float(4), codebooks.lloyd_max(2), TIES], ids=lambda c: c.name)
def test_every_float16_encodes_to_the_nearest_level(cb, backend):
    bits = np.arange(1 << 16, dtype=np.uint16)
    x = bits.view(np.float16)
    x = x[np.isfinite(x)]
    q = lowbit.quantize(backend.asarray(x), scheme="codebook", codebook=cb, scale=None)
    want, ties = _brute_nearest(x.astype(np.float64), cb.levels)
    np.testing.assert_array_equal(codes_of(q), want)
    if cb is TIES:
        assert ties >= len(cb.thresholds)  # every threshold hit (with both signs of zero)
    y = q.dequantize()
    assert backend.is_native(y)
    y = backend.to_numpy(y)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, np.array(cb.levels, np.float64)[want].astype(np.float16))


def test_ties_go_to_the_even_code(backend):
    x = backend.asarray(np.array(TIES.thresholds + (-0.0, 0.0), np.float64))
    codes = codes_of(lowbit.quantize(x, scheme="codebook", codebook=TIES, scale=None))
    # thresholds between codes (0,1) (1,2) (2,3) (3,4) (4,5) -> 0 2 2 4 4; zero is a level
    np.testing.assert_array_equal(codes, [0, 2, 2, 4, 4, 2, 2])


@pytest.mark.parametrize("scale, dtype", [("absmax", "float32"), ("norm", "float16"), ("rms", "bfloat16")])
def test_group_scales_and_exact_decoding(scale, dtype, rng, backend):
    cb = codebooks.lloyd_max(3, "sphere", dim=32) if scale == "norm" else codebooks.lloyd_max(3)
    x = (rng.standard_normal((6, 64)) * np.exp(rng.standard_normal((6, 1)))).astype(np.float32)
    q = lowbit.quantize(backend.asarray(x), scheme="codebook", codebook=cb, scale=scale, group_size=32,
                        scale_dtype=dtype)
    g = x.reshape(-1, 32).astype(np.float64)
    exact = {"absmax": np.abs(g).max(1) / cb.max_abs, "norm": np.linalg.norm(g, axis=1),
             "rms": np.linalg.norm(g, axis=1) / math.sqrt(32)}[scale]
    from lowbit import scales

    s = scales.load(backend.to_numpy(q.fields["scale"]), dtype).astype(np.float64)
    half_ulp = {"float32": 2**-24, "float16": 2**-11, "bfloat16": 2**-8}[dtype]
    assert np.all(np.abs(s - exact) <= exact * half_ulp)  # rounded to nearest, once
    codes = codes_of(q).reshape(-1, 32)
    want, _ = _brute_nearest((g / s[:, None]).reshape(-1), cb.levels)
    np.testing.assert_array_equal(codes.reshape(-1), want)
    # exact decoding: a float32 level times a stored scale is exact in float64, rounded once
    lv = np.array(cb.levels)
    np.testing.assert_array_equal(backend.to_numpy(q.dequantize()),
                                  (lv[codes] * s[:, None]).astype(np.float32).reshape(6, 64))
    assert q.bits_per_element == 3 + 8 * np.dtype(q.fields["scale"].dtype).itemsize / 32


def test_axis_and_whole_tensor_groups(rng):
    x = rng.standard_normal((8, 5, 16)).astype(np.float64)
    q = lowbit.quantize(x, scheme="codebook", codebook="nf4", axis=1)
    assert q.fields["scale"].shape == (8 * 16,)
    s = np.abs(x).max(axis=1).reshape(-1)
    np.testing.assert_array_equal(q.fields["scale"], s.astype(np.float32))
    y = q.dequantize()
    assert y.dtype == np.float64 and y.shape == x.shape
    assert np.all(np.abs(y - x) <= np.abs(x).max(axis=1, keepdims=True) * 0.17)  # NF4's widest half-gap
    q = lowbit.quantize(x, scheme="codebook", codebook="nf4", axis=None)
    assert q.fields["scale"].shape == (1,)


def test_zero_groups_decode_to_zero(rng, backend):
    x = rng.standard_normal((4, 32)).astype(np.float32)
    x[1] = 0
    for scale in ("absmax", "norm", "rms"):
        for rounding in ("nearest_even", "stochastic"):
            y = lowbit.quantize(backend.asarray(x), bits=2, scheme="codebook", codebook="lloyd-max-gaussian",
                                scale=scale, rounding=rounding, seed=1).dequantize()
            assert np.all(backend.to_numpy(y)[1] == 0)


def test_torch_round_trip_keeps_type():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    y = lowbit.quantize(x, scheme="codebook", codebook="nf4", group_size=64).dequantize()
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == x.shape
    assert float((y.float() - x.float()).abs().max()) <= 0.17 * float(x.float().abs().max()) + 1e-2


@pytest.mark.gpu
def test_torch_cuda_bfloat16_gives_the_host_bytes():
    """bfloat16 reaches the CUDA kernels as its bits: the CPU path's bytes, NaN refused."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    x = torch.randn(4, 64, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    for kw in (dict(codebook="nf4", group_size=64), dict(codebook="nf4", scale=None),
               dict(codebook="lloyd-max-sphere", bits=2, scale="norm", rounding="stochastic", seed=1)):
        want = lowbit.quantize(x, scheme="codebook", **kw)
        got = lowbit.quantize(x.cuda(), scheme="codebook", **kw)
        np.testing.assert_array_equal(got.codes.get(), want.codes)
        y = got.dequantize()
        assert y.is_cuda and y.dtype == torch.bfloat16
        np.testing.assert_array_equal(y.cpu().view(torch.int16).numpy(),
                                      want.dequantize().view(torch.int16).numpy())
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowbit.quantize(bad.cuda(), scheme="codebook", codebook="nf4", scale=None)


@pytest.mark.parametrize("kw", [
    dict(codebook="nf4"),
    dict(codebook="lloyd-max-gaussian", bits=2, scale="rms", group_size=32, scale_dtype="bfloat16"),
    dict(codebook="lloyd-max-sphere", bits=3, scale="norm", axis=0, scale_dtype="float16"),
    dict(codebook=TIES, scale=None),
    dict(codebook="nf4", group_size=16, rounding="stochastic", seed=3, rbits=5, first_index=2**40),
], ids=str)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_device_arrays_give_the_host_bytes(backend, kw, dtype, rng):
    """Array type in = out, and the codes, fields and reconstruction of the numpy path, bit for bit."""
    x = (rng.standard_normal((48, 64)) * np.exp(rng.standard_normal((48, 1)))).astype(dtype)
    x[3] = 0
    want = lowbit.quantize(x, scheme="codebook", **kw)
    got = lowbit.quantize(backend.asarray(x), scheme="codebook", **kw)
    backend.assert_same_as_host(got, want, x.shape)


# -- stochastic rounding -----------------------------------------------------------------------

@pytest.mark.parametrize("rbits", [2, 16])
@pytest.mark.parametrize("value", [0.1, -0.3, 0.7, 1.2, -1.9])
def test_stochastic_rounding_is_unbiased_between_levels(value, rbits):
    cb = codebooks.lloyd_max(3)
    lv = np.array(cb.levels)
    i = int(np.searchsorted(lv, value, side="right")) - 1
    lo, hi = lv[i], lv[i + 1]
    f = (value - lo) / (hi - lo)
    p = round(f * 2**rbits) / 2**rbits  # round_grid's rbits-bit probability (docs/rounding.md)
    n = 100_000
    q = lowbit.quantize(np.full(n, value), scheme="codebook", codebook=cb, scale=None,
                        rounding="stochastic", seed=77, rbits=rbits)
    y = q.dequantize()
    assert set(np.unique(y)) <= {lo, hi}
    expect = lo + p * (hi - lo)
    assert abs(y.mean() - expect) <= 5 * (hi - lo) * math.sqrt(p * (1 - p) / n) + 1e-12
    if rbits == 16:
        assert abs(expect - value) <= (hi - lo) * 2.0**-17


def test_stochastic_rounding_outside_the_levels_and_on_them():
    cb = codebooks.lloyd_max(2)
    x = np.array([-10.0, cb.levels[0], cb.levels[1], cb.levels[3], 10.0] * 1000)
    codes = codes_of(lowbit.quantize(x, scheme="codebook", codebook=cb, scale=None,
                                     rounding="stochastic", seed=5))
    np.testing.assert_array_equal(codes, [0, 0, 1, 3, 3] * 1000)


def test_stochastic_rounding_is_reproducible_and_chunkable(rng, backend):
    x = rng.standard_normal(4000).astype(np.float32)
    kw = dict(scheme="codebook", codebook="nf4", scale=None, rounding="stochastic", seed=9)
    xb = backend.asarray(x)
    whole = codes_of(lowbit.quantize(xb, **kw))
    np.testing.assert_array_equal(whole, codes_of(lowbit.quantize(xb, **kw)))
    np.testing.assert_array_equal(codes_of(lowbit.quantize(backend.asarray(x[1234:]), first_index=1234, **kw)),
                                  whole[1234:])
    assert not np.array_equal(whole, codes_of(lowbit.quantize(xb, **{**kw, "seed": 10})))


# -- files ---------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)
    q = lowbit.quantize(x, scheme="codebook", codebook=TIES, group_size=8, scale_dtype="float16")
    q.save(tmp_path / "q.npz")
    r = lowbit.load(tmp_path / "q.npz")
    np.testing.assert_array_equal(r.dequantize(), q.dequantize())
    assert r.meta == q.meta


def test_codes_past_the_last_level_decode_to_it(tmp_path):
    # a 3-bit code has 8 values and TIES 6 levels: codes 6 and 7 never occur in valid data, and
    # the decoder's table maps them to the top level (no read past the table)
    q = lowbit.quantize(np.linspace(-3, 3, 64), scheme="codebook", codebook=TIES, scale=None)
    codes = codes_of(q)
    codes[5], codes[6] = 6, 7
    lowbit.QuantizedArray(lowbit.pack(codes, 3), q.fields, q.meta, q.origin).save(tmp_path / "q.npz")
    y = lowbit.load(tmp_path / "q.npz").dequantize()
    assert y[5] == y[6] == TIES.levels[-1]


@pytest.mark.parametrize("field, value", [
    ("levels", [1.0, 0.5, 2.0]), ("levels", [0.0, float("nan")]), ("levels", [0.0, 0.1]),
    ("levels", [0.0] * 300), ("levels", "abc"), ("bits", 9), ("scale", "max"),
    ("scale_dtype", "int8"), ("rounding", "up"), ("group_size", 7), ("shape", [3, 0]),
    ("codebook", 3), ("seed", -1),
])
def test_load_refuses_tampered_metadata(tmp_path, field, value):
    q = lowbit.quantize(np.ones((3, 8), np.float32), bits=2, scheme="codebook",
                        codebook="lloyd-max-gaussian", scale="rms", group_size=4)
    bad = lowbit.QuantizedArray(q.codes, q.fields, {**q.meta, field: value}, q.origin)
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=f"metadata {field!r}"):
        lowbit.load(tmp_path / "bad.npz")


def test_load_refuses_bits_the_levels_do_not_fit(tmp_path):
    q = lowbit.quantize(np.ones((3, 8), np.float32), bits=2, scheme="codebook",
                        codebook="lloyd-max-gaussian", scale="rms", group_size=4)
    lowbit.QuantizedArray(q.codes, q.fields, {**q.meta, "bits": 1}, q.origin).save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="metadata 'levels' do not form a codebook.*holds 2..2 levels"):
        lowbit.load(tmp_path / "bad.npz")


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, err, match", [
    (dict(name="c", bits=2, levels=(0.5, 0.1)), ValueError, "sorted strictly increasing"),
    (dict(name="c", bits=2, levels=(0.0, 0.0)), ValueError, "sorted strictly increasing"),
    (dict(name="c", bits=2, levels=(0.0, math.inf)), ValueError, "finite"),
    (dict(name="c", bits=2, levels=(float("nan"), 1.0)), ValueError, "finite"),
    (dict(name="c", bits=0, levels=(0.0, 1.0)), ValueError, "bits must be an integer in 1..8"),
    (dict(name="c", bits=9, levels=(0.0, 1.0)), ValueError, "bits must be an integer in 1..8"),
    (dict(name="c", bits=True, levels=(0.0, 1.0)), ValueError, "bits must be an integer in 1..8"),
    (dict(name="c", bits=1, levels=(0.0, 1.0, 2.0)), ValueError, "holds 2..2 levels"),
    (dict(name="c", bits=1, levels=(1.0,)), ValueError, "holds 2..2 levels"),
    (dict(name="c", bits=2, levels=(1.0, 1.0 + 1e-12)), ValueError, "same float32"),
    (dict(name="c", bits=2, levels=(1e-30, 1.0)), ValueError, "exact float64 midpoint"),
    (dict(name="c", bits=2, levels=("a", 1.0)), TypeError, "real number"),
    (dict(name="c", bits=2, levels=1.0), TypeError, "sequence"),
    (dict(name="", bits=2, levels=(0.0, 1.0)), ValueError, "name"),
])
def test_bad_codebooks(kwargs, err, match):
    with pytest.raises(err, match=match):
        Codebook(**kwargs)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(), ValueError, "needs codebook="),
    (dict(codebook="nf5"), ValueError, "codebook must be"),
    (dict(codebook=3), TypeError, "codebook must be"),
    (dict(codebook="lloyd-max-gaussian"), ValueError, "needs bits"),
    (dict(codebook="lloyd-max-gaussian", bits=9), ValueError, "bits must be an integer in 1..8"),
    (dict(codebook="nf4", bits=3), ValueError, "conflicts"),
    (dict(codebook="nf4", rounding="up"), ValueError, "rounding must be one of"),
    (dict(codebook="nf4", scale="max"), ValueError, "scale must be"),
    (dict(codebook="nf4", scale_dtype="int8"), ValueError, "scale_dtype"),
    (dict(codebook="nf4", group_size=5), ValueError, "does not divide"),
    (dict(codebook="nf4", rbits=0), ValueError, "rbits"),
    (dict(codebook="nf4", scale=None, group_size=4), ValueError, "group_size needs a scale"),
    (dict(codebook="nf4", first_index=-1), ValueError, "first_index"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        lowbit.quantize(np.ones((2, 8), np.float32), scheme="codebook", **kwargs)


def test_bad_values(backend):
    x = np.ones((2, 8), np.float32)
    x[1, 3] = np.nan
    for scale in ("absmax", "norm", None):
        for bad in (np.nan, np.inf):
            x[1, 3] = bad
            with pytest.raises(ValueError, match="NaN or Inf"):
                lowbit.quantize(backend.asarray(x), scheme="codebook", codebook="nf4", scale=scale)
    with pytest.raises(ValueError, match="overflows scale_dtype='float16'"):
        lowbit.quantize(backend.asarray(np.full((1, 8), 1e6, np.float32)), scheme="codebook", codebook="nf4",
                        scale_dtype="float16")
    with pytest.raises(ValueError, match="below scale_dtype='float16'"):
        lowbit.quantize(backend.asarray(np.full((1, 8), 1e-7, np.float32)), scheme="codebook", codebook="nf4",
                        scale_dtype="float16")
    with pytest.raises(ValueError, match="dim must be"):
        codebooks.lloyd_max(2, "sphere", dim=1)
    with pytest.raises(ValueError, match="distribution must be"):
        codebooks.lloyd_max(2, "laplace")
