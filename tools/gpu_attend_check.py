"""On a GPU, about a minute: the tensor-core kv_attend kernel (lowbit/cuda/kv_attend_mma.cuh,
lowbit.cuda.kv_attend.MMA) against float64 attention and its error bound, then its speed.

  python tools/gpu_attend_check.py [--no-bench] [--no-tests] [--no-packed]

1. Correctness.  Caches are built on the device (the CUDA encoders: no Numba compile); the oracle
   is float64 attention over the cache's own dequantized tokens (lowbit.kv.attend.reference_attend),
   the bound tests/kv_attend_bound.py's (TF32 operand rounding through the softmax).  Cases: every
   scheme / GQA ratio / ragged batch / region boundary / large score of tests/test_kv_attend.py that
   runs on CUDA, a new-token chunk, the benchmark presets at D = G = 128 with float16 exact tokens.
   Each line: kernel variant, max |err| / max |want|, max |err| / bound, PASS or FAIL by the test's
   criterion |err| <= 1e-3 max|want| + bound (the CUDA-core kernel, "cuda-core", with bound 0).
2. Determinism: five runs, the same bits.
3. Speed (skipped with --no-bench): the shapes of benchmarks/bench_kv_attend_cuda.py, fp16 SDPA
   vs the CUDA-core kernel vs the tensor-core kernel (hi + lo or single tf32 B operands, 1 / 2 / 4
   warps per block, split-K targets).
4. tests/test_kv_attend.py on the cupy backend with the tensor-core kernel on (skipped with
   --no-tests; the NaN / Inf / masked-position tests build their caches on the CPU: Numba compiles
   on first use).
Every kv_attend module variant is compiled first, in parallel.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(root), str(root / "tests"), str(root / "benchmarks")]

import cupy  # noqa: E402
import numpy as np  # noqa: E402
from kv_attend_bound import tf32_bound  # noqa: E402
from kv_attend_cases import RAGGED_STARTS, kv, ragged_batch  # noqa: E402

import lowbit.cuda as table  # noqa: E402
from lowbit.kv import QuantizedKVCache  # noqa: E402
from lowbit.kv.attend import (  # noqa: E402
    TileStore,
    _field_arrays,
    attend,
    kernel_layout,
    reference_attend,
    rotate,
)

ck = importlib.import_module("lowbit.cuda.kv_attend")  # the module (lowbit.cuda.kv_attend is also the function)
TOL = 1e-3
#: (name, MMA, MMA_SPLIT, MMA_WARPS, MMA_PACK) of the correctness runs (the first: the defaults once
#: MMA is on; "packed": hi / lo parts in one mma's columns, M <= 4; the last: the CUDA-core kernel)
VARIANTS = [("mma hi+lo w2", True, True, 2, False), ("mma tf32 w2", True, False, 2, False),
            ("mma hi+lo w1", True, True, 1, False), ("mma hi+lo w4", True, True, 4, False),
            ("mma packed w2", True, True, 2, True), ("cuda-core", False, True, 2, False)]
#: --no-packed leaves the packed build out (its first launch faulted, CUDA_ERROR_ILLEGAL_INSTRUCTION,
#: on an H100 on 2026-12-06, which ended that run before any other variant was checked)
PACKED = "--no-packed" not in sys.argv
VARIANTS = [v for v in VARIANTS if PACKED or not v[4]]
BASE = [v for v in VARIANTS if v[0] in ("mma hi+lo w2", "mma packed w2", "cuda-core")]
UNPACKED = [v for v in BASE if not v[4]]                    # hi+lo, cuda-core
WITH_TF32 = BASE[:1] + VARIANTS[1:2] + BASE[1:]
SCHEMES = [("kvarn-k2v2-g64", {}), ("kvarn-k4v2-g64", {"scale_dtype": "float8_e4m3"}),
           ("kvarn-k4v4-g128", {}), ("kivi", {"group_size": 64})]
failures: list[str] = []


def setv(mma: bool, split: bool, warps: int, pack: bool = False) -> None:
    ck.MMA, ck.MMA_SPLIT, ck.MMA_WARPS, ck.MMA_PACK = mma, split, warps, pack


def device_cache(scheme: str, opts: dict, k: np.ndarray, v: np.ndarray, sink: int = 32,
                 recent: int = 0) -> QuantizedKVCache:
    cache = QuantizedKVCache(scheme, k.shape[3], sink=sink, recent=recent, **opts)
    cache.append(cupy.asarray(k[:, :, :100]), cupy.asarray(v[:, :, :100]))
    for i in range(100, k.shape[2], 37):
        cache.append(cupy.asarray(k[:, :, i:i + 37]), cupy.asarray(v[:, :, i:i + 37]))
    return cache


def host(store: TileStore) -> tuple[TileStore, tuple]:
    """A numpy copy of a device store, and the kernel's fields as the device computes them."""
    h = TileStore(store.codec, store.group_size, *(cupy.asnumpy(a) for a in (
        store.sink_k, store.sink_v, store.recent_k, store.recent_v, store.k_codes, store.v_codes)),
        {n: cupy.asnumpy(a) for n, a in store.k_fields.items()},
        {n: cupy.asnumpy(a) for n, a in store.v_fields.items()}, cupy.asnumpy(store.lengths))
    fields = tuple(tuple(cupy.asnumpy(a) for a in _field_arrays(store, kind, cupy)) for kind in ("key", "value"))
    return h, fields


def report(name: str, variant: str, got: np.ndarray, want: np.ndarray, bound: np.ndarray | float) -> None:
    err = np.abs(got - want)
    scale = np.abs(want).max()
    ok = bool((err <= TOL * scale + bound).all()) and bool(np.isfinite(got).all())
    ratio = float((err / np.maximum(bound, 1e-30)).max()) if np.max(bound) > 0 else float("nan")
    print(f"  {'PASS' if ok else 'FAIL'} {name:<34} {variant:<14} err/max {err.max() / scale:9.2e}  "
          f"bound/max {np.max(bound) / scale:9.2e}  max err/bound {ratio:9.2e}", flush=True)
    if not ok:
        failures.append(f"{name} {variant}")


def front(store: TileStore, q: np.ndarray, *new: np.ndarray, row: slice = slice(None)) -> np.ndarray:
    """lowbit.kv.attend on the device (the current kernel variant), rows ``row`` as numpy."""
    return cupy.asnumpy(attend(store, cupy.asarray(q), *(cupy.asarray(a) for a in new)))[row]


def check(name: str, run, q: np.ndarray, store: TileStore, keys: np.ndarray, values: np.ndarray,
          start=None, variants=VARIANTS) -> None:
    """``run()`` -> output (numpy) for the current variant; compared with the float64 oracle."""
    want = reference_attend(q, keys, values, start=start)
    hstore, fields = host(store)
    for label, mma, split, warps, pack in variants:
        setv(mma, split, warps, pack)
        got = run()
        bound = tf32_bound(q, hstore, keys, values, start=start, split=split, fields=fields) if mma else 0.0
        report(name, label, got, want, bound)


def correctness(rng: np.random.Generator) -> None:
    print("correctness vs float64 attention over the dequantized cache (criterion |err| <= 1e-3 max + bound)")
    for scheme, opts in SCHEMES:
        for ratio in (1, 4, 8):
            k, v = kv(rng, 2, 2, 32 + 3 * 128 + 21, 64)
            cache = device_cache(scheme, opts, k, v)
            q = (rng.standard_normal((2, 2 * ratio, 1, 64)) * 2).astype(np.float32)
            store = cache.tile_store()
            check(f"{scheme} Hq/Hk={ratio}", functools.partial(front, store, q), q, store,
                  cupy.asnumpy(cache.dequantized_keys()), cupy.asnumpy(cache.dequantized_values()),
                  variants={1: BASE, 4: VARIANTS, 8: UNPACKED}[ratio])
    for scheme, opts in SCHEMES[1:2] + SCHEMES[3:]:   # ragged batch, start inside the sink and a tile
        caches, stores, batch, q = ragged_batch(rng, lambda k, v, s=scheme, o=opts: device_cache(s, o, k, v))
        for i, (c, first) in enumerate(zip(caches, RAGGED_STARTS, strict=True)):
            check(f"{scheme} ragged seq {i} start {first}", functools.partial(front, batch, q, row=slice(i, i + 1)),
                  q[i:i + 1],
                  stores[i], cupy.asnumpy(c.dequantized_keys()), cupy.asnumpy(c.dequantized_values()),
                  start=np.array([first]), variants=WITH_TF32)
    for tokens in (31, 33, 32 + 127, 32 + 128, 32 + 129, 32 + 256 + 127):   # region boundaries
        for recent in (0, 64):
            k, v = kv(rng, 1, 2, tokens, 64)
            cache = device_cache("kvarn-k4v2-g128", {}, k, v, recent=recent)
            q = rng.standard_normal((1, 8, 1, 64)).astype(np.float32)
            store = cache.tile_store()
            check(f"regions T={tokens} recent={recent}", functools.partial(front, store, q), q,
                  store, cupy.asnumpy(cache.dequantized_keys()), cupy.asnumpy(cache.dequantized_values()),
                  variants=BASE)
    k, v = kv(rng, 2, 2, 32 + 2 * 128 + 10, 64)          # a chunk of new exact tokens after the cache
    cache = device_cache("kvarn-k2v2-g64", {}, k, v)
    nk, nv = kv(rng, 2, 2, 9, 64)
    q = rng.standard_normal((2, 8, 1, 64)).astype(np.float32)
    store = cache.tile_store()
    check("new tokens N=9", functools.partial(front, store, q, nk, nv), q, store, np.concatenate([cupy.asnumpy(cache.dequantized_keys()), nk], 2),
          np.concatenate([cupy.asnumpy(cache.dequantized_values()), nv], 2), variants=WITH_TF32)
    k, v = kv(rng, 1, 2, 32 + 2 * 128 + 10, 64)          # scores in the thousands
    cache = device_cache("kvarn-k4v4-g128", {}, k, v)
    q = (rng.standard_normal((1, 4, 1, 64)) * 300).astype(np.float32)
    store = cache.tile_store()
    check("large scores", functools.partial(front, store, q), q, store,
          cupy.asnumpy(cache.dequantized_keys()), cupy.asnumpy(cache.dequantized_values()),
          variants=WITH_TF32)
    for preset in ("kvarn-k4v2-g128", "kvarn-k2v2-g128"):  # the benchmark's layouts, float16 exact tokens
        k, v = kv(rng, 3, 2, 128 + 9 * 128 + 40, 128)
        cache = device_cache(preset, {}, k, v, sink=128)
        store = cache.tile_store()
        q = rng.standard_normal((3, 8, 1, 128)).astype(np.float32)
        keys, values = cupy.asnumpy(cache.dequantized_keys()), cupy.asnumpy(cache.dequantized_values())
        sink16 = (store.sink_k.astype(cupy.float16), store.sink_v.astype(cupy.float16))
        rec16 = (store.recent_k.astype(cupy.float16), store.recent_v.astype(cupy.float16))
        _, n_s, n_t, n_r = (int(x) for x in cupy.asnumpy(store.lengths)[0])  # the same for every sequence
        keys[:, :, :n_s] = cupy.asnumpy(sink16[0][:, :, :n_s]).astype(np.float32)
        values[:, :, :n_s] = cupy.asnumpy(sink16[1][:, :, :n_s]).astype(np.float32)
        tail = n_s + n_t * 128
        assert keys.shape[2] == tail + n_r
        keys[:, :, tail:] = cupy.asnumpy(rec16[0][:, :, :n_r]).astype(np.float32)
        values[:, :, tail:] = cupy.asnumpy(rec16[1][:, :, :n_r]).astype(np.float32)

        def run16(store: TileStore = store, sink16: tuple = sink16, rec16: tuple = rec16, q: np.ndarray = q) -> np.ndarray:
            qd = cupy.asarray(q)
            qr = rotate(qd) if store.codec.rotated else qd
            ka, kz, ks = _field_arrays(store, "key", cupy)
            va, vz, vs = _field_arrays(store, "value", cupy)
            out_e, out_r = cupy.empty_like(qd), cupy.empty_like(qd)
            empty = cupy.zeros((3, 2, 0, 128), cupy.float16)
            lut = cupy.arange(16, dtype=cupy.float32)
            table.kv_attend(qd, cupy.ascontiguousarray(qr), store.lengths, *sink16, *rec16, empty, empty,
                            store.k_codes, ka, kz, ks, store.v_codes, va, vz, vs, lut, lut,
                            kernel_layout(store.codec, 128, 128), 128 ** -0.5, out_e, out_r)
            return cupy.asnumpy(out_e + (rotate(out_r) if store.codec.rotated else out_r))

        check(f"{preset} D=128 float16 exact", run16, q, store, keys, values)


def determinism(rng: np.random.Generator) -> None:
    print("determinism (5 runs of each kernel variant, the same bits)")
    k, v = kv(rng, 3, 2, 32 + 9 * 128 + 40, 128)
    cache = device_cache("kvarn-k2v2-g128", {}, k, v)
    store = cache.tile_store()
    q = cupy.asarray(rng.standard_normal((3, 16, 1, 128)).astype(np.float32))
    for label, mma, split, warps, pack in VARIANTS:
        setv(mma, split, warps, pack)
        first = cupy.asnumpy(attend(store, q))
        same = all(np.array_equal(cupy.asnumpy(attend(store, q)), first) for _ in range(4))
        print(f"  {'PASS' if same else 'FAIL'} {label}", flush=True)
        if not same:
            failures.append(f"determinism {label}")


def bench() -> None:
    import bench_kv_attend_cuda as bk

    print("speed (H = 32 / 8, D = G = 128; ms, median of 20; vs fp16 = fp16 time / this time)")
    for b, t in bk.SHAPES:
        fp, name = bk.fp16_baseline(b, t)
        print(f"({b}, {t // 1024}k) fp16 {name}: {fp * 1e3:.3f} ms", flush=True)
        for preset in ("kvarn-k4v2-g128", "kvarn-k2v2-g128"):
            rows = [("cuda-core 16/SM", False, True, 2, False, 16)]
            rows += [(f"mma hi+lo w{w} {n}/SM", True, True, w, False, n) for w in (1, 2, 4) for n in (6, 12, 24)]
            rows += [(f"mma tf32 w2 {n}/SM", True, False, 2, False, n) for n in (6, 12, 24)]
            rows += [(f"mma packed w{w} {n}/SM", True, True, w, True, n) for w in (2, 4) for n in (6, 12, 24)
                     if PACKED]
            for label, mma, split, warps, pack, per_sm in rows:
                setv(mma, split, warps, pack)
                ck.MMA_BLOCKS_PER_SM = per_sm
                sec, _ = bk.lowbit_case(bk.CODECS[preset], b, t)
                print(f"  {preset} {label:<22} {sec * 1e3:8.3f} ms  {fp / sec:5.2f}x", flush=True)
        import torch

        torch.cuda.empty_cache()
        cupy.get_default_memory_pool().free_all_blocks()


def _compile(defines: tuple[str, ...]) -> float:
    from lowbit.cuda._module import _module

    t = time.perf_counter()
    _module("kv_attend", 0, defines).compile()
    return time.perf_counter() - t


def variant_defines() -> set[tuple[str, ...]]:
    """The -D options of every kv_attend module the runs below build (their layouts / variants)."""
    from lowbit.kv import PRESETS
    from lowbit.kv.codecs import KVarNCodec

    def lay64(scheme: str, opts: dict) -> tuple:
        c = QuantizedKVCache(scheme, 64, sink=32, **opts)
        return kernel_layout(c.codec, 64, c.group_size)

    every = VARIANTS
    runs = []   # (layout, head_dim, M, float16 exact tokens, variants) as correctness() / bench() use them
    for scheme, opts in SCHEMES:
        runs += [(lay64(scheme, opts), 64, 1, False, BASE), (lay64(scheme, opts), 64, 4, False, every),
                 (lay64(scheme, opts), 64, 8, False, UNPACKED)]
    runs += [(lay64("kvarn-k4v2-g128", {}), 64, 4, False, BASE), (lay64("kvarn-k4v4-g128", {}), 64, 2, False, WITH_TF32)]
    for preset in ("kvarn-k4v2-g128", "kvarn-k2v2-g128"):
        p = PRESETS[preset]
        lay = kernel_layout(KVarNCodec(p.key_bits, p.value_bits), 128, 128)
        runs.append((lay, 128, 4, True, every))
    runs.append((runs[-1][0], 128, 8, False, every))   # determinism: k2v2 D = 128, M = 8
    jobs = set()
    for lay, dim, m, f16, variants in runs:
        for _, mma, split, warps, pack in variants:
            setv(mma, split, warps, pack)
            jobs.add(ck.kernel_defines(lay, dim, m, f16))
    for lay, dim, m, f16, _ in runs[-3:-1] if PACKED else []:   # the benchmark's packed 4-warp rows
        setv(True, True, 4, True)
        jobs.add(ck.kernel_defines(lay, dim, m, f16))
    return jobs


def precompile() -> None:
    """Every kv_attend variant the runs build, compiled in parallel into CuPy's cache."""
    jobs = variant_defines()
    t = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(16, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_compile, sorted(jobs)))
    print(f"{len(jobs)} kv_attend variants compiled in {time.perf_counter() - t:.1f} s", flush=True)


def main() -> int:
    t = time.perf_counter()
    precompile()  # before this process touches the device
    print(cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
    rng = np.random.default_rng(20261206)
    correctness(rng)
    determinism(rng)
    setv(True, True, 2)
    if "--no-bench" not in sys.argv:
        bench()
    if "--no-tests" not in sys.argv:
        import pytest

        setv(True, True, 2)
        ck.MMA_BLOCKS_PER_SM = 12
        print("tests/test_kv_attend.py -k cupy with lowbit.cuda.kv_attend.MMA = True", flush=True)
        if pytest.main(["-q", "-p", "no:cacheprovider", str(root / "tests" / "test_kv_attend.py"), "-k", "cupy"]):
            failures.append("tests/test_kv_attend.py")
    print(f"{len(failures)} failures{': ' + ', '.join(failures) if failures else ''}; "
          f"{time.perf_counter() - t:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
