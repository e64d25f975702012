"""lowbit.round: deterministic modes (ties pinned by hand), stochastic rounding (generator,
unbiasedness, reproducibility, chunking and thread-count invariance), argument errors.

Bodies that take ``backend`` run on numpy, CuPy and torch CUDA (tests/conftest.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowbit
from lowbit.rounding import reference as ref
from lowbit.rounding.modes import ELEMENTWISE

DETERMINISTIC = ("nearest_even", "nearest_away", "toward_zero", "up", "down", "odd")

# v -> result for every deterministic mode, written by hand (ties and near-ties).
TIES = {
    #  v      nearest_even nearest_away toward_zero  up    down  odd
    -2.5: (-2.0, -3.0, -2.0, -2.0, -3.0, -3.0),
    -1.5: (-2.0, -2.0, -1.0, -1.0, -2.0, -1.0),
    -0.5: (-0.0, -1.0, -0.0, -0.0, -1.0, -1.0),
    0.5: (0.0, 1.0, 0.0, 1.0, 0.0, 1.0),
    1.5: (2.0, 2.0, 1.0, 2.0, 1.0, 1.0),
    2.5: (2.0, 3.0, 2.0, 3.0, 2.0, 3.0),
    3.5: (4.0, 4.0, 3.0, 4.0, 3.0, 3.0),
    0.49999999999999994: (0.0, 0.0, 0.0, 1.0, 0.0, 1.0),
    -0.3: (-0.0, -0.0, -0.0, -0.0, -1.0, -1.0),
    4.0: (4.0, 4.0, 4.0, 4.0, 4.0, 4.0),
    2.0**52 + 1: (2.0**52 + 1,) * 6,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ties_pinned_by_hand(backend, dtype):
    vals = [v for v in TIES if dtype == "float64" or float(np.float32(v)) == v]
    x = np.array(vals, dtype)
    for k, mode in enumerate(DETERMINISTIC):
        got = backend.to_numpy(lowbit.round(backend.asarray(x), mode))
        want = np.array([TIES[v][k] for v in vals], dtype)
        np.testing.assert_array_equal(got, want, err_msg=mode)
        # the sign of zero results follows the input
        assert np.array_equal(np.signbit(got), np.signbit(want)), mode


def test_nearest_even_is_numpy_rint(backend, rng):
    x = rng.standard_normal(10_000) * 100
    x[::7] = np.round(x[::7]) + 0.5  # many ties
    np.testing.assert_array_equal(backend.to_numpy(lowbit.round(backend.asarray(x))), np.rint(x))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20),
       st.sampled_from(ELEMENTWISE), st.integers(1, 32), st.integers(0, 2**64 - 1))
def test_every_mode_matches_the_reference(backend, values, mode, rbits, seed):
    # (the backend fixture holds no state between examples)
    x = np.array(values, np.float64)
    got = backend.to_numpy(lowbit.round(backend.asarray(x), mode, seed=seed, rbits=rbits))
    want = [float(ref.round_value(Fraction(v), mode, seed, i, rbits)) for i, v in enumerate(values)]
    np.testing.assert_array_equal(got, np.array(want))


@pytest.mark.parametrize("mode", ELEMENTWISE)
def test_nan_inf_and_signed_zero_pass_through(backend, mode):
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0])
    got = backend.to_numpy(lowbit.round(backend.asarray(x), mode, seed=1))
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert got[3] == 0 and np.signbit(got[3]) and not np.signbit(got[4])


def test_clip_saturates(backend):
    got = backend.to_numpy(lowbit.round(backend.asarray(np.array([-9.7, -0.4, 3.6, 12.0, np.inf])), clip=(-8, 7)))
    np.testing.assert_array_equal(got, [-8, -0.0, 4, 7, 7])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtype_shape_and_type_preserved(backend, dtype, rng):
    x = (rng.standard_normal((3, 5, 7)) * 50).astype(dtype)
    y = lowbit.round(backend.asarray(x), "stochastic", seed=4)
    assert backend.is_native(y)
    y = backend.to_numpy(y)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.all(np.abs(y.astype(np.float64) - x.astype(np.float64)) < 1)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.standard_normal((4, 6)) * 20, dtype=torch.bfloat16)
    y = lowbit.round(x, "nearest_even")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == x.shape
    assert torch.equal(y, torch.round(x.float()).to(torch.bfloat16))


# -- the generator ---------------------------------------------------------------------------

def test_generator_pinned():
    # splitmix64 output `index` from state mix64(seed); pinned so any change is deliberate
    # (the CUDA twin and docs/rounding.md must change with it).
    assert ref.mix64(0) == 0
    assert ref.random_bits(0, 0) == ref.mix64(ref.mix64(0) + ref.GOLDEN)
    assert ref.random_bits(0, 0) == 0xE220A8397B1DCDAF  # splitmix64's first output for state 0
    assert ref.random_bits(2**64 - 1, 5) == ref.mix64((ref.mix64(2**64 - 1) + 6 * ref.GOLDEN) % 2**64)


def test_kernel_generator_equals_reference():
    from lowbit.cpu.scalar import random_bits

    for seed, index in [(0, 0), (1, 2), (2**64 - 1, 10**12), (12345, 2**40 + 3)]:
        assert int(random_bits(np.uint64(seed), index)) == ref.random_bits(seed, index)


# -- stochastic rounding ----------------------------------------------------------------------

def _mean_bound(p: float, n: int) -> float:
    """5 standard deviations of the mean of n Bernoulli(p) draws (0 when p is 0 or 1)."""
    return 5.0 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("rbits", [1, 2, 3, 5, 8, 16, 32])
@pytest.mark.parametrize("frac_num", [0, 1, 3, 5, 7])
def test_stochastic_is_unbiased_on_the_refined_grid(rbits, frac_num):
    # v = whole + k / 2**rbits: E[round(v)] must equal v exactly (up to sampling noise)
    n = 200_000
    k = frac_num % (1 << rbits)
    for whole in (0.0, 5.0, -3.0, 2.0**40):
        frac = k / 2.0**rbits
        v = whole + frac if whole >= 0 else whole - frac
        y = lowbit.round(np.full(n, v), "stochastic", seed=99, rbits=rbits)
        assert set(np.unique(y)) <= {math.floor(v), math.ceil(v)}
        assert abs(y.mean() - v) <= _mean_bound(frac, n) + 1e-12 * abs(v)


@pytest.mark.parametrize("rbits", [1, 2, 3, 4])
def test_stochastic_probability_is_the_fraction_rounded_to_rbits(rbits):
    # off the refined grid, P(away) = rne(frac * 2**rbits) / 2**rbits (docs/rounding.md);
    # a floor-threshold implementation (P = floor(...)) fails this at frac = 0.375, rbits = 2
    n = 200_000
    for frac in (0.1, 0.375, 0.6, 0.95):
        p = round(Fraction(frac) * (1 << rbits)) / (1 << rbits)
        y = lowbit.round(np.full(n, 7.0 + frac), "stochastic", seed=5, rbits=rbits)
        assert abs((y - 7.0).mean() - p) <= _mean_bound(p, n) + 1e-12
        y = lowbit.round(np.full(n, -7.0 - frac), "stochastic", seed=6, rbits=rbits)
        assert abs((-7.0 - y).mean() - p) <= _mean_bound(p, n) + 1e-12


def test_stochastic_same_seed_same_result_different_seed_different(rng):
    x = rng.standard_normal(10_000) * 10
    a = lowbit.round(x, "stochastic", seed=1)
    np.testing.assert_array_equal(a, lowbit.round(x, "stochastic", seed=1))
    b = lowbit.round(x, "stochastic", seed=2)
    assert np.mean(a != b) > 0.2


def test_seed_drawn_once_and_returned(rng):
    x = rng.standard_normal(1000) * 10
    y, seed = lowbit.round(x, "stochastic", return_seed=True)
    assert isinstance(seed, int)
    np.testing.assert_array_equal(y, lowbit.round(x, "stochastic", seed=seed))
    _, seed2 = lowbit.round(x, "stochastic", return_seed=True)
    assert seed2 != seed


def test_chunking_invariance(backend, rng):
    x = rng.standard_normal((40, 50)) * 10

    def rounded(a, **kw):
        return backend.to_numpy(lowbit.round(backend.asarray(a), "stochastic", seed=77, rbits=7, **kw))

    whole = rounded(x)
    flat = x.reshape(-1)
    for start, stop in [(0, 13), (13, 1000), (1000, 2000)]:
        part = rounded(flat[start:stop], first_index=start)
        np.testing.assert_array_equal(part, whole.reshape(-1)[start:stop])
    # without the offset the chunk draws other bits
    assert not np.array_equal(rounded(flat[13:1000]), whole.reshape(-1)[13:1000])


def test_thread_count_invariance(rng):
    x = rng.standard_normal(100_003) * 10
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = lowbit.round(x, "stochastic", seed=3)
        q1 = lowbit.quantize(x.astype(np.float32), scheme="fp8_e4m3", rounding="stochastic", seed=3)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = lowbit.round(x, "stochastic", seed=3)
        q2 = lowbit.quantize(x.astype(np.float32), scheme="fp8_e4m3", rounding="stochastic", seed=3)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(q1.codes, q2.codes)


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "nearest"}, "mode must be one of"),
        ({"mode": "stochastic", "rbits": 0}, "rbits"),
        ({"mode": "stochastic", "rbits": 33}, "rbits"),
        ({"mode": "stochastic", "seed": -1}, "seed"),
        ({"mode": "diffuse", "axis": None}, "needs an axis"),
        ({"mode": "diffuse", "axis": 5}, "axis must be"),
        ({"mode": "diffuse", "order": 3}, "order"),
        ({"mode": "nearest_even", "kernel": "floyd_steinberg"}, "needs mode='diffuse'"),
        ({"mode": "diffuse", "kernel": "sierra"}, "kernel must be"),
        ({"mode": "diffuse", "kernel": "stucki", "scan": "zigzag"}, "scan must be"),
        ({"mode": "nearest_even", "clip": (3, 1)}, "lo <= hi"),
        ({"mode": "nearest_even", "clip": (0.5, 1)}, "integers"),
        ({"mode": "nearest_even", "first_index": -1}, "first_index"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lowbit.round(np.ones((4, 4)), **kwargs)


def test_bad_input_types():
    with pytest.raises(TypeError):
        lowbit.round([1.5, 2.5])
    with pytest.raises(TypeError):
        lowbit.round(np.arange(4))
