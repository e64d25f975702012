"""Decode attention on the GPU: lowbit kv_attend on packed codes vs float16 attention, same run.

Hq = 32, Hk = 8, D = 128, one query token per sequence, shapes (B, T) = (16, 32k), (64, 8k),
(1, 128k); presets kvarn-k4v2-g128 and kvarn-k2v2-g128 (key codes [D, G]; the split-K target
swept), rtn with 4-bit keys / 2-bit values and fp8 (key codes [G, D], per-token float16 scale and
offset / e4m3 codes with one float32 scale per tile; the default split-K target), G = 128 (sink
128 float16 exact tokens, the rest in tiles; codes and scales are random: the kernel's speed does
not depend on them, its correctness is tested in tests/test_kv_attend.py).  Baseline: the fastest of torch
``scaled_dot_product_attention`` with ``enable_gqa=True`` and the flash / cuDNN backends with
the query heads folded into the query length (q ``[B, Hk, Hq/Hk, D]``), each reading K and V
once.  Time: CUDA events, median of 20 after warm-up.  The lowbit time is the kernel pair
(split + combine), without the query rotation / output un-rotation (two small FWHT launches).
%-of-copy: bytes actually read (codes, scales, exact tokens; fp16: K and V) over the time,
relative to a device-to-device copy measured in this run.
"""

from __future__ import annotations

import importlib
import statistics

import cupy
import numpy as np
import torch

import lowbit.cuda as table
from lowbit.kv import PRESETS
from lowbit.kv.attend import code_values, kernel_layout
from lowbit.kv.codecs import Codec, FP8Codec, KVarNCodec, TokenRTNCodec

HQ, HK, D, G, SINK = 32, 8, 128, 128, 128
SHAPES = [(16, 32768), (64, 8192), (1, 131072)]
cuda_kv_attend = importlib.import_module("lowbit.cuda.kv_attend")  # the module (lowbit.cuda.kv_attend is also the function)
#: blocks per SM of the split-K heuristic tried in the same run (the library's default first)
SPLIT_TARGETS = (cuda_kv_attend.BLOCKS_PER_SM, 8, 12, 16)


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def copy_bandwidth() -> float:
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    return 2 * x.numel() / timed(lambda: y.copy_(x))


def fp16_baseline(b: int, t: int) -> tuple[float, str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(b, HQ, 1, D, device="cuda", dtype=torch.float16)
    k = torch.randn(b, HK, t, D, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    f = torch.nn.functional.scaled_dot_product_attention
    best = (timed(lambda: f(q, k, v, enable_gqa=True)), "sdpa enable_gqa")
    qf = q.reshape(b, HK, HQ // HK, D)
    for name, backend in (("flash folded", SDPBackend.FLASH_ATTENTION), ("cudnn folded", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                best = min(best, (timed(lambda: f(qf, k, v)), name))
        except RuntimeError as exc:
            print(f"  ({name} unavailable: {str(exc).splitlines()[0][:80]})")
    return best


#: the cases timed: name -> codec (the KVarN presets with the split-K sweep)
CODECS: dict[str, Codec] = {
    **{n: KVarNCodec(PRESETS[n].key_bits, PRESETS[n].value_bits) for n in ("kvarn-k4v2-g128", "kvarn-k2v2-g128")},
    "rtn-k4v2": TokenRTNCodec(4, 2), "fp8": FP8Codec(),
}


def lowbit_case(codec: Codec, b: int, t: int) -> tuple[float, int]:
    n_tiles = (t - SINK) // G
    rs = cupy.random.RandomState(0)
    fp8 = isinstance(codec, FP8Codec)

    def codes(bits: int) -> cupy.ndarray:  # fp8: below 0x7f (0x7f and 0xff are e4m3 NaN)
        return rs.randint(0, 0x7f if fp8 else 256, (b, HK, n_tiles, D * G * bits // 8),
                          dtype=cupy.int32).astype(cupy.uint8)

    def f16(n: int, lo: float, hi: float) -> cupy.ndarray:
        return rs.uniform(lo, hi, (b, HK, n_tiles, n)).astype(cupy.float16).view(cupy.uint16)

    def f32(n: int, lo: float, hi: float) -> cupy.ndarray:
        return rs.uniform(lo, hi, (b, HK, n_tiles, n)).astype(cupy.float32)

    kc, vc = codes(codec.bits("key")), codes(codec.bits("value"))
    if isinstance(codec, KVarNCodec):
        def col(n: int) -> cupy.ndarray:  # with the per-tile exponent the kernel reads s_col * 2**e as float32
            return f32(n, 0.7, 1.5) if codec.tile_exponent else f16(n, 0.7, 1.5)

        ka, kz, ks = f16(D, 0.01, 0.1), f16(D, -0.1, 0.1), col(G)
        va, vz, vs = f16(G, 0.01, 0.1), f16(G, -0.1, 0.1), col(D)
    elif fp8:  # one float32 scale per tile; Z and S absent (dummies, not read)
        ka, va = f32(1, 0.001, 0.01), f32(1, 0.001, 0.01)
        kz = ks = vz = vs = cupy.zeros((1, 1, 1, 1), cupy.float32)
    else:  # per-token float16 scale and offset; S absent
        ka, kz, va, vz = f16(G, 0.01, 0.1), f16(G, -0.1, 0.1), f16(G, 0.01, 0.1), f16(G, -0.1, 0.1)
        ks = vs = cupy.zeros((1, 1, 1, 1), cupy.uint16)
    sink = rs.standard_normal((b, HK, SINK, D)).astype(cupy.float16)
    empty = cupy.zeros((b, HK, 0, D), cupy.float16)
    lengths = cupy.asarray(np.array([[0, SINK, n_tiles, 0]] * b, np.int32))
    q = rs.standard_normal((b, HQ, 1, D)).astype(cupy.float32)
    out_e, out_r = cupy.empty_like(q), cupy.empty_like(q)
    k_lut, v_lut = (cupy.asarray(code_values(codec, kind)) for kind in ("key", "value"))
    lay = kernel_layout(codec, D, G)

    def run() -> None:
        table.kv_attend(q, q, lengths, sink, sink, empty, empty, empty, empty, kc, ka, kz, ks,
                        vc, va, vz, vs, k_lut, v_lut, lay, 0.088, out_e, out_r)

    read = sum(a.nbytes for a in (kc, vc, ka, kz, ks, va, vz, vs)) + 2 * sink.nbytes
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    with stream:
        sec = timed(run)
    assert bool(cupy.isfinite(out_r).all())
    return sec, read


def main() -> None:
    default_per_sm = cuda_kv_attend.BLOCKS_PER_SM
    bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}; device copy {bw / 1e12:.2f} TB/s (read + write)")
    print(f"{'shape':<12}{'kernel':<26}{'ms':>8}{'GB read':>9}{'% copy':>8}{'vs fp16':>9}")
    for b, t in SHAPES:
        fp, name = fp16_baseline(b, t)
        fp_bytes = 2 * b * HK * t * D * 2
        print(f"{f'({b}, {t // 1024}k)':<12}{'fp16 ' + name:<26}{fp * 1e3:>8.3f}{fp_bytes / 1e9:>9.2f}"
              f"{100 * fp_bytes / fp / bw:>8.1f}{1:>9.2f}")
        for preset, codec in CODECS.items():
            sweep = SPLIT_TARGETS if preset.startswith("kvarn") else SPLIT_TARGETS[:1]
            for per_sm in sweep:  # the split-K target, swept in the same run
                cuda_kv_attend.BLOCKS_PER_SM = per_sm
                sec, read = lowbit_case(codec, b, t)
                label = f"lowbit {preset} {per_sm}/SM"
                print(f"{'':<12}{label:<26}{sec * 1e3:>8.3f}{read / 1e9:>9.2f}"
                      f"{100 * read / sec / bw:>8.1f}{fp / sec:>9.2f}x", flush=True)
            cuda_kv_attend.BLOCKS_PER_SM = default_per_sm
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
