"""float16 / bfloat16 outputs of every decode are rounded once, from the exact value.

A decoded value is exact in float64 (code * scale + offset, table value * scale); rounding it
to float32 first and then to the 16-bit type rounds twice, which is wrong whenever the float32
rounding lands exactly on a 16-bit midpoint that the exact value is not on (issue 12, item 4:
3 of 262,144 rtn outputs).  The sweeps below construct such values on purpose, check that
they are there (so every test here fails on double rounding), and compare lowbit with an
oracle that is not lowbit's: exact float64 arithmetic (verified exact by an error-free sum, or
Fractions where it is not) and one rounding from float64 by power-of-two scaling and ``rint``
(:func:`nearest16`, first verified against exact Fraction rounding; numpy's own float64 ->
float16 cast agrees with it).  ml_dtypes only re-encodes values bfloat16 holds exactly: its
float64 -> bfloat16 cast rounds once in 0.7.0, but releases that narrow wider sources to float32
first exist (reference/rounding-notes.md, section 4.2), and a GPU machine's copy disagreed.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowbit
from lowbit import schema
from lowbit.arrays import Origin
from lowbit.quantized import QuantizedArray

#: (mantissa bits, emin, emax) of the two 16-bit output formats
FORMATS16 = {"float16": (10, -14, 15), "bfloat16": (7, -126, 127)}
GROUP = 32


def fraction_nearest_even(v: Fraction, dtype: str) -> float:
    """The ``dtype`` value nearest to the exact ``v`` (ties to even, +-Inf beyond the range)."""
    man, emin, emax = FORMATS16[dtype]
    if v == 0:
        return 0.0
    a = abs(v)
    e = max(emin, math.floor(math.log2(a)))
    if Fraction(2) ** e > a:  # log2 rounded up across a power of two
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    e = max(emin, e)
    quantum = Fraction(2) ** (e - man)
    k = round(a / quantum)  # Python's round: ties to even
    r = k * quantum
    top = (2 - Fraction(2) ** -man) * Fraction(2) ** emax
    out = math.inf if r > top else float(r)
    return -out if v < 0 else out


def nearest16(v: np.ndarray, dtype: str) -> np.ndarray:
    """float64 ``v`` rounded once to ``dtype``'s grid (nearest, ties to even; +-Inf beyond its
    range), as float64 values: the textbook way, v scaled by a power of two to units of its
    binade's last place (exact), one ``rint``, scaled back (exact)."""
    man, emin, emax = FORMATS16[dtype]
    a = np.abs(v)
    e = np.maximum(np.frexp(np.where(a > 0, a, 1.0))[1] - 1, emin)
    r = np.ldexp(np.rint(np.ldexp(a, man - e)), e - man)
    r = np.where(r > np.ldexp((2 << man) - 1.0, emax - man), np.inf, r)
    return np.copysign(r, v)


def oracle16(exact: np.ndarray, dtype: str) -> np.ndarray:
    """Bits of the correctly rounded 16-bit values of float64 ``exact`` (one rounding).

    The rounding is :func:`nearest16` (checked against Fractions below); numpy and ml_dtypes
    then only re-encode values their type holds exactly."""
    r = nearest16(exact, dtype)
    with np.errstate(over="ignore"):  # +-Inf re-encoded
        return (r.astype(np.float16) if dtype == "float16" else r.astype(ml_dtypes.bfloat16)).view(np.uint16)


def double_rounded16(exact: np.ndarray, dtype: str) -> np.ndarray:
    """What rounding through float32 gives (the defect)."""
    with np.errstate(over="ignore"):
        f32 = exact.astype(np.float32)
        if dtype == "float16":
            return f32.astype(np.float16).view(np.uint16)
        return f32.astype(ml_dtypes.bfloat16).view(np.uint16)


def two_sum_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rounding error of a + b in float64 (Knuth's error-free TwoSum): 0 iff exact."""
    s = a + b
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def midpoints(rng: np.random.Generator, dtype: str, n: int, tame: bool) -> np.ndarray:
    """``n`` random midpoints between neighbouring ``dtype`` values of both signs: every
    binade (tame: |m| in [2^-90, 2^90], bfloat16; float16 keeps its whole range), the
    subnormal range and the midpoint between the largest finite value and the overflow."""
    man, emin, emax = FORMATS16[dtype]
    lo, hi = (max(emin, -90), min(emax, 90)) if tame else (emin, emax)
    e = rng.integers(lo, hi + 1, n)
    k = rng.integers(1 << man, 2 << man, n).astype(np.float64)
    m = np.ldexp(k + 0.5, e - man)
    sub = rng.random(n) < 0.1  # subnormal midpoints
    m = np.where(sub, np.ldexp(rng.integers(0, 1 << man, n) + 0.5, emin - man), m)
    if hi == emax:
        m[:2] = np.ldexp((2 << man) - 0.5, emax - man)  # max + half an ulp: rounds to Inf
    return np.where(rng.random(n) < 0.5, -m, m)


def hard_rtn_fields(rng: np.random.Generator, dtype: str, bits: int, n_groups: int,
                    exact_in_float64: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, offset) of asymmetric rtn groups whose outputs q * s + o lie just off a
    16-bit midpoint m = o: those with q * s below half a float32 ulp of m round onto m in
    float32 (all q for small j, the smallest q for larger j).

    s = 2^(floor(log2 |m|) - 24 - j) * U(1, 2).  ``exact_in_float64``: j in 1..4, so q * s + o
    is exact in float64 (24 + j + 24 bits) and within CUDA's float32 fast path; else j in
    5..27: beyond float32's fma, past 53 bits beyond float64 (a Fraction oracle), and still
    2 float64 ulps or more off m, so that one float64 rounding keeps the side of m."""
    m = midpoints(rng, dtype, n_groups, tame=exact_in_float64)
    e = np.frexp(np.abs(m))[1] - 1
    j = rng.integers(1, 5, n_groups) if exact_in_float64 else rng.integers(5, 28, n_groups)
    s = np.ldexp(rng.uniform(1.0, 2.0, n_groups), e - 24 - j).astype(np.float32).astype(np.float64)
    codes = rng.integers(0, 1 << bits, (n_groups, GROUP))
    codes[:, 0] = 1  # the smallest nonzero step: hard for every j
    return codes, s, m


def exact_values(codes: np.ndarray, s: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 q * s + o per element and whether each is exact (q * s is: <= 8 + 24 bits)."""
    qs = codes * s[:, None]
    oo = np.broadcast_to(o[:, None], qs.shape)
    return qs + oo, two_sum_error(qs, oo) == 0


def exact_fraction_oracle(codes: np.ndarray, s: np.ndarray, o: np.ndarray, dtype: str) -> np.ndarray:
    """Bits of the correctly rounded outputs, by Fractions (for values float64 cannot hold)."""
    out = np.empty(codes.shape, np.float64)
    for g in range(codes.shape[0]):
        fs, fo = Fraction(float(s[g])), Fraction(float(o[g]))
        for j in range(codes.shape[1]):
            out[g, j] = fraction_nearest_even(int(codes[g, j]) * fs + fo, dtype)
    return oracle16(out, dtype)  # exact conversion: the values are already 16-bit values


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    return lowbit.pack(codes.astype(np.uint8).reshape(-1), bits)


def origin_of(backend, dtype: str) -> Origin:
    if backend.name == "numpy":
        return Origin("numpy", dtype, "cpu")
    return Origin("cupy" if backend.name == "cupy" else "torch", dtype, "cuda:0")


def backend_array(backend, a: np.ndarray):
    """``a`` as the backend array a QuantizedArray holds: numpy, or CuPy (also for torch CUDA,
    whose tensors lowbit carries as CuPy arrays through DLPack)."""
    if backend.name == "numpy":
        return a
    import cupy

    return cupy.asarray(a)


def decode_rtn(backend, packed: np.ndarray, scale: np.ndarray, offset: np.ndarray | None,
               shape: tuple[int, ...], group_size: int, bits: int, dtype: str) -> np.ndarray:
    """lowbit's rtn decode of the given fields, as 16-bit bits on the host."""
    meta = {"scheme": "rtn", "shape": list(shape), "dtype": dtype, "bits": bits, "axis": len(shape) - 1,
            "group_size": group_size, "symmetric": offset is None, "scale_dtype": "float32",
            "rounding": "nearest_even", "seed": None, "rbits": 16}
    fields = {"scale": backend_array(backend, scale.astype(np.float32))}
    if offset is not None:
        fields["offset"] = backend_array(backend, offset.astype(np.float32))
    q = QuantizedArray(backend_array(backend, packed), fields, meta, origin_of(backend, dtype))
    schema.parse(meta)  # the constructed metadata is a valid rtn record
    y = q.dequantize()
    assert backend.is_native(y)
    return backend.to_numpy(y).view(np.uint16).reshape(-1)


# -- the oracles themselves round once -------------------------------------------------------

@pytest.mark.parametrize("dtype", sorted(FORMATS16))
def test_the_oracle_conversions_round_once_from_float64(dtype, rng):
    # values a float64 ulp or a little more off every kind of midpoint: the oracle's rounding
    # (and numpy's float64 -> float16 cast) must agree with exact Fraction rounding here
    m = midpoints(rng, dtype, 3000, tame=False)
    eps = np.ldexp(np.abs(m), -rng.integers(25, 53, m.size))
    v = np.concatenate([m, m + eps, m - eps, np.nextafter(m, np.inf), np.nextafter(m, -np.inf)])
    want = np.array([fraction_nearest_even(Fraction(float(x)), dtype) for x in v])
    np.testing.assert_array_equal(nearest16(v, dtype), want)
    got = oracle16(v, dtype)
    assert (double_rounded16(v, dtype) != got).sum() > 1000  # the sweep holds double-rounding cases
    if dtype == "float16":  # numpy converts float64 to float16 directly: one rounding too
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(v.astype(np.float16).view(np.uint16), got)


# -- rtn ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", sorted(FORMATS16))
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [GROUP, 8, 4])
def test_rtn_asymmetric_outputs_round_once(backend, dtype, bits, group_size, rng):
    # group_size 32: the CUDA lane kernel (float32 fma fast path and its float64 fallback);
    # 8 and 4: the unit kernel (CPU: whole-unit and general loops).  GROUP-element rows of
    # constructed fields, regrouped so that every group of group_size shares one (s, o).
    n = 1024
    codes, s, m = hard_rtn_fields(rng, dtype, bits, n, exact_in_float64=True)
    exact, is_exact = exact_values(codes, s, m)
    assert is_exact.all()
    want = oracle16(exact, dtype).reshape(-1)
    assert (double_rounded16(exact, dtype).reshape(-1) != want).sum() >= n // 8
    per = GROUP // group_size
    got = decode_rtn(backend, pack(codes, bits), np.repeat(s, per), np.repeat(m, per), (n, GROUP),
                     group_size, bits, dtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", sorted(FORMATS16))
@pytest.mark.parametrize("bits", [2, 4])
def test_rtn_outputs_round_once_beyond_the_float32_fast_path(backend, dtype, bits, rng):
    # scales 2^29..2^49 below the offset: q * s + o needs more bits than float32's fma keeps
    # (CUDA takes its float64 path) and, past 53, more than float64 holds: Fraction oracle
    n = 64
    codes, s, m = hard_rtn_fields(rng, dtype, bits, n, exact_in_float64=False)
    want = exact_fraction_oracle(codes, s, m, dtype).reshape(-1)
    exact, _ = exact_values(codes, s, m)
    assert (double_rounded16(exact, dtype).reshape(-1) != want).sum() >= n
    got = decode_rtn(backend, pack(codes, bits), s, m, (n, GROUP), GROUP, bits, dtype)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", sorted(FORMATS16))
@pytest.mark.parametrize("bits", [4, 8])
def test_rtn_symmetric_outputs_round_once(backend, dtype, bits, rng):
    # (q - M) * s with s = float32(m / k) for an odd k: k * s is exact in float64 and within
    # a float32 rounding of the midpoint m
    n = 2048
    big = (1 << (bits - 1)) - 1
    m = midpoints(rng, dtype, n, tame=True)
    k = 2 * rng.integers(1, (big + 1) // 2, n) + 1
    s = np.abs(m / k).astype(np.float32).astype(np.float64)
    codes = rng.integers(0, 2 * big + 1, (n, GROUP))
    codes[:, :4] = big + np.sign(m)[:, None] * k[:, None]  # the constructed ones, both signs
    exact = (codes - big) * s[:, None]
    want = oracle16(exact, dtype).reshape(-1)
    assert (double_rounded16(exact, dtype).reshape(-1) != want).sum() >= n // 4
    got = decode_rtn(backend, pack(codes, bits), s, None, (n, GROUP), GROUP, bits, dtype)
    np.testing.assert_array_equal(got, want)


def test_rtn_random_float16_data_round_once(rng):
    # the case: quantize random float16 data, decode, compare with the oracle (about
    # 1 in 90,000 outputs was rounded twice)
    x = (rng.standard_normal((1 << 19, 4)) * rng.uniform(0.01, 100, (1 << 19, 1))).astype(np.float16)
    x = x.reshape(-1, 128)
    q = lowbit.quantize(x, bits=4, scheme="rtn", group_size=128)
    codes = lowbit.unpack(q.codes, 4, x.size).reshape(-1, 128).astype(np.float64)
    exact, is_exact = exact_values(codes, q.fields["scale"].astype(np.float64),
                                   q.fields["offset"].astype(np.float64))
    assert is_exact.all()
    want = oracle16(exact, "float16")
    assert (double_rounded16(exact, "float16") != want).sum() >= 5
    np.testing.assert_array_equal(q.dequantize().view(np.uint16), want)


# -- element and block formats (table value * scale) -------------------------------------------

def _template(scheme: str, shape: tuple[int, ...], **kwargs):
    return lowbit.quantize(np.zeros(shape, np.float16), scheme=scheme, **kwargs)


def _as_dtype(q, codes, fields, dtype: str):
    meta = dict(q.meta, dtype=dtype)
    return QuantizedArray(codes, fields, meta, Origin("numpy", dtype, "cpu"))


@pytest.mark.parametrize("dtype", sorted(FORMATS16))
@pytest.mark.parametrize("scheme", ["fp8_e4m3", "fp6_e3m2", "fp4_e2m1"])
def test_element_format_outputs_round_once(dtype, scheme, rng):
    # s = float32(m / v) for an element value v with an odd significand: v * s (<= 28 bits) is
    # exact in float64 and within a float32 rounding of the midpoint m
    fmt = lowbit.formats.MINIFLOATS[scheme]
    table = fmt.decode_table()
    odd = [c for c in range(1, 1 << (fmt.bits - 1)) if np.isfinite(table[c])
           and Fraction(float(table[c])).numerator % 2 == 1 and Fraction(float(table[c])).numerator > 1]
    n = 2048
    c0 = rng.choice(odd, n)
    m = np.abs(midpoints(rng, dtype, n, tame=True))
    s = (m / table[c0]).astype(np.float32)
    codes = rng.integers(0, 1 << fmt.bits, (n, GROUP))
    codes = np.where(np.isfinite(table[codes]), codes, 0)
    codes[:, :4] = c0[:, None]
    codes[:, 4:8] = c0[:, None] | (1 << (fmt.bits - 1))  # negative
    exact = table[codes] * s.astype(np.float64)[:, None]
    want = oracle16(exact, dtype).reshape(-1)
    assert (double_rounded16(exact, dtype).reshape(-1) != want).sum() >= n // 4
    q = _template(scheme, (n, GROUP), scale="absmax", axis=-1)
    got = _as_dtype(q, pack(codes, fmt.bits), {"scale": s}, dtype).dequantize()
    np.testing.assert_array_equal(got.view(np.uint16).reshape(-1), want)


@pytest.mark.parametrize("dtype", sorted(FORMATS16))
def test_nvfp4_outputs_round_once(dtype, rng):
    # value = e2m1 element * e4m3 block scale c * float32 tensor scale t; t = float32(m / (c v))
    e2m1 = lowbit.formats.FP4_E2M1.decode_table()
    e4m3 = lowbit.formats.FP8_E4M3.decode_table()
    q = _template("nvfp4", (8, 16))
    hard = 0
    for _ in range(64):
        c = rng.integers(1, 126, 8)  # finite positive e4m3 codes
        codes = rng.integers(0, 16, (8, 16))
        v = rng.choice([3, 5, 7])  # e2m1 codes of 1.5, 3, 6... and 3 -> 1.5
        m = abs(float(midpoints(rng, dtype, 1, tame=True)[0]))
        t = np.float32(m / (e2m1[v] * e4m3[c[0]]))
        codes[0, :4] = v
        exact = e2m1[codes] * (e4m3[c] * np.float64(t))[:, None]
        want = oracle16(exact, dtype).reshape(-1)
        hard += int((double_rounded16(exact, dtype).reshape(-1) != want).sum())
        fields = {"scale": c.astype(np.uint8), "tensor_scale": np.array([t], np.float32)}
        got = _as_dtype(q, pack(codes, 4), fields, dtype).dequantize()
        np.testing.assert_array_equal(got.view(np.uint16).reshape(-1), want)
    assert hard >= 16
