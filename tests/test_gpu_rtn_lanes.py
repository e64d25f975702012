"""The lane kernels (float32 fast paths of rtn quantize/decode on the GPU) agree with the CPU
kernels bit for bit, on data built to hit every precondition of their exactness proofs
(needs a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit.cpu as cpu
from lowbit.arrays import to_dtype

pytestmark = pytest.mark.gpu

GROUP_KINDS = ("normal", "cluster", "ties", "constant", "zeros", "tiny", "huge", "nan", "inf",
               "f16max", "past_f16", "mixed_subnormal")


def _groups(rng: np.random.Generator, n_groups: int, group: int) -> np.ndarray:
    """float32 data, one kind per group (all kinds appear, then random ones)."""
    kinds = list(GROUP_KINDS) + list(rng.choice(GROUP_KINDS, max(0, n_groups - len(GROUP_KINDS))))
    x = np.empty((n_groups, group), np.float32)
    for g, kind in enumerate(kinds[:n_groups]):
        z = rng.standard_normal(group)
        row = {
            "normal": z * 3,
            "cluster": 1000 + z * 1e-3,  # |offset| / scale ~ 1e6: the float32 quotient is not trusted
            "ties": np.round(z * 4) / 4,
            "constant": np.full(group, z[0]),
            "zeros": np.where(z > 0, 0.0, -0.0),
            "tiny": z * 1e-38,  # float32 subnormals: float64 scale rules
            "huge": z * 1e35,
            "nan": np.where(np.arange(group) == group // 2, np.nan, z),
            "inf": np.where(np.arange(group) == 3, -np.inf, z),
            "f16max": 65504 - np.abs(z) * 10,  # offsets at the top of float16 scales
            "past_f16": 65536 + np.abs(z) * 100,  # offset overflows float16 scales
            "mixed_subnormal": np.where(np.arange(group) % 5 == 0, z * 1e-40, z),
        }[kind]
        x[g] = row
    return x


def _device_input(cp, x32: np.ndarray, dtype: str):
    """The GPU kernel's input for dtype and the CPU kernel's (float32, exactly the same values)."""
    if dtype == "float16":
        with np.errstate(over="ignore"):  # values past float16's range become +-inf on purpose
            h = x32.astype(np.float16)
        return cp.asarray(h.reshape(-1)), h.astype(np.float32).reshape(-1)
    if dtype == "bfloat16":
        b = to_dtype(x32, "bfloat16")
        return cp.asarray(b.reshape(-1)), (b.astype(np.uint32) << 16).view(np.float32).reshape(-1)
    return cp.asarray(x32.reshape(-1)), x32.reshape(-1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("group", [32, 64, 128, 256, 512])
@pytest.mark.parametrize("symmetric", [False, True])
def test_lane_quantize_matches_cpu_kernel(cp, dtype, group, symmetric):
    """Codes, scales (NaN and +Inf markers included) and offsets, every bit width and scale
    format; poisoned outputs show any byte not written; 2 items per thread leave a partial
    last block."""
    import lowbit.cuda as cuda

    rng = np.random.default_rng(group * 7 + symmetric)
    n_groups = 3 * 512 // group * 2 + 29  # not a multiple of a block's items
    xg, xc = _device_input(cp, _groups(rng, n_groups, group), dtype)
    for bits in range(2 if symmetric else 1, 9):
        for fmt in (0, 1, 2):
            for mode, seed in ((0, 0), (6, 99)):  # nearest_even; stochastic (exact path)
                size = xc.size * bits // 8
                pc = np.full(size, 0x55, np.uint8)
                sc = np.full(n_groups, 7.0, np.float32)
                oc = np.full(n_groups, 7.0, np.float32)
                stc = np.zeros(1, np.int32)
                cpu.rtn_quantize_groups(xc, group, bits, symmetric, fmt, mode, np.uint64(seed), 9,
                                        pc, sc, oc, stc)
                pg = cp.full(size, 0xAA, np.uint8)
                sg = cp.full(n_groups, -7.0, np.float32)
                og = cp.full(n_groups, -7.0, np.float32)
                stg = cp.zeros(1, np.int32)
                cuda.rtn_quantize_groups(xg, group, bits, symmetric, fmt, mode, np.uint64(seed), 9,
                                         pg, sg, og, stg)
                where = f"bits={bits} fmt={fmt} mode={mode}"
                assert int(stg[0]) == int(stc[0]) and stc[0] & 1, where  # every batch has a NaN group
                np.testing.assert_array_equal(cp.asnumpy(pg), pc, err_msg=where)
                np.testing.assert_array_equal(cp.asnumpy(sg).view(np.uint32),
                                              sc.view(np.uint32), err_msg=where)
                np.testing.assert_array_equal(cp.asnumpy(og).view(np.uint32), oc.view(np.uint32),
                                              err_msg=where)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("group", [32, 128, 512])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("mask", [None, 0, 1])
def test_segment_kernel_many_tiles_per_warp(cp, dtype, group, blocks, mask):
    """The 16-bit segment kernel launched on a tiny grid: each warp loops over many tiles, so
    its cp.async stages rotate and refill (the wrapper's full-device grid gives small inputs
    one tile per warp); data with many exact ties exercise both exact paths for near-ties
    (mask: the built-in choice per dtype, the warp item by item (0), each lane its own near
    elements (1)), and a partial last tile the tail stores."""
    from lowbit.cuda._module import kernel, suffix
    from lowbit.cuda.rtn import SEG_THREADS, _lane_defines

    rng = np.random.default_rng(group + blocks)
    n_groups = 40 * 4096 // group + 3
    z = rng.standard_normal((n_groups, group)).astype(np.float32)
    x32 = np.where(rng.random((n_groups, 1)) < 0.5, np.round(z * 4) / 4, z * 3).astype(np.float32)
    xg, xc = _device_input(cp, x32, dtype)
    items = xc.size // 32
    for bits in (1, 2, 3, 4, 8):
        for symmetric in ((False, True) if bits > 1 else (False,)):
            size = xc.size * bits // 8
            pc = np.zeros(size, np.uint8)
            sc = np.zeros(n_groups, np.float32)
            oc = np.zeros(n_groups, np.float32)
            stc = np.zeros(1, np.int32)
            cpu.rtn_quantize_groups(xc, group, bits, symmetric, 0, 0, np.uint64(0), 9, pc, sc, oc, stc)
            pg = cp.full(size, 0xAA, np.uint8)
            sg = cp.full(n_groups, -7.0, np.float32)
            og = cp.full(n_groups, -7.0, np.float32)
            stg = cp.zeros(1, np.int32)
            defines = _lane_defines(bits) + (() if mask is None else
                                             (f"-DSEG_NEAR_MASK_F16={mask}", f"-DSEG_NEAR_MASK_BF16={mask}"))
            k = kernel("rtn_seg", f"lowbit_rtn_quantize_seg_{suffix(xg.dtype)}_b{bits}", defines)
            k((blocks,), (SEG_THREADS,), (xg, np.int64(items), np.int32(group // 32), np.int32(symmetric),
                                          np.int32(0), np.int32(0), np.uint64(0), np.int32(9), pg, sg, og, stg))
            where = f"bits={bits} symmetric={symmetric} mask={mask}"
            np.testing.assert_array_equal(cp.asnumpy(pg), pc, err_msg=where)
            np.testing.assert_array_equal(cp.asnumpy(sg).view(np.uint32), sc.view(np.uint32), err_msg=where)
            np.testing.assert_array_equal(cp.asnumpy(og).view(np.uint32), oc.view(np.uint32), err_msg=where)
            assert int(stg[0]) == int(stc[0]) == 0, where


def test_lane_quantize_markers_are_as_documented(cp):
    """NaN group -> scale NaN, offset 0, codes 0; float16 offset past 65504 -> scale +Inf."""
    import lowbit.cuda as cuda

    x = np.zeros((2, 64), np.float32)
    x[0, 5] = np.nan
    x[1] = 70000.0 + np.arange(64)
    pg = cp.full(2 * 64 * 4 // 8, 0xAA, np.uint8)
    sg = cp.empty(2, np.float32)
    og = cp.empty(2, np.float32)
    st = cp.zeros(1, np.int32)
    cuda.rtn_quantize_groups(cp.asarray(x.reshape(-1)), 64, 4, False, 1, 0, np.uint64(0), 16, pg, sg, og, st)
    assert int(st[0]) == 3
    s = cp.asnumpy(sg)
    assert np.isnan(s[0]) and s[1] == np.inf
    assert cp.asnumpy(og).tolist() == [0.0, 0.0]
    assert not cp.asnumpy(pg).any()


def _hostile_fields(rng: np.random.Generator, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Scales and offsets from quantization-like to hostile (as a loaded file may hold)."""
    s = np.abs(rng.standard_normal(n_groups)).astype(np.float32) * 0.1 + 1e-3
    o = (rng.standard_normal(n_groups) * 2).astype(np.float32)
    specials_s = [1e-40, 3e38, -0.5, 0.0, np.nan, np.inf, 1e-30, 1e30, 2.0**-100, 2.0**100]
    specials_o = [1e10, -1e10, 0.0, -0.0, np.nan, -np.inf, 1e-41, 5e37, 1e6, 2.0**-100]
    s[: len(specials_s)] = specials_s
    o[len(specials_s): len(specials_s) + len(specials_o)] = specials_o
    return s, o


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("group", [32, 128, 512])
@pytest.mark.parametrize("symmetric", [False, True])
def test_lane_decode_matches_cpu_kernel(cp, dtype, group, symmetric):
    import lowbit.cuda as cuda

    rng = np.random.default_rng(group + 3 * symmetric)
    n_groups = 4096 // group * 3 + 11
    n = n_groups * group
    s, o = _hostile_fields(rng, n_groups)
    for bits in range(1, 9):
        codes = rng.integers(0, 2**bits, n, dtype=np.uint8)
        packed = np.zeros(n * bits // 8, np.uint8)
        cpu.pack_codes(codes, bits, packed)
        # the CPU decoder's output for this dtype (decode_output_dtype): float64 for 16-bit
        # results, which to_dtype rounds once, as the GPU must
        ref = np.full(n, 7.0, np.float32 if dtype == "float32" else np.float64)
        cpu.rtn_decode(packed, group, s, o, bits, symmetric, ref)
        out_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
        out = cp.full(n, 0x7777 if dtype != "float32" else 7, out_dtype)
        cuda.rtn_decode(cp.asarray(packed), group, cp.asarray(s), cp.asarray(o), bits, symmetric, out)
        with np.errstate(over="ignore"):  # hostile fields overflow float16 on purpose
            expect = to_dtype(ref, dtype)  # the CPU path's one rounding to storage
        got = cp.asnumpy(out)
        where = f"bits={bits}"
        if dtype == "bfloat16":
            # bits equal, except that a NaN's sign and payload are outside the bit-identical
            # claim (docs/backends.md): the CPU's float64 NaN keeps numpy's sign bit
            nan_got, nan_exp = (got & 0x7FFF) > 0x7F80, (expect & 0x7FFF) > 0x7F80
            np.testing.assert_array_equal(nan_got, nan_exp, err_msg=where)
            np.testing.assert_array_equal(got[~nan_exp], expect[~nan_exp], err_msg=where)
        else:
            np.testing.assert_array_equal(got, expect, err_msg=where)  # NaN == NaN here
            same_sign = np.signbit(got) == np.signbit(expect)
            assert same_sign[~np.isnan(expect)].all(), where


def test_misaligned_input_takes_the_general_kernel(cp):
    """A view 2 bytes into its buffer cannot use 16-byte loads; results are the same."""
    import lowbit

    base = cp.asarray(np.random.default_rng(3).standard_normal(1 + 64 * 40).astype(np.float16))
    view = base[1:]
    assert view.data.ptr % 16 != 0
    a = lowbit.quantize(view, bits=3, scheme="rtn", group_size=64)
    b = lowbit.quantize(cp.asnumpy(view), bits=3, scheme="rtn", group_size=64)
    np.testing.assert_array_equal(cp.asnumpy(a.codes), b.codes)
    np.testing.assert_array_equal(cp.asnumpy(a.dequantize()), b.dequantize())
