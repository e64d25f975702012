"""GPU: the fused KVarN store (kvarn_encode) and its decoder (kvarn_decode), D = G = 128.

Skipped (no rows) without a CUDA device.  Store: float16 tokens -> packed tiles (rotation,
per-tile exponent, balance at 8 iterations, RTN, fold, float16 scales, packing), K and V,
65 536 tiles each (2 GiB of tokens, far beyond the 60 MB L2), per tile in µs, against a
batched torch implementation of the same algorithm in the same run (cuBLAS rotation,
bench_balance_cuda's torch balance, RTN, fold and packing as torch ops; timed on 16 384 tiles,
reported per tile).  Decode: 2- and 4-bit tiles -> float16 tokens (un-rotated), bytes moved
(codes + scales read, tokens written) against the measured device copy bandwidth; the decoder
the wrapper picks (kvarn_decode128.cu) against the register decoder (kvarn_decode.cu) on the same
tiles, and the generic one's time printed.
"""

from __future__ import annotations

import functools
import math
import sys

from bench_balance_cuda import torch_balance
from cuda_common import event_time, gpu_available, gpu_row

import lowbit
import lowbit.cpu
from lowbit.cuda import kvarn as cuda_kvarn  # not yet in lowbit.cuda.KERNELS


def torch_store(x, key: bool, bits: int, iterations: int = 8):  # type: ignore[no-untyped-def]
    """[B, T, D] float16 tokens -> (packed uint8 [B, R * C * bits / 8], A, Z, s_col float16)."""
    import torch

    b, t, d = x.shape
    h = torch.tensor(lowbit.transforms.hadamard_matrix(d) / math.sqrt(d), dtype=torch.float16, device=x.device)
    rot = (x @ h).float()
    tile = rot.transpose(1, 2) if key else rot
    mag = tile.abs().flatten(1)
    med = mag.median(dim=1).values.clamp_min(2.0**-126)
    e = torch.floor(torch.log2(med)) + 1
    tile = tile * torch.exp2(-e)[:, None, None]
    bal, s_col, s_row, _ = torch_balance(tile.contiguous(), iterations)
    lo, hi = bal.amin(dim=2, keepdim=True), bal.amax(dim=2, keepdim=True)
    levels = (1 << bits) - 1
    step = ((hi - lo) / levels).clamp_min(1e-10)
    codes = ((bal - lo) / step).round().clamp(0, levels).to(torch.uint8).flatten(1)
    per = 8 // bits
    codes = codes.view(b, -1, per).to(torch.int32)
    shifts = torch.arange(per, device=x.device, dtype=torch.int32) * bits
    packed = (codes << shifts).sum(dim=2).to(torch.uint8)
    return packed, (s_row * step).half(), (s_row * lo).half(), s_col.half(), e.to(torch.int8)


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("bench_kvarn_cuda: skipped (no CUDA device)", file=sys.stderr)
        return []
    import cupy as cp
    import numpy as np
    import torch

    n_tiles = 2048 if quick else 65536
    n_torch = min(n_tiles, 16384)
    g, d, it = 128, 128, 8
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n_tiles, g, d, device="cuda", generator=gen)
    x *= torch.randn(n_tiles, g, 1, device="cuda", generator=gen).mul(0.5).exp()  # token magnitudes
    x[:, 5] *= 30  # one outlier token per tile
    x = x.half()
    xc = cp.from_dlpack(x)

    def outputs(bits: int) -> tuple:  # type: ignore[type-arg]
        return (cp.empty((n_tiles, g * d * bits // 8), cp.uint8), cp.empty((n_tiles, d), cp.uint16),
                cp.empty((n_tiles, d), cp.uint16), cp.empty((n_tiles, g), cp.uint16), cp.empty(n_tiles, cp.int8))

    results = []
    for kind, key in (("K", True), ("V", False)):
        bits = 4 if key else 2
        out = outputs(bits)
        store = functools.partial(cuda_kvarn.kvarn_encode, xc, True, key, bits, it, 0, True, *out)
        # correctness gate, same run: the CPU twin's bytes on the first tiles
        store()
        m = 16
        want = [np.empty((m, *a.shape[1:]), a.dtype) for a in out]
        lowbit.cpu.kvarn_encode(cp.asnumpy(xc[:m]).astype(np.float32), True, key, bits, it, 0, True, *want)
        for w, a in zip(want, out, strict=True):
            assert np.array_equal(cp.asnumpy(a[:m]), w), "GPU and CPU stores differ"
        t = event_time(store, repeat=5, warmup=2)
        tb = event_time(functools.partial(torch_store, x[:n_torch], key, bits, it), repeat=3, warmup=1)
        tb_tile = tb / n_torch
        nbytes = x.numel() * 2 + sum(a.nbytes for a in out)
        row = gpu_row(f"kvarn_encode {kind} {bits}-bit, D=G=128, {it} it, f16 scales",
                      f"{n_tiles} tiles, {t / n_tiles * 1e6:.3f} us/tile", t,
                      "torch batched, same algorithm", tb_tile * n_tiles, nbytes, x.numel())
        row["us_per_tile"] = t / n_tiles * 1e6
        row["baseline_us_per_tile"] = tb_tile * 1e6
        results.append(row)
        print(f"kvarn_encode {kind}: {t / n_tiles * 1e6:.4f} us/tile, torch {tb_tile * 1e6:.3f} us/tile "
              f"({tb_tile * n_tiles / t:.1f}x)", flush=True)

    for bits in (2, 4):
        for kind, key in (("K", True), ("V", False)):
            out = outputs(bits)
            cuda_kvarn.kvarn_encode(xc, True, key, bits, it, 0, True, *out)
            dec = cp.empty((n_tiles, g, d), cp.float16)
            fn = functools.partial(cuda_kvarn.kvarn_decode, out[0], True, key, bits, 0, *out[1:], dec)
            fn()
            ref = np.empty((16, g, d), np.float32)
            lowbit.cpu.kvarn_decode(*[cp.asnumpy(a[:16]) for a in out[:1]], True, key, bits, 0,
                                    *[cp.asnumpy(a[:16]) for a in out[1:]], ref)
            assert np.array_equal(cp.asnumpy(dec[:16]), ref.astype(np.float16)), "GPU and CPU decodes differ"
            t = event_time(fn, repeat=10)
            # the older decoders, same run: the register decoder (kvarn_decode.cu, the baseline)
            # and the generic in-shared-memory one, the same bytes
            other = cp.empty_like(dec)
            ofn = functools.partial(cuda_kvarn.kvarn_decode, out[0], True, key, bits, 0, *out[1:], other)
            times = {}
            for flag in ("DECODE128", "FAST_DECODE"):
                setattr(cuda_kvarn, flag, False)
                try:
                    other.fill(0)
                    ofn()
                    assert bool((other == dec).all()), f"the CUDA decoders differ ({flag} off)"
                    times[flag] = event_time(ofn, repeat=5)
                finally:
                    setattr(cuda_kvarn, flag, True)
            nbytes = sum(a.nbytes for a in out) + dec.nbytes
            us = {k: v / n_tiles * 1e6 for k, v in times.items()}
            print(f"kvarn_decode {kind} {bits}-bit: {t / n_tiles * 1e6:.4f} us/tile, register decoder "
                  f"{us['DECODE128']:.4f}, generic {us['FAST_DECODE']:.4f} us/tile", flush=True)
            results.append(gpu_row(f"kvarn_decode {kind} {bits}-bit -> f16, D=G=128 (un-rotated)",
                                   f"{n_tiles} tiles, {t / n_tiles * 1e6:.4f} us/tile", t,
                                   "register decoder (kvarn_decode.cu)", times["DECODE128"], nbytes, dec.size))
    return results


if __name__ == "__main__":
    sys.path.insert(0, ".")
    for r in run("--quick" in sys.argv):
        print(r)
