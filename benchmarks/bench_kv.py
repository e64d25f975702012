"""KV cache: KVarN tile quantization and decode attention over a long cache (CPU).

1. ``lowbit.quantize(x, scheme="kvarn")`` of K tiles and V tiles (D = G = 128, float16 input:
   rotation, balance, RTN, fold, pack) against the straightforward NumPy composition of the same
   steps (``x @ H``, the per-tile power-of-two exponent, the vectorized balance of
   bench_balance.py, per-row RTN with ``np.rint``,
   fold, float16 casts, bit packing with shifts).  Minimum traffic: read the float16 input, write
   codes and scales.
2. ``QuantizedKVCache.attend`` (fused separable kernel) over a 32k-token kvarn-k4v2-g128 cache
   against dequantizing the cache and running NumPy float32 attention (``matmul``, softmax,
   ``matmul``) — what a decode step costs without a fused kernel.  Minimum traffic: read the
   quantized cache once.
"""

from __future__ import annotations

import math

import numpy as np
from bench_balance import numpy_balance
from common import best_time, row

import lowbit
import lowbit.cpu
from lowbit.cpu.kvarn import MEDIAN_LOG
from lowbit.kv import QuantizedKVCache


def kv_blocks(rng: np.random.Generator, n: int, tokens: int, dim: int) -> np.ndarray:
    """float16 K/V-like blocks: per-token and per-channel scales, three outlier channels."""
    x = rng.standard_normal((n, tokens, dim), dtype=np.float32)
    x *= np.exp(rng.normal(0, 0.5, (n, tokens, 1))).astype(np.float32)
    x *= np.exp(rng.normal(0, 0.5, (n, 1, dim))).astype(np.float32)
    x[:, :, [3, 50, 97]] *= 8
    return x.astype(np.float16)


def numpy_tile_exponent(tiles: np.ndarray) -> np.ndarray:
    """Per-tile exponent e [n] (int64) of float32 tiles [n, R, C], as lowbit/cpu/kvarn.py's
    ``tile_exponent_of`` defines it for representable tiles: the binade of the lower-median
    nonzero magnitude minus ``MEDIAN_LOG`` (0 for an all-zero tile)."""
    mag = np.abs(tiles).reshape(tiles.shape[0], -1)
    e = np.zeros(tiles.shape[0], np.int64)
    for i, m in enumerate(mag):
        nz = np.sort(m[m > 0])
        if nz.size:
            e[i] = np.frexp(np.float64(nz[(nz.size - 1) // 2]))[1] - 1 - MEDIAN_LOG
    return e


def numpy_kvarn(x16: np.ndarray, bits: int, kind: str, iterations: int = 8) -> dict[str, np.ndarray]:
    """The same steps as lowbit's kvarn scheme, composed from NumPy array operations."""
    n, tokens, dim = x16.shape
    h = (lowbit.hadamard_matrix(dim) / math.sqrt(dim)).astype(np.float32)
    rot = x16.astype(np.float32) @ h
    tiles = np.ascontiguousarray(rot.transpose(0, 2, 1)) if kind == "key" else rot
    e = numpy_tile_exponent(tiles)
    tiles = tiles * np.ldexp(np.float32(1), -e).astype(np.float32)[:, None, None]
    bal, s_col, s_row, _ = numpy_balance(tiles, iterations)
    levels = np.float32(2**bits - 1)
    lo = bal.min(axis=2, keepdims=True)
    hi = bal.max(axis=2, keepdims=True)
    step = np.maximum((hi - lo) / levels, np.float32(1e-10))
    codes = np.clip(np.rint((bal - lo) / step), 0, levels).astype(np.uint8)
    per_byte = 8 // bits
    grouped = codes.reshape(n, -1, per_byte).astype(np.uint16)
    packed = (grouped << (np.arange(per_byte, dtype=np.uint16) * bits)).sum(axis=2).astype(np.uint8)
    return {"codes": packed, "row_scale": (s_row * step)[..., 0].astype(np.float16),
            "row_offset": (s_row * lo)[..., 0].astype(np.float16),
            "col_scale": s_col[:, 0].astype(np.float16), "tile_exponent": e}


def numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """float32 GQA decode attention: q [B, Hq, D], k/v [B, Hk, T, D]."""
    b, hq, d = q.shape
    hk = k.shape[1]
    qg = q.reshape(b, hk, hq // hk, d)
    s = np.matmul(qg, k.transpose(0, 1, 3, 2)) * np.float32(scale)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.matmul(p, v).reshape(b, hq, d)


def bench_quantize(quick: bool) -> dict:
    n, g, d, bits = (64 if quick else 1024), 128, 128, 2
    rng = np.random.default_rng(0)
    k16, v16 = kv_blocks(rng, n, g, d), kv_blocks(rng, n, g, d)

    # correctness gate, same run: scales of a few tiles agree with the NumPy composition
    for x, kind in ((k16[:8], "key"), (v16[:8], "value")):
        q = lowbit.quantize(x, bits=bits, scheme="kvarn", kind=kind)
        ref = numpy_kvarn(x, bits, kind)
        np.testing.assert_array_equal(q.fields["tile_exponent"].reshape(-1), ref["tile_exponent"])
        for name in ("row_scale", "col_scale"):
            got = q.fields[name].astype(np.float32)
            assert np.allclose(got, ref[name].reshape(-1).astype(np.float32), rtol=2e-3), name
        assert np.mean(q.codes == ref["codes"].reshape(-1)) > 0.99

    def lowbit_run() -> None:
        lowbit.quantize(k16, bits=bits, scheme="kvarn", kind="key")
        lowbit.quantize(v16, bits=bits, scheme="kvarn", kind="value")

    def numpy_run() -> None:
        numpy_kvarn(k16, bits, "key")
        numpy_kvarn(v16, bits, "value")

    t = best_time(lowbit_run, 3)
    tb = best_time(numpy_run, 1 if not quick else 2, warmup=0 if not quick else 1)
    out_bytes = 2 * n * (g * d * bits // 8 + (2 * d + g) * 2)
    r = row(f"kvarn quantize k2v2 ({t / (2 * n) * 1e6:.0f} us/tile)", f"{n} K + {n} V tiles f16",
            t, "numpy composition", tb, k16.nbytes + v16.nbytes + out_bytes, 2 * n * g * d)
    r["us_per_tile"] = t / (2 * n) * 1e6
    return r


def bench_attend(quick: bool) -> list[dict]:
    b, hk, hq, d = 1, 8, 32, 128
    tokens = 4096 if quick else 32768
    rng = np.random.default_rng(1)
    cache = QuantizedKVCache("kvarn-k4v2-g128", d)
    chunk = 4096
    for _ in range(0, tokens, chunk):
        k = kv_blocks(rng, b * hk, chunk, d).reshape(b, hk, chunk, d)
        v = kv_blocks(rng, b * hk, chunk, d).reshape(b, hk, chunk, d)
        cache.append(k, v)
    q = rng.standard_normal((b, hq, d), dtype=np.float32)
    scale = 1.0 / math.sqrt(d)

    def baseline() -> np.ndarray:
        return numpy_attention(q, cache.dequantized_keys(), cache.dequantized_values(), scale)

    fused = cache.attend(q)
    ref = baseline()
    assert np.abs(fused - ref).max() <= 1e-4 * np.abs(ref).max(), "fused attend disagrees"
    t = best_time(lambda: cache.attend(q), 5)
    tb = best_time(baseline, 2)
    mem = cache.memory_bytes()
    r = row(f"kv attend k4v2-g128 (Hq {hq}, Hk {hk})", f"{tokens // 1024}k tokens, D {d}", t,
            "dequantize + numpy attn", tb, mem["total"], tokens * hk * d * 2)
    r["cache_bytes"] = mem["total"]
    r["fp16_bytes"] = tokens * hk * d * 2 * 2

    return [r]


def run(quick: bool = False) -> list[dict]:
    return [bench_quantize(quick), *bench_attend(quick)]
