"""The CUDA balance_tiles kernel agrees with the CPU twin bit for bit (needs a GPU).

The front's float64-reference tests run on the GPU too (tests/test_balance.py, backend fixture);
here: many tile shapes, dtypes and kinds of data against the CPU kernel, the exp/log twins,
every output element written, bad input, sizes past int32 indexing, determinism.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu

pytestmark = pytest.mark.gpu

F32 = np.float32
CONSTANTS = (F32(1e-3), F32(1e3), F32(-0.3), F32(10.0), F32(1e-8))


def _tiles(kind: str, b: int, r: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((b, r, c))
    if kind == "separable":
        g = g * (10 * np.exp(rng.standard_normal((b, r, 1)))) * np.exp(0.5 * rng.standard_normal((b, 1, c)))
    elif kind == "outlier":  # K-like: channels spread over decades, one token 30x
        g = 4 * g * np.exp(rng.standard_normal((b, r, 1)))
        g[:, :, c // 3] *= 30
    elif kind == "constant":
        g = np.broadcast_to(rng.standard_normal((b, 1, 1)), (b, r, c)).copy()
    elif kind == "zero_row":
        g = 3 * g
        g[:, r // 2, :] = 0
    elif kind == "tiny":
        g = 0.01 * g
    elif kind == "subnormal_squares":  # squares and products below float32's normal range
        g = 3e-21 * g
    elif kind == "huge":  # float32 squares overflow
        g = 1e20 * g
    return g.astype(np.float32)


def _cpu(tiles: np.ndarray, iterations: int) -> tuple[np.ndarray, ...]:
    b, r, c = tiles.shape
    out = (np.full(tiles.shape, 5.0, F32), np.full((b, c), 5.0, F32), np.full((b, r), 5.0, F32), np.full(b, 5.0, F32))
    cpu.balance_tiles(tiles, iterations, *CONSTANTS, *out)
    return out


def _gpu(cp, tiles, iterations: int) -> tuple[np.ndarray, ...]:  # type: ignore[no-untyped-def]
    """The CUDA kernel on poisoned outputs (NaN bits), results on the host."""
    b, r, c = tiles.shape
    out = (cp.empty(tiles.shape, tiles.dtype), cp.empty((b, c), F32), cp.empty((b, r), F32), cp.empty(b, F32))
    for a in out:
        a.view(np.uint8).fill(0xFF)
    lowbit.cuda.balance_tiles(tiles, iterations, *CONSTANTS, *out)
    return tuple(cp.asnumpy(a) for a in out)


def _same(got: np.ndarray, expect: np.ndarray) -> None:
    """Equal bits, NaN counting as one value (payloads differ between numpy and CUDA)."""
    gb, eb = got.view(np.uint32).copy(), expect.view(np.uint32).copy()
    gb[np.isnan(got)] = 0
    eb[np.isnan(expect)] = 0
    np.testing.assert_array_equal(gb, eb)


KINDS = ["gauss", "separable", "outlier", "constant", "zero_row", "tiny", "subnormal_squares", "huge"]
SHAPES = [(128, 128), (64, 128), (128, 64), (2, 2), (3, 5), (17, 33), (128, 127), (300, 40)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_matches_cpu_bit_for_bit(cp, kind: str, shape: tuple[int, int]) -> None:
    tiles = _tiles(kind, 5, *shape, seed=zlib.crc32(f"{kind}{shape}".encode()))
    for iterations in (0, 1, 8):
        expect = _cpu(tiles, iterations)
        got = _gpu(cp, cp.asarray(tiles), iterations)
        for g, e in zip(got, expect, strict=True):
            _same(g, e)


@pytest.mark.parametrize("shape", [(256, 256), (512, 96)], ids=str)
def test_tiles_beyond_shared_memory_match_cpu(cp, shape: tuple[int, int]) -> None:
    """Tiles too large for shared memory take the global-memory kernel; same bits."""
    tiles = _tiles("outlier", 3, *shape, seed=1)
    for g, e in zip(_gpu(cp, cp.asarray(tiles), 8), _cpu(tiles, 8), strict=True):
        _same(g, e)


def test_many_tiles_and_sixteen_iterations(cp) -> None:
    tiles = np.concatenate([_tiles(k, 40, 128, 128, seed=i) for i, k in enumerate(KINDS)])
    for g, e in zip(_gpu(cp, cp.asarray(tiles), 16), _cpu(tiles, 16), strict=True):
        _same(g, e)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_tiles_match_cpu(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    tiles = torch.from_numpy(_tiles("outlier", 9, 128, 128, seed=3)).to(getattr(torch, dtype))
    got = lowbit.balance(tiles.cuda(), return_imbalance=True)
    expect = lowbit.balance(tiles, return_imbalance=True)
    assert got[0].dtype == tiles.dtype and got[0].is_cuda
    assert torch.equal(got[0].cpu().view(torch.int16), expect[0].view(torch.int16))
    for g, e in zip(got[1:], expect[1:], strict=True):
        assert torch.equal(g.cpu(), e)


def test_nan_tiles_keep_identity_scales_like_cpu(cp) -> None:
    tiles = _tiles("gauss", 4, 32, 32, seed=4)
    tiles[1, 3, 3] = np.nan
    tiles[2, 0, 5] = np.inf
    got = lowbit.balance(cp.asarray(tiles), check_finite=False, return_imbalance=True)
    expect = lowbit.balance(tiles, check_finite=False, return_imbalance=True)
    for g, e in zip(got, expect, strict=True):
        _same(cp.asnumpy(g), e)
    with pytest.raises(ValueError, match="2 non-finite"):
        lowbit.balance(cp.asarray(tiles))


def test_exp_log_twins_are_bit_identical(cp) -> None:
    """common.cuh's exp_f32 / log_f32 equal lowbit.cpu.scalar's on 2 million float32 values."""
    import numba as nb

    from lowbit.cpu.scalar import exp_f32, log_f32
    from lowbit.cuda._module import OPTIONS
    from lowbit.cuda._module import source as cuda_source

    code = cuda_source("balance") + r'''
extern "C" __global__ void twins(const float* x, float* e, float* l, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { e[i] = exp_f32(f32(x[i])).v; l[i] = log_f32(f32(x[i])).v; }
}'''
    k = cp.RawModule(code=code, options=OPTIONS).get_function("twins")
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.uniform(-12, 12, 10**6), np.exp(rng.uniform(-90, 88, 10**6)),
                        [0.0, -1.0, np.inf, np.nan, 1e-45, 88.7, -103.0]]).astype(F32)

    @nb.njit
    def host(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, lg = np.empty_like(x), np.empty_like(x)
        for i in range(x.size):
            e[i] = exp_f32(x[i])
            lg[i] = log_f32(x[i])
        return e, lg

    he, hl = host(x)
    xg = cp.asarray(x)
    ge, gl = cp.empty_like(xg), cp.empty_like(xg)
    k(((x.size + 255) // 256,), (256,), (xg, ge, gl, np.int64(x.size)))
    _same(cp.asnumpy(ge), he)
    _same(cp.asnumpy(gl), hl)


def test_deterministic(cp) -> None:
    tiles = cp.asarray(_tiles("separable", 64, 128, 128, seed=7))
    first = _gpu(cp, tiles, 8)
    for g, e in zip(_gpu(cp, tiles, 8), first, strict=True):
        _same(g, e)


def test_kernel_bad_input(cp) -> None:
    t = cp.zeros((2, 8, 8), F32)
    out = (cp.empty((2, 8, 8), F32), cp.empty((2, 8), F32), cp.empty((2, 8), F32), cp.empty(2, F32))
    k = lowbit.cuda.balance_tiles
    with pytest.raises(TypeError, match="tiles must be a cupy.ndarray"):
        k(np.zeros((2, 8, 8), F32), 8, *CONSTANTS, *out)
    with pytest.raises(ValueError, match="C-contiguous"):
        k(cp.zeros((2, 8, 16), F32)[:, :, ::2], 8, *CONSTANTS, *out)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        k(t.astype(cp.float64), 8, *CONSTANTS, out[0].astype(cp.float64), *out[1:])
    with pytest.raises(TypeError, match="col_scale must be float32 of shape"):
        k(t, 8, *CONSTANTS, out[0], cp.empty((2, 7), F32), *out[2:])
    with pytest.raises(ValueError, match="iterations"):
        k(t, 2**31, *CONSTANTS, *out)
    big = cp.zeros((1, 8000, 8000), F32)
    with pytest.raises(ValueError, match="shared memory"):
        lowbit.balance(big)


def test_past_int32_indexing(cp) -> None:
    """2**17 + 3 tiles of 128 x 128 float16 (2**31 + 49152 elements): the last tiles are right."""
    b = 2**17 + 3
    tiles = cp.random.default_rng(8).standard_normal((b, 128, 128), dtype=cp.float32).astype(cp.float16)
    bal, cs, rs, imb = lowbit.balance(tiles, return_imbalance=True)
    for sl in (slice(0, 2), slice(b - 3, b)):
        ref = lowbit.balance(cp.asnumpy(tiles[sl]), return_imbalance=True)
        for g, e in zip((bal[sl], cs[sl], rs[sl], imb[sl]), ref, strict=True):
            np.testing.assert_array_equal(cp.asnumpy(g), e)
