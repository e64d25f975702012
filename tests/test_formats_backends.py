"""Formats and rounding on every backend (numpy, CuPy, torch CUDA), bit-identical to the CPU.

Each body runs once per ``backend`` (tests/conftest.py; the GPU ones marked ``gpu``) and
compares with the CPU kernels' result on the same input: codes, scales, packed bytes and
decoded values must be identical (NaN compared by position only: payloads and signs of NaN
results are outside the bit-identical claim of docs/backends.md).  On numpy the comparison is
the CPU with itself (determinism); the GPU runs are the point.  Kernel-level tests (every
float16 / bfloat16 pattern, every format, mode, overflow policy and input dtype; poisoned
outputs; argument checks) call ``lowbit.cuda`` directly and are GPU-only.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu
from lowbit import formats as F
from lowbit.arrays import to_dtype
from lowbit.rounding.modes import ELEMENTWISE, mode_code

MINIFLOATS = list(F.MINIFLOATS.values()) + list(F.IEEE_FLOATS.values())
ELEMENT_SCHEMES = list(F.MINIFLOATS)
BLOCK_SCHEMES = sorted(F.BLOCK_FORMATS)
OVERFLOW = {name: i for i, name in enumerate(F.OVERFLOW_POLICIES)}
SEEDS = (0, 12345, 2**64 - 1)


def bits16(a) -> np.ndarray:
    """numpy copy or view of a host result; a torch tensor's bfloat16 as its uint16 bits."""
    if type(a).__module__.startswith("torch"):
        import torch

        return a.view(torch.uint16).numpy().view(np.uint16) if a.dtype == torch.bfloat16 else a.numpy()
    return np.asarray(a)


def same(got: np.ndarray, want: np.ndarray, bfloat16: bool = False) -> None:
    """Identical arrays; NaN compared by position (float arrays, and uint16 bfloat16 bits with
    ``bfloat16``) -- bit patterns otherwise."""
    got, want = bits16(got), bits16(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    if bfloat16:
        nan = (want & 0x7FFF) > 0x7F80
        np.testing.assert_array_equal((got & 0x7FFF) > 0x7F80, nan)
        np.testing.assert_array_equal(got[~nan], want[~nan])
    elif got.dtype.kind == "f":
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
        np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))
    else:
        np.testing.assert_array_equal(got, want)


def host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    import cupy

    return cupy.asnumpy(a)


def all_float16() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16)


def front_inputs(backend, x: np.ndarray, dtype: str):
    """(CPU input, backend input) of float64 values ``x`` as ``dtype``.  bfloat16 arrays are
    torch tensors (numpy and CuPy have no bfloat16): a CPU tensor for the reference, a CUDA
    tensor on torch CUDA; the numpy and CuPy backends skip them."""
    if dtype != "bfloat16":
        xc = x.astype(dtype)
        return xc, backend.asarray(xc)
    if backend.name != "torch_cuda":
        pytest.skip(f"{backend.name} has no bfloat16 dtype (torch only)")
    import torch

    bits = to_dtype(x.astype(np.float64), "bfloat16")
    return torch.from_numpy(bits.copy()).view(torch.bfloat16), backend.asarray(bits)


def sweep_float32(rng: np.random.Generator) -> np.ndarray:
    """Random float32 bit patterns (every class: subnormals, NaN, Inf), every float16 value,
    and the exact midpoints between float16 neighbours, +-0, +-max."""
    raw = rng.integers(0, 2**32, 40000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    f16 = all_float16().astype(np.float32)
    f16 = f16[np.isfinite(f16)]
    srt = np.unique(f16)
    mids = ((srt[1:].astype(np.float64) + srt[:-1]) / 2).astype(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45],
                       np.float32)
    return np.concatenate([raw, f16, mids, special])


# -- element schemes through the front ----------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("scheme", ELEMENT_SCHEMES)
def test_element_schemes_match_the_cpu(backend, scheme, dtype, rng):
    x = (rng.standard_normal((6, 96)) * 40).astype(np.float32)
    x[0, :8] = [0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4, 0.5, -0.5]
    xs, xb = front_inputs(backend, x, dtype)
    bf = dtype == "bfloat16"
    for kw in ({}, {"scale": "absmax"}, {"scale": "absmax", "axis": 0}, {"scale": "absmax", "group_size": 32},
               {"scale": "absmax", "axis": None}, {"rounding": "stochastic", "seed": 5, "rbits": 9},
               {"rounding": "up"}, {"rounding": "odd", "scale": "absmax", "group_size": 16}):
        qc = lowbit.quantize(xs, scheme=scheme, **kw)
        qb = lowbit.quantize(xb, scheme=scheme, **kw)
        same(host(qb.codes), qc.codes)
        assert sorted(qb.fields) == sorted(qc.fields)
        for k in qc.fields:
            same(host(qb.fields[k]), qc.fields[k])
        y = qb.dequantize()
        assert backend.is_native(y)
        same(backend.to_numpy(y), qc.dequantize(), bf)


@pytest.mark.parametrize("scheme", BLOCK_SCHEMES)
@pytest.mark.parametrize("mode", ["nearest_even", "stochastic", "toward_zero"])
def test_block_schemes_match_the_cpu(backend, scheme, mode, rng):
    x = (rng.standard_normal((5, 100)) * np.logspace(-3, 3, 100)).astype(np.float32)
    x[1, :32] = 0.0
    x[2, 3] = np.nan  # a NaN block
    x[3, 40] = np.inf
    for axis in (-1, 0):
        kw = {"axis": axis, "rounding": mode, "seed": 77 if mode == "stochastic" else None}
        qc = lowbit.quantize(x, scheme=scheme, **kw)
        qb = lowbit.quantize(backend.asarray(x), scheme=scheme, **kw)
        same(host(qb.codes), qc.codes)
        for k in qc.fields:
            same(host(qb.fields[k]), qc.fields[k])
        same(backend.to_numpy(qb.dequantize()), qc.dequantize())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_block_schemes_take_every_input_dtype(backend, dtype, rng):
    xc, xb = front_inputs(backend, rng.standard_normal((4, 64)) * 3, dtype)
    for scheme in ("mxfp4", "mxfp8", "nvfp4", "mxint8"):
        qc = lowbit.quantize(xc, scheme=scheme)
        qb = lowbit.quantize(xb, scheme=scheme)
        same(host(qb.codes), qc.codes)
        same(backend.to_numpy(qb.dequantize()), qc.dequantize(), dtype == "bfloat16")


@pytest.mark.parametrize("signed", [True, False])
def test_fixed_point_matches_the_cpu(backend, signed, rng):
    x = (rng.standard_normal(3000) * 9).astype(np.float32)
    for bits, frac_bits in ((8, 0), (5, 2), (3, -1), (1, 0), (7, 6)):
        for overflow in ("saturate", "wrap"):
            for mode in ELEMENTWISE:
                kw = dict(bits=bits, frac_bits=frac_bits, signed=signed, overflow=overflow, rounding=mode,
                          seed=3, rbits=12)
                qc = lowbit.quantize(x, scheme="fixed", **kw)
                qb = lowbit.quantize(backend.asarray(x), scheme="fixed", **kw)
                same(host(qb.codes), qc.codes)
                same(backend.to_numpy(qb.dequantize()), qc.dequantize())


def test_fixed_point_diffusion_matches_the_cpu(backend, rng):
    x = (rng.standard_normal((7, 300)) * 4).astype(np.float32)
    for order in (1, 2):
        kw = dict(bits=4, frac_bits=1, rounding="diffuse", order=order, axis=0)
        qc = lowbit.quantize(x, scheme="fixed", **kw)
        qb = lowbit.quantize(backend.asarray(x), scheme="fixed", **kw)
        same(host(qb.codes), qc.codes)


def test_overflow_error_and_nan_raise_on_every_backend(backend):
    x = backend.asarray(np.array([1.0, 1e6, 2.0], np.float32))
    with pytest.raises(ValueError, match="overflow"):
        lowbit.quantize(x, scheme="fp8_e4m3", overflow="error")
    with pytest.raises(ValueError, match="NaN/Inf"):
        lowbit.quantize(backend.asarray(np.array([np.nan, 1.0], np.float32)), scheme="fp4_e2m1")


def test_chunked_stochastic_encode_equals_one_call(backend, rng):
    x = (rng.standard_normal(5000) * 10).astype(np.float32)
    kw = dict(scheme="fp8_e4m3", rounding="stochastic", seed=9)
    whole = host(lowbit.quantize(backend.asarray(x), **kw).codes)
    for start in (1, 1234, 4999):
        part = host(lowbit.quantize(backend.asarray(x[start:]), first_index=start, **kw).codes)
        same(part, whole[start:])
    same(whole, lowbit.quantize(x, **kw).codes)


def test_saved_files_hold_the_same_bytes(backend, tmp_path, rng):
    x = (rng.standard_normal((4, 64)) * 2).astype(np.float32)
    for scheme, kw in [("nvfp4", {}), ("mxfp4", {}), ("fp8_e4m3", {"scale": "absmax", "group_size": 16}),
                       ("fixed", {"bits": 5, "frac_bits": 2})]:
        lowbit.quantize(x, scheme=scheme, **kw).save(tmp_path / "cpu.npz")
        lowbit.quantize(backend.asarray(x), scheme=scheme, **kw).save(tmp_path / "dev.npz")
        members = []
        for name in ("cpu.npz", "dev.npz"):
            with zipfile.ZipFile(tmp_path / name) as z:
                members.append({m: z.read(m) for m in z.namelist()})
        assert members[0] == members[1], scheme
        back = lowbit.load(tmp_path / "dev.npz")
        same(back.dequantize(), lowbit.load(tmp_path / "cpu.npz").dequantize())


# -- lowbit.round ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("mode", ELEMENTWISE)
def test_round_matches_the_cpu(backend, mode, dtype, rng):
    v = np.concatenate([rng.standard_normal(4000) * 30, np.arange(-8, 8.5, 0.5), [0.0, -0.0, -0.25, 0.25]])
    xc, xb = front_inputs(backend, v, dtype)
    for seed in (SEEDS if mode == "stochastic" else (None,)):
        for clip in (None, (-3, 7)):
            kw = dict(mode=mode, seed=seed, rbits=7, clip=clip, first_index=12345)
            want = lowbit.round(xc, **kw)
            got = lowbit.round(xb, **kw)
            assert backend.is_native(got)
            same(backend.to_numpy(got), want, dtype == "bfloat16")


def test_round_nan_inf_and_signed_zero(backend):
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -0.4, 0.4], np.float32)
    for mode in ELEMENTWISE:
        got = backend.to_numpy(lowbit.round(backend.asarray(x), mode=mode, seed=1))
        same(got, lowbit.round(x, mode=mode, seed=1))


def test_round_chunked_with_offset_equals_one_call(backend, rng):
    x = rng.standard_normal(7000).astype(np.float32) * 5
    whole = backend.to_numpy(lowbit.round(backend.asarray(x), mode="stochastic", seed=42))
    for start in (0, 1, 2500):
        part = backend.to_numpy(lowbit.round(backend.asarray(x[start:]), mode="stochastic", seed=42,
                                             first_index=start))
        same(part, whole[start:])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_diffusion_along_an_axis_matches_the_cpu(backend, dtype, rng):
    # (70, 256): 16-bit rows of whole 128-column tiles take the wide kernel
    for shape in ((37, 131), (70, 256)):
        xc, xb = front_inputs(backend, rng.standard_normal(shape) * 3, dtype)
        for order in (1, 2):
            for axis in (-1, 0):
                for clip in (None, (0, 3)):
                    kw = dict(mode="diffuse", order=order, axis=axis, clip=clip)
                    same(backend.to_numpy(lowbit.round(xb, **kw)), lowbit.round(xc, **kw), dtype == "bfloat16")


@pytest.mark.parametrize("kernel", ["floyd_steinberg", "jarvis_judice_ninke", "stucki", "atkinson"])
@pytest.mark.parametrize("scan", ["raster", "serpentine"])
def test_2d_diffusion_matches_the_cpu(backend, kernel, scan, rng):
    x = (rng.random((3, 23, 37)) * 4).astype(np.float32)
    for clip in (None, (0, 3)):
        kw = dict(mode="diffuse", kernel=kernel, scan=scan, clip=clip)
        same(backend.to_numpy(lowbit.round(backend.asarray(x), **kw)), np.asarray(lowbit.round(x, **kw)))
    x16 = x.astype(np.float16)
    kw = dict(mode="diffuse", kernel=kernel, scan=scan, axis=(0, 2))
    same(backend.to_numpy(lowbit.round(backend.asarray(x16), **kw)), np.asarray(lowbit.round(x16, **kw)))


# -- kernels directly: exhaustive against the CPU twins (GPU only) ----------------------------------

def _gpu_input(x64_or_bits: np.ndarray, dtype: str):
    """(device array of ``dtype``, the CPU kernel's input: float32 / float64 with the same values)."""
    import cupy

    if dtype == "bfloat16":
        bits = x64_or_bits.astype(np.uint16)
        return cupy.asarray(bits), (bits.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs become quiet ones (signs kept)
        a = x64_or_bits.astype(dtype)
        return cupy.asarray(a), a.astype(np.float32) if dtype == "float16" else a


def _inputs(dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "float16":
        return all_float16()
    if dtype == "bfloat16":
        return np.arange(1 << 16, dtype=np.uint16)
    x = sweep_float32(rng)
    if dtype == "float64":  # one float64 ulp either side of float32 values: double rounding traps
        with np.errstate(invalid="ignore"):  # signalling NaNs become quiet ones (signs kept)
            x = x.astype(np.float64)
        x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    return x


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("fmt", MINIFLOATS, ids=lambda f: f.name)
def test_minifloat_encode_is_bit_identical(fmt, dtype, rng):
    import cupy

    import lowbit.cuda as cuda
    from lowbit.codec import code_dtype

    xg, xc = _gpu_input(_inputs(dtype, rng), dtype)
    n = xc.size
    ones_c, ones_g = np.ones(1), cupy.ones(1)
    sc = np.concatenate([2.0 ** rng.integers(-20, 20, n // 32 + 1), [0.0, np.inf, np.nan, 3.0, 0.1]])
    rng.shuffle(sc)
    policies = ["saturate", "error"] + (["nonfinite"] if fmt.has_nan else [])
    for mode in ELEMENTWISE:
        for pol in policies:
            for seed, offset in ((0, 0), (SEEDS[1], 10**12 + 3), (SEEDS[2], 7)) if mode == "stochastic" else ((0, 0),):
                # one block (the integer kernels: a power-of-two scale, else their float64 loop), blocks
                for block, scale_c in ((n, ones_c), (n + 5, np.array([0.125])), (n, np.array([3.0])),
                                       (n, np.array([0.0])), (n, np.array([2.0**600])),
                                       (32, sc[: -(-n // 32)]), (7, np.resize(sc, -(-n // 7)))):
                    codes_c = np.empty(n, code_dtype(fmt))
                    stat_c = np.empty(n, np.uint8)
                    args = (fmt.spec, OVERFLOW[pol], mode_code(mode), np.uint64(seed), offset, 11)
                    cpu.minifloat_encode(xc, block, scale_c, *args, codes_c, stat_c)
                    codes_g = cupy.full(n, 0xAB, code_dtype(fmt))  # poisoned: every element is written
                    stat_g = cupy.full(n, 0xCD, cupy.uint8)
                    scale_g = ones_g if scale_c is ones_c else cupy.asarray(scale_c)
                    cuda.minifloat_encode(xg, block, scale_g, *args, codes_g, stat_g)
                    same(host(codes_g), codes_c)
                    same(host(stat_g), stat_c)
    # unaligned input and codes (the integer kernels' element loop), every mode
    for mode in ELEMENTWISE:
        args = (fmt.spec, OVERFLOW["saturate"], mode_code(mode), np.uint64(SEEDS[1]), 3, 11)
        codes_c = np.empty(n - 1, code_dtype(fmt))
        cpu.minifloat_encode(np.ascontiguousarray(xc[1:]), n - 1, ones_c, *args, codes_c, np.empty(0, np.uint8))
        codes_g = cupy.full(n, 0xAB, code_dtype(fmt))
        cuda.minifloat_encode(xg[1:], n - 1, ones_g, *args, codes_g[1:], cupy.empty(0, cupy.uint8))
        same(host(codes_g[1:]), codes_c)
    # no status array: not written
    codes_g = cupy.empty(n, code_dtype(fmt))
    cuda.minifloat_encode(xg, n, ones_g, fmt.spec, 0, 0, np.uint64(0), 0, 16, codes_g, cupy.empty(0, cupy.uint8))
    codes_c = np.empty(n, code_dtype(fmt))
    cpu.minifloat_encode(xc, n, ones_c, fmt.spec, 0, 0, np.uint64(0), 0, 16, codes_c, np.empty(0, np.uint8))
    same(host(codes_g), codes_c)


#: rbits for the stochastic kernel sweeps: both ends, and either side of the float16 fast path's
#: switches (docs/rounding.md, "The GPU's fast path": ties possible below the discarded bit
#: count, 15 / 16 for fp8 e4m3; 31 / 32, the last with ties left to the general path)
SR_RBITS = (1, 2, 7, 8, 15, 16, 17, 21, 22, 31, 32)
#: (seed, first_index) pairs of the stochastic sweeps
SR_STREAMS = ((0, 0), (SEEDS[1], 10**12 + 3), (SEEDS[2], 7))


def sr_shifts(fmt) -> list[int]:
    """Block scale exponents 2^s for a direct stochastic conversion from float16: either side of
    the fast path's range (-14 - emin <= s <= 8 + man_bits - emin: every float16 subnormal below the
    format's normal range, every fraction exact in 32 bits), 0, and far outside it."""
    lo, hi = -14 - fmt.emin, 8 + fmt.man_bits - fmt.emin
    return sorted({lo - 1, lo, 0, 1, hi - 1, hi, hi + 1, -30, 40})


def _assert_sr_encode_equals_the_cpu(xg, xc: np.ndarray, scale: np.ndarray, args: tuple, msg: str,
                                     without_status: bool = False) -> None:
    """minifloat_encode of xg on the GPU (poisoned codes and status) == the CPU's of xc, bit for
    bit; `without_status`: also the GPU call without a status array (the benchmark's call)."""
    import cupy

    import lowbit.cuda as cuda

    n = xc.size
    codes_c, stat_c = np.empty(n, np.uint8), np.empty(n, np.uint8)
    cpu.minifloat_encode(xc, n, scale, *args, codes_c, stat_c)
    codes_g = cupy.full(n, 0xAB, cupy.uint8)
    stat_g = cupy.full(n, 0xCD, cupy.uint8)
    cuda.minifloat_encode(xg, n, cupy.asarray(scale), *args, codes_g, stat_g)
    np.testing.assert_array_equal(host(codes_g), codes_c, err_msg=msg)
    np.testing.assert_array_equal(host(stat_g), stat_c, err_msg=msg)
    if without_status:
        codes_g.fill(0xAB)
        cuda.minifloat_encode(xg, n, cupy.asarray(scale), *args, codes_g, cupy.empty(0, cupy.uint8))
        np.testing.assert_array_equal(host(codes_g), codes_c, err_msg=msg + " (no status)")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [f for f in MINIFLOATS if f.bits <= 8], ids=lambda f: f.name)
def test_stochastic_float16_equals_the_cpu_for_every_rbits(fmt, rng):
    """Stochastic rounding of every float16 pattern into each format of 8-bit codes (the integer
    kernels compiled for it), bit for bit the CPU's codes and status: sorted, and shuffled so
    that each unit of 8 mixes binades, signs, zeros, subnormals, Inf and NaN (units without Inf /
    NaN take the GPU's fast path, the others the general one); every rbits of SR_RBITS, three
    seeds / offsets, power-of-two scales either side of the fast path's limits, every overflow
    policy, with and without a status array."""
    bits = np.concatenate([np.arange(1 << 16, dtype=np.uint16), rng.permutation(1 << 16).astype(np.uint16)])
    xg, xc = _gpu_input(bits.view(np.float16), "float16")
    policies = ["saturate", "error"] + (["nonfinite"] if fmt.has_nan else [])
    for shift in sr_shifts(fmt):
        scale = np.array([2.0 ** shift])
        for pol in policies if shift in (0, 8 + fmt.man_bits - fmt.emin) else ["saturate"]:
            for rbits in SR_RBITS:
                for seed, offset in SR_STREAMS:
                    args = (fmt.spec, OVERFLOW[pol], mode_code("stochastic"), np.uint64(seed), offset, rbits)
                    _assert_sr_encode_equals_the_cpu(xg, xc, scale, args, f"{fmt.name} shift {shift} {pol} "
                                                     f"rbits {rbits} seed {seed}", without_status=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("fmt", [f for f in MINIFLOATS if f.bits <= 8], ids=lambda f: f.name)
def test_stochastic_bfloat16_and_float32_equal_the_cpu_for_every_rbits(fmt, dtype, rng):
    """The same for bfloat16 (every pattern) and float32 (random patterns of every class, every
    float16 value and their midpoints) inputs, which take the general integer path."""
    xg, xc = _gpu_input(_inputs(dtype, rng), dtype)
    for shift in (0, 3, -5):
        scale = np.array([2.0 ** shift])
        for rbits in SR_RBITS:
            for seed, offset in SR_STREAMS[1:]:
                args = (fmt.spec, OVERFLOW["saturate"], mode_code("stochastic"), np.uint64(seed), offset, rbits)
                _assert_sr_encode_equals_the_cpu(xg, xc, scale, args,
                                                 f"{fmt.name} {dtype} shift {shift} rbits {rbits} seed {seed}")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", MINIFLOATS, ids=lambda f: f.name)
def test_every_code_decodes_identically(fmt, rng):
    import cupy

    import lowbit.cuda as cuda
    from lowbit.codec import code_dtype

    if fmt.bits <= 16:
        codes = np.arange(1 << fmt.bits, dtype=code_dtype(fmt))
    else:
        codes = rng.integers(0, 2**32, 300000, dtype=np.uint64).astype(np.uint32)
    want = np.empty(codes.size, np.float64)
    cpu.minifloat_decode(codes, fmt.spec, want)
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        out = cupy.full(codes.size, 0x7B, np.uint16 if dtype == "bfloat16" else dtype)
        cuda.minifloat_decode(cupy.asarray(codes), fmt.spec, out)
        same(host(out), to_dtype(want, dtype), dtype == "bfloat16")
    if fmt.bits <= 8:  # decode_table of the packed codes, direct and with block scales
        table = np.asarray(fmt.decode_table(), np.float64)
        packed = np.empty((codes.size * fmt.bits + 7) // 8, np.uint8)
        cpu.pack_codes(codes.astype(np.uint8), fmt.bits, packed)
        for block, scale in ((codes.size, np.ones(1)), (4, 2.0 ** rng.integers(-5, 5, -(-codes.size // 4)))):
            want = np.empty(codes.size, np.float64)
            cpu.decode_table(packed, fmt.bits, table, block, scale, want)
            for dtype in ("float64", "float32", "float16", "bfloat16"):
                out = cupy.full(codes.size, 0x7B, np.uint16 if dtype == "bfloat16" else dtype)
                cuda.decode_table(cupy.asarray(packed), fmt.bits, cupy.asarray(table), block, cupy.asarray(scale), out)
                same(host(out), to_dtype(want, dtype), dtype == "bfloat16")


@pytest.mark.gpu
@pytest.mark.parametrize("bits", range(1, 9))
def test_decode_table_any_table_and_length(bits, rng):
    import cupy

    import lowbit.cuda as cuda

    table = rng.standard_normal(1 << bits) * 100
    table[0], table[-1] = -0.0, np.nan
    for n in (1, 7, 8, 9, 1000, 4099):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = np.empty((n * bits + 7) // 8, np.uint8)
        cpu.pack_codes(codes, bits, packed)
        scale = rng.standard_normal(-(-n // 3))
        want = np.empty(n, np.float64)
        cpu.decode_table(packed, bits, table, 3, scale, want)
        for dtype in ("float64", "float32", "float16"):
            out = cupy.full(n, 0x7B, dtype)
            cuda.decode_table(cupy.asarray(packed), bits, cupy.asarray(table), 3, cupy.asarray(scale), out)
            same(host(out), to_dtype(want, dtype))
        # unaligned output (a view one element in)
        out = cupy.full(n + 1, 0x7B, np.float32)
        cuda.decode_table(cupy.asarray(packed), bits, cupy.asarray(table), 3, cupy.asarray(scale), out[1:])
        same(host(out[1:]), want.astype(np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_decode_table_vector_loop_and_tails(bits, dtype, rng):
    """codec.cu's decode_table paths: a direct decoding (one block, scale 1) of 1/2/4/8-bit codes
    into aligned out (the vector loop, DT_UNITS units per thread) with lengths that end inside a
    warp's units and in a partial unit (the unit loop after it); unaligned out and packed bytes
    one off (the unit loop); one scale for the whole array (not 1), per unit (blocks of 8, 16)
    and spanning units (blocks of 3)."""
    import cupy

    import lowbit.cuda as cuda

    table = rng.standard_normal(1 << bits) * 1e3
    table[0], table[-1] = -0.0, np.nan
    if bits > 2:
        table[1], table[2] = 1e-7, 1e6  # a float16 subnormal, beyond float16's range
    storage = np.uint16 if dtype == "bfloat16" else dtype
    for n in (1, 8, 9, 255, 1000, 4099, 32768 + 24):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = np.empty((n * bits + 7) // 8 + 1, np.uint8)
        cpu.pack_codes(codes, bits, packed[1:])
        for block, scale in ((n, np.ones(1)), (n, np.array([0.75])), (8, None), (16, None), (3, None)):
            if scale is None:
                scale = 2.0 ** rng.integers(-20, 20, -(-n // block)) * rng.choice([1.0, 1.5, -3.0], -(-n // block))
            want = np.empty(n, np.float64)
            cpu.decode_table(packed[1:], bits, table, block, scale, want)
            g_packed = cupy.asarray(packed)
            for p0 in (0, 1):  # packed at the allocation's start (after a copy), one byte in
                src = cupy.ascontiguousarray(g_packed[1:]) if p0 == 0 else g_packed[1:]
                for skip in (0, 1):
                    out = cupy.full(n + skip, 0x7B, storage)[skip:]
                    cuda.decode_table(src, bits, cupy.asarray(table), block, cupy.asarray(scale), out)
                    same(host(out), to_dtype(want, dtype), dtype == "bfloat16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fixed_encode_is_bit_identical(dtype, rng):
    import cupy

    import lowbit.cuda as cuda

    xg, xc = _gpu_input(_inputs(dtype, rng), dtype)
    n = xc.size
    sc = np.concatenate([rng.standard_normal(n // 16 + 1), [0.0, np.inf, np.nan]])
    for bits, frac, qmin, qmax in ((8, 0, -128, 127), (8, 3, 0, 255), (4, -2, -8, 7), (1, 0, 0, 1), (8, 0, -127, 127)):
        for pol in ("saturate", "wrap", "error"):
            for mode in ELEMENTWISE:
                for block, scale in ((n, np.ones(1)), (16, sc[: -(-n // 16)])):
                    args = (bits, frac, qmin, qmax, OVERFLOW[pol], mode_code(mode), np.uint64(99), 5, 16)
                    codes_c, stat_c = np.empty(n, np.uint8), np.empty(n, np.uint8)
                    cpu.fixed_encode(xc, block, scale, *args, codes_c, stat_c)
                    codes_g, stat_g = cupy.full(n, 0xAB, cupy.uint8), cupy.full(n, 0xCD, cupy.uint8)
                    cuda.fixed_encode(xg, block, cupy.asarray(scale), *args, codes_g, stat_g)
                    same(host(codes_g), codes_c)
                    same(host(stat_g), stat_c)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_block_absmax_is_bit_identical(dtype, rng):
    import cupy

    import lowbit.cuda as cuda

    xg, xc = _gpu_input(rng.standard_normal(100000) * 1e3 if dtype != "bfloat16"
                        else rng.integers(0, 1 << 16, 100000), dtype)
    n = xc.size
    for block in (1, 7, 16, 32, 255, 256, 257, 1000, 8192, 33333, n):
        n_blocks = n // block
        want = np.empty(n_blocks)
        cpu.block_absmax(xc, block, want)
        got = cupy.full(n_blocks, -1.0)
        cuda.block_absmax(xg, block, got)
        same(host(got), want)


@pytest.mark.gpu
def test_block_absmax_flags_nan_and_inf_and_keeps_zero_blocks():
    import cupy

    import lowbit.cuda as cuda

    x = np.zeros(4 * 300, np.float32)
    x[5], x[305], x[700] = np.nan, -np.inf, -0.0
    x[1000] = -7.0
    for block in (300, 1200):
        want = np.empty(x.size // block)
        cpu.block_absmax(x, block, want)
        got = cupy.empty(x.size // block)
        cuda.block_absmax(cupy.asarray(x), block, got)
        same(host(got), want)


@pytest.mark.gpu
def test_kernels_refuse_host_strided_and_mistyped_arrays():
    import cupy

    import lowbit.cuda as cuda

    x = cupy.ones(64, cupy.float32)
    codes, status = cupy.empty(64, cupy.uint8), cupy.empty(0, cupy.uint8)
    spec = F.FP8_E4M3.spec
    with pytest.raises(TypeError, match="x must be a cupy.ndarray"):
        cuda.minifloat_encode(np.ones(64, np.float32), 64, cupy.ones(1), spec, 0, 0, np.uint64(0), 0, 16, codes, status)
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.minifloat_encode(cupy.ones(128, cupy.float32)[::2], 64, cupy.ones(1), spec, 0, 0, np.uint64(0), 0, 16,
                              codes, status)
    with pytest.raises(TypeError, match="scale must be float64"):
        cuda.minifloat_encode(x, 64, cupy.ones(1, cupy.float32), spec, 0, 0, np.uint64(0), 0, 16, codes, status)
    with pytest.raises(TypeError, match="codes must be"):
        cuda.minifloat_encode(x, 64, cupy.ones(1), spec, 0, 0, np.uint64(0), 0, 16, cupy.empty(64, cupy.int8), status)
    with pytest.raises(TypeError, match="no CUDA kernel for dtype"):
        cuda.round_elementwise(cupy.ones(4, cupy.int32), 0, np.uint64(0), 0, 16, -np.inf, np.inf,
                               cupy.ones(4, cupy.int32))
    with pytest.raises(ValueError, match="bits"):
        cuda.decode_table(cupy.empty(2, cupy.uint8), 9, cupy.ones(512), 4, cupy.ones(1), cupy.empty(4))
