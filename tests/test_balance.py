"""lowbit.balance against an independent, slow float64 reference of KVarN's normalization.

Tests of the front take the ``backend`` fixture (tests/conftest.py): numpy (the Numba kernel),
CuPy and torch CUDA (the CUDA kernel, marked gpu).  Bit-for-bit agreement of the CUDA kernel with
the CPU is tested in tests/test_gpu_balance.py.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowbit
from lowbit.cpu.balance import balance_tile

LOW = float(np.float32(math.exp(-0.3)))
HIGH = float(np.float32(math.exp(10.0)))


# -- reference (float64, one tile at a time, written for readability) ------------------------

def std_unbiased(v: np.ndarray) -> float:
    """Two-pass unbiased std with the mean taken around v[0] (exactly 0 for constant v)."""
    mean = v[0] + np.sum(v - v[0]) / v.size
    return math.sqrt(np.sum((v - mean) ** 2) / (v.size - 1))


def imbalance(x: np.ndarray, floor: float = 1e-8) -> float:
    col = [std_unbiased(x[:, c]) for c in range(x.shape[1])]
    row = [std_unbiased(x[r, :]) for r in range(x.shape[0])]
    return max(col) / max(min(col), floor) + max(row) / max(min(row), floor)


def reference_balance(t: np.ndarray, iterations: int = 8) -> tuple:
    """DESIGN.md §4 step 2, verbatim, in float64.

    Returns balanced, s_col, s_row, best imbalance, and every candidate as (imbalance, s_col, s_row).
    """
    t = t.astype(np.float64)
    rows, cols = t.shape
    log_col = np.zeros(cols)
    log_row = np.zeros(rows)
    best = imbalance(t)
    s_col, s_row = np.ones(cols), np.ones(rows)
    candidates = [(best, s_col, s_row)]
    cur = t
    for _ in range(iterations):
        sigma = np.clip([std_unbiased(cur[:, c]) for c in range(cols)], 1e-3, 1e3)
        log_col = np.clip(log_col + np.log(sigma), -0.3, 10.0)
        cur = t / np.exp(log_col)[None, :] / np.exp(log_row)[:, None]
        sigma = np.clip([std_unbiased(cur[r, :]) for r in range(rows)], 1e-3, 1e3)
        log_row = np.clip(log_row + np.log(sigma), -0.3, 10.0)
        cur = t / np.exp(log_col)[None, :] / np.exp(log_row)[:, None]
        imb = imbalance(cur)
        candidates.append((imb, np.exp(log_col), np.exp(log_row)))
        if imb <= best:
            best = imb
            s_col, s_row = np.exp(log_col), np.exp(log_row)
    return t / s_col[None, :] / s_row[:, None], s_col, s_row, best, candidates


def separable_tile(rng: np.random.Generator, rows: int = 128, cols: int = 128) -> np.ndarray:
    """T = diag(a) N diag(b), a = 10 exp(N(0, 1)), b = exp(N(0, 0.5^2)).

    The factor 10 keeps the row stds above e^-0.3, where the log-scale clip would stop the
    normalization (with a = exp(N(0, 1)) the smallest rows stay unbalanced: Imb drops ~8x).
    """
    a = 10.0 * np.exp(rng.standard_normal(rows))
    b = np.exp(0.5 * rng.standard_normal(cols))
    return (a[:, None] * rng.standard_normal((rows, cols)) * b[None, :]).astype(np.float32)


def outlier_tile(rng: np.random.Generator, rows: int = 128, cols: int = 128) -> np.ndarray:
    """A K tile [channels, tokens] with one token (column) 30x larger."""
    t = rng.standard_normal((rows, cols)).astype(np.float32)
    t[:, 17] *= 30.0
    return t


#: Relative resolution of the float32 imbalance: candidates closer than this to the best are
#: float32 ties.  (Once converged, Imb(k) - 2 falls below float32 resolution while the scales
#: still drift by a uniform "gauge" factor per iteration, ~1e-3, that leaves T / s_col / s_row
#: unchanged; float32 then cannot tell which of those candidates is best.)
IMB_RESOLUTION = 4e-6


def run(backend, tiles: np.ndarray, *args, **kwargs) -> tuple:  # type: ignore[no-untyped-def]
    """``lowbit.balance`` on the backend's copy of ``tiles``; results as numpy arrays, after
    checking that each is of the backend's array type."""
    out = lowbit.balance(backend.asarray(tiles), *args, **kwargs)
    assert all(backend.is_native(a) for a in out)
    return tuple(backend.to_numpy(a) for a in out)


def assert_matches_reference(backend, tile: np.ndarray, iterations: int = 8,  # type: ignore[no-untyped-def]
                             rtol: float = 1e-5) -> None:
    """balanced, imbalance and scales within ``rtol`` of the reference.

    The scales must be those of the reference's selected candidate, or of a candidate whose
    imbalance is a float32 tie with the best (``IMB_RESOLUTION``).
    """
    bal, cs, rs, imb = run(backend, tile, iterations, return_imbalance=True)
    _, _, _, rimb, candidates = reference_balance(tile, iterations)
    assert math.isclose(float(imb), rimb, rel_tol=rtol), (float(imb), rimb)
    matching = [(c_imb, c_cs, c_rs) for c_imb, c_cs, c_rs in candidates
                if np.allclose(cs[0], c_cs, rtol=rtol, atol=0)
                and np.allclose(rs[:, 0], c_rs, rtol=rtol, atol=0)]
    assert matching, "the returned scales are not those of any candidate"
    c_imb, c_cs, c_rs = min(matching, key=lambda c: c[0])
    assert c_imb <= rimb * (1 + IMB_RESOLUTION), (c_imb, rimb)
    ref_bal = tile.astype(np.float64) / c_cs[None, :] / c_rs[:, None]
    np.testing.assert_allclose(bal, ref_bal, rtol=rtol, atol=rtol * np.abs(ref_bal).max() * 1e-3)


# -- agreement with the reference -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(128, 128), (64, 128), (128, 64), (16, 8), (3, 5), (2, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_tiles_match_reference(backend, shape: tuple[int, int], seed: int) -> None:
    tile = (3.0 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)
    assert_matches_reference(backend, tile)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separable_tiles_match_reference_and_imbalance_drops_10x(backend, seed: int) -> None:
    tile = separable_tile(np.random.default_rng(seed))
    assert_matches_reference(backend, tile)
    _, _, _, imb = run(backend, tile, 8, return_imbalance=True)
    before = imbalance(tile)
    assert before / float(imb) > 10.0, (before, float(imb))


@pytest.mark.parametrize("iterations", [1, 4, 8, 16])
def test_outlier_tiles_match_reference(backend, iterations: int) -> None:
    tile = outlier_tile(np.random.default_rng(3))
    assert_matches_reference(backend, tile, iterations)
    _, cs, _ = run(backend, tile, iterations)
    assert np.argmax(cs[0]) == 17  # the outlier token gets the largest column scale


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(8, 48), cols=st.integers(8, 48), sigma=st.floats(1.0, 100.0),
       iterations=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_matches_reference_property(backend, rows: int, cols: int, sigma: float, iterations: int,
                                    seed: int) -> None:
    # Few rows or columns make some std a difference of nearly equal values, whose float32
    # relative error exceeds 1e-5 (conditioning, not the algorithm): sizes start at 8.
    rng = np.random.default_rng(seed)
    tile = (sigma * rng.standard_normal((rows, cols)) * np.exp(rng.standard_normal(cols))).astype(np.float32)
    assert_matches_reference(backend, tile, iterations)


def test_batch_equals_tile_by_tile(backend) -> None:
    rng = np.random.default_rng(5)
    tiles = rng.standard_normal((2, 3, 16, 24)).astype(np.float32) * np.exp(rng.standard_normal((2, 3, 1, 24)))
    bal, cs, rs, imb = run(backend, tiles, return_imbalance=True)
    assert bal.shape == tiles.shape and cs.shape == (2, 3, 1, 24) and rs.shape == (2, 3, 16, 1)
    assert imb.shape == (2, 3) and cs.dtype == rs.dtype == imb.dtype == np.float32
    for i in range(2):
        for j in range(3):
            b1, c1, r1, m1 = run(backend, tiles[i, j], return_imbalance=True)
            np.testing.assert_array_equal(bal[i, j], b1)
            np.testing.assert_array_equal(cs[i, j], c1)
            np.testing.assert_array_equal(rs[i, j], r1)
            assert imb[i, j] == m1


def test_balanced_is_exactly_tiles_over_scales(backend) -> None:
    tiles = separable_tile(np.random.default_rng(6), 32, 48)[None]
    bal, cs, rs = run(backend, tiles)
    np.testing.assert_array_equal(bal, tiles / cs / rs)


# -- properties -------------------------------------------------------------------------------

def test_best_imbalance_never_increases_with_iterations(backend) -> None:
    rng = np.random.default_rng(7)
    tiles = np.stack([separable_tile(rng, 64, 64), outlier_tile(rng, 64, 64),
                      rng.standard_normal((64, 64)).astype(np.float32)])
    imbs = np.stack([run(backend, tiles, k, return_imbalance=True)[3] for k in range(17)])
    assert np.all(np.diff(imbs, axis=0) <= 0)
    assert np.all(imbs[-1] < imbs[0])


@pytest.mark.parametrize("make", [separable_tile, outlier_tile])
def test_scales_are_one_or_within_clip(backend, make) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(8)
    tiles = np.stack([make(rng, 32, 32) for _ in range(6)])
    for k in (0, 1, 3, 8):
        _, cs, rs = run(backend, tiles, k)
        for s in (cs, rs):
            ok = (s == 1.0) | ((s >= LOW) & (s <= HIGH))
            assert ok.all()
        if k == 0:
            assert (cs == 1).all() and (rs == 1).all()
        else:
            assert (cs != 1).any()


def test_balanced_tile_has_near_equal_stds(backend) -> None:
    tile = np.random.default_rng(9).standard_normal((128, 128)).astype(np.float32) * 5
    bal, _, _, imb = run(backend, tile, return_imbalance=True)
    assert 2.0 <= float(imb) < 2.01
    assert abs(imbalance(bal) - float(imb)) < 1e-4


def test_custom_constants_are_used(backend) -> None:
    tile = separable_tile(np.random.default_rng(10), 32, 32)
    _, cs, rs = run(backend, tile, log_scale_min=0.0, log_scale_max=1.0)
    assert cs.min() >= 1.0 and rs.max() <= float(np.float32(math.e))
    _, cs2, _ = run(backend, tile)
    assert not np.array_equal(cs, cs2)
    _, _, _, imb = run(backend, np.zeros((4, 4), np.float32), imbalance_floor=1.0,
                                  iterations=0, return_imbalance=True)
    assert imb == 0.0


def test_thread_count_does_not_change_results() -> None:
    tiles = np.stack([separable_tile(np.random.default_rng(s), 32, 32) for s in range(8)])
    before = nb.get_num_threads()
    try:
        nb.set_num_threads(1)
        one = lowbit.balance(tiles, return_imbalance=True)
    finally:
        nb.set_num_threads(before)
    many = lowbit.balance(tiles, return_imbalance=True)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


def test_balance_tile_is_callable_from_another_kernel() -> None:
    """The per-tile function is inlined into other Numba kernels (the KVarN quantizer)."""
    @nb.njit
    def kernel(tiles: np.ndarray, cs: np.ndarray, rs: np.ndarray, imb: np.ndarray) -> None:
        f = np.float32
        for b in range(tiles.shape[0]):
            imb[b] = balance_tile(tiles[b], 8, f(1e-3), f(1e3), f(-0.3), f(10.0), f(1e-8), cs[b], rs[b])

    tiles = np.stack([separable_tile(np.random.default_rng(s), 16, 32) for s in range(3)])
    cs = np.empty((3, 32), np.float32)
    rs = np.empty((3, 16), np.float32)
    imb = np.empty(3, np.float32)
    kernel(tiles, cs, rs, imb)
    _, cs_ref, rs_ref, imb_ref = lowbit.balance(tiles, return_imbalance=True)
    np.testing.assert_array_equal(cs, cs_ref[:, 0])
    np.testing.assert_array_equal(rs, rs_ref[..., 0])
    np.testing.assert_array_equal(imb, imb_ref)


# -- edge cases (documented in the docstring and docs/transforms.md) --------------------------

@pytest.mark.parametrize("value", [0.0, 1.1, -3.7, 1e-20])
def test_constant_and_zero_tiles(backend, value: float) -> None:
    tile = np.full((16, 8), value, dtype=np.float32)
    bal, cs, rs, imb = run(backend, tile, return_imbalance=True)
    assert imb == 0.0  # every candidate has imbalance exactly 0 ...
    np.testing.assert_array_equal(cs, np.float32(math.exp(-0.3)) * np.ones((1, 8), np.float32))
    np.testing.assert_array_equal(rs, np.float32(math.exp(-0.3)) * np.ones((16, 1), np.float32))
    np.testing.assert_array_equal(bal, tile / cs / rs)  # ... so the last one (uniform e^-0.3) wins
    if value == 0.0:
        assert (bal == 0).all()
    _, rcs, rrs, rimb, _ = reference_balance(tile)
    assert rimb == 0.0
    np.testing.assert_allclose(cs[0], rcs, rtol=1e-6)
    np.testing.assert_allclose(rs[:, 0], rrs, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_zero_row_or_column(backend, axis: int) -> None:
    tile = np.random.default_rng(11).standard_normal((32, 32)).astype(np.float32) * 4
    if axis == 0:
        tile[5, :] = 0.0
    else:
        tile[:, 5] = 0.0
    bal, cs, rs, imb = run(backend, tile, return_imbalance=True)
    assert np.isfinite(bal).all() and np.isfinite(cs).all() and np.isfinite(rs).all()
    assert (bal[5, :] == 0).all() if axis == 0 else (bal[:, 5] == 0).all()
    held = rs[5, 0] if axis == 0 else cs[0, 5]
    assert held == np.float32(math.exp(-0.3))
    assert 1e6 < float(imb) < 1e10  # max std / 1e-8: huge but finite
    assert_matches_reference(backend, tile)


def test_tiny_magnitude_tile_is_only_rescaled_uniformly(backend) -> None:
    tile = (0.01 * np.random.default_rng(12).standard_normal((64, 64))).astype(np.float32)
    bal, cs, rs, imb = run(backend, tile, return_imbalance=True)
    for s in (cs, rs):
        assert (s == 1.0).all() or (s == np.float32(math.exp(-0.3))).all()
    assert math.isclose(float(imb), imbalance(tile), rel_tol=1e-5)
    np.testing.assert_array_equal(bal, tile / cs / rs)


def test_iterations_zero_is_identity(backend) -> None:
    tile = separable_tile(np.random.default_rng(13), 16, 16)
    bal, cs, rs, imb = run(backend, tile, 0, return_imbalance=True)
    np.testing.assert_array_equal(bal, tile)
    assert (cs == 1).all() and (rs == 1).all()
    assert math.isclose(float(imb), imbalance(tile), rel_tol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_raises_by_default_and_keeps_identity_when_allowed(backend, bad: float) -> None:
    tiles = np.random.default_rng(14).standard_normal((3, 8, 8)).astype(np.float32)
    tiles[1, 2, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        run(backend, tiles)
    bal, cs, rs, imb = run(backend, tiles, check_finite=False, return_imbalance=True)
    assert np.isnan(imb[1]) and (cs[1] == 1).all() and (rs[1] == 1).all()
    np.testing.assert_array_equal(bal[1], tiles[1])
    ok = run(backend, tiles[[0, 2]], return_imbalance=True)
    np.testing.assert_array_equal(bal[[0, 2]], ok[0])
    np.testing.assert_array_equal(imb[[0, 2]], ok[3])


def test_huge_finite_values_do_not_raise(backend) -> None:
    """float32 squares overflow (σ = inf): such candidates never win; no error, no NaN output."""
    tile = (1e20 * np.random.default_rng(16).standard_normal((8, 8))).astype(np.float32)
    bal, cs, rs = run(backend, tile)
    assert np.isfinite(bal).all() and np.isfinite(cs).all() and np.isfinite(rs).all()
    for s in (cs, rs):
        assert ((s == 1.0) | ((s >= LOW) & (s <= HIGH))).all()


def test_float64_beyond_float32_range_raises(backend) -> None:
    tile = np.ones((4, 4))
    tile[0, 0] = 1e39
    with pytest.raises(ValueError, match="float32 range"):
        run(backend, tile)


# -- dtypes and libraries ---------------------------------------------------------------------

def test_float16_and_float64_inputs(backend) -> None:
    tile = separable_tile(np.random.default_rng(15), 16, 16)
    bal32, cs32, rs32 = run(backend, tile)
    bal16, cs16, rs16 = run(backend, tile.astype(np.float16))
    assert bal16.dtype == np.float16 and cs16.dtype == np.float32
    np.testing.assert_array_equal(bal16, run(backend, tile.astype(np.float16).astype(np.float32))[0].astype(np.float16))
    bal64, cs64, _ = run(backend, tile.astype(np.float64))
    assert bal64.dtype == np.float64
    np.testing.assert_array_equal(bal64, bal32.astype(np.float64))
    np.testing.assert_array_equal(cs64, cs32)


def test_torch_inputs() -> None:
    torch = pytest.importorskip("torch")
    tiles = torch.from_numpy(np.stack([separable_tile(np.random.default_rng(s), 16, 8) for s in range(2)]))
    bal, cs, rs, imb = lowbit.balance(tiles, return_imbalance=True)
    assert all(isinstance(a, torch.Tensor) for a in (bal, cs, rs, imb))
    assert bal.dtype == torch.float32 and cs.shape == (2, 1, 8) and rs.shape == (2, 16, 1)
    ref = lowbit.balance(tiles.numpy(), return_imbalance=True)
    for a, b in zip((bal, cs, rs, imb), ref, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    bf = tiles.to(torch.bfloat16)
    bal_bf, cs_bf, _ = lowbit.balance(bf)
    assert bal_bf.dtype == torch.bfloat16 and cs_bf.dtype == torch.float32
    expect = lowbit.balance(bf.float())[0].to(torch.bfloat16)
    assert torch.equal(bal_bf, expect)


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,pattern", [((8,), "at least 2 dimensions"), ((1, 8), "R=1"),
                                           ((3, 8, 1), "C=1"), ((0, 4), "R=0")])
def test_bad_shapes(backend, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        run(backend, np.ones(shape, np.float32))


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"iterations": -1}, ValueError, "iterations"),
    ({"iterations": 1.5}, TypeError, "iterations"),
    ({"iterations": True}, TypeError, "iterations"),
    ({"iterations": 1025}, ValueError, r"0\.\.1024"),  # above MAX_ITERATIONS (issue 12 item 7)
    ({"iterations": 2**40}, ValueError, "MAX_ITERATIONS"),
    ({"std_min": 0.0}, ValueError, "std_min"),
    ({"std_min": 10.0, "std_max": 1.0}, ValueError, "std_min <= std_max"),
    ({"std_max": float("nan")}, ValueError, "std_max"),
    ({"log_scale_min": 1.0, "log_scale_max": 0.0}, ValueError, "log_scale_min"),
    ({"log_scale_max": "10"}, TypeError, "log_scale_max"),
    ({"imbalance_floor": 0.0}, ValueError, "imbalance_floor"),
    ({"check_finite": 1}, TypeError, "check_finite"),
    ({"return_imbalance": None}, TypeError, "return_imbalance"),
])
def test_bad_arguments(backend, kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        run(backend, np.ones((4, 4), np.float32), **kwargs)


def test_bad_arrays(backend) -> None:
    with pytest.raises(TypeError, match="int64"):
        run(backend, np.ones((4, 4), dtype=np.int64))
    with pytest.raises(TypeError):
        lowbit.balance([[1.0, 2.0], [3.0, 4.0]])


def test_empty_batch(backend) -> None:
    bal, cs, rs, imb = run(backend, np.ones((0, 4, 6), np.float32), return_imbalance=True)
    assert bal.shape == (0, 4, 6) and cs.shape == (0, 1, 6) and rs.shape == (0, 4, 1) and imb.shape == (0,)


def test_iterations_up_to_the_documented_maximum(backend) -> None:
    from lowbit.validate import MAX_ITERATIONS

    tile = np.random.default_rng(2).standard_normal((1, 4, 6)).astype(np.float32)
    *_, imb = run(backend, tile, MAX_ITERATIONS, return_imbalance=True)
    *_, imb32 = run(backend, tile, 32, return_imbalance=True)
    assert float(backend.to_numpy(imb)[0]) <= float(backend.to_numpy(imb32)[0])  # best so far
