"""Formats against oracles that are not lowbit's own (``lowbit.rounding.reference`` included):
every deterministic rounding mode by brute force over the format's representable values (as
ml_dtypes decodes them), and the OCP MX / NVFP4 shared-scale rules recomputed from their
specifications with numpy and ml_dtypes (issue 12, item 8)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from test_formats import FMTS, ML  # the ml_dtypes types of the element formats

import lowbit
from lowbit import formats as F

#: the deterministic modes (stochastic has its own statistical tests)
MODES = ("nearest_even", "nearest_away", "toward_zero", "up", "down", "odd")


def representable(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values ascending, their codes) of every finite code of ``name``, decoded by ml_dtypes;
    -0 left out (it equals +0, code 0)."""
    codes = np.arange(1 << F.MINIFLOATS[name].bits, dtype=np.uint8)
    vals = codes.view(ML[name]).astype(np.float64)  # sub-byte types: one code per byte
    keep = np.isfinite(vals) & ~((vals == 0) & (codes != 0))
    order = np.argsort(vals[keep], kind="stable")
    return vals[keep][order], codes[keep][order].astype(np.int64)


def brute_force_round(v: np.ndarray, name: str, mode: str) -> np.ndarray:
    """``v`` (float64, finite) rounded into ``name`` with ``mode``, saturating at +-max: the
    definitions applied to the sorted list of representable values, nothing else."""
    vals, codes = representable(name)
    v = np.clip(v, vals[0], vals[-1])  # saturation: beyond +-max every mode gives +-max
    hi = np.searchsorted(vals, v, side="left")  # vals[hi] >= v
    hi = np.minimum(hi, vals.size - 1)
    lo = np.where(vals[hi] == v, hi, hi - 1)  # vals[lo] <= v
    down, up = vals[lo], vals[hi]
    exact = down == up
    d_down, d_up = v - down, up - v  # exact: v lies between two neighbours of <= 4 bits
    if mode == "down":
        return down
    if mode == "up":
        return up
    if mode == "toward_zero":
        return np.where(v >= 0, down, up)
    if mode == "odd":
        return np.where(exact, down, np.where(codes[lo] & 1, down, up))
    tie = d_down == d_up
    nearer = np.where(d_down < d_up, down, up)
    if mode == "nearest_even":
        return np.where(tie, np.where(codes[lo] & 1, up, down), nearer)
    away = np.where(v >= 0, up, down)
    return np.where(tie, away, nearer)


def sweep(name: str, rng: np.random.Generator) -> np.ndarray:
    """float32 values over the format's range: every representable value, every midpoint,
    one float32 ulp either side, random values, and some beyond +-max; both signs."""
    vals, _ = representable(name)
    pos = vals[vals >= 0]
    mids = (pos[1:] + pos[:-1]) / 2
    pts = np.concatenate([pos, mids, [pos[-1] * 1.01, pos[-1] * 4]]).astype(np.float32)
    near = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)), np.nextafter(pts, np.float32(0))])
    rand = (rng.uniform(0, pos[-1] * 1.1, 4000)).astype(np.float32)
    x = np.concatenate([near, rand])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FMTS, ids=lambda f: f.name)
def test_every_mode_matches_brute_force(fmt, mode, rng):
    x = sweep(fmt.name, rng)
    got = lowbit.quantize(x, scheme=fmt.name, rounding=mode, overflow="saturate").dequantize()
    want = brute_force_round(x.astype(np.float64), fmt.name, mode)
    np.testing.assert_array_equal(got.astype(np.float64), want)


def mx_scale_oracle(amax: np.ndarray, elem_emax: int) -> np.ndarray:
    """OCP MX v1.0, section 6.3: X = 2^(floor(log2(max|V|)) - emax_elem), an E8M0 exponent
    clamped to [-127, 127] (-127 for an all-zero block), by numpy's frexp."""
    e = np.frexp(np.where(amax > 0, amax, 1.0))[1].astype(np.int64) - 1 - elem_emax
    return np.where(amax > 0, np.clip(e, -127, 127), -127)


def element_oracle(v: np.ndarray, elem: F.ElementFormat, mode: str) -> np.ndarray:
    """Block elements v = x / scale rounded into the element format, saturating."""
    if isinstance(elem, F.FixedPoint):  # MXINT8: Q1.6 in -127..127 (OCP: symmetric range)
        grid = v * 64.0  # exact: a power of two
        r = {"nearest_even": np.rint, "up": np.ceil, "down": np.floor, "toward_zero": np.trunc}[mode](grid)
        return np.clip(r, -127, 127) / 64.0
    return brute_force_round(v, elem.name, mode)


@pytest.mark.parametrize("mode", ["nearest_even", "up", "down", "toward_zero"])
@pytest.mark.parametrize("name", sorted(F.BLOCK_FORMATS))
def test_block_formats_follow_their_spec(name, mode, rng):
    bf = F.BLOCK_FORMATS[name]
    # blocks of magnitudes e^-6 .. e^6 (within NVFP4's e4m3 block-scale range of the tensor max)
    mags = np.exp(rng.uniform(-6, 6, (3, 4, 1))).repeat(bf.block_size, axis=2).reshape(3, -1)
    x = (rng.standard_normal((3, 4 * bf.block_size)) * mags).astype(np.float32)
    x[0, : bf.block_size] = 0.0  # an all-zero block
    x[1, : bf.block_size] *= np.float32(1e-3)
    x[1, 3] = np.float32(2.0**-3)  # a block whose maximum is a power of two
    q = lowbit.quantize(x, scheme=name, rounding=mode, seed=1)
    blocks = x.astype(np.float64).reshape(-1, bf.block_size)
    amax = np.abs(blocks).max(axis=1)
    if bf.scale == "e8m0":
        e = mx_scale_oracle(amax, bf.element.emax)
        np.testing.assert_array_equal(q.fields["scale"], (e + 127).astype(np.uint8))
        # ml_dtypes' own E8M0 type encodes the same powers of two the same way
        np.testing.assert_array_equal(np.ldexp(1.0, e).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8),
                                      q.fields["scale"])
        scale = np.ldexp(1.0, e)
    else:
        # NVFP4: float32 tensor scale amax / (6 * 448); block scales e4m3 nearest-even of
        # amax_block / 6 / t, by brute force over e4m3 (saturating); elements e2m1 of x / (c t)
        t = np.float32(np.abs(x).max() / (6 * 448))
        np.testing.assert_array_equal(q.fields["tensor_scale"], [t])
        c = brute_force_round(amax / 6 / np.float64(t), "fp8_e4m3", "nearest_even")
        np.testing.assert_array_equal(q.fields["scale"].view(ml_dtypes.float8_e4m3fn).astype(np.float64), c)
        scale = c * np.float64(t)
    v = blocks / np.where(scale > 0, scale, 1.0)[:, None]
    want = element_oracle(v, bf.element, mode) * scale[:, None]
    np.testing.assert_array_equal(q.dequantize().astype(np.float64), want.astype(np.float32).reshape(x.shape))
