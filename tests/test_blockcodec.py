"""The fused block-format kernels (block_quantize, block_dequantize, finite_block_amax).

CPU: the fused Numba kernels equal the multi-pass composition they replace
(tests/blockcodec_reference.py: block_absmax, scale arrays, the element encoder with block
scales, pack_codes, decode_table) byte for byte -- every float16 value, every block format and
rounding mode, stochastic seeds / offsets / rbits, partial blocks, float32 and float64 inputs.
That composition is the independent oracle: its element path is the float64 encoder, the fused
kernels take the integer path (minifloat_encode_bits) wherever the scale is a power of two.
GPU (``backend`` fixture, marked ``gpu``): the CUDA twins equal the CPU kernels byte for byte on
the same inputs (float16 / bfloat16 / float32 / float64), chunked calls with ``first_index``
equal one call, poisoned outputs are overwritten exactly where they should be, and bad
arguments raise the same errors.
"""

from __future__ import annotations

import blockcodec_reference as ref
import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu
from lowbit.arrays import to_dtype
from lowbit.codec import decode_values
from lowbit.formats import BLOCK_FORMATS, FP8_E4M3, BlockFormat, FixedPoint
from lowbit.validate import NOT_FIXED

FORMATS = sorted(BLOCK_FORMATS)
ALL_F16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)


def kernels(backend):
    if backend.on_gpu:
        import lowbit.cuda as cuda

        return cuda
    return cpu


def element_args(fmt: BlockFormat) -> tuple:
    e = fmt.element
    if isinstance(e, FixedPoint):
        return FP8_E4M3.spec, (e.bits, e.frac_bits, -127, e.code_max)
    return e.spec, NOT_FIXED


def fused(k, xp, x, length: int, fmt: BlockFormat, mode: int = 0, seed: int = 0, first_index: int = 0,
          rbits: int = 16, tensor: float = 0.0, poison: int | None = None):
    """(packed, scales) from backend kernels ``k`` (arrays of library ``xp``)."""
    bs, bits = fmt.block_size, fmt.element.bits
    n_blocks = x.size // length * -(-length // bs)
    packed = xp.empty(n_blocks * bs * bits // 8, xp.uint8)
    scales = xp.empty(n_blocks, xp.uint8)
    if poison is not None:
        packed.fill(poison)
        scales.fill(poison)
    spec, fixed = element_args(fmt)
    k.block_quantize(x, length, bs, spec, fixed, fmt.element.emax, FP8_E4M3.spec, tensor, mode, np.uint64(seed),
                     first_index, rbits, packed, scales)
    return packed, scales


def tensor_of(x: np.ndarray, length: int, fmt: BlockFormat) -> float:
    return ref.tensor_scale_of(ref.tensor_amax(x, length, fmt.block_size)) if fmt.tensor_scale else 0.0


def inputs(rng) -> list[tuple[np.ndarray, int]]:
    """(flat float32 / float64 x, row length): every float16 value (NaN / Inf / subnormals / +-0
    / +-max in blocks), partial last blocks, values spanning many binades, float64 beyond float32's range."""
    f16 = ALL_F16.astype(np.float32)
    wide = (rng.standard_normal(3000) * rng.choice([1e-30, 1e-6, 1.0, 1e5], 3000)).astype(np.float32)
    ties = np.repeat(np.float32([6.0, 5.0, 3.5, 2.5, 1.75, 1.25, 0.75, 0.25, -0.25, -5.0]), 3)  # fp4 midpoints
    return [(f16, 4096), (f16[:-7], 65529 // 3), (wide, 100), (np.concatenate([ties, ties[:2]]), 32),
            (rng.standard_normal(1000) * 3, 40), (rng.standard_normal(96) * 1e40, 24)]


@pytest.mark.parametrize("name", FORMATS)
def test_fused_cpu_equals_the_multi_pass_composition(name, rng):
    fmt = BLOCK_FORMATS[name]
    for x, length in inputs(rng):
        tensor = tensor_of(x, length, fmt)
        for mode in range(7):
            for seed, first, rbits in ((0, 0, 16), (5, 7, 3), (2**64 - 1, 1000, 32), (12345, 3, 1)):
                if mode != 6 and seed:
                    continue
                got = fused(cpu, np, x, length, fmt, mode, seed, first, rbits, tensor)
                want = ref.quantize(x, length, fmt, mode, seed, first, rbits, tensor)
                np.testing.assert_array_equal(got[1], want[1], err_msg=f"scales {name} mode {mode}")
                np.testing.assert_array_equal(got[0], want[0], err_msg=f"codes {name} mode {mode} seed {seed}")


@pytest.mark.parametrize("name", FORMATS)
def test_fused_decode_and_tensor_amax_equal_the_composition(name, rng):
    fmt = BLOCK_FORMATS[name]
    for x, length in inputs(rng):
        tensor = tensor_of(x, length, fmt)
        packed, scales = fused(cpu, np, x, length, fmt, tensor=tensor)
        for dtype in (np.float32, np.float64):
            out = np.empty(x.size, dtype)
            cpu.block_dequantize(packed, scales, length, fmt.block_size, fmt.element.bits,
                                 decode_values(fmt.element), FP8_E4M3.spec, tensor, out)
            with np.errstate(over="ignore"):  # float64 inputs beyond float32's range decode to +-inf in float32
                want = ref.dequantize(packed, scales, length, x.size // length, fmt, tensor).astype(dtype)
            np.testing.assert_array_equal(out, want)
        amax = np.empty(1)
        cpu.finite_block_amax(x, length, fmt.block_size, amax)
        assert amax[0] == ref.tensor_amax(x, length, fmt.block_size)


def test_nan_blocks_get_the_nan_scale_and_signed_zero_codes():
    x = np.array([1.0, np.nan, -2.0, -0.0] + [3.0] * 28 + [-np.inf] + [-1.0] * 31, np.float32)
    packed, scales = fused(cpu, np, x, 64, BLOCK_FORMATS["mxfp8"])
    assert list(scales) == [0xFF, 0xFF]
    np.testing.assert_array_equal(packed[:4], [0, 0, 0x80, 0x80])  # NaN -> +0, signs of the others kept
    assert set(packed[33:].tolist()) == {0x80}


# -- every backend: the CUDA twins equal the CPU kernels ------------------------------------------

def device_input(on_gpu: bool, x: np.ndarray, dtype: str):
    """x as ``dtype`` on the backend (bfloat16 as uint16 bits; CuPy arrays for the kernels), and the
    float32 / float64 array the CPU kernel reads for it."""
    # float16 inputs: the values beyond 65504 become +-inf (blocks of NaN scale); some numpy
    # builds (the H200 machine's) also flag the NaN inputs' float32 -> float64 cast as invalid
    with np.errstate(over="ignore", invalid="ignore"):
        host = to_dtype(x, dtype) if dtype == "bfloat16" else x.astype(dtype)
    cpu_x = host.astype(np.float32) if dtype == "float16" else host
    if dtype == "bfloat16":
        cpu_x = (host.astype(np.uint32) << 16).view(np.float32)
    if not on_gpu:
        return cpu_x, cpu_x
    import cupy

    return cupy.asarray(host), cpu_x


def to_host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", FORMATS)
def test_block_quantize_equals_the_cpu(name, dtype, rng):
    import cupy as xp

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    cases = inputs(rng)[:4] if dtype != "float64" else inputs(rng)
    for x, length in cases:
        xd, xc = device_input(True, x, dtype)
        tensor = tensor_of(xc, length, fmt)
        for mode, seed, first, rbits in ((0, 0, 0, 16), (1, 0, 0, 16), (2, 0, 0, 16), (3, 0, 0, 16),
                                         (4, 0, 0, 16), (5, 0, 0, 16), (6, 7, 5, 16), (6, 2**64 - 1, 0, 32),
                                         (6, 3, 11, 1)):
            got = fused(k, xp, xd, length, fmt, mode, seed, first, rbits, tensor, poison=0xA5)
            want = fused(cpu, np, xc, length, fmt, mode, seed, first, rbits, tensor)
            np.testing.assert_array_equal(to_host(got[1]), want[1], err_msg=f"scales {name} {dtype} mode {mode}")
            np.testing.assert_array_equal(to_host(got[0]), want[0], err_msg=f"codes {name} {dtype} mode {mode}")


E2M1_MIDPOINTS = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
E2M1_VALUES = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def fp4_tie_blocks(block: int, scales: list[float], dtype: str) -> np.ndarray:
    """Blocks of fp4 e2m1 midpoints and values times ``scale`` (the block scale the amax, 6 *
    scale, gives), their neighbours one ulp of ``dtype`` either side, and both signs: every
    tie and near-tie of the nearest-even thresholds (blockcodec_fp4.cu)."""
    ftype = np.float32 if dtype in ("float32", "bfloat16") else np.float16
    rows = []
    for sc in scales:
        grid = np.concatenate([E2M1_MIDPOINTS, E2M1_VALUES, [0.1, 0.0]]) * sc
        with np.errstate(over="ignore", under="ignore"):
            g = grid.astype(ftype)
            for v in (g, np.nextafter(g, ftype(np.inf)), np.nextafter(g, ftype(0))):
                vals = np.concatenate([v, -v])
                for start in range(0, vals.size, block - 1):
                    blk = np.zeros(block, ftype)
                    part = vals[start:start + block - 1]
                    blk[:part.size] = part
                    blk[-1] = ftype(6.0 * sc)  # pins the block's amax, so its scale
                    rows.append(blk)
    return np.concatenate(rows).astype(np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_ties_subnormals_and_tensor_scales_equal_the_cpu(name, dtype, rng):
    """blockcodec_fp4.cu's threshold encoder at every e2m1 tie, near-tie and signed zero, with
    block scales from the float16 subnormal to the float32 subnormal range; NVFP4 with float32
    tensor scales (the fp4 kernel) and one of float64 precision (the general kernel)."""
    import cupy as xp

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    bs = fmt.block_size
    exps = (-24, -20, -14, -6, 0, 3, 12) if dtype == "float16" else (-149, -140, -133, -126, -100, -30, 0, 60, 120)
    x = fp4_tie_blocks(bs, [2.0 ** e for e in exps] + [0.75 * 2.0 ** exps[2]], dtype)
    xd, xc = device_input(True, x, dtype)
    tensors = [0.0] if not fmt.tensor_scale else [1.0, float(np.float32(0.37)), 2.0**-100, float(np.float32(1e-40)),
                                                  2.0**100 * 3, tensor_of(xc, bs, fmt), 1.0 / 3.0]
    for tensor in tensors:
        for mode, seed in ((0, 0), (6, 5), (2, 0)):
            got = fused(k, xp, xd, bs, fmt, mode, seed, 3, 16, tensor, poison=0x5A)
            want = fused(cpu, np, xc, bs, fmt, mode, seed, 3, 16, tensor)
            np.testing.assert_array_equal(to_host(got[1]), want[1], err_msg=f"scales {tensor} mode {mode}")
            np.testing.assert_array_equal(to_host(got[0]), want[0], err_msg=f"codes {tensor} mode {mode}")


def nvfp4_amax_values(dtype: str, tensor: float) -> np.ndarray:
    """Block amaxes that meet every NVFP4 scale-code step: every finite float16 / bfloat16
    magnitude; for float32 the 7 neighbours either side of 6 * tensor * (each midpoint of two
    consecutive e4m3 scale values), where the code steps up."""
    if dtype == "float16":
        return np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        return (np.arange(0x7F80, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)
    e4m3 = FP8_E4M3.decode_table()[:127]  # codes 0 .. 126 (127: NaN)
    bits = ((e4m3[:-1] + e4m3[1:]) / 2 * 6 * tensor).astype(np.float32).view(np.uint32).astype(np.int64)
    near = (bits[:, None] + np.arange(-7, 8)[None, :]).reshape(-1)
    near = near[(near >= 0) & (near < 0x7F800000)].astype(np.uint32)
    return near.view(np.float32).astype(np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nvfp4_scale_table_at_every_amax_equal_the_cpu(dtype):
    """blockcodec_fp4.cu's NVFP4 scale table (nv_scale_table: the amax bounds of every scale code,
    found by search, and the thresholds of every code): a block per amax of
    :func:`nvfp4_amax_values`, its other elements fractions of it (both signs, zeros), under
    tensor scales of several binades; every scale code and packed byte equal the CPU's."""
    import cupy as xp

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS["nvfp4"]
    frac = np.array([1.0, -0.9, 0.75, -0.6, 0.5, 0.41, -0.33, 0.25, 0.2, -0.15, 0.1, 0.07, -0.04, 0.02, 0.0, -0.0])
    for tensor in (1.0, 2.0**-12, float(np.float32(0.37)), float(np.float32(2.0**-20 / 3)), 3000.0):
        amax = nvfp4_amax_values(dtype, tensor)
        x = (amax[:, None] * frac[None, :]).reshape(-1)
        xd, xc = device_input(True, x, dtype)
        got = fused(k, xp, xd, 16, fmt, tensor=tensor, poison=0x5A)
        want = fused(cpu, np, xc, 16, fmt, tensor=tensor)
        np.testing.assert_array_equal(to_host(got[1]), want[1], err_msg=f"scales {dtype} tensor {tensor}")
        np.testing.assert_array_equal(to_host(got[0]), want[0], err_msg=f"codes {dtype} tensor {tensor}")


def sr_blocks(rng, block: int) -> np.ndarray:
    """float16 blocks for stochastic MX rounding: for every block amax 2^e (e = -24 .. 15, so
    E8M0 scales 2^(e - 2) on both sides of the GPU fast path's range), 3 blocks of elements
    spread over 26 binades below it (float16 subnormals, zeros and both signs included), one
    with the amax's neighbours (saturation at 6 * scale); then every float16 pattern shuffled
    into blocks (Inf / NaN blocks, random scales)."""
    rows = []
    for e in range(-24, 16):
        amax = np.float16(2.0 ** e * 1.75) if e < 15 else np.float16(65504)
        for _ in range(3):
            blk = (rng.choice([-1, 1], block) * 2.0 ** rng.uniform(-26, 0, block) * float(amax)).astype(np.float16)
            blk[rng.integers(0, block, 2)] = 0
            blk[0] = amax
            rows.append(blk)
        near = np.full(block, amax)
        near[1::2] = np.nextafter(amax, np.float16(0))
        near[2::4] *= -1
        rows.append(near)
    rows.append(rng.permutation(np.arange(1 << 16, dtype=np.uint16)).view(np.float16))
    with np.errstate(invalid="ignore"):  # (signalling NaN patterns)
        return np.concatenate(rows).astype(np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("rbits", [1, 2, 7, 8, 15, 16, 17, 21, 22, 31, 32])
def test_mxfp4_stochastic_float16_equals_the_cpu_for_every_rbits(rbits, rng):
    """MXFP4 stochastic rounding of float16 (blockcodec_fp4.cu: its fast path where the block
    scale allows, the general one elsewhere), bit for bit the CPU's codes and scales, for every
    rbits and three seeds / offsets, whole rows of blocks (vector loads) and rows of 40 (partial,
    padded blocks)."""
    import cupy as xp

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS["mxfp4"]
    xd, xc = device_input(True, sr_blocks(rng, fmt.block_size), "float16")
    for length in (4096, 40):
        n = xc.size // length * length
        for seed, first in ((7, 5), (2**64 - 1, 0), (12345, 10**12 + 3)):
            got = fused(k, xp, xd[:n], length, fmt, 6, seed, first, rbits, poison=0xA5)
            want = fused(cpu, np, xc[:n], length, fmt, 6, seed, first, rbits)
            msg = f"rbits {rbits} seed {seed} length {length}"
            np.testing.assert_array_equal(to_host(got[1]), want[1], err_msg="scales " + msg)
            np.testing.assert_array_equal(to_host(got[0]), want[0], err_msg="codes " + msg)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "mxfp8", "mxfp6_e3m2"])
def test_unaligned_and_padded_arrays_equal_the_cpu(name, dtype, rng):
    """Input one element off 16-byte alignment, packed codes one byte off (the kernels'
    element loads and byte stores), and rows of partial blocks."""
    import cupy as xp

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    bs, bits = fmt.block_size, fmt.element.bits
    x = rng.standard_normal(64 * 40 + 1) * np.logspace(-4, 4, 64 * 40 + 1)
    x[5] = -0.0
    xd, xc = device_input(True, x, dtype)
    for length in (bs, 40):
        xs, xcs = xd[1:], np.ascontiguousarray(xc[1:])
        tensor = tensor_of(xcs, length, fmt)
        spec, fixed = element_args(fmt)
        n_blocks = xcs.size // length * -(-length // bs)
        for mode in (0, 6):
            want = fused(cpu, np, xcs, length, fmt, mode, 9, 0, 16, tensor)
            packed = xp.full(n_blocks * bs * bits // 8 + 1, 0xA5, xp.uint8)
            scales = xp.full(n_blocks, 0xA5, xp.uint8)
            k.block_quantize(xs, length, bs, spec, fixed, fmt.element.emax, FP8_E4M3.spec, tensor, mode, np.uint64(9),
                             0, 16, packed[1:], scales)
            np.testing.assert_array_equal(to_host(scales), want[1], err_msg=f"scales {length} mode {mode}")
            np.testing.assert_array_equal(to_host(packed[1:]), want[0], err_msg=f"codes {length} mode {mode}")


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8", "nvfp4", "mxfp6"])
def test_chunked_calls_with_first_index_equal_one_call(backend, name, rng):
    fmt = BLOCK_FORMATS[name]
    k = kernels(backend)
    xp = np if not backend.on_gpu else __import__("cupy")
    x = (rng.standard_normal(64 * 96) * 4).astype(np.float32)
    xd, xc = device_input(backend.on_gpu, x, "float32")
    tensor = tensor_of(xc, 96, fmt)
    whole = fused(k, xp, xd, 96, fmt, 6, 99, 10, 16, tensor)
    n_blocks_per_row = -(-96 // fmt.block_size)
    half = 32 * 96
    a = fused(k, xp, xd[:half], 96, fmt, 6, 99, 10, 16, tensor)
    b = fused(k, xp, xd[half:], 96, fmt, 6, 99, 10 + 32 * n_blocks_per_row * fmt.block_size, 16, tensor)
    np.testing.assert_array_equal(np.concatenate([to_host(a[0]), to_host(b[0])]), to_host(whole[0]))
    np.testing.assert_array_equal(np.concatenate([to_host(a[1]), to_host(b[1])]), to_host(whole[1]))
    np.testing.assert_array_equal(to_host(whole[0]), fused(cpu, np, xc, 96, fmt, 6, 99, 10, 16, tensor)[0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", FORMATS)
def test_block_dequantize_and_tensor_amax_equal_the_cpu(name, dtype, rng):
    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    for x, length in inputs(rng)[:4]:
        xd, xc = device_input(True, x, dtype)
        tensor = tensor_of(xc, length, fmt)
        packed, scales = fused(cpu, np, xc, length, fmt, tensor=tensor)
        want = np.empty(x.size, np.float64)
        cpu.block_dequantize(packed, scales, length, fmt.block_size, fmt.element.bits, decode_values(fmt.element),
                             FP8_E4M3.spec, tensor, want)
        amax = np.empty(1)
        cpu.finite_block_amax(xc, length, fmt.block_size, amax)
        import cupy

        out = cupy.full(x.size + 1, 7, "uint16" if dtype == "bfloat16" else dtype)[1:]  # poisoned, unaligned
        k.block_dequantize(cupy.asarray(packed), cupy.asarray(scales), length, fmt.block_size, fmt.element.bits,
                           cupy.asarray(decode_values(fmt.element)), FP8_E4M3.spec, tensor, out)
        w = to_dtype(want, dtype)
        got = out.get()
        if dtype == "bfloat16":
            nan = (w & 0x7FFF) > 0x7F80
            np.testing.assert_array_equal((got & 0x7FFF) > 0x7F80, nan)
            np.testing.assert_array_equal(got[~nan], w[~nan])
        else:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(w))
            np.testing.assert_array_equal(got[~np.isnan(w)], w[~np.isnan(w)])
        got_amax = cupy.full(1, 5.0)
        k.finite_block_amax(xd, length, fmt.block_size, got_amax)
        assert float(got_amax[0]) == amax[0]


def same_decoded(got: np.ndarray, want: np.ndarray, dtype: str, err_msg: str = "") -> None:
    """GPU outputs ``got`` (bfloat16 as uint16 bits) equal the CPU's float64 ``want`` rounded once
    to ``dtype``: NaN by position, every other value bit for bit (+-0 included)."""
    w = to_dtype(want, dtype)
    if dtype == "bfloat16":
        nan = (w & 0x7FFF) > 0x7F80
        np.testing.assert_array_equal((got & 0x7FFF) > 0x7F80, nan, err_msg=err_msg)
        np.testing.assert_array_equal(got[~nan], w[~nan], err_msg=err_msg)
        return
    nan = np.isnan(w)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=err_msg)
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[w.dtype.itemsize]
    np.testing.assert_array_equal(got[~nan].view(view), w[~nan].view(view), err_msg=err_msg)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", FORMATS)
def test_block_dequantize_aligned_outputs_equal_the_cpu(name, dtype, rng):
    """16-byte aligned outputs: the vector loop of 1/2/4-bit codes (blockcodec.cu's table of
    products, DEQ_UNITS units per thread) and the uint4 stores of every path, on flat rows whose
    unit counts end inside a warp's row of units, padded rows (one element per unit store), and
    an output starting 16 bytes in; every float16 value (NaN / Inf blocks: the NaN scale,
    subnormals, +-0) and a tensor scale far from 1 for NVFP4."""
    import cupy

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    bs = fmt.block_size
    f16 = ALL_F16.astype(np.float32)
    wide = (rng.standard_normal(bs * 37) * np.logspace(-6, 6, bs * 37)).astype(np.float32)
    cases = [(f16, 4096), (f16[: bs * 129], bs), (wide, bs), (wide, bs * 37), (f16[:1600], 40), (f16[-999:], 999)]
    storage = "uint16" if dtype == "bfloat16" else dtype
    for x, length in cases:
        for tensor in ([tensor_of(x, length, fmt), float(np.float32(2.0 ** -30 / 3))] if fmt.tensor_scale else [0.0]):
            packed, scales = fused(cpu, np, x, length, fmt, tensor=tensor)
            want = np.empty(x.size, np.float64)
            cpu.block_dequantize(packed, scales, length, fmt.block_size, fmt.element.bits,
                                 decode_values(fmt.element), FP8_E4M3.spec, tensor, want)
            table = cupy.asarray(decode_values(fmt.element))
            for skip in (0, 16 // np.dtype(storage).itemsize):  # aligned, and 16 bytes in
                out = cupy.full(x.size + skip, 7, storage)[skip:]
                k.block_dequantize(cupy.asarray(packed), cupy.asarray(scales), length, bs, fmt.element.bits, table,
                                   FP8_E4M3.spec, tensor, out)
                same_decoded(out.get(), want, dtype, f"{name} {dtype} n={x.size} length={length} tensor={tensor}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_block_dequantize_of_a_large_array_equals_the_cpu(name, rng):
    """More units than one pass of the persistent grid (16 CTAs per SM x 256 threads x DEQ_UNITS
    units): the grid-stride step of the vector loop, float16 out."""
    import cupy

    import lowbit.cuda as k

    fmt = BLOCK_FORMATS[name]
    x = (rng.standard_normal((1 << 25) + 3 * fmt.block_size) * 50).astype(np.float32)
    tensor = tensor_of(x, fmt.block_size, fmt)
    packed, scales = fused(cpu, np, x, fmt.block_size, fmt, tensor=tensor)
    want = np.empty(x.size, np.float64)
    cpu.block_dequantize(packed, scales, fmt.block_size, fmt.block_size, 4, decode_values(fmt.element),
                         FP8_E4M3.spec, tensor, want)
    out = cupy.empty(x.size, cupy.float16)
    k.block_dequantize(cupy.asarray(packed), cupy.asarray(scales), fmt.block_size, fmt.block_size, 4,
                       cupy.asarray(decode_values(fmt.element)), FP8_E4M3.spec, tensor, out)
    same_decoded(out.get(), want, "float16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_finite_block_amax_of_large_and_unaligned_arrays_equals_the_cpu(dtype, rng):
    """finite_block_amax's vector loop over more units than one pass of the persistent grid (its
    grid-stride step, AMAX_UNITS units per thread), the largest finite block far in, blocks with
    NaN / Inf holding larger values (left out), and the unit loop of x one element off alignment
    and of padded rows."""
    import cupy

    import lowbit.cuda as k

    n = (1 << 25) + 3 * 256
    x = rng.standard_normal(n) * 10
    x[n - 1000] = -12345.5  # the largest finite block amax, near the end
    x[[5, 77777, n - 40]] = [np.nan, np.inf, -np.inf]
    x[[6, 77778, n - 41]] = 1e5  # in those blocks: larger, but not finite blocks
    xd, xc = device_input(True, x, dtype)
    for block in (16, 32, 256):
        for length, lo in ((n, 0), (256, 0), (n - 1, 1), (24, 1 + (n - 1) % 24)):
            xs, xcs = xd[lo:], np.ascontiguousarray(xc[lo:])
            want = np.empty(1)
            cpu.finite_block_amax(xcs, length, block, want)
            got = cupy.full(1, 5.0)
            k.finite_block_amax(xs, length, block, got)
            assert float(got[0]) == want[0], (dtype, block, length, lo)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "mxint8", "mxfp6"])
def test_front_round_trip_on_every_backend(backend, name, rng):
    x = rng.standard_normal((5, 70)).astype(np.float32) * 3
    x[1, 3] = np.nan
    xd = backend.asarray(x)
    q = lowbit.quantize(xd, scheme=name, axis=0, rounding="stochastic", seed=4)
    want = lowbit.quantize(x, scheme=name, axis=0, rounding="stochastic", seed=4)
    np.testing.assert_array_equal(backend.to_numpy(q.codes) if backend.on_gpu else q.codes, want.codes)
    got = backend.to_numpy(q.dequantize())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want.dequantize()))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want.dequantize()))


def test_bad_arguments_raise_the_same_errors(backend):
    k = kernels(backend)
    xp = np if not backend.on_gpu else __import__("cupy")
    x = xp.ones(64, xp.float32)
    spec = BLOCK_FORMATS["mxfp4"].element.spec
    ok = dict(packed=xp.empty(32, xp.uint8), scales=xp.empty(2, xp.uint8))

    def call(length=64, block=32, tensor=0.0, packed=None, scales=None):
        k.block_quantize(x, length, block, spec, NOT_FIXED, 2, FP8_E4M3.spec, tensor, 0, np.uint64(0), 0, 16,
                         ok["packed"] if packed is None else packed, ok["scales"] if scales is None else scales)

    call()
    with pytest.raises(ValueError, match="power of two"):
        call(block=24)
    with pytest.raises(ValueError, match="rows of length"):
        call(length=48)
    with pytest.raises(ValueError, match="blocks need"):
        call(scales=xp.empty(3, xp.uint8))
    with pytest.raises(ValueError, match="tensor_scale"):
        call(tensor=float("nan"))
    with pytest.raises(TypeError, match="uint8"):
        call(scales=xp.empty(2, xp.int8))
    with pytest.raises(ValueError, match="one float64"):
        k.finite_block_amax(x, 64, 32, xp.empty(2))
    with pytest.raises(ValueError, match="float64 table"):
        k.block_dequantize(ok["packed"], ok["scales"], 64, 32, 4, xp.ones(16, xp.float32), FP8_E4M3.spec, 0.0,
                           xp.empty(64, xp.float32))
