"""Time variants of the rtn lane kernels (kernel only, CUDA events) to see what bounds them.

Variants are built from lowbit/cuda/rtn.cu by text substitution, so the shipped source keeps
no experiment switches.  Usage on a GPU machine: python tools/gpu_lane_variants.py
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

sys.path.insert(0, "benchmarks")
from cuda_common import device_copy_bandwidth, event_time  # noqa: E402

from lowbit.cuda._module import OPTIONS, source  # noqa: E402
from lowbit.cuda.rtn import lane_grid  # noqa: E402

COPY_PATTERN = r"""
// Same loads and stores as the quantize lane kernel, no arithmetic: the access pattern's ceiling.
extern "C" __global__ void __launch_bounds__(256) copy_items(const __half* x, long long n_items, u32* packed, float* scale) {
    constexpr int U = 2;
    const long long first = (long long)blockIdx.x * (256 * U) + threadIdx.x;
    Item<__half> it[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const long long item = first + u * 256;
        if (item < n_items) {
            const uint4* src = reinterpret_cast<const uint4*>(x + item * 32);
#pragma unroll
            for (int i = 0; i < 4; ++i) it[u].q[i] = src[i];
        }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const long long item = first + u * 256;
        if (item >= n_items) break;
        u32 a = 0, b = 0;
#pragma unroll
        for (int i = 0; i < 16; i += 2) { a ^= it[u].w[i]; b ^= it[u].w[i + 1]; }
        *reinterpret_cast<uint2*>(packed + item * 2) = make_uint2(a, b);
        if ((threadIdx.x & 3) == 0) scale[item / 4] = __uint_as_float(a);
    }
}
// Coalesced loads: each warp instruction reads 512 contiguous bytes.
extern "C" __global__ void __launch_bounds__(256) copy_coalesced(const uint4* x, long long n_vec, uint2* out) {
    const long long first = (long long)blockIdx.x * 1024 + threadIdx.x;
    uint4 v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) if (first + i * 256 < n_vec) v[i] = x[first + i * 256];
#pragma unroll
    for (int i = 0; i < 4; ++i) if (first + i * 256 < n_vec) {
        if ((first + i * 256) % 4 == 0) out[(first + i * 256) / 4] = make_uint2(v[i].x ^ v[i].y, v[i].z ^ v[i].w);
    }
}
"""


def module(text: str, bits: int):
    return cp.RawModule(code=text, options=OPTIONS + (f"-DLOWBIT_LANE_BITS={bits}",))


def main() -> None:
    n = 1 << 29  # 1 GiB of float16
    x = cp.random.standard_normal(n, dtype=cp.float32).astype(cp.float16)
    g = 128
    ng = n // g
    items = n // 32
    bw = device_copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    base = source("rtn")
    variants = {"shipped": base}
    for blocks in (2, 4):
        variants[f"min {blocks} blocks/SM"] = base.replace("#define LANE_MIN_BLOCKS_16 3", f"#define LANE_MIN_BLOCKS_16 {blocks}")
    load = "for (int i = 0; i < Item<T>::NQ; ++i) it.q[i] = src[i];"
    assert load in base
    variants["__ldg loads"] = base.replace(load, "for (int i = 0; i < Item<T>::NQ; ++i) it.q[i] = __ldg(src + i);")
    variants["L2::256B prefetch loads"] = base.replace(load, (
        "for (int i = 0; i < Item<T>::NQ; ++i) asm volatile(\"ld.global.nc.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\" "
        ": \"=r\"(it.q[i].x), \"=r\"(it.q[i].y), \"=r\"(it.q[i].z), \"=r\"(it.q[i].w) : \"l\"(src + i));"))
    variants["L1 no-allocate loads"] = base.replace(load, (
        "for (int i = 0; i < Item<T>::NQ; ++i) asm volatile(\"ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\" "
        ": \"=r\"(it.q[i].x), \"=r\"(it.q[i].y), \"=r\"(it.q[i].z), \"=r\"(it.q[i].w) : \"l\"(src + i));"))
    for bits in (2, 4):
        packed = cp.empty(n * bits // 8, cp.uint8)
        s = cp.empty(ng, cp.float32)
        o = cp.empty(ng, cp.float32)
        st = cp.zeros(1, cp.int32)
        traffic = 2 * n + n * bits // 8 + 8 * ng
        for symmetric in (0, 1):
            ref = None
            for name, text in variants.items():
                m = module(text, bits)
                k = m.get_function(f"lowbit_rtn_quantize_lanes_f16_b{bits}")
                args = (x, np.int64(items), np.int32(g // 32), np.int32(symmetric), np.int32(0), np.int32(0),
                        np.uint64(0), np.int32(16), packed, s, o, st)
                blocks = lane_grid(k, items)
                k(blocks, (256,), args)
                if ref is None:
                    ref = cp.asnumpy(packed)
                else:
                    assert np.array_equal(ref, cp.asnumpy(packed)), name
                t = event_time(lambda k=k, blocks=blocks, args=args: k(blocks, (256,), args))
                print(f"{bits}-bit sym={symmetric} {name}: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}% "
                      f"of copy, regs {k.num_regs}, grid {blocks[0]}")
    m = module(base + COPY_PATTERN, 2)
    k = m.get_function("copy_items")
    packed = cp.empty(n // 4, cp.uint8)
    s = cp.empty(ng, cp.float32)
    t = event_time(lambda: k(((items + 511) // 512,), (256,), (x, np.int64(items), packed, s)))
    traffic = 2 * n + n // 4 + 4 * ng
    print(f"copy_items (same access pattern, no arithmetic): {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}%")
    k = m.get_function("copy_coalesced")
    nvec = 2 * n // 16
    t = event_time(lambda: k(((nvec + 1023) // 1024,), (256,), (x, np.int64(nvec), packed)))
    traffic = 2 * n + n // 4
    print(f"copy_coalesced: {t * 1e3:.3f} ms, {traffic / t / bw * 100:.1f}%")


if __name__ == "__main__":
    main()
