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

// Raw loads (no conversion) of K consecutive elements with the widest aligned vector loads.
template <typename T, int K>
__device__ __forceinline__ void load_raw(const T* p, T* out) {
    constexpr int BYTES = K * (int)sizeof(T);
    union { T t[K]; uint4 q[(BYTES + 15) / 16]; uint2 d[(BYTES + 7) / 8]; } buf;
    const unsigned long long addr = (unsigned long long)p;
    if (BYTES % 16 == 0 && addr % 16 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 16; ++i) buf.q[i] = reinterpret_cast<const uint4*>(p)[i];
    } else if (BYTES % 8 == 0 && addr % 8 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 8; ++i) buf.d[i] = reinterpret_cast<const uint2*>(p)[i];
    } else {
#pragma unroll
        for (int i = 0; i < K; ++i) buf.t[i] = p[i];
    }
#pragma unroll
    for (int i = 0; i < K; ++i) out[i] = buf.t[i];
}

// Load K consecutive elements as float64.
template <typename T, int K>
__device__ __forceinline__ void load_chunk(const T* p, double* v) {
    T raw[K];
    load_raw<T, K>(p, raw);
#pragma unroll
    for (int i = 0; i < K; ++i) v[i] = to_f64(raw[i]);
}

// Store K consecutive elements with the widest aligned vector stores.
template <typename T, int K>
__device__ __forceinline__ void store_chunk(T* p, const double* v) {
    constexpr int BYTES = K * (int)sizeof(T);
    union { T t[K]; uint4 q[(BYTES + 15) / 16]; uint2 d[(BYTES + 7) / 8]; } buf;
#pragma unroll
    for (int i = 0; i < K; ++i) from_f64(v[i], &buf.t[i]);
    const unsigned long long addr = (unsigned long long)p;
    if (BYTES % 16 == 0 && addr % 16 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 16; ++i) reinterpret_cast<uint4*>(p)[i] = buf.q[i];
    } else if (BYTES % 8 == 0 && addr % 8 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 8; ++i) reinterpret_cast<uint2*>(p)[i] = buf.d[i];
    } else {
#pragma unroll
        for (int i = 0; i < K; ++i) p[i] = buf.t[i];
    }
}

// ---- encode / decode: one thread per unit of 8 codes (= `bits` packed bytes) -------------
// round(num / den) with `mode`.  For nearest_even the quotient is taken as num * (1 / den),
// which is within 2^-50 |q| of num / den; only when that lands within 1e-9 of a half-integer
// (a possible rounding boundary, e.g. an exact tie) is the correctly rounded division used.
// The result is therefore always rint(num / den), as on the CPU, at a fraction of the cost.
__device__ __forceinline__ double round_quotient(double num, double den, double inv, int mode,
                                                 u64 seed, long long index, int rbits) {
    if (mode == LOWBIT_NEAREST_EVEN) {
        const double y = num * inv;
        const double frac = y - floor(y);
        if (fabs(frac - 0.5) > 1e-9 && isfinite(y)) return rint(y);
    }
    return round_grid(num / den, mode, seed, index, rbits);
}

__device__ __forceinline__ u64 encode_one(double v, double scale, double inv, double offset,
                                          int bits, int symmetric, int mode, u64 seed,
                                          long long index, int rbits) {
    if (symmetric) {
        if (bits == 1) return v >= 0.0 ? 1ull : 0ull;
        double m = (double)((1 << (bits - 1)) - 1);
        double q = clamp(round_quotient(v, scale, inv, mode, seed, index, rbits), -m, m);
        return (u64)(long long)(q + m);
    }
    double levels = (double)((1 << bits) - 1);
    double q = clamp(round_quotient(v - offset, scale, inv, mode, seed, index, rbits), 0.0, levels);
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

// ---- fused single pass: statistics + scale + encode + pack, one warp per group -------------
// Group size G = 32 * K (K in 1, 2, 4, 8, 16); lane l holds elements [l*K, l*K + K).
// Scales follow lowbit/scales.py exactly: offset = min rounded down, scale = (max - offset) /
// (2^b - 1) rounded up (symmetric: max|x| / (2^(b-1) - 1)), in the storage format `fmt`
// (0 float32, 1 float16, 2 bfloat16); written as float32 values.  A group holding NaN/Inf
// gets scale NaN, a scale or offset overflowing `fmt` gets scale +Inf; their codes are 0.

__device__ __forceinline__ double round_to_format(double v, int fmt, int direction) {
    const int p = fmt == 0 ? 24 : (fmt == 1 ? 11 : 8);
    const int emin = fmt == 1 ? -14 : -126;
    int e;
    frexp(v, &e);
    const int ue = max(e - 1, emin) - (p - 1);
    const double t = ldexp(v, -ue);
    const double r = direction == 0 ? rint(t) : (direction > 0 ? ceil(t) : floor(t));
    return ldexp(r, ue);
}

__device__ __forceinline__ double format_max(int fmt) {
    return fmt == 0 ? 3.4028234663852886e38 : (fmt == 1 ? 65504.0 : 3.3895313892515355e38);
}

constexpr int FUSED_WARPS = 8;

// float32 bits of a 16/32-bit input (exact: half -> float has no subnormal results).
__device__ __forceinline__ u32 f32_bits(__half v) { return __float_as_uint(__half2float(v)); }
__device__ __forceinline__ u32 f32_bits(u16 v) { return ((u32)v) << 16; }
__device__ __forceinline__ u32 f32_bits(float v) { return __float_as_uint(v); }

// Total order on float32 bit patterns as signed integers (exact min/max, no ftz).
__device__ __forceinline__ int order_key(u32 b) { return (int)(b ^ ((b >> 31) ? 0x7fffffffu : 0u)); }
__device__ __forceinline__ u32 key_bits(int k) { const u32 b = (u32)k; return b ^ ((b >> 31) ? 0x7fffffffu : 0u); }

// Group statistics: exact min, max (as float64) and a NaN/Inf flag, reduced over the warp.
template <typename T, int K>
__device__ __forceinline__ void group_stats(const T* raw, double& mn, double& mx, int& bad) {
    if constexpr (sizeof(T) == 8) {
        mn = LOWBIT_INF; mx = -LOWBIT_INF; bad = 0;
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const double v = to_f64(raw[j]);
            bad |= !isfinite(v);
            mn = fmin(mn, v);
            mx = fmax(mx, v);
        }
        for (int o = 16; o; o >>= 1) {
            mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
            mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        }
    } else {
        int kmn = 0x7fffffff, kmx = (int)0x80000000;
        bad = 0;
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const u32 b = f32_bits(raw[j]);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
            const int k = order_key(b);
            kmn = min(kmn, k);
            kmx = max(kmx, k);
        }
        kmn = __reduce_min_sync(0xffffffffu, kmn);
        kmx = __reduce_max_sync(0xffffffffu, kmx);
        bad = __reduce_or_sync(0xffffffffu, (u32)bad);
        mn = f32_to_f64(__uint_as_float(key_bits(kmn)));
        mx = f32_to_f64(__uint_as_float(key_bits(kmx)));
    }
    mn = mn + 0.0;  // -0.0 becomes +0.0, as group_range
    mx = mx + 0.0;
}

// Code of one element.  For 16/32-bit inputs with nearest_even the quotient is first taken in
// float32, (x - offset) * (1 / scale): its error is below 3 * 2^-24 * 255 + 2^-66 < 1e-4
// (scale in [2^-60, 2^60]; float32 flushing of subnormals only adds the 2^-66), so when it is
// more than 1e-3 away from a half-integer, its nearest integer is rint((x - offset) / scale).
// Otherwise, and for every other case, the float64 path of encode_one decides.
// The exact float64 path, kept out of line: unrolled callers stay small.
__device__ __noinline__ u32 encode_slow(double v, double s, double inv, double off, int bits,
                                        int symmetric, int mode, u64 seed, long long index,
                                        int rbits) {
    return (u32)encode_one(v, s, inv, off, bits, symmetric, mode, seed, index, rbits);
}

template <typename T>
__device__ __forceinline__ u32 encode_fused(T raw, double s, double inv, double off, float inv32,
                                            float off32, bool fast, int bits, int symmetric,
                                            int mode, u64 seed, long long index, int rbits) {
    if constexpr (sizeof(T) != 8) {
        if (fast) {
            const float xf = __uint_as_float(f32_bits(raw));
            const float y = __fmul_rn(__fsub_rn(xf, off32), inv32);
            const float fl = floorf(y);
            const float fr = __fsub_rn(y, fl);
            if (fabsf(__fsub_rn(fr, 0.5f)) > 1e-3f) {
                float q = fr > 0.5f ? __fadd_rn(fl, 1.0f) : fl;
                if (symmetric) {
                    const float m = (float)((1 << (bits - 1)) - 1);
                    q = fminf(fmaxf(q, -m), m);
                    return (u32)(int)__fadd_rn(q, m);
                }
                q = fminf(fmaxf(q, 0.0f), (float)((1 << bits) - 1));
                return (u32)(int)q;
            }
        }
    }
    return encode_slow(to_f64(raw), s, inv, off, bits, symmetric, mode, seed, index, rbits);
}

// A group's stored scale and offset (scales.py rules) and what encoding them needs.
struct GroupParams {
    double s, off, inv;
    float inv32, off32;
    bool overflow, fast;
};

__device__ __forceinline__ GroupParams group_params(double mn, double mx, int bits, int symmetric,
                                                    int fmt, int mode) {
    GroupParams p;
    if (symmetric) {
        const double step = fmax(fabs(mn), fabs(mx)) / (double)((1 << (bits - 1)) - 1);
        p.off = 0.0;
        p.s = step > 0.0 ? round_to_format(step, fmt, 1) : 1.0;
    } else {
        p.off = round_to_format(mn, fmt, -1);
        const double step = (mx - p.off) / (double)((1 << bits) - 1);
        p.s = step > 0.0 ? round_to_format(step, fmt, 1) : 1.0;
    }
    p.overflow = p.s > format_max(fmt) || fabs(p.off) > format_max(fmt);
    p.inv = 1.0 / p.s;
    // float32 quotient allowed for nearest_even with scale in 2^-60 .. 2^60 (see encode_fused)
    p.fast = mode == LOWBIT_NEAREST_EVEN && p.s >= 8.673617379884035e-19 && p.s <= 1.152921504606847e18;
    p.inv32 = p.fast ? f64_to_f32(p.inv) : 0.0f;
    p.off32 = f64_to_f32(p.off);
    return p;
}

template <typename T, int K>
__device__ void rtn_quantize_groups_impl(const T* x, long long n_groups, int bits, int symmetric,
                                         int fmt, int mode, u64 seed, int rbits, u8* packed,
                                         float* scale, float* offset) {
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
            }
            __syncwarp();
        }
    }
}

// Thread-per-group variant for groups of at most 256 bytes of 16/32-bit inputs: a thread keeps
// its whole group in registers (up to 16 x 16-byte loads in flight), so that enough bytes are
// in flight to run at memory speed.  Same results as rtn_quantize_groups_impl.
template <typename T, int G, int BITS>
__device__ void rtn_quantize_groups_thread_impl(const T* x, long long n_groups, int symmetric,
                                                int fmt, int mode, u64 seed, int rbits, u8* packed,
                                                float* scale, float* offset) {
    constexpr int bits = BITS;
    constexpr int BYTES = G * (int)sizeof(T);
    static_assert(BYTES % 16 == 0 && BYTES <= 256, "group must be whole 16-byte vectors, <= 256 B");
    constexpr int NV = BYTES / 16;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < n_groups;
         g += (long long)gridDim.x * blockDim.x) {
        union { uint4 q[NV]; T t[G]; } buf;
        const uint4* src = reinterpret_cast<const uint4*>(x + g * G);
#pragma unroll
        for (int i = 0; i < NV; ++i) buf.q[i] = src[i];
        int kmn = 0x7fffffff, kmx = (int)0x80000000;
        u32 bad = 0;
#pragma unroll
        for (int j = 0; j < G; ++j) {
            const u32 b = f32_bits(buf.t[j]);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
            const int k = order_key(b);
            kmn = min(kmn, k);
            kmx = max(kmx, k);
        }
        const double mn = f32_to_f64(__uint_as_float(key_bits(kmn))) + 0.0;
        const double mx = f32_to_f64(__uint_as_float(key_bits(kmx))) + 0.0;
        const GroupParams p = group_params(mn, mx, bits, symmetric, fmt, mode);
        const bool overflow = p.overflow, skip = bad || p.overflow;
        const double s = p.s, off = p.off, inv = p.inv;
        const bool fast = p.fast;
        const float inv32 = p.inv32, off32 = p.off32;
        constexpr int N_WORDS = G * BITS / 32;
        union { u32 w[N_WORDS]; uint4 q[N_WORDS / 4]; } words;
#pragma unroll
        for (int i = 0; i < N_WORDS; ++i) words.w[i] = 0u;
        if (!skip) {
#pragma unroll
            for (int j = 0; j < G; ++j) {
                const u32 c = encode_fused<T>(buf.t[j], s, inv, off, inv32, off32, fast, BITS,
                                              symmetric, mode, seed, g * G + j, rbits);
                        const int bit = j * BITS;  // compile-time after unrolling
                words.w[bit >> 5] |= c << (bit & 31);
                if ((bit & 31) + BITS > 32) words.w[(bit >> 5) + 1] |= c >> (32 - (bit & 31));
            }
        }
        uint4* out = reinterpret_cast<uint4*>(packed + g * (long long)(G * BITS / 8));
#pragma unroll
        for (int i = 0; i < N_WORDS / 4; ++i) out[i] = words.q[i];
        scale[g] = bad ? __int_as_float(0x7fc00000)
                       : (overflow ? __int_as_float(0x7f800000) : f64_to_f32(s));
        offset[g] = skip ? 0.0f : f64_to_f32(off);
    }
}

#define LOWBIT_FUSED_THREAD(SUFFIX, T, G, BITS)                                                 \
    extern "C" __global__ void lowbit_rtn_quantize_groups_thread_##SUFFIX##_g##G##_b##BITS(       \
        const T* x, long long n_groups, int symmetric, int fmt, int mode, u64 seed, int rbits,   \
        u8* packed, float* scale, float* offset) {                                               \
        rtn_quantize_groups_thread_impl<T, G, BITS>(x, n_groups, symmetric, fmt, mode, seed,     \
                                                    rbits, packed, scale, offset);               \
    }
#define LOWBIT_FUSED_THREAD_BITS(SUFFIX, T, G) \
    LOWBIT_FUSED_THREAD(SUFFIX, T, G, 2) LOWBIT_FUSED_THREAD(SUFFIX, T, G, 4) \
    LOWBIT_FUSED_THREAD(SUFFIX, T, G, 8)
LOWBIT_FUSED_THREAD_BITS(f16, __half, 64)
LOWBIT_FUSED_THREAD_BITS(f16, __half, 128)
LOWBIT_FUSED_THREAD_BITS(bf16, u16, 64)
LOWBIT_FUSED_THREAD_BITS(bf16, u16, 128)
LOWBIT_FUSED_THREAD_BITS(f32, float, 64)

#define LOWBIT_FUSED(SUFFIX, T, K)                                                               \
    extern "C" __global__ void lowbit_rtn_quantize_groups_##SUFFIX##_k##K(                        \
        const T* x, long long n_groups, int bits, int symmetric, int fmt, int mode, u64 seed,    \
        int rbits, u8* packed, float* scale, float* offset) {                                    \
        rtn_quantize_groups_impl<T, K>(x, n_groups, bits, symmetric, fmt, mode, seed, rbits,     \
                                       packed, scale, offset);                                   \
    }
#define LOWBIT_FUSED_ALL_K(SUFFIX, T) \
    LOWBIT_FUSED(SUFFIX, T, 1) LOWBIT_FUSED(SUFFIX, T, 2) LOWBIT_FUSED(SUFFIX, T, 4) \
    LOWBIT_FUSED(SUFFIX, T, 8) LOWBIT_FUSED(SUFFIX, T, 16)

LOWBIT_FUSED_ALL_K(f16, __half)
LOWBIT_FUSED_ALL_K(bf16, u16)
LOWBIT_FUSED_ALL_K(f32, float)
LOWBIT_FUSED_ALL_K(f64, double)
