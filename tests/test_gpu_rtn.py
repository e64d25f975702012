"""CUDA rtn and packing kernels agree with the CPU bit for bit (needs a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu

pytestmark = pytest.mark.gpu

CASES = [
    # shape, axis, group_size, bits, symmetric, scale_dtype
    ((1000,), None, None, 4, False, "float32"),
    ((37, 129), -1, None, 3, False, "float16"),
    ((37, 128), -1, 32, 2, False, "float32"),
    ((37, 128), -1, 16, 4, True, "bfloat16"),
    ((5, 96, 7), 1, 24, 5, False, "float16"),
    ((5, 96, 7), 0, None, 8, True, "float32"),
    ((3, 7, 64), -1, 8, 1, True, "float32"),
    ((3, 7, 64), -1, 64, 1, False, "float32"),
    ((4099,), 0, None, 6, False, "bfloat16"),
    ((2, 1 << 16), -1, 128, 7, False, "float32"),
]


def _host(a):
    import cupy

    return cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else np.asarray(a)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cupy_codes_scales_and_bytes_match_cpu(cp, case, dtype):
    shape, axis, group_size, bits, symmetric, scale_dtype = case
    x = (np.random.default_rng(hash(case) & 0xFFFF).standard_normal(shape) * 3).astype(dtype)
    kw = dict(bits=bits, scheme="rtn", axis=axis, group_size=group_size, symmetric=symmetric,
              scale_dtype=scale_dtype)
    qc = lowbit.quantize(x, **kw)
    qg = lowbit.quantize(cp.asarray(x), **kw)
    assert isinstance(qg.codes, cp.ndarray)
    np.testing.assert_array_equal(_host(qg.codes), qc.codes)
    for k in qc.fields:
        np.testing.assert_array_equal(_host(qg.fields[k]), qc.fields[k])
    yg = qg.dequantize()
    assert isinstance(yg, cp.ndarray) and yg.dtype == x.dtype and yg.shape == x.shape
    np.testing.assert_array_equal(_host(yg), qc.dequantize())


@pytest.mark.parametrize("mode", ["nearest_away", "toward_zero", "up", "down", "odd", "stochastic"])
def test_every_rounding_mode_matches_cpu(cp, mode):
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    kw = dict(bits=3, scheme="rtn", group_size=32, rounding=mode, seed=1234, rbits=7)
    qc = lowbit.quantize(x, **kw)
    qg = lowbit.quantize(cp.asarray(x), **kw)
    np.testing.assert_array_equal(_host(qg.codes), qc.codes)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_cuda_matches_cpu_and_stays_torch(dtype):
    torch = pytest.importorskip("torch")
    t = torch.randn(33, 256, generator=torch.Generator().manual_seed(3)).to(getattr(torch, dtype))
    kw = dict(bits=4, scheme="rtn", group_size=64)
    qc = lowbit.quantize(t, **kw)
    qg = lowbit.quantize(t.cuda(), **kw)
    np.testing.assert_array_equal(_host(qg.codes), np.asarray(qc.codes))
    y = qg.dequantize()
    assert isinstance(y, torch.Tensor) and y.is_cuda and y.dtype == t.dtype and y.shape == t.shape
    assert torch.equal(y.cpu(), qc.dequantize())


def test_subnormal_and_signed_zero_inputs_match_cpu(cp):
    tiny = np.array([1e-45, -1e-45, 3e-39, -0.0, 0.0, 1.1754942e-38, 2e-38, -5e-40] * 4, np.float32)
    for kw in (dict(bits=4), dict(bits=3, symmetric=True), dict(bits=8, scale_dtype="bfloat16")):
        qc = lowbit.quantize(tiny, scheme="rtn", **kw)
        qg = lowbit.quantize(cp.asarray(tiny), scheme="rtn", **kw)
        np.testing.assert_array_equal(_host(qg.codes), qc.codes)
        for k in qc.fields:
            np.testing.assert_array_equal(_host(qg.fields[k]).view(np.uint8), qc.fields[k].view(np.uint8))
        np.testing.assert_array_equal(_host(qg.dequantize()).view(np.uint32), qc.dequantize().view(np.uint32))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1001, 65537])
def test_kernels_write_every_output_element(cp, bits, n):
    """Poisoned outputs: CPU poison 0x55, GPU poison 0xAA; any unwritten byte shows."""
    codes = np.random.default_rng(n).integers(0, 2**bits, n, dtype=np.uint8)
    size = (n * bits + 7) // 8
    pc = np.full(size, 0x55, np.uint8)
    pg = cp.full(size, 0xAA, np.uint8)
    cpu.pack_codes(codes, bits, pc)
    lowbit.cuda.pack_codes(cp.asarray(codes), bits, pg)
    np.testing.assert_array_equal(_host(pg), pc)
    uc = np.full(n, 0x55, np.uint8)
    ug = cp.full(n, 0xAA, np.uint8)
    cpu.unpack_codes(pc, bits, uc)
    lowbit.cuda.unpack_codes(pg, bits, ug)
    np.testing.assert_array_equal(_host(ug), uc)
    np.testing.assert_array_equal(uc, codes)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    scale = np.full(1, 0.25, np.float32)
    offset = np.full(1, -1.0, np.float32)
    ec = np.full(size, 0x55, np.uint8)
    eg = cp.full(size, 0xAA, np.uint8)
    cpu.rtn_encode(x, n, scale, offset, bits, False, 0, np.uint64(0), 16, ec)
    lowbit.cuda.rtn_encode(cp.asarray(x), n, cp.asarray(scale), cp.asarray(offset), bits, False, 0,
                           np.uint64(0), 16, eg)
    np.testing.assert_array_equal(_host(eg), ec)
    dc = np.full(n, np.nan, np.float32)
    dg = cp.full(n, -np.inf, np.float32)
    cpu.rtn_decode(ec, n, scale, offset, bits, False, dc)
    lowbit.cuda.rtn_decode(eg, n, cp.asarray(scale), cp.asarray(offset), bits, False, dg)
    np.testing.assert_array_equal(_host(dg), dc)
    assert np.isfinite(dc).all()


def test_cupy_noncontiguous_view(cp):
    base = cp.asarray(np.random.default_rng(5).standard_normal((64, 64)).astype(np.float32))
    view = base[::2, 1::3]
    a = lowbit.quantize(view, bits=4, scheme="rtn", axis=0)
    b = lowbit.quantize(cp.ascontiguousarray(view), bits=4, scheme="rtn", axis=0)
    np.testing.assert_array_equal(_host(a.codes), _host(b.codes))


def test_cupy_pack_stays_on_device(cp):
    c = cp.asarray(np.array([1, 2, 3, 0, 3], np.uint8))
    p = lowbit.pack(c, 2)
    assert isinstance(p, cp.ndarray) and _host(p).tolist() == [0b00111001, 0b11]


def test_mixed_devices_raise(cp):
    q = lowbit.quantize(cp.arange(64, dtype=cp.float32), bits=4, scheme="rtn")
    with pytest.raises(ValueError, match=r"codes on cuda:0, fields\['scale'\] on cpu"):
        lowbit.QuantizedArray(q.codes, {"scale": cp.asnumpy(q.fields["scale"]),
                                        "offset": q.fields["offset"]}, q.meta, q.origin)


def test_save_of_device_array_is_explicit_host_copy(cp, tmp_path):
    q = lowbit.quantize(cp.arange(64, dtype=cp.float32), bits=4, scheme="rtn")
    q.save(tmp_path / "q.npz")
    r = lowbit.load(tmp_path / "q.npz")
    np.testing.assert_array_equal(r.dequantize(), _host(q.dequantize()))


@pytest.mark.parametrize("group", [16, 128])
def test_exact_ties_round_to_even_on_gpu(cp, group):
    """Quotients exactly on .5 (the GPU's fast-quotient fallback) match the CPU."""
    base = np.arange(group, dtype=np.float32) * 0.5  # lo = 0, many exact half steps
    x = np.tile(base, 64).reshape(64, group)
    x[:, -1] = (2**4 - 1) * 0.5 * 2  # pins scale so quotients hit .5 exactly
    for kw in (dict(bits=4), dict(bits=4, symmetric=True)):
        qc = lowbit.quantize(x, scheme="rtn", group_size=group, **kw)
        qg = lowbit.quantize(cp.asarray(x), scheme="rtn", group_size=group, **kw)
        np.testing.assert_array_equal(_host(qg.codes), qc.codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_single_pass_variants_match_cpu(cp, bits, group, dtype, symmetric):
    """Covers the lane kernels (torch CUDA float16/bfloat16/float32), ties included."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(bits * group)
    x = rng.standard_normal((257, group)).astype(np.float32)
    x[::7] = np.round(x[::7] * 4) / 4  # exact ties on coarse grids
    x[3, :5] = [1e-45, -0.0, 0.0, 3e-39, -2e-40]
    t = torch.from_numpy(x).to(getattr(torch, dtype))
    for sd in ("float32", "float16", "bfloat16"):
        kw = dict(bits=bits, scheme="rtn", group_size=group, symmetric=symmetric, scale_dtype=sd)
        qc = lowbit.quantize(t, **kw)
        qg = lowbit.quantize(t.cuda(), **kw)
        np.testing.assert_array_equal(_host(qg.codes), np.asarray(qc.codes))
        for k in qc.fields:
            np.testing.assert_array_equal(_host(qg.fields[k]).view(np.uint8),
                                          np.asarray(qc.fields[k]).view(np.uint8))


@pytest.mark.parametrize("library,dtype", [("cupy", "float16"), ("torch", "bfloat16"), ("cupy", "float32")])
def test_check_finite_false_defers_and_matches_cpu(cp, library, dtype):
    """check_finite=False on the GPU: same codes and fields as the CPU (NaN/+Inf scale markers
    included); check() raises for the NaN group, then for the overflow once that is gone."""
    x = np.random.default_rng(7).standard_normal((64, 256)).astype(np.float32)
    x[3, 17] = np.nan
    x[40, 128], x[40, 129] = -6e4, 6e4  # 1-bit scale 1.2e5 overflows float16
    kw = dict(bits=1, scheme="rtn", group_size=128, scale_dtype="float16", check_finite=False)
    if library == "torch":
        torch = pytest.importorskip("torch")
        host = torch.from_numpy(x).to(torch.bfloat16)
        dev = host.cuda()
    else:
        host = x.astype(dtype)
        dev = cp.asarray(host)
    qc, qg = lowbit.quantize(host, **kw), lowbit.quantize(dev, **kw)
    np.testing.assert_array_equal(_host(qg.codes), np.asarray(qc.codes))
    for k in qc.fields:
        np.testing.assert_array_equal(_host(qg.fields[k]), np.asarray(qc.fields[k]))
    for q in (qc, qg):
        with pytest.raises(ValueError, match="NaN or Inf"):
            q.check()
    x[3, 17] = 0.0
    dev = torch.from_numpy(x).to(torch.bfloat16).cuda() if library == "torch" else cp.asarray(x.astype(dtype))
    q = lowbit.quantize(dev, **kw)
    with pytest.raises(ValueError, match="overflows scale_dtype='float16'"):
        q.check()


def test_check_finite_false_does_not_wait_for_the_gpu():
    """With check_finite=False the call returns while its kernel is still queued behind a long
    one on the caller's stream; with the default it returns only once the stream is idle."""
    torch = pytest.importorskip("torch")
    x = torch.randn(1 << 16, device="cuda", dtype=torch.float16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        lowbit.quantize(x, bits=4, scheme="rtn", group_size=128)  # compile and cache
        torch.cuda.synchronize()
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU cycles
        q = lowbit.quantize(x, bits=4, scheme="rtn", group_size=128, check_finite=False)
        assert not stream.query()
        q.check()
        assert stream.query()
        torch.cuda._sleep(200_000_000)
        lowbit.quantize(x, bits=4, scheme="rtn", group_size=128)
        assert stream.query()


def test_deferred_check_from_another_stream_still_sees_the_flag():
    """The pending check waits for the quantize kernel even when called under another stream
    (here while that kernel still waits behind a long one)."""
    torch = pytest.importorskip("torch")
    x = torch.randn(1 << 16, device="cuda", dtype=torch.float16)
    x[12345] = float("nan")
    stream = torch.cuda.Stream()
    lowbit.quantize(x[:128].nan_to_num(), bits=4, scheme="rtn", group_size=128)  # compile and cache
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)
        q = lowbit.quantize(x, bits=4, scheme="rtn", group_size=128, check_finite=False)
    assert not stream.query()
    with pytest.raises(ValueError, match="NaN or Inf"):
        q.check()  # under the default stream
