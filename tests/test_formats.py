"""Number formats: presets vs ml_dtypes.finfo, exhaustive decoding, encoding of every float16
and a dense float32 sweep against ml_dtypes and the Fraction reference, every rounding mode,
fixed point, MX / NVFP4 block formats, packing, errors.

Bodies that take ``backend`` run on numpy, CuPy and torch CUDA (tests/conftest.py): the same
oracles hold the CUDA codec (tests/test_formats_backends.py compares it with the CPU bit for bit)."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowbit
from lowbit import formats as F
from lowbit.rounding import reference as ref
from lowbit.rounding.modes import ELEMENTWISE

ML = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float32": np.float32,
}
FMTS = list(F.MINIFLOATS.values())


def codes_of(q) -> np.ndarray:
    """Unpacked codes of a QuantizedArray, as a numpy array (device codes are copied back)."""
    codes = lowbit.unpack(q.codes, q.bits, q.size)
    if isinstance(codes, np.ndarray):
        return codes
    import cupy

    return cupy.asnumpy(codes)


def host_field(a) -> np.ndarray:
    """A field of a QuantizedArray as a numpy array (device fields are copied back)."""
    if isinstance(a, np.ndarray):
        return a
    import cupy

    return cupy.asnumpy(a)


def quantize(backend, x: np.ndarray, **kw):
    """lowbit.quantize of ``x`` moved onto ``backend``."""
    return lowbit.quantize(backend.asarray(x), **kw)


def dequantized(backend, x: np.ndarray, **kw) -> np.ndarray:
    """The values ``x`` round-trips to on ``backend``, as a numpy array."""
    y = quantize(backend, x, **kw).dequantize()
    assert backend.is_native(y)
    return backend.to_numpy(y)


def ml_codes(x: np.ndarray, fmt: F.MiniFloat) -> np.ndarray:
    """ml_dtypes' codes (sub-byte formats are stored one per byte, low bits)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(ML[fmt.name]).view(np.uint8) & ((1 << fmt.bits) - 1)


def policy(fmt: F.MiniFloat) -> str:
    """ml_dtypes' overflow behaviour: Inf/NaN where the format has them, else saturation."""
    return "nonfinite" if fmt.has_nan else "saturate"


# -- records -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FMTS + list(F.IEEE_FLOATS.values()), ids=lambda f: f.name)
def test_presets_match_ml_dtypes_finfo(fmt):
    fi = ml_dtypes.finfo(ML[fmt.name])
    assert fmt.bits == fi.bits
    assert fmt.max == float(fi.max)
    assert fmt.smallest_normal == float(fi.smallest_normal)
    assert fmt.smallest_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.emax == fi.maxexp - 1 and fmt.emin == fi.minexp


def test_ocp_values_by_hand():
    assert [F.FP4_E2M1.value_of(c) for c in range(8)] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert F.FP8_E4M3.max == 448 and F.FP8_E4M3.code_of_max == 0x7E and F.FP8_E4M3.code_of_nan == 0x7F
    assert F.FP8_E4M3.code_of_inf is None and math.isnan(F.FP8_E4M3.value_of(0xFF))
    assert F.FP8_E5M2.max == 57344 and F.FP8_E5M2.code_of_inf == 0x7C and F.FP8_E5M2.code_of_nan == 0x7E
    assert F.FP6_E2M3.max == 7.5 and F.FP6_E3M2.max == 28 and F.FP4_E2M1.max == 6
    assert F.FP8_E4M3.value_of(0x01) == 2.0**-9 and F.FP8_E4M3.value_of(0x08) == 2.0**-6
    assert F.INT8_Q1_6.min == -2 and F.INT8_Q1_6.max == 127 / 64 and F.INT8_Q1_6.emax == 0
    assert F.FixedPoint(8, 4).name == "q3.4" and F.FixedPoint(8, 4, signed=False).name == "uq4.4"


@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_every_code_decodes_as_ocp_and_ml_dtypes(backend, fmt):
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    q = quantize(backend, np.zeros(codes.size, np.float32), scheme=fmt.name)
    packed = lowbit.pack(codes, fmt.bits)
    if isinstance(q.codes, np.ndarray):
        q.codes[:] = packed
    else:  # device codes: the test's own explicit copy
        import cupy

        q.codes[:] = cupy.asarray(packed)
    got = backend.to_numpy(q.dequantize()).astype(np.float64)
    oracle = codes.view(ML[fmt.name]).astype(np.float64)
    np.testing.assert_array_equal(got, oracle)
    assert np.array_equal(np.signbit(got), np.signbit(oracle))
    mine = np.array([ref.decode_minifloat(int(c), fmt) for c in codes])
    np.testing.assert_array_equal(got, mine)


# -- encoding vs ml_dtypes (nearest_even) ------------------------------------------------------

@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_every_float16_encodes_like_ml_dtypes(backend, fmt):
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]  # NaN into fp6/fp4 raises (ml_dtypes writes a zero)
    q = quantize(backend, x, scheme=fmt.name, overflow=policy(fmt))
    got = codes_of(q)
    want = ml_codes(x.astype(np.float32), fmt)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    # NaN keeps its sign; ml_dtypes does too for fp8
    assert np.all(np.isnan(backend.to_numpy(q.dequantize())[nan]))


def _float32_sweep(fmt: F.MiniFloat) -> np.ndarray:
    """Every binade around the format, each with mantissa patterns that hit codes, exact
    midpoints (ties), one float32 ulp either side of them, and random low bits."""
    rng = np.random.default_rng(7)
    table = fmt.decode_table()
    finite = np.unique(np.abs(table[np.isfinite(table)]))
    mids = (finite[1:] + finite[:-1]) / 2
    beyond = finite[-1] + (finite[-1] - finite[-2]) / 2  # the overflow midpoint
    pts = np.concatenate([finite, mids, [beyond, 2 * beyond, 1e30]]).astype(np.float32)
    near = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)),
                           np.nextafter(pts, np.float32(0))])
    binades = np.arange(fmt.emin - fmt.man_bits - 4, fmt.emax + 4)
    mant = rng.integers(0, 1 << 23, (binades.size, 64))
    randoms = np.ldexp((1 + mant / 2.0**23), binades[:, None]).astype(np.float32).ravel()
    tiny = np.array([1e-45, 1e-40, 2.0**-126, 2.0**-127], np.float32)
    special = np.array([0.0, np.inf, np.float32(fmt.max), np.float32(3.4e38)]
                       + ([np.nan] if fmt.has_nan else []), np.float32)
    x = np.concatenate([near, randoms, tiny, special])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_dense_float32_sweep_encodes_like_ml_dtypes_and_the_reference(backend, fmt):
    x = _float32_sweep(fmt)
    q = quantize(backend, x, scheme=fmt.name, overflow=policy(fmt))
    got = codes_of(q)
    np.testing.assert_array_equal(got, ml_codes(x, fmt))
    want = [ref.encode_minifloat(float(v), fmt, overflow=policy(fmt)) for v in x]
    np.testing.assert_array_equal(got, np.array(want))


@pytest.mark.parametrize(
    "fmt, overflow",
    [(f, o) for f in FMTS for o in ("saturate", "nonfinite") if f.has_nan or o == "saturate"],
    ids=lambda v: getattr(v, "name", v),
)
@pytest.mark.parametrize("mode", ELEMENTWISE)
def test_every_mode_and_policy_matches_the_reference(backend, fmt, mode, overflow):
    x = _float32_sweep(fmt)[::3]
    q = quantize(backend, x, scheme=fmt.name, rounding=mode, seed=11, rbits=5, overflow=overflow)
    want = [ref.encode_minifloat(float(v), fmt, mode, overflow, 11, i, 5) for i, v in enumerate(x)]
    np.testing.assert_array_equal(codes_of(q), np.array(want))


def exact_nearest_even(v: float, fmt: F.MiniFloat) -> float:
    """The finite value of ``fmt`` nearest to ``v`` (ties to the even code), by brute force over
    ml_dtypes' decoding of every code with exact fractions: an oracle independent of lowbit."""
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    vals = codes.view(ML[fmt.name]).astype(np.float64)  # sub-byte types: one code per byte
    finite = [(Fraction(float(a)), int(c)) for a, c in zip(vals, codes, strict=True)
              if np.isfinite(a)]
    target = Fraction(v)
    best = min(finite, key=lambda ac: (abs(ac[0] - target), ac[1] & 1))
    return float(best[0])


@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_float64_input_rounds_once(backend, fmt):
    # One float64 ulp either side of every midpoint between neighbouring finite values: a
    # double rounding through float32 turns both into the midpoint (a tie) and can round the
    # wrong way; a single rounding from the float64 bits must match the exact nearest value.
    table = np.sort(np.unique(np.abs(fmt.decode_table()[np.isfinite(fmt.decode_table())])))
    mids = (table[:-1] + table[1:]) / 2
    x = np.concatenate([np.nextafter(mids, 0), np.nextafter(mids, np.inf)])
    x = np.concatenate([x, -x])
    got = dequantized(backend, x, scheme=fmt.name)
    want = [exact_nearest_even(float(v), fmt) for v in x]
    np.testing.assert_array_equal(got, want)
    # The hand-computed case: -431.99999999999994 lies below the midpoint 432 of 416 and 448.
    if fmt.name == "fp8_e4m3":
        one = dequantized(backend, np.array([-431.99999999999994]), scheme=fmt.name)
        np.testing.assert_array_equal(one, [-416.0])


@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_float32_exact_float64_input_agrees_with_ml_dtypes(fmt):
    # Where a float64 value is exactly a float32, both libraries perform the same single
    # rounding, so ml_dtypes is a valid oracle (elsewhere its float64 path may round twice,
    # depending on its version: docs/formats.md, item 3).
    table = np.sort(np.unique(np.abs(fmt.decode_table()[np.isfinite(fmt.decode_table())])))
    mids = ((table[:-1] + table[1:]) / 2).astype(np.float32)
    x32 = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    x32 = np.concatenate([x32, -x32])
    got = lowbit.quantize(x32.astype(np.float64), scheme=fmt.name).dequantize()
    want = x32.astype(ML[fmt.name]).astype(np.float64)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_input_dtypes_agree_with_the_reference(backend, dtype, rng):
    x = (rng.standard_normal(3000) * 30).astype(dtype)
    for fmt in (F.FP8_E4M3, F.FP4_E2M1):
        q = quantize(backend, x, scheme=fmt.name, rounding="stochastic", seed=2)
        want = [ref.encode_minifloat(float(v), fmt, "stochastic", "saturate", 2, i, 16)
                for i, v in enumerate(x)]
        np.testing.assert_array_equal(codes_of(q), want)
        assert backend.to_numpy(q.dequantize()).dtype == x.dtype


def test_bfloat16_torch(rng):
    torch = pytest.importorskip("torch")
    t = torch.tensor(rng.standard_normal(500) * 10, dtype=torch.bfloat16)
    q = lowbit.quantize(t, scheme="fp8_e5m2")
    y = q.dequantize()
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    want = t.float().numpy().astype(ml_dtypes.float8_e5m2).astype(np.float32)
    np.testing.assert_array_equal(y.float().numpy(), want)


# -- overflow ----------------------------------------------------------------------------------

def test_overflow_policies(backend):
    x = np.array([1000.0, -1000.0, 460.0, 470.0, np.inf], np.float32)
    sat = dequantized(backend, x, scheme="fp8_e4m3")
    np.testing.assert_array_equal(sat, [448, -448, 448, 448, 448])
    nf = dequantized(backend, x, scheme="fp8_e4m3", overflow="nonfinite")
    assert np.isnan(nf[[0, 1, 3, 4]]).all() and nf[2] == 448  # 464 is the overflow midpoint
    tz = dequantized(backend, x, scheme="fp8_e5m2", overflow="nonfinite", rounding="toward_zero")
    np.testing.assert_array_equal(tz[:4], [896, -896, 448, 448])
    big = np.array([1e6, -1e6], np.float32)
    np.testing.assert_array_equal(
        dequantized(backend, big, scheme="fp8_e5m2", overflow="nonfinite", rounding="toward_zero"),
        [57344, -57344])
    np.testing.assert_array_equal(
        dequantized(backend, big, scheme="fp8_e5m2", overflow="nonfinite"), [np.inf, -np.inf])
    with pytest.raises(ValueError, match="2 value"):
        quantize(backend, big, scheme="fp4_e2m1", overflow="error")


def test_unrepresentable_nan_raises(backend):
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantize(backend, np.array([1.0, np.nan], np.float32), scheme="fp4_e2m1")


# -- packing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_packed_storage(fmt, rng):
    x = (rng.standard_normal(37) * 3).astype(np.float32)
    q = lowbit.quantize(x, scheme=fmt.name)
    assert q.codes.dtype == np.uint8 and q.codes.size == (37 * fmt.bits + 7) // 8
    want = np.array([ref.encode_minifloat(float(v), fmt) for v in x], np.uint8)
    np.testing.assert_array_equal(q.codes, lowbit.pack(want, fmt.bits))


# -- scale="absmax" ----------------------------------------------------------------------------

def test_absmax_scale_per_group(rng):
    x = (rng.standard_normal((6, 32)) * np.arange(1, 7)[:, None]).astype(np.float32)
    q = lowbit.quantize(x, scheme="fp4_e2m1", scale="absmax", axis=-1, group_size=8)
    s = q.fields["scale"]
    assert s.dtype == np.float32 and s.shape == (24,)
    assert_smallest_covering_scale(s, np.abs(x).reshape(24, 8).max(1), 6.0)
    y = q.dequantize()
    grid = (x.reshape(24, 8) / s[:, None].astype(np.float64)).astype(np.float64)
    want = np.array([ref.decode_minifloat(ref.encode_minifloat(float(v), F.FP4_E2M1), F.FP4_E2M1)
                     for v in grid.ravel()]).reshape(24, 8) * s[:, None]
    np.testing.assert_array_equal(y, want.reshape(6, 32).astype(np.float32))
    q0 = lowbit.quantize(x, scheme="fp8_e4m3", scale="absmax", axis=0)
    assert q0.fields["scale"].shape == (32,)
    assert np.abs(q0.dequantize() - x).max() <= np.abs(x).max() / 8


def assert_smallest_covering_scale(s: np.ndarray, amax: np.ndarray, fmax: float) -> None:
    """s is the smallest float32 with amax / s <= fmax, in exact arithmetic (Fractions)."""
    below = np.nextafter(s, np.float32(0))
    for si, bi, a in zip(s.tolist(), below.tolist(), amax.tolist(), strict=True):
        assert Fraction(a) <= Fraction(si) * Fraction(fmax), (a, si)
        assert Fraction(a) > Fraction(bi) * Fraction(fmax), (a, si)  # rounded up, not further


def test_absmax_example_from_the_issue_does_not_overflow():
    # float32(0.70004999 / 448) was rounded to nearest, 0.70004999 / s > 448, and rounding
    # "up" then overflowed e4m3 (issue 12, item 3); the scale is now rounded up
    x = np.array([[0.1, 0.70004999]])
    q = lowbit.quantize(x, scheme="fp8_e4m3", scale="absmax", rounding="up", overflow="error")
    assert_smallest_covering_scale(q.fields["scale"], np.array([0.70004999]), 448.0)
    assert q.dequantize()[0, 1] >= 0.70004999  # rounded up, and at most max * s


ABSMAX_FORMATS = [*FMTS, F.FixedPoint(bits=8, frac_bits=4), F.FixedPoint(bits=4, frac_bits=0, signed=False)]


@pytest.mark.parametrize("fmt", ABSMAX_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ELEMENTWISE)
def test_absmax_scales_never_overflow_in_any_mode(fmt, mode, rng):
    # Random rows of every magnitude (float64 and float32 input): with overflow="error" no
    # row may raise, and each stored scale is the smallest float32 that covers its row.
    # Before the fix 33 of 200 such rows raised for e4m3 with rounding="up".
    fixed = {"bits": fmt.bits, "frac_bits": fmt.frac_bits, "signed": fmt.signed} \
        if isinstance(fmt, F.FixedPoint) else {}
    scheme = "fixed" if fixed else fmt.name
    mags = np.exp(rng.uniform(-30, 30, (200, 1)))
    x = rng.standard_normal((200, 16)) * mags
    if isinstance(fmt, F.FixedPoint) and not fmt.signed:
        x = np.abs(x)
    for arr in (x, x.astype(np.float32)):
        q = lowbit.quantize(arr, scheme=scheme, scale="absmax", axis=-1, rounding=mode, seed=5,
                            overflow="error", **fixed)
        assert_smallest_covering_scale(q.fields["scale"], np.abs(arr).max(1).astype(np.float64),
                                       fmt.max)
        bound = (fmt.max * q.fields["scale"].astype(np.float64)).astype(arr.dtype)  # max * s, rounded
        assert (np.abs(q.dequantize()) <= bound[:, None]).all()


def test_absmax_scale_beyond_float32_raises():
    with pytest.raises(ValueError, match="beyond float32"):
        lowbit.quantize(np.array([1e300, 1.0]), scheme="fp8_e4m3", scale="absmax")


# -- fixed point -------------------------------------------------------------------------------

@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("mode", ELEMENTWISE)
def test_fixed_point_matches_the_reference(backend, signed, mode, rng):
    fmt = F.FixedPoint(bits=6, frac_bits=3, signed=signed)
    x = np.concatenate([rng.uniform(-6, 9, 500), np.arange(-80, 81) / 16]).astype(np.float64)
    for overflow in ("saturate", "wrap"):
        q = quantize(backend, x, scheme="fixed", bits=6, frac_bits=3, signed=signed, rounding=mode,
                     seed=8, rbits=4, overflow=overflow)
        want = [ref.encode_fixed(float(v), fmt, mode, overflow, 8, i, 4) for i, v in enumerate(x)]
        np.testing.assert_array_equal(codes_of(q), want)
    y = dequantized(backend, x, scheme="fixed", bits=6, frac_bits=3, signed=signed)
    assert y.min() >= fmt.min and y.max() <= fmt.max


def test_fixed_point_codes_decode_exactly(backend):
    for signed in (True, False):
        fmt = F.FixedPoint(bits=8, frac_bits=4, signed=signed)
        vals = np.array([float(fmt.value_of(c)) for c in range(256)])
        q = quantize(backend, vals, scheme="fixed", bits=8, frac_bits=4, signed=signed)
        np.testing.assert_array_equal(backend.to_numpy(q.dequantize()), vals)
        want = np.arange(256, dtype=np.uint8)
        np.testing.assert_array_equal(codes_of(q), want)


def test_fixed_point_overflow_policies(backend):
    x = np.array([7.9, 8.0, -9.0, 100.0], np.float64)  # Q3.4: range -8 .. 7.9375
    sat = dequantized(backend, x, scheme="fixed", bits=8, frac_bits=4)
    np.testing.assert_array_equal(sat, [7.875, 7.9375, -8, 7.9375])
    wrap = dequantized(backend, x, scheme="fixed", bits=8, frac_bits=4, overflow="wrap")
    np.testing.assert_array_equal(wrap, [7.875, -8.0, 7.0, 100 % 16])
    with pytest.raises(ValueError, match="3 value"):
        quantize(backend, x, scheme="fixed", bits=8, frac_bits=4, overflow="error")
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantize(backend, np.array([np.nan]), scheme="fixed", bits=8, frac_bits=4)


def test_fixed_point_diffuse_keeps_partial_sums(backend, rng):
    x = rng.uniform(-3, 3, (5, 300))
    y = dequantized(backend, x, scheme="fixed", bits=8, frac_bits=2, rounding="diffuse", axis=-1)
    err = np.cumsum(y - x, axis=-1)
    assert np.abs(err).max() <= 0.5 * 0.25 + 1e-12
    rne = dequantized(backend, x, scheme="fixed", bits=8, frac_bits=2)
    assert np.abs(np.cumsum(rne - x, axis=-1)).max() > 0.25  # plain rounding drifts


# -- block formats -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(F.BLOCK_FORMATS))
def test_block_formats_follow_their_rule(backend, name, rng):
    bf = F.BLOCK_FORMATS[name]
    x = (rng.standard_normal((3, 2 * bf.block_size + 5)) * np.logspace(-3, 3, 3)[:, None]).astype(np.float32)
    x[1, :bf.block_size] = 0.0  # an all-zero block
    q = quantize(backend, x, scheme=name, axis=-1)
    y = backend.to_numpy(q.dequantize()).astype(np.float64)
    fields = {k: host_field(v) for k, v in q.fields.items()}
    assert y.shape == x.shape and fields["scale"].dtype == np.uint8
    padded = np.zeros((3, 3 * bf.block_size), np.float64)
    padded[:, : x.shape[1]] = x
    blocks = padded.reshape(-1, bf.block_size)
    amax = np.abs(blocks).max(1)
    if bf.scale == "e8m0":
        s = np.array([ref.mx_shared_exponent(float(a), bf.element.emax) for a in amax])
        np.testing.assert_array_equal(fields["scale"], s + F.E8M0_BIAS)
        scale = np.ldexp(1.0, s)
    else:
        t = np.float32(np.abs(x).max() / (6 * 448))
        np.testing.assert_array_equal(fields["tensor_scale"], [t])
        want = [ref.encode_minifloat(float(a) / 6 / float(t), F.FP8_E4M3) for a in amax]
        np.testing.assert_array_equal(fields["scale"], want)
        scale = np.array([ref.decode_minifloat(c, F.FP8_E4M3) for c in want]) * float(t)
    elem = bf.element
    vals = blocks / np.where(scale > 0, scale, 1.0)[:, None]
    if isinstance(elem, F.MiniFloat):
        dec = [ref.decode_minifloat(ref.encode_minifloat(float(v), elem), elem) for v in vals.ravel()]
    else:
        dec = [float(elem.value_of(ref.encode_fixed(float(v), elem, qmin=-127))) for v in vals.ravel()]
    want = (np.array(dec).reshape(blocks.shape) * scale[:, None]).reshape(3, -1)[:, : x.shape[1]]
    np.testing.assert_array_equal(y, want.astype(np.float32))


def test_mx_nan_block_and_other_axis(backend, rng):
    x = rng.standard_normal((64, 4)).astype(np.float32)
    x[3, 1] = np.nan
    q = quantize(backend, x, scheme="mxfp4", axis=0)
    y = backend.to_numpy(q.dequantize())
    assert q.fields["scale"].shape == (8,)
    assert np.isnan(y[:32, 1]).all() and np.isfinite(np.delete(y, 1, axis=1)).all()
    assert np.isfinite(y[32:, 1]).all()


def test_block_stochastic_is_unbiased(backend):
    x = np.full((4000, 32), 0.3, np.float32)
    x[:, 0] = 4.0  # amax sets the scale: 2**(2 - 2) = 1, so 0.3 sits between 0 and 0.5
    y = dequantized(backend, x, scheme="mxfp4", rounding="stochastic", seed=1)
    p = 0.6  # 0.3 = 0.6 * 0.5; P(0.5) = 0.6 to within the 16-bit threshold
    assert abs(y[:, 1:].mean() - 0.3) <= 5 * 0.5 * math.sqrt(p * (1 - p) / y[:, 1:].size)


def test_save_load_roundtrip(tmp_path, rng):
    x = rng.standard_normal((4, 40)).astype(np.float32)
    for scheme, kw in [("nvfp4", {}), ("fp6_e3m2", {"scale": "absmax", "group_size": 8}),
                       ("fixed", {"bits": 5, "frac_bits": 2})]:
        q = lowbit.quantize(x, scheme=scheme, **kw)
        q.save(tmp_path / f"{scheme}.npz")
        back = lowbit.load(tmp_path / f"{scheme}.npz")
        np.testing.assert_array_equal(back.dequantize(), q.dequantize())


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "scheme, kwargs, err, match",
    [
        ("fp8_e4m3", {"overflow": "clamp"}, ValueError, "overflow must be"),
        ("fp8_e4m3", {"overflow": "wrap"}, ValueError, "fixed point only"),
        ("fp4_e2m1", {"overflow": "nonfinite"}, ValueError, "Inf or NaN"),
        ("fp8_e4m3", {"rounding": "nearest"}, ValueError, "rounding must be"),
        ("fp8_e4m3", {"rounding": "diffuse"}, ValueError, "fixed"),
        ("fp8_e4m3", {"rbits": 40, "rounding": "stochastic"}, ValueError, "rbits"),
        ("fp8_e4m3", {"scale": "max"}, ValueError, "scale must be"),
        ("fp8_e4m3", {"group_size": 4}, ValueError, "group_size needs"),
        ("fp8_e4m3", {"bits": 4}, TypeError, "unexpected"),
        ("fixed", {"bits": 9}, ValueError, "bits must be"),
        ("fixed", {"bits": 8, "frac_bits": 1.5}, ValueError, "frac_bits"),
        ("fixed", {"bits": 8, "rounding": "diffuse", "axis": None}, ValueError, "needs an axis"),
        ("mxfp4", {"axis": None}, ValueError, "needs an axis"),
        ("mxfp4", {"rounding": "diffuse"}, ValueError, "diffuse"),
        ("nvfp4", {"axis": 3}, ValueError, "axis must be"),
        ("fp16", {}, ValueError, "scheme must be"),
    ],
)
def test_bad_arguments(backend, scheme, kwargs, err, match):
    with pytest.raises(err, match=match):
        quantize(backend, np.ones((4, 32), np.float32), scheme=scheme, **kwargs)


def test_format_parameters_out_of_range():
    with pytest.raises(ValueError, match="exp_bits"):
        F.MiniFloat("x", exp_bits=0, man_bits=3, bias=1, has_inf=False, has_nan=False)
    with pytest.raises(ValueError, match="man_bits"):
        F.MiniFloat("x", exp_bits=5, man_bits=24, bias=1, has_inf=False, has_nan=False)
    with pytest.raises(ValueError, match="exp_bits"):
        F.MiniFloat("x", exp_bits=9, man_bits=2, bias=1, has_inf=False, has_nan=False)
    with pytest.raises(ValueError, match="bias"):
        F.MiniFloat("x", exp_bits=2, man_bits=1, bias=9, has_inf=False, has_nan=False)
    with pytest.raises(ValueError, match="Inf"):
        F.MiniFloat("x", exp_bits=4, man_bits=3, bias=7, has_inf=True, has_nan=False)
    with pytest.raises(ValueError, match="bits"):
        F.FixedPoint(bits=0, frac_bits=0)
    with pytest.raises(ValueError, match="block_size"):
        F.BlockFormat("x", F.FP4_E2M1, 0, "e8m0")


# ties pinned by hand: x -> decoded result per mode
#                 nearest_even nearest_away toward_zero  up    down   odd
FP4_TIES = {
    2.5: (2.0, 3.0, 2.0, 3.0, 2.0, 3.0),
    -2.5: (-2.0, -3.0, -2.0, -2.0, -3.0, -3.0),
    5.0: (4.0, 6.0, 4.0, 6.0, 4.0, 6.0),
    0.25: (0.0, 0.5, 0.0, 0.5, 0.0, 0.5),
    1.75: (2.0, 2.0, 1.5, 2.0, 1.5, 1.5),
    7.0: (6.0, 6.0, 6.0, 6.0, 6.0, 6.0),  # saturating
}
E4M3_TIES = {
    17.0: (16.0, 18.0, 16.0, 18.0, 16.0, 18.0),
    19.0: (20.0, 20.0, 18.0, 20.0, 18.0, 18.0),
    -2.0**-10: (-0.0, -2.0**-9, -0.0, -0.0, -2.0**-9, -2.0**-9),  # half the smallest subnormal
    464.0: (448.0, 448.0, 448.0, 448.0, 448.0, 448.0),
}


@pytest.mark.parametrize("scheme, table", [("fp4_e2m1", FP4_TIES), ("fp8_e4m3", E4M3_TIES)])
def test_format_ties_pinned_by_hand(backend, scheme, table):
    x = np.array(list(table), np.float32)
    for k, mode in enumerate(["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd"]):
        got = dequantized(backend, x, scheme=scheme, rounding=mode)
        want = np.array([table[v][k] for v in table], np.float32)
        np.testing.assert_array_equal(got, want, err_msg=mode)
        assert np.array_equal(np.signbit(got), np.signbit(want)), mode


# -- stochastic rounding into formats: statistics -----------------------------------------------

def _sr_cases():
    e4, e5, f4 = F.FP8_E4M3, F.FP8_E5M2, F.FP4_E2M1
    return [
        # (format, value): across binades, just below / above powers of two, subnormals
        (e4, 0.3), (e4, 3.3), (e4, 100.7), (e4, 300.1),
        (e4, 2.0**4 * (1 - 2.0**-6)), (e4, 2.0**4 * (1 + 2.0**-6)), (e4, 1 - 2.0**-7),
        (e4, 0.3 * e4.smallest_subnormal), (e4, 2.7 * e4.smallest_subnormal),
        (e4, e4.smallest_normal * (1 - 2.0**-5)),
        (e5, 1e-5), (e5, 2.0**-14 * 0.99), (e5, 1000.3), (e5, -2.0**10 * (1 - 2.0**-9)),
        (f4, 0.2), (f4, 2.2), (f4, 5.9), (f4, -0.7), (f4, 3.999),
    ]


@pytest.mark.parametrize("rbits", [1, 2, 3, 16])
@pytest.mark.parametrize("fmt, value", _sr_cases(), ids=lambda v: v.name if hasattr(v, "name") else f"{v:.6g}")
def test_stochastic_mean_into_formats(fmt, value, rbits):
    from fractions import Fraction

    n = 100_000
    lo = ref.decode_minifloat(ref.encode_minifloat(value, fmt, "down"), fmt)
    hi = ref.decode_minifloat(ref.encode_minifloat(value, fmt, "up"), fmt)
    a, b = (lo, hi) if value >= 0 else (hi, lo)  # toward zero, away from zero
    frac = Fraction(abs(value) - abs(a)) / Fraction(abs(b) - abs(a))
    p = float(round(frac * (1 << rbits)) / (1 << rbits))  # docs/rounding.md: P(away)
    expect = a + p * (b - a)
    x = np.full(n, value, np.float64)
    y = lowbit.quantize(x, scheme=fmt.name, rounding="stochastic", seed=123, rbits=rbits).dequantize()
    assert set(np.unique(y)) <= {a, b}
    bound = 5 * abs(b - a) * math.sqrt(p * (1 - p) / n)
    assert abs(y.mean() - expect) <= bound + 1e-15 * abs(value)
    if rbits == 16:  # the 16-bit probability is within 2**-17 of exact
        assert abs(expect - value) <= abs(b - a) * 2.0**-17


def test_format_chunking_invariance(backend, rng):
    x = (rng.standard_normal(5000) * 10).astype(np.float32)
    whole = codes_of(quantize(backend, x, scheme="fp8_e4m3", rounding="stochastic", seed=9))
    part = codes_of(quantize(backend, x[1234:], scheme="fp8_e4m3", rounding="stochastic", seed=9,
                             first_index=1234))
    np.testing.assert_array_equal(part, whole[1234:])
