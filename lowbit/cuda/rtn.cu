// lowbit/cuda/rtn.cu -- affine integer quantization (scheme "rtn"), the general kernels:
// group statistics, encode and decode of any group size; twins of lowbit/cpu/rtn.py.
// Inputs are flat, C-contiguous, split into consecutive groups of `group_size` elements.
// Kernels are instantiated per input/output type: _f16 (__half), _bf16 (bfloat16 bits),
// _f32, _f64.  The fused single-pass quantizers are rtn_groups.cu, rtn_lanes.cu and
// rtn_seg.cu; the vectorized decoder rtn_decode_lanes.cu.
#include "rtn.cuh"

// ---- group statistics: one warp per group ------------------------------------------------
template <typename T>
__device__ void group_range_impl(const T* x, long long group_size, double* lo, double* hi,
                                 long long n_groups) {
    const int lane = threadIdx.x & 31;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long g = warp; g < n_groups; g += warps) {
        const T* row = x + g * group_size;
        double mn = LOWBIT_INF, mx = -LOWBIT_INF;
        int bad = 0;
        for (long long i = lane; i < group_size; i += 32) {
            double v = to_f64(row[i]);
            bad |= !isfinite(v);
            mn = fmin(mn, v);
            mx = fmax(mx, v);
        }
        warp_minmax(mn, mx, bad);
        if (lane == 0) {
            lo[g] = bad ? LOWBIT_NAN : mn + 0.0;  // "+ 0.0": -0.0 becomes +0.0
            hi[g] = bad ? LOWBIT_NAN : mx + 0.0;
        }
    }
}

// Canonical order (shared with the CPU twin): lane l sums elements l, l+32, ... in order,
// then lanes combine by the xor butterfly 16, 8, 4, 2, 1.
template <typename T>
__device__ void group_abs_mean_impl(const T* x, long long group_size, double* out,
                                    long long n_groups) {
    const int lane = threadIdx.x & 31;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long g = warp; g < n_groups; g += warps) {
        const T* row = x + g * group_size;
        double s = 0.0;
        for (long long i = lane; i < group_size; i += 32) s += fabs(to_f64(row[i]));
        for (int o = 16; o; o >>= 1) s = s + __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) out[g] = s / (double)group_size;
    }
}

template <typename T>
__device__ void rtn_encode_impl(const T* x, long long n, long long group_size, const float* scale,
                                const float* offset, int bits, int symmetric, int mode, u64 seed,
                                int rbits, u8* packed, long long packed_size) {
    const long long units = (n + 7) / 8;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const long long start = u * 8;
        const long long stop = min(start + 8, n);
        u64 acc = 0;
        long long g = start / group_size;
        long long g_end = (g + 1) * group_size;
        double s = f32_to_f64(scale[g]), o = f32_to_f64(offset[g]), inv = 1.0 / s;
        double v[8];
        if (stop - start == 8) {
            load_chunk<T, 8>(x + start, v);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] = start + j < stop ? to_f64(x[start + j]) : 0.0;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const long long i = start + j;
            if (i >= stop) break;
            if (i >= g_end) {  // crossed into the next group
                g = i / group_size;
                g_end = (g + 1) * group_size;
                s = f32_to_f64(scale[g]);
                o = f32_to_f64(offset[g]);
                inv = 1.0 / s;
            }
            u64 c = encode_one(v[j], s, inv, o, bits, symmetric, mode, seed, i, rbits);
            acc |= c << (j * bits);
        }
        store_unit(packed, u, bits, min((long long)bits, packed_size - u * bits), acc);
    }
}

template <typename T>
__device__ void rtn_decode_impl(const u8* packed, long long packed_size, long long group_size,
                                const float* scale, const float* offset, int bits, int symmetric,
                                T* out, long long n) {
    const long long units = (n + 7) / 8;
    const u64 mask = (1ull << bits) - 1ull;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const long long start = u * 8;
        const long long stop = min(start + 8, n);
        const u64 acc = load_unit(packed, u, bits, min((long long)bits, packed_size - u * bits));
        long long g = start / group_size;
        long long g_end = (g + 1) * group_size;
        double s = f32_to_f64(scale[g]), o = f32_to_f64(offset[g]);
        double v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const long long i = start + j;
            if (i >= stop) break;
            if (i >= g_end) {
                g = i / group_size;
                g_end = (g + 1) * group_size;
                s = f32_to_f64(scale[g]);
                o = f32_to_f64(offset[g]);
            }
            v[j] = decode_one((acc >> (j * bits)) & mask, s, o, bits, symmetric);
        }
        if (stop - start == 8) {
            store_chunk<T, 8>(out + start, v);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                if (start + j < stop) from_f64(v[j], out + start + j);
            }
        }
    }
}

#define LOWBIT_RTN_KERNELS(SUFFIX, T)                                                             \
    extern "C" __global__ void lowbit_group_range_##SUFFIX(const T* x, long long group_size,      \
                                                           double* lo, double* hi,                \
                                                           long long n_groups) {                  \
        group_range_impl<T>(x, group_size, lo, hi, n_groups);                                     \
    }                                                                                             \
    extern "C" __global__ void lowbit_group_abs_mean_##SUFFIX(const T* x, long long group_size,   \
                                                              double* out, long long n_groups) {  \
        group_abs_mean_impl<T>(x, group_size, out, n_groups);                                     \
    }                                                                                             \
    extern "C" __global__ void lowbit_rtn_encode_##SUFFIX(                                        \
        const T* x, long long n, long long group_size, const float* scale, const float* offset,   \
        int bits, int symmetric, int mode, u64 seed, int rbits, u8* packed,                      \
        long long packed_size) {                                                                  \
        rtn_encode_impl<T>(x, n, group_size, scale, offset, bits, symmetric, mode, seed, rbits,   \
                           packed, packed_size);                                                  \
    }                                                                                             \
    extern "C" __global__ void lowbit_rtn_decode_##SUFFIX(                                        \
        const u8* packed, long long packed_size, long long group_size, const float* scale,        \
        const float* offset, int bits, int symmetric, T* out, long long n) {                     \
        rtn_decode_impl<T>(packed, packed_size, group_size, scale, offset, bits, symmetric, out,  \
                           n);                                                                    \
    }

LOWBIT_RTN_KERNELS(f16, __half)
LOWBIT_RTN_KERNELS(bf16, u16)
LOWBIT_RTN_KERNELS(f32, float)
LOWBIT_RTN_KERNELS(f64, double)
