"""lowbit.hadamard / inverse_hadamard / hadamard_matrix against float64 references written here.

Transform tests take the ``backend`` fixture (tests/conftest.py): each body runs on numpy (the
Numba kernels), CuPy and torch CUDA (the CUDA kernels, marked gpu); the CUDA kernels' bit-for-bit
agreement with the CPU is tested in tests/test_gpu_hadamard.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowbit
from lowbit.cuda import hadamard as cuda_hadamard
from lowbit.transforms import MAX_LOG2

EPS32 = float(np.finfo(np.float32).eps)
MASK64 = (1 << 64) - 1

SUPPORTED = sorted({m * 2**k for m in (1, 12, 20) for k in range(MAX_LOG2 + 1)})


# -- references (float64, written for readability) ------------------------------------------

def sylvester(n: int) -> np.ndarray:
    """Sylvester's construction in natural order, ±1 entries."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def legendre(a: int, q: int) -> int:
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1  # Euler's criterion


def reference_fwht(x: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Unnormalized ``(H_p ⊗ core) @ row`` for each row of x (float64), by reshaping."""
    rows, n = x.shape
    m = core.shape[0]
    p = n // m
    y = x.astype(np.float64).reshape(rows, p, m) @ core.T
    h = 1
    while h < p:
        y = y.reshape(rows, p // (2 * h), 2, h, m)
        y = np.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=2)
        h *= 2
    return y.reshape(rows, n)


def split(n: int) -> tuple[int, int]:
    for m in (20, 12, 1):
        if n % m == 0 and (n // m) & (n // m - 1) == 0:
            return m, n // m
    raise AssertionError(n)


def core_of(m: int) -> np.ndarray:
    return lowbit.hadamard_matrix(m) if m > 1 else np.ones((1, 1))


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_signs(seed: int, n: int) -> np.ndarray:
    """The documented randomized-Hadamard signs, from Python ints (docs/transforms.md)."""
    k = mix64(seed)
    bits = [mix64((k + 0x9E3779B97F4A7C15 * (j + 1)) & MASK64) for j in range(n)]
    return np.array([1.0 - 2.0 * (b >> 63) for b in bits])


def rng_rows(rows: int, n: int, seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, n)).astype(dtype)


# -- the matrix -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [n for n in SUPPORTED if n <= 2048])
def test_hadamard_matrix_is_symmetric_hadamard(n: int) -> None:
    h = lowbit.hadamard_matrix(n)
    assert h.shape == (n, n) and h.dtype == np.float64
    assert h.flags.c_contiguous  # the CUDA kernel's core operand must be C-ordered
    assert set(np.unique(h)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(h, h.T)
    np.testing.assert_array_equal(h @ h, n * np.eye(n))


@pytest.mark.parametrize("k", range(12))
def test_hadamard_matrix_powers_of_two_are_sylvester(k: int) -> None:
    np.testing.assert_array_equal(lowbit.hadamard_matrix(2**k), sylvester(2**k))


@pytest.mark.parametrize("m", [12, 20])
def test_core_is_paley_from_quadratic_residues(m: int) -> None:
    """Symmetrized Paley I: border [[-1, 1...], [1, ...]], block psi(i + j) with psi(0) = 1,
    psi(a) = -chi(a) (chi the Legendre symbol mod q = m - 1)."""
    q = m - 1
    p = lowbit.hadamard_matrix(m)
    assert p[0, 0] == -1 and np.all(p[0, 1:] == 1) and np.all(p[1:, 0] == 1)
    for i in range(q):
        for j in range(q):
            a = (i + j) % q
            assert p[1 + i, 1 + j] == (1 if a == 0 else -legendre(a, q))


@pytest.mark.parametrize("m", [12, 20])
@pytest.mark.parametrize("k", [1, 3])
def test_hadamard_matrix_is_sylvester_product(m: int, k: int) -> None:
    np.testing.assert_array_equal(lowbit.hadamard_matrix(m * 2**k),
                                  np.kron(sylvester(2**k), lowbit.hadamard_matrix(m)))


# -- the transform vs references --------------------------------------------------------------

#: The backend fixture is stateless, so hypothesis may reuse it across examples.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize("n", SUPPORTED)
def test_matches_float64_reference_every_length(backend, n: int) -> None:
    rows = 5 if n <= 4096 else 2
    x = rng_rows(rows, n, seed=n)
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x)))
    assert y.dtype == np.float32 and y.shape == x.shape
    m, _ = split(n)
    ref = reference_fwht(x, core_of(m)) / math.sqrt(n)
    err = np.abs(y - ref).max()
    if n <= 2048:
        # STYLE 7: twice the error of numpy doing the same product in float32, plus one ulp
        h32 = (lowbit.hadamard_matrix(n) / math.sqrt(n)).astype(np.float32)
        tol = 2 * np.abs(x @ h32 - ref).max() + EPS32 * np.abs(ref).max()
    else:
        tol = 2 * EPS32 * (math.log2(n) + m) * np.abs(ref).max()
    assert err <= tol, (n, err, tol)


@pytest.mark.parametrize("n", [1, 2, 8, 12, 20, 96, 128, 160, 256])
def test_reference_fwht_is_the_dense_product(n: int) -> None:
    """The test's own fast reference equals the dense matrix product (so both can be trusted)."""
    x = rng_rows(3, n, dtype=np.float64)
    m, _ = split(n)
    np.testing.assert_allclose(reference_fwht(x, core_of(m)), x @ lowbit.hadamard_matrix(n).T,
                               rtol=0, atol=1e-12 * n)


@pytest.mark.parametrize("n", [4, 12, 128, 640])
def test_equals_x_at_matrix_over_sqrt_n(backend, n: int) -> None:
    x = rng_rows(7, n, seed=1, dtype=np.float64)
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x)))
    np.testing.assert_allclose(y, x @ lowbit.hadamard_matrix(n) / math.sqrt(n), rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [2, 16, 24, 128, 320])
def test_unnormalized_is_exact_on_small_integers(backend, n: int) -> None:
    x = np.random.default_rng(2).integers(-8, 9, size=(6, n)).astype(np.float32)
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x), normalize=False))
    np.testing.assert_array_equal(y, (x.astype(np.float64) @ lowbit.hadamard_matrix(n)).astype(np.float32))


@pytest.mark.parametrize("n", [1, 4, 12, 20, 64, 96, 128])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
def test_h_times_h_is_identity(backend, n: int, dtype: type, tol: float) -> None:
    eye = backend.asarray(np.eye(n, dtype=dtype))
    hh = backend.to_numpy(lowbit.hadamard(lowbit.hadamard(eye)))
    assert hh.dtype == dtype
    np.testing.assert_allclose(hh, np.eye(n), rtol=0, atol=tol)
    np.testing.assert_array_equal(backend.to_numpy(lowbit.inverse_hadamard(eye)),
                                  backend.to_numpy(lowbit.hadamard(eye)))


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(n=st.sampled_from([n for n in SUPPORTED if n <= 5120]), seed=st.integers(0, 2**32 - 1))
def test_preserves_norms_and_dot_products(backend, n: int, seed: int) -> None:
    q, k = np.random.default_rng(seed).standard_normal((2, n))
    hq, hk = backend.to_numpy(lowbit.hadamard(backend.asarray(np.stack([q, k]))))
    assert math.isclose(hq @ hk, q @ k, rel_tol=1e-10, abs_tol=1e-10 * n)
    assert math.isclose(np.linalg.norm(hq), np.linalg.norm(q), rel_tol=1e-12)


# -- the kernel's exact operations ----------------------------------------------------------

def same_ops_fwht(x: np.ndarray, core: np.ndarray, signs: np.ndarray, signs_first: bool,
                  scale: float) -> np.ndarray:
    """The kernel's documented sequence of IEEE operations, in x's dtype (numpy, one operation
    per array expression, so each rounds once): ``signs * x``; ``acc = 0; acc = acc + core[i, j]
    * v[j]`` (j ascending) on each chunk of m; radix-2 levels of increasing stride, lower ``a +
    b``, upper ``a - b``; ``scale * y``; ``signs * (scale * y)`` when the signs come last."""
    dt = x.dtype.type
    rows, n = x.shape
    m = core.shape[0]
    y = signs * x if signs.size and signs_first else x.copy()
    if m > 1:
        chunks = y.reshape(rows, n // m, m)
        acc = np.zeros_like(chunks)
        for j in range(m):
            acc = acc + core[:, j] * chunks[:, :, j:j + 1]
        y = acc.reshape(rows, n)
    h = m
    while h < n:
        y = y.reshape(rows, n // (2 * h), 2, h)
        y = np.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=2).reshape(rows, n)
        h *= 2
    y = dt(scale) * y
    return signs * y if signs.size and not signs_first else y


def raw_bits(a: np.ndarray) -> np.ndarray:
    """The bits of a float array, -0.0 distinct from 0.0; every NaN as one value."""
    bits = a.view(np.uint32 if a.dtype == np.float32 else np.uint64).copy()
    bits[np.isnan(a)] = 0
    return bits


@settings(max_examples=120, deadline=None)
@given(n=st.sampled_from([n for n in SUPPORTED if n <= 8192]), rows=st.integers(1, 40),
       dtype=st.sampled_from([np.float32, np.float64]), signs=st.sampled_from(["none", "first", "last"]),
       special=st.booleans(), in_place=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_kernel_is_the_documented_operations_bit_for_bit(n: int, rows: int, dtype: type, signs: str,
                                                          special: bool, in_place: bool,
                                                          seed: int) -> None:
    """lowbit.cpu.fwht (every code path: in-register segments, cache-blocked long rows, rows
    shorter than a vector and their scalar tail, lanes across rows for 12 and 20) equals the
    exact same operations done by numpy, bit for bit -- so a faster kernel changes no result."""
    from lowbit import cpu

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(dtype)
    if special:  # zeros of both signs, infinities, NaN, subnormals, values that overflow
        tiny = np.finfo(dtype).smallest_subnormal
        picks = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, tiny, -3 * tiny,
                          np.finfo(dtype).max / 4], dtype=dtype)
        where = rng.random((rows, n)) < 0.05
        x[where] = picks[rng.integers(0, picks.size, where.sum())]
    m, _ = split(n)
    core = np.ascontiguousarray(core_of(m), dtype=dtype)
    d = (reference_signs(seed, n) if signs != "none" else np.empty(0)).astype(dtype)
    scale = 1 / math.sqrt(n)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, overflow: part of the test
        expect = same_ops_fwht(x, core, d, signs != "last", scale)
    out = x if in_place else np.empty_like(x)
    cpu.fwht(x, core, d, signs != "last", dtype(scale), out)
    np.testing.assert_array_equal(raw_bits(out), raw_bits(expect))


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([4, 12, 16, 20, 96, 128, 256, 640, 2048]), axis=st.sampled_from([0, 1, -1]),
       dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
       seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)), inverse=st.booleans())
def test_front_is_the_documented_operations_bit_for_bit(n: int, axis: int, dtype: str,
                                                         seed: int | None, inverse: bool) -> None:
    """Through the front (any axis, 16-bit inputs computed in float32 and rounded once, forward
    signs first and inverse signs last) the result is the documented operations, bit for bit."""
    torch = pytest.importorskip("torch")
    shape = [3, 5]
    shape[axis] = n
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    x = x.to(getattr(torch, dtype))
    fn = lowbit.inverse_hadamard if inverse else lowbit.hadamard
    y = fn(x, axis=axis, seed=seed)
    compute = np.float64 if dtype == "float64" else np.float32
    rows = np.ascontiguousarray(np.moveaxis(x.to(torch.float64).numpy().astype(compute), axis, -1))
    m, _ = split(n)
    d = (reference_signs(seed, n) if seed is not None else np.empty(0)).astype(compute)
    flat = rows.reshape(-1, n)
    expect = np.moveaxis(same_ops_fwht(flat, core_of(m).astype(compute), d, not inverse,
                                       1 / math.sqrt(n)).reshape(rows.shape), -1, axis)
    expect_t = torch.from_numpy(np.ascontiguousarray(expect)).to(getattr(torch, dtype))
    assert y.dtype == expect_t.dtype and y.shape == expect_t.shape
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[y.element_size()]
    assert torch.equal(y.contiguous().view(bits), expect_t.view(bits))


# -- randomized Hadamard ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 8, 12, 128, 160])
@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1, 12345])
def test_randomized_is_h_of_signed_x(backend, n: int, seed: int) -> None:
    x = rng_rows(4, n, seed=3, dtype=np.float64)
    d = reference_signs(seed, n)
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x), seed=seed))
    np.testing.assert_allclose(y, (x * d) @ lowbit.hadamard_matrix(n) / math.sqrt(n), rtol=0, atol=1e-13)


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(n=st.sampled_from([2, 12, 20, 64, 128, 384]), seed=st.integers(0, 2**64 - 1),
       normalize=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_randomized_inverse(backend, n: int, seed: int, normalize: bool, dtype: type) -> None:
    x = rng_rows(3, n, seed=seed % 1000, dtype=dtype)
    y = lowbit.hadamard(backend.asarray(x), normalize=normalize, seed=seed)
    back = backend.to_numpy(lowbit.inverse_hadamard(y, normalize=normalize, seed=seed))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(back, x, rtol=0, atol=tol * np.abs(x).max())


def test_signs_depend_on_seed_and_are_balanced(backend) -> None:
    n = 32768
    # inverse_hadamard(y, seed) = d * (H y); with y = H 1 it reads back the signs d
    ones = backend.asarray(np.ones((1, n)))
    d = np.rint(backend.to_numpy(lowbit.inverse_hadamard(lowbit.hadamard(ones), seed=7))[0])
    np.testing.assert_array_equal(d, reference_signs(7, n))
    negatives = int((d < 0).sum())
    assert abs(negatives - n / 2) < 5 * math.sqrt(n) / 2
    x = backend.asarray(rng_rows(2, 128))
    one, two, none = (backend.to_numpy(lowbit.hadamard(x, seed=s)) for s in (1, 2, None))
    assert not np.allclose(one, two)
    assert not np.allclose(one, none)


# -- axes, dtypes, libraries ------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_any_axis(backend, axis: int) -> None:
    x = np.random.default_rng(4).standard_normal((12, 8, 20))
    xb = backend.asarray(x)
    n = x.shape[axis]
    moved = np.moveaxis(x, axis, -1)
    ref = np.moveaxis(moved @ lowbit.hadamard_matrix(n) / math.sqrt(n), -1, axis)
    y = lowbit.hadamard(xb, axis=axis, seed=None)
    assert backend.is_native(y) and tuple(y.shape) == x.shape
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=0, atol=1e-13)
    d = reference_signs(5, n)
    ref_seeded = np.moveaxis((moved * d) @ lowbit.hadamard_matrix(n) / math.sqrt(n), -1, axis)
    y5 = lowbit.hadamard(xb, axis=axis, seed=5)
    np.testing.assert_allclose(backend.to_numpy(y5), ref_seeded, rtol=0, atol=1e-13)
    back = lowbit.inverse_hadamard(y5, axis=axis, seed=5)
    np.testing.assert_allclose(backend.to_numpy(back), x, rtol=0, atol=1e-13)


def test_non_contiguous_and_empty_inputs(backend) -> None:
    base = backend.asarray(rng_rows(10, 256))
    view = base[::2, ::2]  # strided, length 128
    dense = backend.asarray(np.ascontiguousarray(backend.to_numpy(base)[::2, ::2]))
    np.testing.assert_array_equal(backend.to_numpy(lowbit.hadamard(view)),
                                  backend.to_numpy(lowbit.hadamard(dense)))
    empty = backend.asarray(np.empty((0, 128), dtype=np.float32))
    y = lowbit.hadamard(empty)
    assert backend.is_native(y) and tuple(y.shape) == (0, 128)


def test_float16_is_computed_in_float32_and_rounded_once(backend) -> None:
    x = rng_rows(6, 128).astype(np.float16)
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x)))
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, lowbit.hadamard(x.astype(np.float32)).astype(np.float16))


def test_nan_spreads_within_its_vector_only(backend) -> None:
    x = rng_rows(3, 64)
    x[1, 5] = np.nan
    y = backend.to_numpy(lowbit.hadamard(backend.asarray(x)))
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()


def test_torch_inputs() -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 8, 128, generator=torch.Generator().manual_seed(0))
    y = lowbit.hadamard(x, axis=-1, seed=9)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y.numpy(), lowbit.hadamard(x.numpy(), seed=9))
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        yh = lowbit.hadamard(xh, axis=1 if dtype == torch.float16 else -1)
        assert isinstance(yh, torch.Tensor) and yh.dtype == dtype and yh.shape == x.shape
        expect = lowbit.hadamard(xh.float(), axis=1 if dtype == torch.float16 else -1).to(dtype)
        assert torch.equal(yh, expect)
    x64 = x.double()
    back = lowbit.inverse_hadamard(lowbit.hadamard(x64, axis=0), axis=0)
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, x64, rtol=0, atol=1e-13)


# -- bad input --------------------------------------------------------------------------------

def test_zero_length_axis_raises_as_documented(backend) -> None:
    # like numpy.fft.fft, a zero-length transform axis is an error, and the docstring says so
    # (it used to promise an empty result); an empty batch of a supported length is fine
    x = backend.asarray(np.zeros((0, 4), dtype=np.float32))
    for fn in (lowbit.hadamard, lowbit.inverse_hadamard):
        with pytest.raises(ValueError, match="length 0"):
            fn(x, axis=0)
        assert tuple(fn(x, axis=1).shape) == (0, 4)
    assert "zero-length ``axis`` raises" in " ".join((lowbit.hadamard.__doc__ or "").split())


@pytest.mark.parametrize("n", [0, 3, 6, 7, 10, 36, 2**16, 12 * 2**16, 28])
def test_unsupported_length_lists_supported(backend, n: int) -> None:
    x = backend.asarray(np.zeros((2, n), dtype=np.float32))
    with pytest.raises(ValueError, match=r"supported lengths are 2\*\*k, 12 \* 2\*\*k or 20 \* 2\*\*k"):
        lowbit.hadamard(x)
    if n:
        with pytest.raises(ValueError, match=f"length {n}"):
            lowbit.hadamard_matrix(n)


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"axis": 2}, ValueError, "axis"),
    ({"axis": -3}, ValueError, "axis"),
    ({"axis": 1.0}, ValueError, "axis"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 2**64}, ValueError, "seed"),
    ({"seed": 1.5}, ValueError, "seed"),
    ({"seed": True}, ValueError, "seed"),
    ({"normalize": "yes"}, TypeError, "normalize"),
])
def test_bad_arguments(backend, kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        lowbit.hadamard(backend.asarray(np.zeros((2, 8), dtype=np.float32)), **kwargs)


def test_bad_arrays(backend) -> None:
    with pytest.raises(TypeError, match="int32"):
        lowbit.hadamard(backend.asarray(np.zeros((2, 8), dtype=np.int32)))
    with pytest.raises(TypeError):
        lowbit.hadamard([1.0, 2.0])
    with pytest.raises(ValueError, match="0-d"):
        lowbit.hadamard(backend.asarray(np.ones((), dtype=np.float32)))
    with pytest.raises(TypeError, match="integer"):
        lowbit.hadamard_matrix(8.0)


def test_plans_cover_every_length() -> None:
    """The CUDA pass plan (no GPU needed): rows within a warp's reach take one warp pass, rows whose
    segment fits a block one block pass, longer rows column passes for the remaining strides."""
    assert cuda_hadamard.plan(128, 1, 2) == (("warp", 7, 0),)
    assert cuda_hadamard.plan(1024, 1, 2) == (("block", 10, 0),)
    assert cuda_hadamard.plan(256, 1, 4) == (("warp", 8, 0),)
    assert cuda_hadamard.plan(8192, 1, 2) == (("block", 13, 0),)
    assert cuda_hadamard.plan(32768, 1, 4) == (("block", 13, 0), ("columns", 8192, 2))
    for n in SUPPORTED:
        m = 20 if n % 20 == 0 else 12 if n % 12 == 0 else 1
        for itemsize in (2, 4, 8):
            passes = cuda_hadamard.plan(n, m, itemsize)
            levels = passes[0][1] + sum(p[2] for p in passes[1:])
            assert m << levels == n
