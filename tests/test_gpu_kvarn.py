"""The fused CUDA KVarN store and decoder agree with the CPU twins bit for bit (needs a GPU).

The front tests run on the GPU too (tests/test_kvarn.py and tests/test_kv_cache.py, backend
fixture); here the kernels themselves: tile geometries (G = 64, 128, partial tiles, D = 64,
128, 12), every bits 1..8, both scale formats, float16 / bfloat16 / float32 tokens, random,
outlier and degenerate data, poisoned outputs (every element written), bad input, sizes past
int32 indexing, determinism across launch geometries.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import lowbit
import lowbit.cpu as cpu
import lowbit.cuda
from lowbit.cuda import kvarn as cuda_kvarn

pytestmark = pytest.mark.gpu


def _tokens(kind: str, n: int, t: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, d))
    if kind == "outlier":  # a few tokens 30x, a few channels 8x, lognormal token scales
        x *= np.exp(0.5 * rng.standard_normal((n, t, 1)))
        x[:, rng.choice(t, max(1, t // 32), replace=False)] *= 30
        x[:, :, rng.choice(d, 3, replace=False)] *= 8
    elif kind == "tiny":
        x *= 1e-5
    elif kind == "huge":
        x *= 1e4
    elif kind == "constant":
        x = np.broadcast_to(rng.standard_normal((n, 1, 1)), x.shape).copy()
    elif kind == "zero_token":
        x[:, t // 2] = 0
    return x.astype(np.float32)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Nearest-even bfloat16 bits of float32 x, NaN as 0x7fc0 (as lowbit.arrays.to_dtype)."""
    b = x.view(np.uint32).astype(np.uint64)
    bits = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), bits)


def _storage(x32: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(storage array for the GPU kernel, the float32 values the CPU kernel reads)."""
    if dtype == "float16":
        h = x32.astype(np.float16)
        return h, h.astype(np.float32)
    if dtype == "bfloat16":
        b = _bf16_bits(x32)
        return b, (b.astype(np.uint32) << 16).view(np.float32)
    return x32, x32


def _outputs(xp, n: int, rows: int, cols: int, nbytes: int, poison: bool):  # type: ignore[no-untyped-def]
    out = (xp.empty((n, nbytes), np.uint8), xp.empty((n, rows), np.uint16), xp.empty((n, rows), np.uint16),
           xp.empty((n, cols), np.uint16), xp.empty(n, np.int8))
    if poison:
        for a in out:
            a.view(np.uint8).fill(0xAB)
    return out


def _encode_both(cp, x32: np.ndarray, dtype: str, rotate: bool, key: bool, bits: int, fmt: int,
                 iterations: int = 8, normalize: bool = True):  # type: ignore[no-untyped-def]
    n, t, d = x32.shape
    rows, cols = (d, t) if key else (t, d)
    nbytes = (rows * cols * bits + 7) // 8
    stored, widened = _storage(x32, dtype)
    want = _outputs(np, n, rows, cols, nbytes, False)
    cpu.kvarn_encode(np.ascontiguousarray(widened), rotate, key, bits, iterations, fmt, normalize, *want)
    got = _outputs(cp, n, rows, cols, nbytes, True)
    cuda_kvarn.kvarn_encode(cp.asarray(stored), rotate, key, bits, iterations, fmt, normalize, *got)
    return want, tuple(cp.asnumpy(a) for a in got)


CASES = [  # (data, n, tokens, dim, rotate)
    ("random", 3, 128, 128, True),
    ("outlier", 3, 128, 128, True),
    ("outlier", 2, 64, 128, True),
    ("random", 2, 7, 128, True),     # a partial last tile
    ("random", 2, 1, 64, True),      # a 1-token tile (identity balance)
    ("outlier", 2, 128, 64, True),
    ("random", 2, 24, 12, False),    # D = 12: rotated by the front, not fused
    ("tiny", 2, 128, 128, True),
    ("huge", 2, 64, 128, True),
    ("constant", 1, 64, 64, True),
    ("zero_token", 2, 64, 64, True),
]


@pytest.mark.parametrize(("data", "n", "tokens", "dim", "rotate"), CASES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("fmt", [0, 1])
def test_encode_matches_cpu(cp, data: str, n: int, tokens: int, dim: int, rotate: bool, dtype: str,
                            fmt: int) -> None:
    seed = zlib.crc32(f"{data}{n}{tokens}{dim}{dtype}{fmt}".encode())
    x = _tokens(data, n, tokens, dim, seed)
    for key in (True, False):
        for bits in ((2, 4) if data != "random" or tokens != 128 else (1, 2, 3, 4, 5, 6, 7, 8)):
            want, got = _encode_both(cp, x, dtype, rotate, key, bits, fmt)
            for name, w, g in zip(("packed", "row_scale", "row_offset", "col_scale", "tile_exponent"), want, got,
                                  strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"{name} key={key} bits={bits}")


DECODE_CASES = [  # (tokens, dim, rotate): D 16..512 take the register decoder, D = 12 the generic one;
    # D = 128 with 2 / 4 bits the one-warp-per-tile decoder (K: where T * bits % 32 == 0): a word
    # per lane and token block (128, 64, 16), a last block of words with idle lanes (120, 4-bit),
    # partial V steps (33, 1, 120), no rotation (33, 32)
    (128, 128, True), (64, 128, True), (5, 64, True), (24, 12, False), (1, 16, True), (37, 32, True),
    (100, 256, True), (16, 512, True), (33, 128, False), (3, 64, False), (16, 128, True), (32, 128, False),
    (120, 128, True), (1, 128, True),
]


@pytest.mark.parametrize("out_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize(("tokens", "dim", "rotate"), DECODE_CASES)
@pytest.mark.parametrize("fmt", [0, 1])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
def test_decode_matches_cpu(cp, monkeypatch: pytest.MonkeyPatch, out_dtype: str, tokens: int, dim: int,
                            rotate: bool, fmt: int, fast: bool) -> None:
    """CPU float32 reconstruction (then rounded once to the output dtype) == CUDA output, from
    both CUDA decoders (`fast`: the register decoder where it applies, else the generic one)."""
    monkeypatch.setattr(cuda_kvarn, "FAST_DECODE", fast)
    x = _tokens("outlier", 3, tokens, dim, 7 + tokens)
    for key in (True, False):
        for bits in (1, 2, 3, 4, 5, 8):
            want, _ = _encode_both(cp, x, "float32", rotate, key, bits, fmt)
            packed, a, z, s, e = want
            ref = np.empty(x.shape, np.float32)
            cpu.kvarn_decode(packed, rotate, key, bits, fmt, a, z, s, e, ref)
            ref_out = _bf16_bits(ref) if out_dtype == "bfloat16" else ref.astype(out_dtype)
            out = cp.empty(x.shape, np.uint16 if out_dtype == "bfloat16" else out_dtype)
            out.view(np.uint8).fill(0xFF)
            cuda_kvarn.kvarn_decode(*(cp.asarray(v) for v in (packed,)), rotate, key, bits, fmt,
                                     *(cp.asarray(v) for v in (a, z, s, e)), out)
            np.testing.assert_array_equal(cp.asnumpy(out), ref_out, err_msg=f"key={key} bits={bits}")


@pytest.mark.parametrize("bits", [3, 2, 4])
def test_decode_unaligned_views(cp, bits: int) -> None:
    """A packed record at an odd byte offset and an output that is not 16-byte aligned (views into
    larger buffers) decode to the same values as aligned copies (2 / 4 bits: the aligned copies
    take kvarn_decode128.cu's decoder, the views kvarn_decode.cu's)."""
    x = _tokens("random", 4, 64, 128, 5)
    for key in (True, False):
        want, _ = _encode_both(cp, x, "float32", True, key, bits, 0)
        packed, a, z, s, e = (cp.asarray(v) for v in want)
        ref = cp.empty(x.shape, np.float16)
        cuda_kvarn.kvarn_decode(packed, True, key, bits, 0, a, z, s, e, ref)
        raw = cp.zeros(packed.size + 1, np.uint8)
        odd = raw[1:].reshape(packed.shape)
        odd[...] = packed
        aligned = cp.empty(x.shape, np.float16)  # the register decoder, staging bytes one by one
        cuda_kvarn.kvarn_decode(odd, True, key, bits, 0, a, z, s, e, aligned)
        buf = cp.empty(x.size + 1, np.float16)
        out = buf[1:].reshape(x.shape)  # 2 bytes past an aligned start: the generic decoder
        cuda_kvarn.kvarn_decode(odd, True, key, bits, 0, a, z, s, e, out)
        for got in (aligned, out):
            np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(ref))


def _random_record(rng: np.random.Generator, n: int, rows: int, cols: int, bits: int, fmt: int,
                   wild: bool) -> tuple[np.ndarray, ...]:
    """Fields no encoder writes: random code bytes and scale codes, every sign, float16 subnormals
    and zeros; `wild`: every float16 / e4m3 code (Inf, NaN) and every tile exponent (results that
    overflow or fall to float32 subnormals), else scales near 1 and exponents in [-8, 8]."""
    packed = rng.integers(0, 256, (n, (rows * cols * bits + 7) // 8), dtype=np.uint8)

    def codes(size: tuple[int, int], e4m3: bool) -> np.ndarray:
        if e4m3:
            c = rng.integers(0, 256, size) if wild else rng.integers(0x20, 0x48, size) | (rng.integers(0, 2, size) << 7)
        else:
            c = rng.integers(0, 1 << 16, size) if wild else (rng.integers(0x3000, 0x4400, size)
                                                              | (rng.integers(0, 2, size) << 15))
            c[:, ::17] = rng.choice([0x0000, 0x8000, 0x0001, 0x83FF], c[:, ::17].shape)  # zeros, subnormals
        return c.astype(np.uint16)

    e = rng.integers(-128, 128, n) if wild else rng.integers(-8, 9, n)
    return (packed, codes((n, rows), fmt == 1), codes((n, rows), False), codes((n, cols), fmt == 1),
            e.astype(np.int8))


@pytest.mark.parametrize("out_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("tokens", [128, 64, 16, 33])
@pytest.mark.parametrize("wild", [False, True], ids=["tame", "wild"])
def test_decode128_random_fields(cp, monkeypatch: pytest.MonkeyPatch, out_dtype: str, tokens: int,
                                 wild: bool) -> None:
    """kvarn_decode128.cu (D = 128, 2 / 4 bits) on random records == the CPU twin rounded once,
    every element of a poisoned output written; one block of 4 warps for 9 tiles and 3 blocks
    (grid-stride over tiles) give the same bytes as one warp per tile."""
    rng = np.random.default_rng(zlib.crc32(f"{out_dtype}{tokens}{wild}".encode()))
    n, dim = 9, 128
    for key in (True, False):
        for bits in (2, 4):
            for fmt in (0, 1):
                rows, cols = (dim, tokens) if key else (tokens, dim)
                fields = _random_record(rng, n, rows, cols, bits, fmt, wild)
                for rotate in (True, False):
                    ref = np.empty((n, tokens, dim), np.float32)
                    cpu.kvarn_decode(fields[0], rotate, key, bits, fmt, *fields[1:], ref)
                    with np.errstate(over="ignore"):  # wild records overflow float16: Inf on purpose
                        ref_out = _bf16_bits(ref) if out_dtype == "bfloat16" else ref.astype(out_dtype)
                    dev = [cp.asarray(f) for f in fields]
                    for blocks in (cuda_kvarn.MAX_BLOCKS, 1, 3):
                        monkeypatch.setattr(cuda_kvarn, "MAX_BLOCKS", blocks)
                        out = cp.empty((n, tokens, dim), np.uint16 if out_dtype == "bfloat16" else out_dtype)
                        out.view(np.uint8).fill(0xFF)
                        if not key or tokens * bits % 32 == 0:
                            assert cuda_kvarn.decode128_applies(tokens, dim, key, bits, *dev, out)
                        cuda_kvarn.kvarn_decode(dev[0], rotate, key, bits, fmt, *dev[1:], out)
                        np.testing.assert_array_equal(cp.asnumpy(out), ref_out,
                                                      err_msg=f"key={key} bits={bits} fmt={fmt} rotate={rotate}")


@pytest.mark.skipif("kvarn_encode" not in lowbit.cuda.KERNELS, reason="kvarn CUDA kernels not registered yet")
def test_float64_reference_and_front(cp) -> None:
    """Through lowbit.quantize on CuPy: the numpy path's bytes, and the reconstruction error of
    the float64-reference budget (N(0,1): about 0.10 at 4 bits, 0.50 at 2 bits)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 300, 128)).astype(np.float16)
    for scheme in ("kvarn-k4v2-g128", "kvarn-k2v2-g64"):
        for kind in ("key", "value"):
            q_cpu = lowbit.quantize(x, scheme=scheme, kind=kind)
            q_gpu = lowbit.quantize(cp.asarray(x), scheme=scheme, kind=kind)
            np.testing.assert_array_equal(cp.asnumpy(q_gpu.codes), q_cpu.codes)
            for k, v in q_cpu.fields.items():
                np.testing.assert_array_equal(cp.asnumpy(q_gpu.fields[k]), v, err_msg=k)
            xh = q_gpu.dequantize()
            assert isinstance(xh, cp.ndarray) and xh.dtype == x.dtype and xh.shape == x.shape
            np.testing.assert_array_equal(cp.asnumpy(xh), q_cpu.dequantize())


def test_bad_input(cp) -> None:
    x = cp.zeros((2, 16, 64), np.float32)
    rows, cols = 64, 16
    out = _outputs(cp, 2, rows, cols, rows * cols * 2 // 8, False)
    with pytest.raises(TypeError, match="cupy"):
        cuda_kvarn.kvarn_encode(np.zeros((2, 16, 64), np.float32), True, True, 2, 8, 0, True, *out)
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_kvarn.kvarn_encode(cp.zeros((2, 64, 16), np.float32).transpose(0, 2, 1), True, True, 2, 8, 0, True,
                                 *out)
    with pytest.raises(TypeError, match="float16"):
        cuda_kvarn.kvarn_encode(x.astype(np.float64), True, True, 2, 8, 0, True, *out)
    with pytest.raises(TypeError, match="row_scale"):
        cuda_kvarn.kvarn_encode(x, True, True, 2, 8, 0, True, out[0], out[3], out[2], out[3], out[4])
    with pytest.raises(ValueError, match="power-of-two"):
        cuda_kvarn.kvarn_encode(cp.zeros((2, 16, 12), np.float32), True, True, 2, 8, 0, True, *out)
    with pytest.raises(ValueError, match="int32"):
        big = cp.empty((1, 2**16, 2**15), np.float16)  # 4 GiB, never read
        cuda_kvarn.kvarn_encode(big, True, True, 2, 8, 0, True, *out)


@pytest.mark.parametrize("threads", [256, 128, 32])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_encode_any_block_size_matches_cpu(cp, monkeypatch: pytest.MonkeyPatch, threads: int, dtype: str) -> None:
    """D = G = 128 tiles (the in-register rotation and fixed-size balance) with 8, 4 and 1 warps
    per tile: the CPU's bytes whatever the block size (16 iterations: the scales' history; without
    the tile exponent: the in-register rotation without its histogram)."""
    monkeypatch.setattr(cuda_kvarn, "ENCODE_THREADS", threads)
    x = _tokens("outlier", 3, 128, 128, 17)
    for key, bits, fmt, iterations, normalize in ((True, 4, 0, 8, True), (False, 2, 0, 8, True),
                                                  (True, 2, 1, 16, True), (False, 4, 1, 1, True),
                                                  (True, 4, 0, 8, False), (False, 2, 1, 8, False)):
        want, got = _encode_both(cp, x, dtype, True, key, bits, fmt, iterations, normalize)
        for name, w, g in zip(("packed", "row_scale", "row_offset", "col_scale", "tile_exponent"), want, got,
                              strict=True):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} key={key} bits={bits}")


def test_deterministic_across_launch_geometries(cp, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = cuda_kvarn
    x = cp.asarray(_tokens("outlier", 37, 128, 128, 11).astype(np.float16))
    outs = []
    for blocks in (wrapper.MAX_BLOCKS, 5, 1):
        monkeypatch.setattr(wrapper, "MAX_BLOCKS", blocks)
        for _ in range(2):
            o = _outputs(cp, 37, 128, 128, 128 * 128 * 2 // 8, True)
            cuda_kvarn.kvarn_encode(x, True, False, 2, 8, 1, True, *o)
            outs.append([cp.asnumpy(a) for a in o])
    for o in outs[1:]:
        for a, b in zip(outs[0], o, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif("kvarn_encode" not in lowbit.cuda.KERNELS, reason="kvarn CUDA kernels not registered yet")
def test_torch_cuda_front() -> None:
    """torch CUDA in, torch CUDA out (device and dtype), bytes equal to the numpy path's."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(9).standard_normal((2, 2, 200, 128)).astype(np.float32)
    t = torch.from_numpy(x).to("cuda", torch.bfloat16)
    for scheme, kw in (("kvarn", {"scale_dtype": "float8_e4m3"}), ("kivi", {}), ("quarot", {})):
        q = lowbit.quantize(t, bits=4, scheme=scheme, kind="value", **kw)
        xh = q.dequantize()
        assert isinstance(xh, torch.Tensor) and xh.is_cuda and xh.dtype == torch.bfloat16
        ref = lowbit.quantize(t.cpu(), bits=4, scheme=scheme, kind="value", **kw)
        np.testing.assert_array_equal(xh.cpu().view(torch.int16).numpy(),
                                      ref.dequantize().view(torch.int16).numpy(), err_msg=scheme)
