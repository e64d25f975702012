"""The CUDA KVarN codebook-grid kernels agree with the CPU twins bit for bit (needs a GPU).

The fronts run on the GPU too (tests/test_kvarn_grid.py, backend fixture); here the kernels
themselves: tile geometries (G = 64, 128, a partial tile, a 1-token tile, D = 64, 128, 12),
every bits 1..8, both grids, both scale formats, K and V tiles, random, outlier and degenerate
data (tiny, huge, constant, zero tiles and tokens), poisoned outputs (every element written),
bad input and determinism across launch geometries.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import lowbit.cpu as cpu
from lowbit.cuda import kvarn as cuda_kvarn
from lowbit.cuda import kvarn_grid as cuda_grid
from lowbit.kv.kvarn_grid import FITS, grid_levels

pytestmark = pytest.mark.gpu

NAMES = ("packed", "row_scale", "row_offset", "col_scale")


def _tokens(kind: str, n: int, t: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, d)) * np.exp(rng.standard_normal(d))
    if kind == "outlier":  # a few tokens 30x, a few channels 8x, lognormal token scales
        x *= np.exp(0.5 * rng.standard_normal((n, t, 1)))
        x[:, rng.choice(t, max(1, t // 32), replace=False)] *= 30
        x[:, :, rng.choice(d, min(3, d), replace=False)] *= 8
    elif kind == "tiny":
        x *= 1e-30
    elif kind == "huge":
        x *= 1e4
    elif kind == "constant":
        x = np.broadcast_to(rng.standard_normal((n, 1, 1)), x.shape).copy()
    elif kind == "zero":
        x[:] = 0
    elif kind == "zero_token":
        x[:, t // 2] = 0
    return x.astype(np.float32)


def _tables(grid: str, bits: int) -> tuple[np.ndarray, np.ndarray]:
    levels = grid_levels(grid, bits)
    return levels, (levels[1:] + levels[:-1]) / 2


def _outputs(xp, n: int, rows: int, cols: int, nbytes: int, poison: bool):  # type: ignore[no-untyped-def]
    out = (xp.empty((n, nbytes), np.uint8), xp.empty((n, rows), np.uint16), xp.empty((n, rows), np.uint16),
           xp.empty((n, cols), np.uint16))
    if poison:
        for a in out:
            a.view(np.uint8).fill(0xAB)
    return out


def _encode_both(cp, x: np.ndarray, key: bool, bits: int, grid: str, fmt: int,
                 iterations: int = 8, fits: int = FITS):  # type: ignore[no-untyped-def]
    n, t, d = x.shape
    rows, cols = (d, t) if key else (t, d)
    nbytes = (rows * cols * bits + 7) // 8
    levels, thresholds = _tables(grid, bits)
    want = _outputs(np, n, rows, cols, nbytes, False)
    cpu.kvarn_grid_encode(x, key, bits, levels, thresholds, iterations, fits, fmt, *want)
    got = _outputs(cp, n, rows, cols, nbytes, True)
    cuda_grid.kvarn_grid_encode(cp.asarray(x), key, bits, cp.asarray(levels), cp.asarray(thresholds), iterations,
                                fits, fmt, *got)
    return want, tuple(cp.asnumpy(a) for a in got)


CASES = [  # (data, n, tokens, dim)
    ("random", 3, 128, 64),
    ("outlier", 2, 128, 128),
    ("outlier", 2, 64, 128),
    ("random", 2, 7, 64),       # a partial last tile
    ("random", 2, 1, 64),       # a 1-token tile (identity balance)
    ("random", 2, 24, 12),      # D = 12 (the front rotates by its own transform)
    ("tiny", 2, 128, 64),
    ("huge", 2, 64, 128),
    ("constant", 1, 64, 64),
    ("zero", 1, 64, 64),
    ("zero_token", 2, 64, 64),
]


@pytest.mark.parametrize(("data", "n", "tokens", "dim"), CASES)
@pytest.mark.parametrize("grid", ["lloyd-max", "uniform-fit"])
@pytest.mark.parametrize("fmt", [0, 1])
def test_encode_matches_cpu(cp, data: str, n: int, tokens: int, dim: int, grid: str, fmt: int) -> None:
    x = _tokens(data, n, tokens, dim, zlib.crc32(f"{data}{n}{tokens}{dim}{grid}{fmt}".encode()))
    every = data == "random" and tokens == 128
    for key in (True, False):
        for bits in ((1, 2, 3, 4, 5, 6, 7, 8) if every else (2, 4)):
            want, got = _encode_both(cp, x, key, bits, grid, fmt)
            for name, w, g in zip(NAMES, want, got, strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"{name} key={key} bits={bits}")


@pytest.mark.parametrize(("iterations", "fits"), [(0, 0), (1, 1), (8, 0), (3, 9)])
def test_encode_iterations_and_fits(cp, iterations: int, fits: int) -> None:
    x = _tokens("outlier", 2, 128, 64, 17 + iterations + fits)
    for key in (True, False):
        want, got = _encode_both(cp, x, key, 2, "lloyd-max", 1, iterations, fits)
        for name, w, g in zip(NAMES, want, got, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} key={key}")


@pytest.mark.parametrize(("tokens", "dim"), [(128, 128), (64, 64), (5, 64), (1, 64), (24, 12)])
@pytest.mark.parametrize("fmt", [0, 1])
def test_decode_matches_cpu(cp, tokens: int, dim: int, fmt: int) -> None:
    x = _tokens("outlier", 3, tokens, dim, 7 + tokens + dim)
    for key in (True, False):
        for bits in (1, 2, 3, 4, 8):
            for grid in ("lloyd-max", "uniform-fit"):
                (packed, a, z, s), _ = _encode_both(cp, x, key, bits, grid, fmt)
                levels, _ = _tables(grid, bits)
                ref = np.empty(x.shape, np.float32)
                cpu.kvarn_grid_decode(packed, key, bits, levels, fmt, a, z, s, ref)
                out = cp.empty(x.shape, np.float32)
                out.view(np.uint8).fill(0xFF)  # NaN: an element left unwritten fails
                cuda_grid.kvarn_grid_decode(cp.asarray(packed), key, bits, cp.asarray(levels), fmt,
                                            *(cp.asarray(v) for v in (a, z, s)), out)
                np.testing.assert_array_equal(cp.asnumpy(out), ref, err_msg=f"key={key} bits={bits} {grid}")


def test_decode_of_arbitrary_fields(cp) -> None:
    """Every code and every scale code (NaN, Inf, subnormal float16 / e4m3) decodes as the CPU's."""
    rng = np.random.default_rng(4)
    n, t, d, bits = 4, 16, 8, 3
    for key in (True, False):
        for fmt in (0, 1):
            rows, cols = (d, t) if key else (t, d)
            packed = rng.integers(0, 256, (n, rows * cols * bits // 8), dtype=np.uint8)
            hi = 1 << 16 if fmt == 0 else 256
            a = rng.integers(0, hi, (n, rows), dtype=np.uint16)
            z = rng.integers(0, 1 << 16, (n, rows), dtype=np.uint16)
            s = rng.integers(0, hi, (n, cols), dtype=np.uint16)
            levels, _ = _tables("lloyd-max", bits)
            ref = np.empty((n, t, d), np.float32)
            cpu.kvarn_grid_decode(packed, key, bits, levels, fmt, a, z, s, ref)
            out = cp.empty((n, t, d), np.float32)
            cuda_grid.kvarn_grid_decode(*(cp.asarray(v) for v in (packed,)), key, bits, cp.asarray(levels), fmt,
                                        *(cp.asarray(v) for v in (a, z, s)), out)
            got = cp.asnumpy(out)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            np.testing.assert_array_equal(np.where(np.isnan(ref), 0, got), np.where(np.isnan(ref), 0, ref))


def test_bad_input(cp) -> None:
    x = cp.zeros((2, 16, 64), np.float32)
    levels, thresholds = (cp.asarray(v) for v in _tables("lloyd-max", 2))
    out = _outputs(cp, 2, 64, 16, 64 * 16 * 2 // 8, False)

    def enc(**kw):  # type: ignore[no-untyped-def]
        args = dict(x=x, key=True, bits=2, levels=levels, thresholds=thresholds, iterations=8, fits=FITS,
                    scale_format=0, packed=out[0], row_scale=out[1], row_offset=out[2], col_scale=out[3])
        args.update(kw)
        cuda_grid.kvarn_grid_encode(**args)

    with pytest.raises(TypeError, match="x must be a cupy"):
        enc(x=np.zeros((2, 16, 64), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        enc(x=cp.zeros((2, 64, 16), np.float32).transpose(0, 2, 1))
    with pytest.raises(TypeError, match="float32"):
        enc(x=x.astype(np.float16))
    with pytest.raises(TypeError, match="float32"):
        enc(x=x[0])
    with pytest.raises(TypeError, match="row_scale"):
        enc(row_scale=out[3])
    with pytest.raises(TypeError, match="packed"):
        enc(packed=cp.empty((2, 7), np.uint8))
    with pytest.raises(TypeError, match="levels"):
        enc(levels=levels[:3])
    with pytest.raises(TypeError, match="thresholds"):
        enc(thresholds=thresholds.astype(np.float32))
    with pytest.raises(ValueError, match="bits"):
        enc(bits=9)
    with pytest.raises(ValueError, match="scale_format"):
        enc(scale_format=2)
    with pytest.raises(ValueError, match="iterations"):
        enc(iterations=-1)
    with pytest.raises(ValueError, match="fits"):
        enc(fits=-1)
    with pytest.raises(ValueError, match="shared memory"):
        big = cp.zeros((1, 4096, 128), np.float32)  # a 4096 x 128 tile does not fit on chip
        rows, cols = 128, 4096
        o = _outputs(cp, 1, rows, cols, rows * cols * 2 // 8, False)
        cuda_grid.kvarn_grid_encode(big, True, 2, levels, thresholds, 8, FITS, 0, *o)
    dec_out = cp.empty((2, 16, 64), np.float32)
    with pytest.raises(TypeError, match="out must be"):
        cuda_grid.kvarn_grid_decode(out[0], True, 2, levels, 0, out[1], out[2], out[3], dec_out.astype(np.float64))
    with pytest.raises(TypeError, match="col_scale"):
        cuda_grid.kvarn_grid_decode(out[0], True, 2, levels, 0, out[1], out[2], out[1], dec_out)
    with pytest.raises(TypeError, match="levels"):
        cuda_grid.kvarn_grid_decode(out[0], True, 3, levels, 0, out[1], out[2], out[3], dec_out)


def test_deterministic_across_launch_geometries(cp, monkeypatch: pytest.MonkeyPatch) -> None:
    x = cp.asarray(_tokens("outlier", 37, 128, 64, 11))
    levels, thresholds = (cp.asarray(v) for v in _tables("lloyd-max", 2))
    outs = []
    for blocks in (cuda_kvarn.MAX_BLOCKS, 5, 1):
        monkeypatch.setattr(cuda_kvarn, "MAX_BLOCKS", blocks)
        for _ in range(2):
            o = _outputs(cp, 37, 128, 64, 128 * 64 * 2 // 8, True)
            cuda_grid.kvarn_grid_encode(x, False, 2, levels, thresholds, 8, FITS, 1, *o)
            outs.append([cp.asnumpy(a) for a in o])
    for o in outs[1:]:
        for a, b in zip(outs[0], o, strict=True):
            np.testing.assert_array_equal(a, b)
