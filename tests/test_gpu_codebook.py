"""The CUDA codebook kernels (block_norm, codebook_encode) agree with the CPU twins bit for bit
(needs a GPU).

The fronts run on the GPU too (tests/test_codebook.py and tests/test_turboquant.py, backend
fixture); here the kernels themselves: every input dtype (float16 / bfloat16 bits / float32 /
float64; the CPU twin reads the exactly widened values), block sizes 1 .. past a warp with a
partial last block, every codebook width 1..4 plus NF4, 8-bit and hand-made tie tables,
values exactly on the thresholds, signed zeros, NaN / Inf, huge and subnormal values and
scales, stochastic rounding over several seeds, counter offsets and rbits, poisoned outputs
(every element written) and bad input.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import lowbit.cpu as cpu
from lowbit import codebooks
from lowbit.cpu.scalar import NEAREST_EVEN, STOCHASTIC
from lowbit.cuda import codebook as cuda_codebook
from lowbit.formats import Codebook

pytestmark = pytest.mark.gpu

DTYPES = ["float16", "bfloat16", "float32", "float64"]
TIES = Codebook("ties", 3, (-2.0, -0.5, 0.0, 0.25, 1.0, 3.0), "hand-made: every threshold is a float16")
CODEBOOKS = [codebooks.lloyd_max(b) for b in (1, 2, 3, 4)] + [
    codebooks.normal_float(4), codebooks.lloyd_max(2, "sphere", dim=64), codebooks.normal_float(8), TIES]


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Nearest-even bfloat16 bits of float32 x (NaN kept a NaN)."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    out = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), out)


def _storage(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(the GPU kernel's input, the float32 / float64 values the CPU twin reads)."""
    if dtype == "float16":
        with np.errstate(over="ignore"):
            h = x.astype(np.float16)
        return h, h.astype(np.float32)
    if dtype == "bfloat16":
        with np.errstate(over="ignore"):
            b = _bf16_bits(x.astype(np.float32))
        return b, (b.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore"):
        y = x.astype(dtype)
    return y, y


def _values(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp(2 * rng.standard_normal(n))
    if kind == "special":  # zeros of both signs, NaN, Inf, huge, subnormal-sized
        pick = rng.choice(n, n // 4, replace=False)
        specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e300, -1e38, 3e-39, -1e-42, 5e-324])
        x[pick] = specials[rng.integers(0, specials.size, pick.size)]
    elif kind == "huge":
        x *= 1e30
    elif kind == "tiny":
        x *= 1e-40
    elif kind == "zero":
        x[:] = 0.0
    return x


# -- block_norm --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "special", "huge", "tiny", "zero"])
@pytest.mark.parametrize(("n", "block"), [(1, 1), (640, 64), (1000, 7), (4096, 128), (3000, 1000), (77, 100)])
def test_block_norm_matches_cpu(cp, dtype: str, kind: str, n: int, block: int) -> None:
    stored, wide = _storage(_values(kind, n, n * 31 + block), dtype)
    blocks = -(-n // block)
    want = np.empty(blocks + 2, np.float64)  # two blocks past the data: norm 0
    cpu.block_norm(np.ascontiguousarray(wide), block, want)
    got = cp.empty(blocks + 2, np.float64)
    got.view(np.uint8).fill(0xAB)
    cuda_codebook.block_norm(cp.asarray(stored), block, got)
    np.testing.assert_array_equal(cp.asnumpy(got), want)


def test_block_norm_is_the_norm(cp) -> None:
    """An independent check: float64 numpy norms of float32 rows, within a few ulp."""
    x = (np.random.default_rng(5).standard_normal((50, 64)) * 3).astype(np.float32)
    got = cp.empty(50, np.float64)
    cuda_codebook.block_norm(cp.asarray(x.reshape(-1)), 64, got)
    np.testing.assert_allclose(cp.asnumpy(got), np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-15)


# -- codebook_encode ---------------------------------------------------------------------------

def _tables(cb: Codebook) -> tuple[np.ndarray, np.ndarray]:
    return np.array(cb.levels, np.float64), np.array(cb.thresholds, np.float64)


def _scales(kind: str, blocks: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.exp(rng.standard_normal(blocks))
    if kind == "pow2":
        s = np.exp2(rng.integers(-30, 30, blocks)).astype(np.float64)
    elif kind == "bad":  # zero, non-finite and extreme scales: signed zeros / huge quotients
        s[::3] = 0.0
        s[1::7] = np.inf
        s[2::11] = np.nan
        s[4::13] = 1e-300
    elif kind == "one":
        s = np.ones(blocks)
    return s


def _encode_both(cp, x: np.ndarray, dtype: str, block: int, scale: np.ndarray, cb: Codebook, mode: int,
                 seed: int = 0, first_index: int = 0, rbits: int = 16):  # type: ignore[no-untyped-def]
    levels, thresholds = _tables(cb)
    stored, wide = _storage(x, dtype)
    want = np.empty(x.size, np.uint8)
    cpu.codebook_encode(np.ascontiguousarray(wide), block, scale, levels, thresholds, mode, np.uint64(seed),
                        np.int64(first_index), rbits, want)
    got = cp.empty(x.size, np.uint8)
    got.fill(0xAB)
    cuda_codebook.codebook_encode(cp.asarray(stored), block, cp.asarray(scale), cp.asarray(levels),
                                  cp.asarray(thresholds), mode, np.uint64(seed), first_index, rbits, got)
    return want, cp.asnumpy(got)


@pytest.mark.parametrize("cb", CODEBOOKS, ids=lambda c: f"{c.name}{c.bits}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data", ["random", "special", "huge", "tiny"])
def test_nearest_codes_match_cpu(cp, cb: Codebook, dtype: str, data: str) -> None:
    n, block = 3001, 64  # a partial last block
    x = _values(data, n, zlib.crc32(f"{cb.name}{cb.bits}{dtype}{data}".encode()))
    for scale_kind in ("random", "pow2", "bad", "one"):
        scale = _scales(scale_kind, -(-n // block), 3)
        if data in ("huge", "tiny") and scale_kind == "random":
            scale = scale * (1e30 if data == "huge" else 1e-40)
        want, got = _encode_both(cp, x, dtype, block, scale, cb, NEAREST_EVEN)
        np.testing.assert_array_equal(got, want, err_msg=f"scale={scale_kind}")


@pytest.mark.parametrize("cb", CODEBOOKS, ids=lambda c: f"{c.name}{c.bits}")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ties_between_levels_go_to_the_even_code(cp, cb: Codebook, dtype: str) -> None:
    """x = threshold * scale exactly (power-of-two scales), the levels themselves and their
    float neighbours: the CPU's codes, and the even code at every exact tie."""
    levels, thresholds = _tables(cb)
    base = np.concatenate([thresholds, levels, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf),
                           [0.0, -0.0, levels[0] - 1, levels[-1] + 1]])
    block = base.size
    pows = np.exp2(np.arange(-6, 7)).astype(np.float64)
    x = np.concatenate([base * p for p in pows])
    stored, _ = _storage(x, dtype)
    exact = np.array(stored).astype(np.float64) == x  # ties the storage dtype represents exactly
    want, got = _encode_both(cp, x, dtype, block, pows, cb, NEAREST_EVEN)
    np.testing.assert_array_equal(got, want)
    tie = np.tile(np.r_[np.ones(thresholds.size, bool), np.zeros(block - thresholds.size, bool)], pows.size) & exact
    assert tie.any() or dtype != "float64"  # float64 holds every threshold; narrower dtypes may hold none
    np.testing.assert_array_equal(got[tie] % 2, 0)


@pytest.mark.parametrize("cb", [codebooks.lloyd_max(b) for b in (1, 2, 3, 4)] + [codebooks.normal_float(4), TIES],
                         ids=lambda c: f"{c.name}{c.bits}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_codes_match_cpu(cp, cb: Codebook, dtype: str) -> None:
    n, block = 2053, 128
    x = _values("special", n, cb.bits * 7 + len(dtype))
    x[: n // 2] = np.random.default_rng(1).uniform(cb.levels[0] - 0.5, cb.levels[-1] + 0.5, n // 2)
    scale = _scales("random", -(-n // block), 9)
    for seed in (0, 1, 12345, 2**64 - 1):
        for first_index in (0, 7, 2**40 + 3):
            for rbits in (1, 16, 32):
                want, got = _encode_both(cp, x, dtype, block, scale, cb, STOCHASTIC, seed, first_index, rbits)
                np.testing.assert_array_equal(got, want, err_msg=f"seed={seed} first_index={first_index} "
                                                                 f"rbits={rbits}")


def test_stochastic_codes_are_chunkable(cp) -> None:
    """The counter is first_index + element: a suffix encoded with its offset gives the same codes."""
    cb = codebooks.normal_float(4)
    levels, thresholds = _tables(cb)
    x = cp.asarray(np.random.default_rng(2).uniform(-1, 1, 5000))
    one = cp.ones(1)
    whole = cp.empty(5000, np.uint8)
    cuda_codebook.codebook_encode(x, 5000, one, cp.asarray(levels), cp.asarray(thresholds), STOCHASTIC,
                                  np.uint64(4), 0, 16, whole)
    part = cp.empty(3766, np.uint8)
    cuda_codebook.codebook_encode(x[1234:], 5000, one, cp.asarray(levels), cp.asarray(thresholds), STOCHASTIC,
                                  np.uint64(4), 1234, 16, part)
    np.testing.assert_array_equal(cp.asnumpy(part), cp.asnumpy(whole[1234:]))


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input(cp) -> None:
    levels, thresholds = (cp.asarray(a) for a in _tables(codebooks.lloyd_max(2)))
    x = cp.zeros(64, np.float32)
    scale = cp.ones(1)
    codes = cp.empty(64, np.uint8)

    def enc(**kw):  # type: ignore[no-untyped-def]
        args = dict(x=x, block_size=64, scale=scale, levels=levels, thresholds=thresholds, mode=NEAREST_EVEN,
                    seed=np.uint64(0), first_index=0, rbits=16, codes=codes)
        args.update(kw)
        cuda_codebook.codebook_encode(**args)

    with pytest.raises(TypeError, match="x must be a cupy"):
        enc(x=np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        enc(x=cp.zeros(128, np.float32)[::2])
    with pytest.raises(TypeError, match="dtype"):
        enc(x=cp.zeros(64, np.int32))
    with pytest.raises(TypeError, match="codes must be uint8"):
        enc(codes=cp.empty(64, np.uint16))
    with pytest.raises(ValueError, match="codes must have"):
        enc(codes=cp.empty(63, np.uint8))
    with pytest.raises(TypeError, match="scale must be float64"):
        enc(scale=cp.ones(1, np.float32))
    with pytest.raises(ValueError, match="scale holds 1 values for 2 blocks"):
        enc(block_size=32)
    with pytest.raises(ValueError, match="block_size"):
        enc(block_size=0)
    with pytest.raises(ValueError, match="levels must hold"):
        enc(thresholds=thresholds[:2])
    with pytest.raises(ValueError, match="levels must hold"):
        enc(levels=cp.zeros(257), thresholds=cp.zeros(256))
    with pytest.raises(ValueError, match="mode"):
        enc(mode=3)
    with pytest.raises(ValueError, match="rbits"):
        enc(rbits=0)
    with pytest.raises(ValueError, match="1-D"):
        enc(x=cp.zeros((8, 8), np.float32))
    out = cp.empty(1, np.float64)
    with pytest.raises(TypeError, match="out must be float64"):
        cuda_codebook.block_norm(x, 64, cp.empty(1, np.float32))
    with pytest.raises(TypeError, match="x must be a cupy"):
        cuda_codebook.block_norm(np.zeros(64), 64, out)
    with pytest.raises(ValueError, match="block_size"):
        cuda_codebook.block_norm(x, -1, out)
