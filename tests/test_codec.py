"""The shared format codec (lowbit/codec.py, lowbit/cpu/codec.py): the IEEE storage formats as
MiniFloat records, against numpy and ml_dtypes; every mode against the Fraction reference; the
array form (device arrays) bit-identical to the kernels; the kernels' users wired to it."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import lowbit
from lowbit import arrays, codec, scales
from lowbit import formats as F
from lowbit.rounding import reference as ref

IEEE = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
ALL = list(F.MINIFLOATS.values()) + list(F.IEEE_FLOATS.values())
UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32}


def _uint(fmt: F.MiniFloat) -> type:
    return UINT[max(8, 1 << (fmt.bits - 1).bit_length())]


@pytest.mark.parametrize("fmt", F.IEEE_FLOATS.values(), ids=lambda f: f.name)
def test_ieee_records_name_the_quiet_nan_and_inf(fmt):
    """(finfo-style properties: tests/test_formats.py test_presets_match_ml_dtypes_finfo)"""
    nan = np.array([np.nan], IEEE[fmt.name]).view(_uint(fmt))[0]
    inf = np.array([np.inf], IEEE[fmt.name]).view(_uint(fmt))[0]
    assert (fmt.code_of_nan, fmt.code_of_inf) == (int(nan), int(inf))


def _codes_sample(fmt: F.MiniFloat) -> np.ndarray:
    """Every code of a <= 16-bit format; for float32 every code of the top and bottom 2**16 of
    the magnitudes and 2**18 random ones, both signs."""
    if fmt.bits <= 16:
        return np.arange(1 << fmt.bits).astype(_uint(fmt))
    rng = np.random.default_rng(1)
    mags = np.concatenate([np.arange(1 << 16), np.arange((1 << 31) - (1 << 16), 1 << 31),
                           rng.integers(0, 1 << 31, 1 << 18)])
    return np.concatenate([mags, mags | (1 << 31)]).astype(np.uint32)


@pytest.mark.parametrize("fmt", F.IEEE_FLOATS.values(), ids=lambda f: f.name)
def test_ieee_codes_decode_like_numpy_and_ml_dtypes(fmt):
    codes = _codes_sample(fmt)
    with np.errstate(invalid="ignore"):  # ml_dtypes' signalling NaNs
        want = codes.view(IEEE[fmt.name]).astype(np.float64)
    got = codec.from_codes(codes, fmt)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64))
    assert np.all(np.isnan(got[nan])) and np.all(np.signbit(got[nan]) == np.signbit(want[nan]))
    np.testing.assert_array_equal(codec.from_codes(codes, fmt, "float32").view(np.uint32)[~nan],
                                  want[~nan].astype(np.float32).view(np.uint32))


def _values(fmt: F.MiniFloat, n_random: int = 100_000) -> np.ndarray:
    """float64: the format's values, midpoints and one float64 ulp either side, range ends,
    huge and tiny values, log-uniform random magnitudes; both signs; plus NaN and Inf."""
    rng = np.random.default_rng(2)
    vals = codec.from_codes(_codes_sample(fmt), fmt)
    vals = np.unique(np.abs(vals[np.isfinite(vals)]))
    mids = (vals[1:] + vals[:-1]) / 2
    ends = [fmt.max * (1 + 2.0**-fmt.man_bits / 2), 2 * fmt.max, 1e300, 1e-300, 5e-324]
    rand = np.exp2(rng.uniform(fmt.emin - fmt.man_bits - 4, fmt.emax + 3, n_random))
    a = np.concatenate([vals, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf), ends, rand])
    return np.concatenate([a, -a, [np.nan, -np.nan, np.inf, -np.inf]])


def test_float64_encodes_like_numpy_float16_and_float32():
    for fmt, dtype in ((F.FLOAT16, np.float16), (F.FLOAT32, np.float32)):
        v = _values(fmt)
        with np.errstate(over="ignore"):
            want = v.astype(dtype).view(_uint(fmt))  # numpy rounds float64 once, IEEE overflow
        got = codec.to_codes(v, fmt)
        nan = np.isnan(v)
        np.testing.assert_array_equal(got[~nan], want[~nan])
        assert np.all(got[nan] & ~np.array(1 << (fmt.bits - 1), got.dtype) == fmt.code_of_nan)


def test_every_float32_pattern_class_encodes_to_bfloat16_like_ml_dtypes():
    # every bfloat16 binade and sign, with the low halves that decide the rounding (0, 1, the
    # tie 0x8000 and one either side, 0xFFFF) plus random float32 bit patterns
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    rand = np.random.default_rng(3).integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    f32 = np.concatenate([(hi[:, None] | lows).ravel(), rand]).view(np.float32)
    got = codec.to_codes(f32, F.BFLOAT16)
    with np.errstate(invalid="ignore"):
        want = f32.astype(ml_dtypes.bfloat16).view(np.uint16)
    nan = np.isnan(f32)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    np.testing.assert_array_equal(got[nan], np.where(np.signbit(f32[nan]), 0xFFC0, 0x7FC0))
    # arrays.to_dtype is this conversion (negative NaN keeps its sign: 0xFFC0)
    np.testing.assert_array_equal(arrays.to_dtype(f32, "bfloat16"), got)


@pytest.mark.parametrize("mode", ["toward_zero", "up", "down", "nearest_away", "odd"])
@pytest.mark.parametrize("fmt", F.IEEE_FLOATS.values(), ids=lambda f: f.name)
def test_every_mode_into_ieee_formats_matches_the_reference(fmt, mode):
    v = _values(fmt, 2000)[::97]
    for overflow in ("nonfinite", "saturate"):
        want = [ref.encode_minifloat(float(x), fmt, mode, overflow) for x in v]
        np.testing.assert_array_equal(codec.to_codes(v, fmt, mode, overflow), np.array(want))


@pytest.mark.parametrize("fmt", [F.FLOAT16, F.FP8_E4M3], ids=lambda f: f.name)
def test_saturating_encode_is_a_clipped_cast(fmt):
    """KVarN's scale storage: nearest-even, saturating at max (numpy / ml_dtypes after a clip)."""
    oracle = {"float16": np.float16, "fp8_e4m3": ml_dtypes.float8_e4m3fn}[fmt.name]
    v = _values(fmt)
    v = v[np.isfinite(v)]
    want = np.clip(v, -fmt.max, fmt.max).astype(oracle).view(_uint(fmt))
    np.testing.assert_array_equal(codec.to_codes(v, fmt, overflow="saturate"), want)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_the_array_form_is_bit_identical_to_the_kernels(fmt):
    """Device arrays take the array form (lowbit/codec.py); here it runs on numpy."""
    v = _values(fmt, 20_000)
    if not fmt.has_nan:
        v = v[~np.isnan(v)]
    policies = ("saturate", "nonfinite") if fmt.has_nan else ("saturate",)
    with np.errstate(over="ignore"):
        inputs = (v, v.astype(np.float32), v.astype(np.float16))
    for mode in codec.ARRAY_FORM_MODES:
        for overflow in policies:
            pol = F.OVERFLOW_POLICIES.index(overflow)
            for x in inputs:
                codes, over = codec.to_codes(x, fmt, mode, overflow, return_overflow=True)
                xp_codes, xp_over = codec._to_codes_xp(x.ravel(), fmt, mode, pol)
                np.testing.assert_array_equal(xp_codes, codes)
                np.testing.assert_array_equal(xp_over, over)
    codes = _codes_sample(fmt)
    np.testing.assert_array_equal(codec._from_codes_xp(codes, fmt).view(np.uint64)[~np.isnan(
        codec.from_codes(codes, fmt))], codec.from_codes(codes, fmt).view(np.uint64)[~np.isnan(
            codec.from_codes(codes, fmt))])


def test_round_to_format_flags_overflow_with_inf_in_every_mode():
    v = np.array([65504.0, 65519.99, 65520.0, -1e6, 1e-9, -2e-8, np.inf])
    np.testing.assert_array_equal(codec.round_to_format(v, F.FLOAT16),
                                  [65504.0, 65504.0, np.inf, -np.inf, 0.0, -0.0, np.inf])
    # rounding toward zero beyond max still overflows (the grid point lies beyond max): the
    # stored offset of a group of 1e5 cannot be float16's 65504 (rtn raises "overflows")
    for mode in ("up", "down", "toward_zero"):
        got = codec.round_to_format(np.array([7e4, 1e5, -1e5]), F.FLOAT16, mode)
        assert np.isinf(got[:3]).all() and np.signbit(got[:3]).tolist() == [False, False, True]
    assert codec.round_to_format(np.array([2.0**-30]), F.FLOAT16, "up")[0] == 2.0**-24


def test_widen_and_narrow_exact_are_inverse():
    for fmt in F.IEEE_FLOATS.values():
        codes = _codes_sample(fmt)
        vals = codec.widen_exact(codes, fmt)
        finite = np.isfinite(vals)
        np.testing.assert_array_equal(codec.narrow_exact(vals, fmt)[finite], codes[finite])
        np.testing.assert_array_equal(vals[finite], codec.from_codes(codes, fmt, "float32")[finite])


def test_the_kernels_use_the_records_in_the_scale_dtype_order():
    from lowbit.cpu import kvarn, rtn

    assert rtn._SCALE_SPECS == tuple(scales.SCALE_FORMATS[d].spec for d in scales.SCALE_DTYPES)
    assert kvarn._SCALE_SPECS == (F.FLOAT16.spec, F.FP8_E4M3.spec) and kvarn._F16 == F.FLOAT16.spec


def test_scale_storage_rounds_with_the_codec():
    v = np.array([1.0 + 2.0**-12, 3e-8, 1e-42, 70000.0])
    np.testing.assert_array_equal(scales.store(v[:3], "float16", "up").view(np.uint16),
                                  codec.to_codes(v[:3], F.FLOAT16, "up"))
    np.testing.assert_array_equal(scales.store(v[:3], "bfloat16", "down"),
                                  codec.to_codes(v[:3], F.BFLOAT16, "down"))
    with pytest.raises(ValueError, match="overflows scale_dtype='float16'"):
        scales.store(v, "float16", "up")


# -- the library part of the element schemes (split out of lowbit/minifloat.py) ----------------
def test_the_kv_fp8_codec_is_the_element_scheme_bit_for_bit():
    """lowbit.kv.codecs.FP8Codec calls the codec (encode_absmax / decode) instead of the
    fp8_e4m3 scheme front: same codes, scales and reconstruction as the scheme, per block."""
    from lowbit.kv.codecs import FP8Codec

    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 16, 32)).astype(np.float32)
    x[1] *= 1e-30  # subnormal-range scales
    x[2] = 0.0  # an all-zero block: scale 1
    x[3, 5, 7] = 3e4  # one outlier token
    codec_ = FP8Codec()
    codes, fields = codec_.encode(x, "key")
    q = lowbit.quantize(x.reshape(6, -1), scheme="fp8_e4m3", scale="absmax", axis=-1)
    np.testing.assert_array_equal(codes.reshape(-1), q.codes)
    np.testing.assert_array_equal(fields["scale"].reshape(-1), q.fields["scale"])
    np.testing.assert_array_equal(codec_.decode(codes, fields, "key", 16, 32),
                                  np.asarray(q.dequantize()).reshape(6, 16, 32))


@pytest.mark.parametrize("shape, axis, group_size, scaled, want", [
    ((4, 6), -1, None, True, (1, None, 6)),
    ((4, 6), 0, 2, True, (0, 2, 2)),
    ((4, 6), None, None, True, (None, None, 24)),
    ((4, 6), 5, None, False, (None, None, 24)),  # no scale: one block, axis unused
    ((), -1, None, True, (None, None, 1)),
    ((0, 3), None, None, True, (None, None, 1)),  # empty: a block of one (no division by 0)
])
def test_check_grouping_table(shape, axis, group_size, scaled, want):
    from lowbit.validate import check_grouping

    assert check_grouping(shape, axis, group_size, scaled) == want


@pytest.mark.parametrize("axis, group_size, scaled, match", [
    (2, None, True, "axis must be None or an integer"),
    (-1, 4, True, "does not divide the axis length 6"),
    (None, 2, True, "group_size needs an axis"),
    (-1, 2, False, "group_size needs a scale"),
    (-1, 0, True, "group_size must be a positive integer"),
])
def test_check_grouping_errors(axis, group_size, scaled, match):
    from lowbit.validate import check_grouping

    with pytest.raises(ValueError, match=match):
        check_grouping((4, 6), axis, group_size, scaled)
