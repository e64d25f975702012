"""CUDA fwht / hadamard_signs agree with the CPU twins bit for bit (needs a GPU).

The front's float64-reference tests run on the GPU too (tests/test_hadamard.py, backend fixture);
here: every supported length and dtype against the CPU kernel, every element written, bad input,
sizes past int32 indexing, torch's current stream.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu
from lowbit.cuda import hadamard as cuda_hadamard
from lowbit.transforms import MAX_LOG2

pytestmark = pytest.mark.gpu

SUPPORTED = sorted({m * 2**k for m in (1, 12, 20) for k in range(MAX_LOG2 + 1)})


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of a float array (bfloat16 bits as they are), so that -0.0 counts; NaNs
    compare as one value (their payloads differ between numpy and CUDA)."""
    bits = a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]).copy()
    if a.dtype != np.uint16:
        bits[np.isnan(a)] = 0
    return bits


def _data(rows: int, n: int, dtype: str, seed: int) -> np.ndarray:
    """Gaussian rows with real-looking outliers: a few channels 50x larger, one row 1e3x smaller."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n))
    x[:, rng.integers(0, n, size=max(1, n // 64))] *= 50.0
    x[rows // 2] *= 1e-3
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("n", SUPPORTED)
def test_every_length_matches_cpu_bit_for_bit(cp, n: int, dtype: str) -> None:
    rows = 7 if n <= 2048 else 3
    x = _data(rows, n, dtype, seed=n)
    xg = cp.asarray(x)
    for kw in ({}, {"seed": 2**64 - 1 - n}, {"normalize": False}):
        y = lowbit.hadamard(xg, **kw)
        assert isinstance(y, cp.ndarray) and y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(_bits(cp.asnumpy(y)), _bits(lowbit.hadamard(x, **kw)))
        z = lowbit.inverse_hadamard(y, **kw)
        np.testing.assert_array_equal(_bits(cp.asnumpy(z)), _bits(lowbit.inverse_hadamard(cp.asnumpy(y), **kw)))


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 64, 128, 256, 512, 640, 4096, 12 * 1024, 32768])
def test_torch_bfloat16_and_float16_match_cpu(n: int) -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_data(5, n, "float32", seed=n))
    for dtype in (torch.bfloat16, torch.float16):
        xd = x.to(dtype)
        for kw in ({}, {"seed": 99}):
            y = lowbit.hadamard(xd.cuda(), **kw)
            assert y.is_cuda and y.dtype == dtype and y.shape == x.shape
            expect = lowbit.hadamard(xd, **kw)
            assert torch.equal(y.cpu().view(torch.int16), expect.view(torch.int16))


@pytest.mark.parametrize("n", [1, 5, 4096, 32768, 12 * 2**15, 20 * 2**15])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_signs_match_cpu(cp, n: int, dtype: str) -> None:
    for seed in (0, 7, 2**64 - 1):
        g = cp.full(n, 3.0, dtype)
        c = np.full(n, 5.0, dtype)
        lowbit.cuda.hadamard_signs(np.uint64(seed), g)
        cpu.hadamard_signs(np.uint64(seed), c)
        np.testing.assert_array_equal(cp.asnumpy(g), c)


# every plan: warp (n < E and n >= E), block, block + columns; odd row counts (partial tiles)
PLAN_CASES = [(1, 3), (2, 5), (4, 7), (8, 9), (12, 3), (20, 3), (128, 33), (256, 5), (640, 3), (2048, 3),
              (8192, 2), (32768, 2), (12 * 2**12, 2), (20 * 2**15, 1)]


@pytest.mark.parametrize("dtype", ["float16", "uint16", "float32", "float64"])
@pytest.mark.parametrize("n,rows", PLAN_CASES)
def test_kernel_writes_every_element(cp, n: int, rows: int, dtype: str) -> None:
    """Poisoned outputs (NaN bits on the GPU, other bits on the CPU) end equal: all written."""
    m = 20 if n % 20 == 0 else 12 if n % 12 == 0 else 1
    compute = np.float64 if dtype == "float64" else np.float32
    xf = _data(rows, n, "float32", seed=rows)
    if dtype == "uint16":  # bfloat16 bits; the CPU kernel gets their exact float32 values
        bits = (xf.view(np.uint32) >> 16).astype(np.uint16)
        x_cpu = (bits.astype(np.uint32) << 16).view(np.float32)
        x_gpu = bits
    else:
        x_gpu = xf.astype(dtype)
        x_cpu = x_gpu.astype(compute)
    core = (lowbit.hadamard_matrix(m) if m > 1 else np.ones((1, 1))).astype(compute)
    signs = np.empty(n, compute)
    cpu.hadamard_signs(np.uint64(3), signs)
    scale = compute(1 / math.sqrt(n))
    for signs_first in (True, False):
        out_cpu = np.full(x_cpu.shape, 7.0, compute)
        cpu.fwht(x_cpu, core, signs, signs_first, scale, out_cpu)
        out_gpu = cp.empty(x_gpu.shape, x_gpu.dtype)
        out_gpu.view(np.uint8).fill(0xFF)  # NaN in every float format
        lowbit.cuda.fwht(cp.asarray(x_gpu), cp.asarray(core), cp.asarray(signs), signs_first, scale, out_gpu)
        got = cp.asnumpy(out_gpu)
        if dtype == "uint16":
            expect = lowbit.arrays.to_dtype(out_cpu, "bfloat16")
        else:
            expect = out_cpu.astype(dtype)
        np.testing.assert_array_equal(_bits(got), _bits(expect))


@pytest.mark.parametrize("label", list(cuda_hadamard.VARIANTS))
@pytest.mark.parametrize("dtype", ["float16", "uint16", "float32", "float64"])
def test_variants_match_cpu(cp, label: str, dtype: str) -> None:
    """Every variant the benchmark times (resident grids whose warps loop over many groups, the
    data's last partial group, 16-byte-unaligned views, signs first and last, in place) equals
    the CPU kernel bit for bit."""
    knobs = cuda_hadamard.VARIANTS[label]
    compute = np.float64 if dtype == "float64" else np.float32
    core = np.ones((1, 1), compute)
    # 5.1 Mi elements of n = 128: more groups than a resident grid has warps (~8 groups each)
    for n, rows, offset in ((128, 40_003, 0), (128, 4099, 1), (16, 2049, 0), (64, 999, 3), (256, 1031, 0),
                            (512, 257, 0), (8, 77, 0), (1024, 9, 0)):
        xf = _data(rows, n, "float32", seed=rows + offset)
        if dtype == "uint16":
            bits = (xf.view(np.uint32) >> 16).astype(np.uint16)
            x_cpu, x_host = (bits.astype(np.uint32) << 16).view(np.float32), bits
        else:
            x_host = xf.astype(dtype)
            x_cpu = x_host.astype(compute)
        signs = np.empty(n, compute)
        cpu.hadamard_signs(np.uint64(n), signs)
        scale = compute(1 / math.sqrt(n))
        for d, signs_first in ((signs, True), (signs, False), (np.empty(0, compute), True)):
            out_cpu = np.empty(x_cpu.shape, compute)
            cpu.fwht(x_cpu, core, d, signs_first, scale, out_cpu)
            expect = lowbit.arrays.to_dtype(out_cpu, "bfloat16") if dtype == "uint16" else out_cpu.astype(dtype)
            flat = cp.empty(rows * n + offset, x_host.dtype)  # offset elements: an unaligned view
            xg = flat[offset:].reshape(rows, n)
            xg[...] = cp.asarray(x_host)
            out_gpu = cp.empty(x_host.shape, x_host.dtype)
            out_gpu.view(np.uint8).fill(0xFF)
            cuda_hadamard._fwht(xg, cp.asarray(core), cp.asarray(d), signs_first, scale, out_gpu, knobs)
            np.testing.assert_array_equal(_bits(cp.asnumpy(out_gpu)), _bits(expect), err_msg=f"n={n} rows={rows}")
            cuda_hadamard._fwht(xg, cp.asarray(core), cp.asarray(d), signs_first, scale, xg, knobs)  # in place
            np.testing.assert_array_equal(_bits(cp.asnumpy(xg)), _bits(expect), err_msg=f"in place n={n}")


@pytest.mark.parametrize("n", [128, 640, 8192, 32768])
def test_kernel_in_place(cp, n: int) -> None:
    """x may be out (as on the CPU): every pass reads a value before any thread overwrites it."""
    x = _data(6, n, "float32", seed=1)
    core = np.ones((1, 1), np.float32) if n % 20 else lowbit.hadamard_matrix(20).astype(np.float32)
    none = np.empty(0, np.float32)
    expect = np.empty_like(x)
    cpu.fwht(x, core, none, True, np.float32(1.0), expect)
    g = cp.asarray(x)
    lowbit.cuda.fwht(g, cp.asarray(core), cp.asarray(none), True, np.float32(1.0), g)
    np.testing.assert_array_equal(cp.asnumpy(g), expect)


def test_kernel_bad_input(cp) -> None:
    x = cp.zeros((4, 128), cp.float32)
    core, signs, out = cp.ones((1, 1), cp.float32), cp.empty(0, cp.float32), cp.empty((4, 128), cp.float32)
    k = lowbit.cuda.fwht
    with pytest.raises(TypeError, match="x must be a cupy.ndarray"):
        k(np.zeros((4, 128), np.float32), core, signs, True, np.float32(1), out)
    with pytest.raises(ValueError, match="C-contiguous"):
        k(cp.zeros((4, 256), cp.float32)[:, ::2], core, signs, True, np.float32(1), out)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        k(x.astype(cp.int32), core, signs, True, np.float32(1), out.astype(cp.int32))
    with pytest.raises(TypeError, match="one shape"):
        k(x, core, signs, True, np.float32(1), out[:2])
    with pytest.raises(ValueError, match="core must be"):
        k(x, cp.ones((3, 3), cp.float32), signs, True, np.float32(1), out)
    with pytest.raises(TypeError, match="signs"):
        k(x, core, cp.ones(5, cp.float32), True, np.float32(1), out)
    with pytest.raises(TypeError, match="float32 or float64"):
        lowbit.cuda.hadamard_signs(np.uint64(1), cp.empty(4, cp.float16))


def test_past_int32_indexing(cp) -> None:
    """2**31 + 2**20 float16 elements (4 GiB): the last rows are right (64-bit offsets)."""
    rows = (2**31 + 2**20) // 128
    x = cp.random.default_rng(5).standard_normal((rows, 128), dtype=cp.float32).astype(cp.float16)
    y = lowbit.hadamard(x, seed=11)
    tail = cp.asnumpy(x[-300:])
    np.testing.assert_array_equal(cp.asnumpy(y[-300:]).view(np.uint16),
                                  lowbit.hadamard(tail, seed=11).view(np.uint16))
    np.testing.assert_array_equal(cp.asnumpy(y[:4]).view(np.uint16),
                                  lowbit.hadamard(cp.asnumpy(x[:4]), seed=11).view(np.uint16))


def test_torch_runs_on_the_current_stream() -> None:
    """The kernel is ordered after work queued on torch's current stream (a delayed copy)."""
    torch = pytest.importorskip("torch")
    src = torch.randn(4096, 128, device="cuda", dtype=torch.float16)
    expect = lowbit.hadamard(src.cpu())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = torch.zeros_like(src)
        torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time on this stream before the copy
        x.copy_(src)
        y = lowbit.hadamard(x)
        z = lowbit.balance(x.view(32, 128, 128))[0]
    stream.synchronize()
    assert torch.equal(y.cpu(), expect)
    assert torch.equal(z.cpu(), lowbit.balance(src.cpu().view(32, 128, 128))[0])
