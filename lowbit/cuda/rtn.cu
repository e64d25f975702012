// lowbit/cuda/rtn.cu -- affine integer quantization (scheme "rtn"); twins of lowbit/cpu/rtn.py.
// Inputs are flat, C-contiguous, split into consecutive groups of `group_size` elements.
// Kernels are instantiated per input/output type: _f16 (__half), _bf16 (bfloat16 bits),
// _f32, _f64.

// Reduce float64 min, max and a NaN/Inf flag over the 32 lanes of a warp (xor butterfly).
__device__ __forceinline__ void warp_minmax(double& mn, double& mx, int& bad) {
    for (int o = 16; o; o >>= 1) {
        mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
        mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
    }
}

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

#ifndef LOWBIT_LANE_BITS
LOWBIT_RTN_KERNELS(f16, __half)
LOWBIT_RTN_KERNELS(bf16, u16)
LOWBIT_RTN_KERNELS(f32, float)
LOWBIT_RTN_KERNELS(f64, double)
#endif

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
        warp_minmax(mn, mx, bad);
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

// ---- lane kernels: 32 consecutive elements per lane ---------------------------------------
// (quantize: float32 data; 16-bit data use the segment kernel below, built from the same
// pieces; decode: all three types.)
// An "item" is 32 consecutive elements (64 B of float16/bfloat16, 128 B of float32) handled by
// one lane with 16-byte vector accesses; its 32 codes are BITS 32-bit words (4 * BITS packed
// bytes).  A group of G = 32 * LPG elements (LPG = 1, 2, 4, ..., 32) spans LPG neighbouring
// lanes, whose min/max is reduced with xor shuffles.  Arithmetic is float32 with exactness
// proofs below; anything outside their preconditions takes the float64 path above, so the
// results stay bit-identical to lowbit/cpu/rtn.py.

template <typename T>
union Item {
    static constexpr int NQ = 32 * (int)sizeof(T) / 16;
    uint4 q[NQ];
    u32 w[NQ * 4];
    T t[32];
};

// NaN-propagating min/max (PTX without .ftz: subnormals are compared exactly).
__device__ __forceinline__ float min_nan(float a, float b) {
    float r;
    asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float max_nan(float a, float b) {
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

// Element j of an item as float32 (exact; float16 and bfloat16 -> float32 never round).
__device__ __forceinline__ float item_f32(const Item<__half>& it, int j) { return __half2float(it.t[j]); }
__device__ __forceinline__ float item_f32(const Item<u16>& it, int j) {
    const u32 w = it.w[j >> 1];
    return __uint_as_float((j & 1) ? (w & 0xffff0000u) : (w << 16));
}
__device__ __forceinline__ float item_f32(const Item<float>& it, int j) { return it.t[j]; }

// min and max over an item, NaN if it holds a NaN (16-bit types: packed pairs, one
// instruction per two elements).
// Packed-pair min and max over the 16 pairs of a 16-bit item (P: __half2 or __nv_bfloat162).
template <typename P, typename T>
__device__ __forceinline__ void pair_minmax(const Item<T>& it, P& a, P& b) {
    a = *reinterpret_cast<const P*>(&it.w[0]);
    b = a;
#pragma unroll
    for (int i = 1; i < 16; ++i) {
        const P v = *reinterpret_cast<const P*>(&it.w[i]);
        a = __hmin2_nan(a, v);
        b = __hmax2_nan(b, v);
    }
}
__device__ __forceinline__ void item_minmax(const Item<__half>& it, float& mn, float& mx) {
    __half2 a, b;
    pair_minmax(it, a, b);
    mn = min_nan(__low2float(a), __high2float(a));
    mx = max_nan(__low2float(b), __high2float(b));
}
__device__ __forceinline__ void item_minmax(const Item<u16>& it, float& mn, float& mx) {
    __nv_bfloat162 a, b;
    pair_minmax(it, a, b);
    // bfloat16 -> float32 by bits: exact, also for subnormals
    mn = min_nan(__uint_as_float(__bfloat16_as_ushort(a.x) << 16), __uint_as_float(__bfloat16_as_ushort(a.y) << 16));
    mx = max_nan(__uint_as_float(__bfloat16_as_ushort(b.x) << 16), __uint_as_float(__bfloat16_as_ushort(b.y) << 16));
}
__device__ __forceinline__ void item_minmax(const Item<float>& it, float& mn, float& mx) {
    mn = it.t[0];
    mx = it.t[0];
#pragma unroll
    for (int j = 1; j < 32; ++j) {
        mn = min_nan(mn, it.t[j]);
        mx = max_nan(mx, it.t[j]);
    }
}

__device__ __forceinline__ bool f32_nonfinite(float v) {
    return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u;
}
// 0 or 2^-100 <= |v| <= 2^100: no float32 step of the fast paths can be subnormal or overflow.
__device__ __forceinline__ bool f32_tame(float v) {
    const u32 a = __float_as_uint(v) & 0x7fffffffu;
    return a == 0u || (a >= 0x0d800000u && a <= 0x71800000u);
}
__device__ __forceinline__ int f32_exponent(float v) { return (int)((__float_as_uint(v) >> 23) & 0xffu) - 127; }

// Storage-format rounding of a tame, positive-or-negative float32 (scales.py rules).
// float16 via the hardware's directed conversions (f16's grid, subnormals included, lies in
// float32's, so rounding float64 -> float32 -> float16 in one direction is one rounding);
// bfloat16 by clearing the low 16 bits toward the chosen direction.
__device__ __forceinline__ float floor_fmt(float v, int fmt) {
    if (fmt == 1) return __half2float(__float2half_rd(v));
    if (fmt == 2) {
        u32 b = __float_as_uint(v);
        if ((b >> 31) && (b & 0xffffu)) b += 0x10000u;  // negative: away from zero
        return __uint_as_float(b & 0xffff0000u);
    }
    return v;
}
__device__ __forceinline__ float ceil_fmt(float v, int fmt) {  // v > 0
    if (fmt == 1) return __half2float(__float2half_ru(v));
    if (fmt == 2) {
        u32 b = __float_as_uint(v);
        if (b & 0xffffu) b += 0x10000u;
        return __uint_as_float(b & 0xffff0000u);
    }
    return v;
}

// Smallest float32 c with c >= d / den, for d in [2^-60, 2^102] and an integer den in 1..255.
// This equals ceil_f32(fl64(d / den)), what the CPU computes: if d / den exceeds a float32 v,
// then d - v * den is a nonzero multiple of ulp(d), so d / den - v > ulp(d) / den >
// ulp64(v) / 2 and fl64(d / den) > v as well.  d * fl(1/den) rounded up is within one float32
// step of c; fma(c, den, -d) has the sign of the exact c * den - d (one rounding, and no
// flush to zero: that difference is a multiple of ulp(c) >= 2^-91).
__device__ __forceinline__ float ceil_div_f32(float d, float den, float inv_den) {
    float c = __fmul_ru(d, inv_den);
    if (__fmaf_rn(c, den, -d) < 0.0f) {
        c = __uint_as_float(__float_as_uint(c) + 1u);
    } else {
        const float prev = __uint_as_float(__float_as_uint(c) - 1u);
        if (__fmaf_rn(prev, den, -d) >= 0.0f) c = prev;
    }
    return c;
}

// a - b, and whether it is exact (TwoSum error 0; a, b tame so nothing is flushed).
__device__ __forceinline__ float sub_exact(float a, float b, bool& exact) {
    const float s = __fsub_rn(a, b);
    const float a1 = __fadd_rn(s, b);   // the part of s from a
    const float b1 = __fsub_rn(s, a1);  // the part of s from -b
    exact = __fsub_rn(a, a1) == 0.0f && __fadd_rn(b, b1) == 0.0f;
    return s;
}

// A group's stored scale and offset and what its codes need.  Fast quotient (nearest_even):
// y = fma(x, inv32, c32) approximates Y = (x - off) / s (+ m, symmetric: codes are biased).
// With inv32 = fl(1/s), c32 = fl(-off * inv32) and one rounding in the fma,
// |y - Y| <= 2^-24 (|x|/s + 2.001 |off|/s + levels + 1) < err (below, a factor 2 larger), so
// when |y - rint(y)| < lim = 0.5 - err, rint(y) = rint(Y) = the CPU's rint(fl64(fl64(x - off)
// / s)) (whose float64 errors are far below err).  Exact ties and everything else go to the
// float64 path (encode_slow).  Y lies in [0, levels] by construction of s and off, so the
// fast code needs no clamp.
struct LaneParams {
    float s, off, inv32, c32, lim;
    bool bad, overflow, fast;
};

struct SlowParams {
    float s, off;
    int overflow;
};

// Groups outside the float32 preconditions: the float64 rules of group_params.
__device__ __noinline__ SlowParams lane_params_slow(float mn, float mx, int bits, int symmetric, int fmt) {
    const GroupParams g = group_params(f32_to_f64(mn) + 0.0, f32_to_f64(mx) + 0.0, bits, symmetric,
                                       fmt, -1);
    return SlowParams{f64_to_f32(g.s), f64_to_f32(g.off), (int)g.overflow};
}

template <int BITS>
__device__ __forceinline__ LaneParams lane_params(float mn, float mx, int symmetric, int fmt, int mode) {
    LaneParams p;
    p.bad = f32_nonfinite(mn) || f32_nonfinite(mx);
    p.overflow = false;
    p.fast = false;
    p.s = 1.0f;
    p.off = 0.0f;
    p.inv32 = 1.0f;
    p.c32 = 0.0f;
    p.lim = 0.0f;
    if (p.bad) return p;
    if (__float_as_uint(mn) == 0x80000000u) mn = 0.0f;  // -0.0 -> +0.0, as group_range
    if (__float_as_uint(mx) == 0x80000000u) mx = 0.0f;
    constexpr double L = (double)((1 << BITS) - 1);
    constexpr double M = (double)((1 << (BITS - 1)) - 1);
    const float amax = fmaxf(__uint_as_float(__float_as_uint(mn) & 0x7fffffffu),
                             __uint_as_float(__float_as_uint(mx) & 0x7fffffffu));
    // float32 rules where exact (see ceil_div_f32); groups outside them take float64
    const bool tame = f32_tame(mn) && f32_tame(mx);
    bool exact = tame;
    float d = amax;
    if (exact && !symmetric) {
        p.off = floor_fmt(mn, fmt);
        p.overflow = fmt == 1 && mn >= 65536.0f;  // scales.py's float16 grid goes past 65504
        bool diff_exact;
        d = sub_exact(mx, p.off, diff_exact);  // fl64(mx - off) = mx - off when this is exact
        exact = diff_exact && f32_tame(p.off);
    }
    if (!exact || (d != 0.0f && (d < 8.673617379884035e-19f || d > 5.070602400912918e30f))) {
        const SlowParams q = lane_params_slow(mn, mx, BITS, symmetric, fmt);  // float64 rules
        p.s = q.s;
        p.off = q.off;
        p.overflow = q.overflow != 0;
        // The codes may still take the fast quotient: its error bound needs only tame
        // inputs and parameters (float32 data with mx - off inexact land here).
        if (!(tame && f32_tame(p.off))) return p;  // p.fast stays false: float64 codes
    } else if (d > 0.0f) {
        p.s = symmetric ? ceil_fmt(ceil_div_f32(d, (float)M, (float)(1.0 / M)), fmt)
                        : ceil_fmt(ceil_div_f32(d, (float)L, (float)(1.0 / L)), fmt);
    }
    const float fmax = fmt == 0 ? 3.4028234663852886e38f : (fmt == 1 ? 65504.0f : 3.3895313892515355e38f);
    p.overflow = p.overflow || p.s > fmax || fabsf(p.off) > fmax;
    p.fast = mode == LOWBIT_NEAREST_EVEN && !p.overflow && p.s >= 8.673617379884035e-19f &&
             p.s <= 1.152921504606847e18f;  // 2^-60 .. 2^60
    if (p.fast) {
        p.inv32 = __frcp_rn(p.s);
        p.c32 = symmetric ? (float)M : __fmul_rn(-p.off, p.inv32);
        const float levels = symmetric ? (float)(2.0 * M) : (float)L;
        const float err = (amax * p.inv32 + fabsf(p.off) * p.inv32 + levels + 2.0f) * 2.384185791015625e-07f;  // 2^-22
        p.fast = err < 0.125f;
        p.lim = 0.5f - err;
    }
    return p;
}

// sum over the codes of one word of (MAGIC bits << shift), mod 2^32 (see rtn_quantize_lanes)
template <int BITS>
__host__ __device__ constexpr u32 magic_sum() {
    u32 s = 0u;
    for (int i = 0; i < 32 / BITS; ++i) s += 0x4B400000u << (i * BITS);
    return s;
}

// Code j of a lane's 32 packed codes (BITS words, little-endian bit stream): OR it in, read it.
template <int BITS>
__device__ __forceinline__ void put_code(u32* words, int j, u32 q) {
    const int bit = j * BITS;  // compile-time after unrolling
    words[bit >> 5] |= q << (bit & 31);
    if ((bit & 31) + BITS > 32) words[(bit >> 5) + 1] |= q >> (32 - (bit & 31));
}
template <int BITS>
__device__ __forceinline__ u32 get_code(const u32* words, int j) {
    const int bit = j * BITS;
    u32 c = words[bit >> 5] >> (bit & 31);
    if ((bit & 31) + BITS > 32) c |= words[(bit >> 5) + 1] << (32 - (bit & 31));
    return c & ((1u << BITS) - 1u);
}

constexpr int LANE_THREADS = 256;
// Quantize blocks per SM (register budget) of the lane kernel, which takes float32 data:
// items of 128 bytes need 2 (128 registers; more blocks would spill).
#define LANE_MIN_BLOCKS 2

template <typename T>
__device__ __forceinline__ void load_item(const T* x, long long item, Item<T>& it) {
    const uint4* src = reinterpret_cast<const uint4*>(x + item * 32);
#pragma unroll
    for (int i = 0; i < Item<T>::NQ; ++i) it.q[i] = src[i];
}

// Code (biased, 0 .. levels) of an element whose fast quotient y lies within err of a tie
// h_y = r +- 0.5.  If d = x - off is exact in float32, the exact Y = d / s is on the side of
// h_y given by the sign of fma(s, -h, d) (one rounding; h = h_y - M the tie without the code
// bias): exact d and s * h are multiples of 2^(es - 25), so Y != h_y means |Y - h_y| >= 2^-25,
// far beyond float64's rounding of the CPU's quotient, which therefore rounds the same way;
// Y == h_y is a tie, kept even (of the unbiased code).  Otherwise the float64 path decides.
template <int BITS>
__device__ __noinline__ u32 tie_code(float xf, float y, float r, const LaneParams& p, int symmetric,
                                     int mode, u64 seed, long long index, int rbits) {
    constexpr int M = (1 << (BITS - 1)) - 1;
    if (p.fast) {
        bool exact = true;
        const float d = symmetric ? xf : sub_exact(xf, p.off, exact);
        if (exact && f32_tame(xf)) {
            const float h_y = __fadd_rn(r, y > r ? 0.5f : -0.5f);
            const float e = __fmaf_rn(p.s, -__fsub_rn(h_y, symmetric ? (float)M : 0.0f), d);
            const int lo = (int)__fsub_rn(h_y, 0.5f);
            int c = e > 0.0f ? lo + 1 : (e < 0.0f ? lo : lo + ((lo - (symmetric ? M : 0)) & 1));
            const int top = symmetric ? 2 * M : (1 << BITS) - 1;
            return (u32)min(max(c, 0), top);
        }
    }
    return encode_slow(f32_to_f64(xf), f32_to_f64(p.s), 1.0 / f32_to_f64(p.s), f32_to_f64(p.off), BITS,
                       symmetric, mode, seed, index, rbits);
}

// The 32 codes of one item (BITS packed words) by the fast float32 quotient under fast
// parameters, and which are near a tie (|y - rint(y)| >= lim): MASK, a bit per element;
// otherwise whether any is, from four running maxima (one instruction per element).
// y + 1.5 * 2^23 rounds y to an integer (nearest even), which sits in the low bits:
// bits(t) = 0x4B400000 + rint(y) for |y| < 2^22.
template <typename T, int BITS, bool MASK>
__device__ __forceinline__ u32 fast_loop(const Item<T>& it, const LaneParams& p, u32* words) {
#pragma unroll
    for (int k = 0; k < BITS; ++k) words[k] = 0u;
    u32 mask = 0u;
    float emax[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        const float y = __fmaf_rn(item_f32(it, j), p.inv32, p.c32);
        const float t = __fadd_rn(y, 12582912.0f);
        const float e = fabsf(__fsub_rn(y, __fsub_rn(t, 12582912.0f)));
        if constexpr (MASK) {
            if (!(e < p.lim)) mask |= 1u << j;
        } else {
            emax[j & 3] = fmaxf(emax[j & 3], e);
        }
        if constexpr (32 % BITS == 0) {
            const int bit = j * BITS;
            words[bit >> 5] += __float_as_uint(t) << (bit & 31);  // magic removed below
        } else {
            put_code<BITS>(words, j, __float_as_uint(t) - 0x4B400000u);
        }
    }
    if constexpr (32 % BITS == 0) {
#pragma unroll
        for (int k = 0; k < BITS; ++k) words[k] -= magic_sum<BITS>();
    }
    if constexpr (MASK) return mask;
    return !(fmaxf(fmaxf(emax[0], emax[1]), fmaxf(emax[2], emax[3])) < p.lim);
}

// The 32 codes of one item by the fast quotient; returns whether they need the exact path
// instead (a near-tie, or parameters outside the fast path's preconditions).  Groups with
// NaN/Inf or overflow get codes 0 and need nothing more.
template <typename T, int BITS>
__device__ __forceinline__ bool fast_codes(const Item<T>& it, const LaneParams& p, u32* words) {
    if (p.bad || p.overflow || !p.fast) {
#pragma unroll
        for (int k = 0; k < BITS; ++k) words[k] = 0u;
        return !(p.bad || p.overflow);
    }
    return fast_loop<T, BITS, false>(it, p, words) != 0u;
}

// Replace code j (a run-time index) of a lane's packed words by q.
template <int BITS>
__device__ __forceinline__ void set_code(u32* words, int j, u32 q) {
    constexpr u32 M = (1u << BITS) - 1u;
    const int bit = j * BITS, w = bit >> 5, sh = bit & 31;
#pragma unroll
    for (int k = 0; k < BITS; ++k) {  // registers, not a local array: select the word
        if (k == w) words[k] = (words[k] & ~(M << sh)) | (q << sh);
        if (sh + BITS > 32 && k == w + 1) words[k] = (words[k] & ~(M >> (32 - sh))) | (q >> (32 - sh));
    }
}

// Code of element xf (index `index` of the array) on the exact path when needed.
template <int BITS>
__device__ __forceinline__ u32 exact_code(float xf, const LaneParams& p, int symmetric, int mode, u64 seed,
                                          long long index, int rbits) {
    const float y = __fmaf_rn(xf, p.inv32, p.c32);
    const float t = __fadd_rn(y, 12582912.0f);
    const float r = __fsub_rn(t, 12582912.0f);
    return p.fast && fabsf(__fsub_rn(y, r)) < p.lim ? __float_as_uint(t) - 0x4B400000u
                                                    : tie_code<BITS>(xf, y, r, p, symmetric, mode, seed, index, rbits);
}

// The 32 codes of one item under the group parameters p: fast path, and the item again
// element by element when it holds a near-tie (or for other modes).
template <typename T, int BITS>
__device__ __forceinline__ void item_codes(const Item<T>& it, const LaneParams& p, long long item, int symmetric,
                                           int mode, u64 seed, int rbits, u32* words) {
    if (fast_codes<T, BITS>(it, p, words)) {
#pragma unroll
        for (int k = 0; k < BITS; ++k) words[k] = 0u;
#pragma unroll
        for (int j = 0; j < 32; ++j)
            put_code<BITS>(words, j, exact_code<BITS>(item_f32(it, j), p, symmetric, mode, seed, item * 32 + j, rbits));
    }
}

template <int BITS>
__device__ __forceinline__ void store_words(u8* packed, long long item, const u32* words) {
    u32* dst = reinterpret_cast<u32*>(packed) + item * BITS;
    if constexpr (BITS % 4 == 0) {
#pragma unroll
        for (int k = 0; k < BITS; k += 4)
            *reinterpret_cast<uint4*>(dst + k) = make_uint4(words[k], words[k + 1], words[k + 2], words[k + 3]);
    } else if constexpr (BITS == 2) {
        *reinterpret_cast<uint2*>(dst) = make_uint2(words[0], words[1]);
    } else {
#pragma unroll
        for (int k = 0; k < BITS; ++k) dst[k] = words[k];
    }
}

// Group g's stored scale and offset (NaN scale: NaN/Inf in the group; +Inf: overflow) and
// its status flag.
__device__ __forceinline__ void store_params(long long g, const LaneParams& p, float* scale, float* offset,
                                             int* status) {
    scale[g] = p.bad ? __int_as_float(0x7fc00000) : (p.overflow ? __int_as_float(0x7f800000) : p.s);
    offset[g] = (p.bad || p.overflow) ? 0.0f : p.off;
    if (p.bad || p.overflow) atomicOr(status, p.bad ? 1 : 2);
}

// One item: group min/max over the group's lanes, the group's parameters, codes, packing.
// Called by every lane of the warp (the shuffles need them); `valid` lanes store.
template <typename T, int BITS>
__device__ __forceinline__ void quantize_item(const Item<T>& it, long long item, bool valid, int lpg,
                                              int symmetric, int fmt, int mode, u64 seed, int rbits,
                                              u8* packed, float* scale, float* offset, int* status) {
    float mn, mx;
    item_minmax(it, mn, mx);
    for (int o = 1; o < lpg; o <<= 1) {  // lanes of a group: xor within aligned blocks
        mn = min_nan(mn, __shfl_xor_sync(0xffffffffu, mn, o));
        mx = max_nan(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    }
    if (!valid) return;
    const LaneParams p = lane_params<BITS>(mn, mx, symmetric, fmt, mode);
    u32 words[BITS];
    item_codes<T, BITS>(it, p, item, symmetric, mode, seed, rbits, words);
    store_words<BITS>(packed, item, words);
    if ((threadIdx.x & (lpg - 1)) == 0) store_params(item / lpg, p, scale, offset, status);
}

// Single pass (statistics, scale, codes, packing) over n_items items, grid-stride: while a
// warp works on one item it already loads its next one (two buffers, so memory stays busy).
// The 32 items of a warp are consecutive, so a group's lanes are in one warp.
template <typename T, int BITS>
__device__ void rtn_quantize_lanes_impl(const T* x, long long n_items, int lpg, int symmetric, int fmt,
                                        int mode, u64 seed, int rbits, u8* packed, float* scale,
                                        float* offset, int* status) {
    const long long stride = (long long)gridDim.x * LANE_THREADS;
    const long long lane = threadIdx.x & 31;
    long long item = (long long)blockIdx.x * LANE_THREADS + threadIdx.x;
    Item<T> a, b;
    if (item < n_items) load_item(x, item, a);
    while (item - lane < n_items) {  // uniform over the warp
        if (item + stride < n_items) load_item(x, item + stride, b);
        quantize_item<T, BITS>(a, item, item < n_items, lpg, symmetric, fmt, mode, seed, rbits, packed,
                               scale, offset, status);
        item += stride;
        if (item - lane >= n_items) break;
        if (item + stride < n_items) load_item(x, item + stride, a);
        quantize_item<T, BITS>(b, item, item < n_items, lpg, symmetric, fmt, mode, seed, rbits, packed,
                               scale, offset, status);
        item += stride;
    }
}

// ---- segment kernels: 16-bit data, 128 consecutive elements per lane ----------------------
// Each lane owns a segment of four items, so that a group of 128 elements has its parameters
// computed once (by one lane) rather than on each of four lanes: the parameters cost about as
// many instructions as the codes of 32 elements.  Groups of 32 or 64 elements are 4 or 2 groups
// of a segment; larger groups span G / 128 neighbouring lanes (xor shuffles).  A warp's tile
// of 32 segments (8 KiB) travels by cp.async into shared memory with coalesced 512-byte
// copies, the next tile already in flight (SEG_STAGES - 1 tiles ahead); each lane's row of 16
// vectors is padded to 17, so that neither the copies nor the lanes' 16-byte shared loads
// conflict on banks.
#ifndef SEG_WARPS
#define SEG_WARPS 1
#endif
#ifndef SEG_STAGES
#define SEG_STAGES 2
#endif
#ifndef SEG_MIN_BLOCKS
#define SEG_MIN_BLOCKS 12
#endif
// Near-ties of groups with fast parameters: 1 = each lane redoes its own near elements (a mask
// from fast_loop, one bit per element, at one more instruction per element), 0 = the
// warp redoes each item holding one, one element per lane.  bfloat16 data have exact ties about
// ten times as often as float16 (8-bit significands), so the mask pays for itself there only.
#ifndef SEG_NEAR_MASK_F16
#define SEG_NEAR_MASK_F16 0
#endif
#ifndef SEG_NEAR_MASK_BF16
#define SEG_NEAR_MASK_BF16 1
#endif
constexpr int SEG_THREADS = 32 * SEG_WARPS;
__device__ constexpr bool seg_near_mask(const __half*) { return SEG_NEAR_MASK_F16 != 0; }
__device__ constexpr bool seg_near_mask(const u16*) { return SEG_NEAR_MASK_BF16 != 0; }
constexpr int SEG_PITCH = 17;  // 16-byte units per lane row in a tile buffer (16 + 1 pad)

__device__ __forceinline__ void cp_async16(u32 smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async16_zfill(u32 smem, const void* gmem, bool valid) {
    // src-size 0 reads nothing and fills with zeros (vectors past the end)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// 16-byte unit of vector v (0..15) of lane o's segment within its warp's tile buffer.  Rows of
// 17 units: eight lanes reading their vector v hit eight different bank groups, and the
// addresses are a lane base plus a constant.
__device__ __forceinline__ int seg_unit(int o, int v) { return o * SEG_PITCH + v; }

// Word i of a warp's staged codes, its 16-byte units xor-swizzled: lanes writing their items'
// words, and the coalesced read-out, hit distinct banks (up to 4-way for the writes).
__device__ __forceinline__ int obuf_index(int i) {
    const int u = i >> 2;
    return ((u ^ ((u >> 3) & 7)) << 2) | (i & 3);
}

template <typename T>
__device__ __forceinline__ void seg_item(const uint4* buf, int lane, int it, Item<T>& d) {
#pragma unroll
    for (int i = 0; i < 4; ++i) d.q[i] = buf[seg_unit(lane, it * 4 + i)];
}

template <typename T, int BITS>
__device__ void rtn_quantize_seg_impl(const T* x, long long n_items, int lpg, int symmetric, int fmt, int mode,
                                      u64 seed, int rbits, u8* packed, float* scale, float* offset,
                                      int* status) {
    static_assert(sizeof(T) == 2, "segment kernels take 16-bit data");
    __shared__ uint4 ring[SEG_STAGES][SEG_WARPS][32 * SEG_PITCH];
    __shared__ __align__(16) u32 obuf[SEG_WARPS][128 * BITS];  // a tile's codes
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const long long n_tiles = (n_items + 127) / 128;
    const long long tstride = (long long)gridDim.x * SEG_WARPS;
    const u32 buf0 = (u32)__cvta_generic_to_shared(&ring[0][w][0]);
    constexpr u32 STAGE_BYTES = SEG_WARPS * 32 * SEG_PITCH * 16;
    // Copy vector i * 32 + lane of the tile (512 contiguous bytes per i over the warp).  It
    // belongs to lane 2i + (lane >> 4) as its vector lane & 15: 34 i units past vector 0's.
    const u32 dst0 = 16 * seg_unit(lane >> 4, lane & 15);
    auto issue = [&](long long tile, int stage) {
        const u32 base = buf0 + stage * STAGE_BYTES;
        const uint4* src = reinterpret_cast<const uint4*>(x) + tile * 512 + lane;
        if ((tile + 1) * 128 <= n_items) {  // a whole tile
#pragma unroll
            for (int i = 0; i < 16; ++i) cp_async16(base + dst0 + i * 34 * 16, src + i * 32);
        } else {
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                const bool ok = tile * 128 + ((i * 32 + lane) >> 2) < n_items;
                cp_async16_zfill(base + dst0 + i * 34 * 16,
                                 ok ? src + i * 32 : reinterpret_cast<const uint4*>(x), ok);
            }
        }
        cp_async_commit();  // one group per tile, also when empty: wait counts stay uniform
    };
    long long tile = (long long)blockIdx.x * SEG_WARPS + w;
#pragma unroll
    for (int st = 0; st < SEG_STAGES - 1; ++st) issue(tile + st * tstride, st);
    const int gi = lpg < 4 ? lpg : 4;          // items per group within a segment
    const int lps = lpg > 4 ? lpg >> 2 : 1;    // lanes per group
    int stage = 0;
    for (; tile < n_tiles; tile += tstride) {  // uniform over the warp
        issue(tile + (SEG_STAGES - 1) * tstride, stage == 0 ? SEG_STAGES - 1 : stage - 1);
        cp_async_wait<SEG_STAGES - 1>();
        __syncwarp();  // every lane's copies of this tile have landed
        const uint4* buf = &ring[stage][w][0];
        const long long item0 = tile * 128 + lane * 4;
        float mn[4], mx[4];
#pragma unroll
        for (int it = 0; it < 4; ++it) {
            Item<T> d;
            seg_item(buf, lane, it, d);
            item_minmax(d, mn[it], mx[it]);
        }
        if (gi >= 2) {
            mn[0] = mn[1] = min_nan(mn[0], mn[1]);
            mx[0] = mx[1] = max_nan(mx[0], mx[1]);
            mn[2] = mn[3] = min_nan(mn[2], mn[3]);
            mx[2] = mx[3] = max_nan(mx[2], mx[3]);
        }
        if (gi == 4) {
            mn[0] = min_nan(mn[0], mn[2]);
            mx[0] = max_nan(mx[0], mx[2]);
            for (int o = 1; o < lps; o <<= 1) {
                mn[0] = min_nan(mn[0], __shfl_xor_sync(0xffffffffu, mn[0], o));
                mx[0] = max_nan(mx[0], __shfl_xor_sync(0xffffffffu, mx[0], o));
            }
        }
        u32* out = &obuf[w][0];
        for (int g0 = 0; g0 < 4; g0 += gi) {  // the segment's groups (or its part of one); uniform
            const float gmn = g0 == 0 ? mn[0] : (g0 == 1 ? mn[1] : (g0 == 2 ? mn[2] : mn[3]));
            const float gmx = g0 == 0 ? mx[0] : (g0 == 1 ? mx[1] : (g0 == 2 ? mx[2] : mx[3]));
            const bool valid = item0 + g0 < n_items;  // groups are whole
            const LaneParams p = lane_params<BITS>(gmn, gmx, symmetric, fmt, mode);
            if (valid && (lane & (lps - 1)) == 0) store_params((item0 + g0) / lpg, p, scale, offset, status);
            for (int it = g0; it < g0 + gi; ++it) {
                Item<T> d;
                seg_item(buf, lane, it, d);
                u32 words[BITS];
                bool near;
                if (seg_near_mask((const T*)nullptr) && p.fast) {
                    // each lane fixes its own near elements (their values from the tile buffer)
                    u32 m = fast_loop<T, BITS, true>(d, p, words);
                    for (m = valid ? m : 0u; m; m &= m - 1) {
                        const int j = __ffs(m) - 1;
                        const T v = reinterpret_cast<const T*>(&buf[seg_unit(lane, it * 4 + (j >> 3))])[j & 7];
                        // tie_code directly: exact_code's fast-path test again is measurably slower
                        const float xf = __uint_as_float(f32_bits(v));
                        const float y = __fmaf_rn(xf, p.inv32, p.c32);
                        const float r = __fsub_rn(__fadd_rn(y, 12582912.0f), 12582912.0f);
                        set_code<BITS>(words, j, tie_code<BITS>(xf, y, r, p, symmetric, mode, seed,
                                                                (tile * 128 + lane * 4 + it) * 32 + j, rbits));
                    }
                    near = false;
                } else {
                    near = fast_codes<T, BITS>(d, p, words) && valid;
                }
                // Items with a near-tie are redone by the whole warp, one element per lane.
                for (u32 todo = __ballot_sync(0xffffffffu, near); todo; todo &= todo - 1) {
                    const int src = __ffs(todo) - 1;
                    LaneParams q;
                    q.s = __shfl_sync(0xffffffffu, p.s, src);
                    q.off = __shfl_sync(0xffffffffu, p.off, src);
                    q.inv32 = __shfl_sync(0xffffffffu, p.inv32, src);
                    q.c32 = __shfl_sync(0xffffffffu, p.c32, src);
                    q.lim = __shfl_sync(0xffffffffu, p.lim, src);
                    q.fast = __shfl_sync(0xffffffffu, (int)p.fast, src) != 0;
                    q.bad = q.overflow = false;
                    const T v = reinterpret_cast<const T*>(&buf[seg_unit(src, it * 4 + (lane >> 3))])[lane & 7];
                    const long long sitem = tile * 128 + src * 4 + it;
                    const u32 c = exact_code<BITS>(__uint_as_float(f32_bits(v)), q, symmetric, mode, seed,
                                                   sitem * 32 + lane, rbits);
                    const int bit = lane * BITS;
#pragma unroll
                    for (int k = 0; k < BITS; ++k) {  // word k of the item: its lanes' codes
                        u32 part = (bit >> 5) == k ? c << (bit & 31) : 0u;
                        if ((bit & 31) + BITS > 32 && (bit >> 5) + 1 == k) part = c >> (32 - (bit & 31));
                        const u32 wk = __reduce_or_sync(0xffffffffu, part);
                        if (lane == src) words[k] = wk;
                    }
                }
#pragma unroll
                for (int k = 0; k < BITS; ++k) out[obuf_index((lane * 4 + it) * BITS + k)] = words[k];
            }
        }
        __syncwarp();
        // the tile's codes: 512 * BITS contiguous bytes, written with coalesced 16-byte stores
        {
            const long long first = tile * 128 * BITS;  // in 32-bit words
            const long long end = n_items * BITS;
            uint4* dst = reinterpret_cast<uint4*>(reinterpret_cast<u32*>(packed) + first);
#pragma unroll
            for (int i = 0; i < BITS; ++i) {
                const int v = i * 32 + lane;  // 16-byte vector of the tile's codes
                const uint4 q = reinterpret_cast<const uint4*>(out)[obuf_index(v * 4) >> 2];
                if (first + v * 4 + 4 <= end) {
                    dst[v] = q;
                } else if (first + v * 4 < end) {  // the array's last words
                    u32* d32 = reinterpret_cast<u32*>(dst + v);
                    d32[0] = q.x;
                    if (first + v * 4 + 1 < end) d32[1] = q.y;
                    if (first + v * 4 + 2 < end) d32[2] = q.z;
                }
            }
        }
        __syncwarp();  // all lanes are done with this stage before it is refilled
        stage = stage == SEG_STAGES - 1 ? 0 : stage + 1;
    }
    cp_async_wait<0>();
}

// Two float32 values as a pair of 16-bit outputs, rounded to nearest even.
__device__ __forceinline__ u32 pack_pair(float a, float b, const __half*) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const u32*>(&h);
}
__device__ __forceinline__ u32 pack_pair(float a, float b, const u16*) {
    return (u32)f32_to_bf16_bits(a) | ((u32)f32_to_bf16_bits(b) << 16);
}

template <int BITS>
__device__ __forceinline__ void load_words(const u8* packed, long long item, u32* words) {
    const u32* src = reinterpret_cast<const u32*>(packed) + item * BITS;
    if constexpr (BITS % 4 == 0) {
#pragma unroll
        for (int k = 0; k < BITS; k += 4) {
            const uint4 v = *reinterpret_cast<const uint4*>(src + k);
            words[k] = v.x; words[k + 1] = v.y; words[k + 2] = v.z; words[k + 3] = v.w;
        }
    } else if constexpr (BITS == 2) {
        const uint2 v = *reinterpret_cast<const uint2*>(src);
        words[0] = v.x; words[1] = v.y;
    } else {
#pragma unroll
        for (int k = 0; k < BITS; ++k) words[k] = src[k];
    }
}

// Decode: lane = item.  x_hat = q * s + o in float32 with one fma is the correctly rounded
// float32 value of the exact q * s + o, when that is exact in float64 (as on the CPU, whose
// float64 arithmetic is then exact): all terms are multiples of 2^(min(es, eo) - 23) and the
// sum is below 2^(max(eo, es + BITS) + 2), so a span of at most 28 exponents suffices; tame s
// and o keep every nonzero result a normal float32.  Otherwise float64.
//
// 16-bit outputs must be rounded once from the exact value (lowbit.arrays.to_dtype).  The
// float32 v rounds a second time only where v is a 16-bit midpoint (its DROPPED bits
// 100...0) that the exact value is not on.  So the lane notes, at two integer operations per
// element, whether any of its v is a midpoint, and only then (rarely: 2^-13 of random float16
// outputs, 2^-16 of bfloat16) recomputes those elements rounded to odd from the pair of
// directed roundings: the truncation with its last bit set when inexact, which float32's
// 13 / 16 extra bits turn into the correct 16-bit rounding.  float16 results below 2^-14
// (subnormal, more bits dropped) are exact in float32 when min(es, eo) >= -15, which the
// fast path then requires: such results are multiples of 2^(min(es, eo) - 23) below 2^-14.
template <typename T> struct Out16 {  // float32 -> T drops DROPPED bits (T = __half, u16)
    static constexpr u32 DROPPED = 13, MASK = (1u << DROPPED) - 1u, MIDPOINT = 1u << (DROPPED - 1);
    static constexpr int MIN_EXPONENT = -15;
};
template <> struct Out16<u16> {
    static constexpr u32 DROPPED = 16, MASK = (1u << DROPPED) - 1u, MIDPOINT = 1u << (DROPPED - 1);
    static constexpr int MIN_EXPONENT = -127;  // bfloat16's range is float32's: no constraint
};
// 0 iff v is a midpoint of T's grid (normal range).
template <typename T>
__device__ __forceinline__ u32 midpoint_key(float v) {
    return (__float_as_uint(v) ^ Out16<T>::MIDPOINT) & Out16<T>::MASK;
}
// The float32 rounding to odd of the exact value between the directed roundings lo <= hi.
__device__ __forceinline__ float round_to_odd(float lo, float hi) {
    if (lo == hi) return hi;  // exact (hi, not lo: an exact zero is +0 rounded upward)
    return (__float_as_uint(lo) & 1u) ? lo : hi;
}

// x_hat of code j of an item on the fast path, rounded to nearest (ODD: rounded to odd).
template <int BITS, bool ODD>
__device__ __forceinline__ float fast_value(const u32* words, int j, float s, float o, int symmetric) {
    constexpr float M = (float)((1 << (BITS - 1)) - 1);
    const float q = __fsub_rn(__uint_as_float(0x4B000000u | get_code<BITS>(words, j)), 8388608.0f);
    if (symmetric) {
        if (BITS == 1) return q != 0.0f ? s : -s;  // exact
        const float k = __fsub_rn(q, M);
        return ODD ? round_to_odd(__fmul_rd(k, s), __fmul_ru(k, s)) : __fmul_rn(k, s);
    }
    return ODD ? round_to_odd(__fmaf_rd(q, s, o), __fmaf_ru(q, s, o)) : __fmaf_rn(q, s, o);
}

template <typename T, int BITS>
__device__ __forceinline__ void decode_item(const u32* words, float s, float o, int symmetric,
                                            Item<T>& res) {
    bool fast = f32_tame(s) && s != 0.0f && f32_tame(o) && !(__float_as_uint(s) >> 31);
    if (fast) {
        const int es = f32_exponent(s), eo = f32_exponent(o);
        const int lowest = o != 0.0f ? min(es, eo) : es;
        if (o != 0.0f) fast = max(eo, es + BITS) - min(es, eo) <= 28;
        if constexpr (sizeof(T) == 2) fast = fast && lowest >= Out16<T>::MIN_EXPONENT;
    }
    if (fast) {
        if constexpr (sizeof(T) == 2) {
            u32 key = 0xffffffffu;  // min of midpoint_key over the item: 0 iff some v is a midpoint
#pragma unroll
            for (int j = 0; j < 32; j += 2) {
                const float a = fast_value<BITS, false>(words, j, s, o, symmetric);
                const float b = fast_value<BITS, false>(words, j + 1, s, o, symmetric);
                key = min(key, min(midpoint_key<T>(a), midpoint_key<T>(b)));
                res.w[j >> 1] = pack_pair(a, b, res.t);
            }
            if (key == 0u) {  // rare: round the midpoints once, from the exact value
#pragma unroll
                for (int j = 0; j < 32; j += 2) {
                    float a = fast_value<BITS, false>(words, j, s, o, symmetric);
                    float b = fast_value<BITS, false>(words, j + 1, s, o, symmetric);
                    if (min(midpoint_key<T>(a), midpoint_key<T>(b)) != 0u) continue;
                    if (midpoint_key<T>(a) == 0u) a = fast_value<BITS, true>(words, j, s, o, symmetric);
                    if (midpoint_key<T>(b) == 0u) b = fast_value<BITS, true>(words, j + 1, s, o, symmetric);
                    res.w[j >> 1] = pack_pair(a, b, res.t);
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < 32; ++j) res.t[j] = fast_value<BITS, false>(words, j, s, o, symmetric);
        }
    } else {
        const double s64 = f32_to_f64(s), o64 = f32_to_f64(o);
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            from_f64(decode_one(get_code<BITS>(words, j), s64, o64, BITS, symmetric), &res.t[j]);
        }
    }
}

// Slot of 16-byte vector i of lane l's item in its warp's staging area: NQ vectors per lane,
// xor-swizzled so that neither the lanes' writes nor the coalesced reads conflict on banks.
template <int NQ>
__device__ __forceinline__ int stage_slot(int l, int i) {
    return l * NQ + (i ^ (NQ == 4 ? (l >> 1) & 3 : l & 7));
}

// One warp decodes 32 consecutive items, stages them in shared memory and writes them back
// with 512-byte coalesced stores (each lane's 64-128 contiguous output bytes would otherwise
// split every store instruction over 32 half-written sectors).
template <typename T, int BITS>
__device__ void rtn_decode_lanes_impl(const u8* packed, long long n_items, int lpg_shift,
                                      const float* scale, const float* offset, int symmetric, T* out) {
    constexpr int NQ = Item<T>::NQ;
    __shared__ uint4 stage[LANE_THREADS / 32][32 * NQ];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (long long base = (long long)blockIdx.x * LANE_THREADS + (threadIdx.x & ~31); base < n_items;
         base += (long long)gridDim.x * LANE_THREADS) {  // uniform over the warp
        const long long item = base + lane;
        Item<T> res;
        if (item < n_items) {
            u32 words[BITS];
            load_words<BITS>(packed, item, words);
            const float s = scale[item >> lpg_shift];
            const float o = symmetric ? 0.0f : offset[item >> lpg_shift];
            decode_item<T, BITS>(words, s, o, symmetric, res);
        }
#pragma unroll
        for (int i = 0; i < NQ; ++i) stage[w][stage_slot<NQ>(lane, i)] = res.q[i];
        __syncwarp();
        uint4* dst = reinterpret_cast<uint4*>(out + base * 32);
#pragma unroll
        for (int k = 0; k < NQ; ++k) {
            const int m = k * 32 + lane;  // vector m of the warp's output
            if (base + m / NQ < n_items) dst[m] = stage[w][stage_slot<NQ>(m / NQ, m % NQ)];
        }
        __syncwarp();
    }
}

// Quantize: float32 data by the lane kernel, 16-bit data by the segment kernel; decode: lanes.
// KIND: lanes or seg (its rtn_quantize_<KIND>_impl), with its block size and blocks per SM.
#define LOWBIT_QUANT(KIND, THREADS_, MIN_BLOCKS_, SUFFIX, T, BITS)                              \
    extern "C" __global__ void __launch_bounds__(THREADS_, MIN_BLOCKS_)                         \
        lowbit_rtn_quantize_##KIND##_##SUFFIX##_b##BITS(                                        \
            const T* x, long long n_items, int lpg, int symmetric, int fmt, int mode, u64 seed, \
            int rbits, u8* packed, float* scale, float* offset, int* status) {                   \
        rtn_quantize_##KIND##_impl<T, BITS>(x, n_items, lpg, symmetric, fmt, mode, seed, rbits, \
                                            packed, scale, offset, status);                     \
    }
// BOUNDS: the 16-bit decoders' launch bounds.  Their rare midpoint fix (decode_item) would
// let ptxas grow them from 56-64 to 80 registers, 3 blocks per SM instead of 4; bounded to 4
// blocks they keep 64 registers without spilling.  The float32 decoder (80) is left as it was.
#define DECODE16_BOUNDS __launch_bounds__(LANE_THREADS, 4)
#define LOWBIT_DECODE_LANES(SUFFIX, T, BITS, BOUNDS)                                            \
    extern "C" __global__ void BOUNDS lowbit_rtn_decode_lanes_##SUFFIX##_b##BITS(               \
        const u8* packed, long long n_items, int lpg_shift, const float* scale,                 \
        const float* offset, int symmetric, T* out) {                                           \
        rtn_decode_lanes_impl<T, BITS>(packed, n_items, lpg_shift, scale, offset, symmetric,    \
                                       out);                                                    \
    }
// Compiled as a separate module per bit width (-DLOWBIT_LANE_BITS=b, lowbit/cuda/rtn.py), so
// that a first call compiles only what it uses.  (The _X forms expand LOWBIT_LANE_BITS first.)
#define LOWBIT_QUANT_X(KIND, THREADS_, MIN_BLOCKS_, SUFFIX, T, BITS) \
    LOWBIT_QUANT(KIND, THREADS_, MIN_BLOCKS_, SUFFIX, T, BITS)
#define LOWBIT_DECODE_LANES_X(SUFFIX, T, BITS, BOUNDS) LOWBIT_DECODE_LANES(SUFFIX, T, BITS, BOUNDS)
#ifdef LOWBIT_LANE_BITS
LOWBIT_QUANT_X(seg, SEG_THREADS, SEG_MIN_BLOCKS, f16, __half, LOWBIT_LANE_BITS)
LOWBIT_QUANT_X(seg, SEG_THREADS, SEG_MIN_BLOCKS, bf16, u16, LOWBIT_LANE_BITS)
LOWBIT_QUANT_X(lanes, LANE_THREADS, LANE_MIN_BLOCKS, f32, float, LOWBIT_LANE_BITS)
LOWBIT_DECODE_LANES_X(f16, __half, LOWBIT_LANE_BITS, DECODE16_BOUNDS)
LOWBIT_DECODE_LANES_X(bf16, u16, LOWBIT_LANE_BITS, DECODE16_BOUNDS)
LOWBIT_DECODE_LANES_X(f32, float, LOWBIT_LANE_BITS, )
#endif

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

#ifndef LOWBIT_LANE_BITS
LOWBIT_FUSED_ALL_K(f16, __half)
LOWBIT_FUSED_ALL_K(bf16, u16)
LOWBIT_FUSED_ALL_K(f32, float)
LOWBIT_FUSED_ALL_K(f64, double)
#endif
