// lowbit/cuda/rtn.cu -- affine integer quantization (scheme "rtn"); twins of lowbit/cpu/rtn.py.
// Inputs are flat, C-contiguous, split into consecutive groups of `group_size` elements.
// Kernels are instantiated per input/output type: _f16 (__half), _bf16 (bfloat16 bits),
// _f32, _f64.

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
        for (int o = 16; o; o >>= 1) {
            mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
            mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        }
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

// ---- encode / decode: one thread per unit of 8 codes (= `bits` packed bytes) -------------
__device__ __forceinline__ u64 encode_one(double v, double scale, double offset, int bits,
                                          int symmetric, int mode, u64 seed, long long index,
                                          int rbits) {
    if (symmetric) {
        if (bits == 1) return v >= 0.0 ? 1ull : 0ull;
        double m = (double)((1 << (bits - 1)) - 1);
        double q = clamp(round_grid(v / scale, mode, seed, index, rbits), -m, m);
        return (u64)(long long)(q + m);
    }
    double levels = (double)((1 << bits) - 1);
    double q = clamp(round_grid((v - offset) / scale, mode, seed, index, rbits), 0.0, levels);
    return (u64)(long long)q;
}

__device__ __forceinline__ double decode_one(u64 code, double scale, double offset, int bits,
                                             int symmetric) {
    if (symmetric) {
        if (bits == 1) return code == 1ull ? scale : -scale;
        return ((double)code - (double)((1 << (bits - 1)) - 1)) * scale;
    }
    return (double)code * scale + offset;
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
        double s = f32_to_f64(scale[g]), o = f32_to_f64(offset[g]);
        for (long long i = start; i < stop; ++i) {
            if (i >= g_end) {  // crossed into the next group
                g = i / group_size;
                g_end = (g + 1) * group_size;
                s = f32_to_f64(scale[g]);
                o = f32_to_f64(offset[g]);
            }
            u64 c = encode_one(to_f64(x[i]), s, o, bits, symmetric, mode, seed, i, rbits);
            acc |= c << ((i - start) * bits);
        }
        const long long base = u * bits;
        const long long nbytes = min((long long)bits, packed_size - base);
        for (long long b = 0; b < nbytes; ++b) packed[base + b] = (u8)((acc >> (8 * b)) & 0xffull);
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
        const long long base = u * bits;
        const long long nbytes = min((long long)bits, packed_size - base);
        u64 acc = 0;
        for (long long b = 0; b < nbytes; ++b) acc |= ((u64)packed[base + b]) << (8 * b);
        long long g = start / group_size;
        long long g_end = (g + 1) * group_size;
        double s = f32_to_f64(scale[g]), o = f32_to_f64(offset[g]);
        for (long long i = start; i < stop; ++i) {
            if (i >= g_end) {
                g = i / group_size;
                g_end = (g + 1) * group_size;
                s = f32_to_f64(scale[g]);
                o = f32_to_f64(offset[g]);
            }
            from_f64(decode_one((acc >> ((i - start) * bits)) & mask, s, o, bits, symmetric), out + i);
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
