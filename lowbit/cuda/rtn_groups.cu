// lowbit/cuda/rtn_groups.cu -- rtn's fused single pass (statistics + scale + encode + pack),
// one warp per group of G = 32 * K elements (K in 1, 2, 4, 8, 16), any input type and
// alignment; twin of lowbit/cpu/rtn.py rtn_quantize_groups.
#include "rtn.cuh"

template <typename T, int K>
__device__ void rtn_quantize_groups_impl(const T* x, long long n_groups, int bits, int symmetric,
                                         int fmt, int mode, u64 seed, int rbits, u8* packed,
                                         float* scale, float* offset, int* status) {
    constexpr int G = 32 * K;
    constexpr int U = K >= 8 ? 1 : 8 / K;  // groups in flight per warp (memory parallelism)
    __shared__ __align__(8) u8 staged[FUSED_WARPS][G];
    const int lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5;
    const long long warps = (long long)gridDim.x * FUSED_WARPS;
    for (long long g0 = (long long)blockIdx.x * FUSED_WARPS + w; g0 < n_groups; g0 += warps * U) {
        T raw[U][K];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long g = g0 + u * warps;
            if (g < n_groups) load_raw<T, K>(x + g * G + lane * K, raw[u]);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long g = g0 + u * warps;
            if (g >= n_groups) break;
            double mn, mx;
            int bad;
            group_stats<T, K>(raw[u], mn, mx, bad);
            const GroupParams p = group_params(mn, mx, bits, symmetric, fmt, mode);
            const bool overflow = p.overflow, skip = bad || p.overflow;
            const double s = p.s, off = p.off, inv = p.inv;
            const bool fast = p.fast;
            const float inv32 = p.inv32, off32 = p.off32;
            // stage the codes as bytes, then pack unit by unit (8 codes -> `bits` bytes)
#pragma unroll
            for (int j = 0; j < K; ++j) {
                const int c_idx = lane * K + j;
                staged[w][c_idx] = skip ? (u8)0
                                        : (u8)encode_fused<T>(raw[u][j], s, inv, off, inv32, off32,
                                                              fast, bits, symmetric, mode, seed,
                                                              g * G + c_idx, rbits);
            }
            __syncwarp();
            for (int v = lane; v < G / 8; v += 32) {
                const u64 eight = *reinterpret_cast<const u64*>(&staged[w][8 * v]);
                u64 acc = 0;
#pragma unroll
                for (int j = 0; j < 8; ++j) acc |= ((eight >> (8 * j)) & 0xffull) << (j * bits);
                store_unit(packed, g * (G / 8) + v, bits, bits, acc);
            }
            if (lane == 0) {
                scale[g] = bad ? __int_as_float(0x7fc00000)
                               : (overflow ? __int_as_float(0x7f800000) : f64_to_f32(s));
                offset[g] = skip ? 0.0f : f64_to_f32(off);
                if (skip) atomicOr(status, bad ? 1 : 2);
            }
            __syncwarp();
        }
    }
}

#define LOWBIT_FUSED(SUFFIX, T, K)                                                               \
    extern "C" __global__ void lowbit_rtn_quantize_groups_##SUFFIX##_k##K(                        \
        const T* x, long long n_groups, int bits, int symmetric, int fmt, int mode, u64 seed,    \
        int rbits, u8* packed, float* scale, float* offset, int* status) {                       \
        rtn_quantize_groups_impl<T, K>(x, n_groups, bits, symmetric, fmt, mode, seed, rbits,     \
                                       packed, scale, offset, status);                           \
    }
#define LOWBIT_FUSED_ALL_K(SUFFIX, T) \
    LOWBIT_FUSED(SUFFIX, T, 1) LOWBIT_FUSED(SUFFIX, T, 2) LOWBIT_FUSED(SUFFIX, T, 4) \
    LOWBIT_FUSED(SUFFIX, T, 8) LOWBIT_FUSED(SUFFIX, T, 16)

LOWBIT_FUSED_ALL_K(f16, __half)
LOWBIT_FUSED_ALL_K(bf16, u16)
LOWBIT_FUSED_ALL_K(f32, float)
LOWBIT_FUSED_ALL_K(f64, double)
