// lowbit/cuda/rtn.cuh -- pieces shared by the rtn kernel families (rtn.cu, rtn_groups.cu,
// rtn_lanes.cu, rtn_seg.cu, rtn_decode_lanes.cu): warp reductions, vector loads, the float64
// encoder / decoder of one value, and the group parameters of lowbit/scales.py.  Twins of
// lowbit/cpu/rtn.py.

// Reduce float64 min, max and a NaN/Inf flag over the 32 lanes of a warp (xor butterfly).
__device__ __forceinline__ void warp_minmax(double& mn, double& mx, int& bad) {
    for (int o = 16; o; o >>= 1) {
        mn = fmin(mn, __shfl_xor_sync(0xffffffffu, mn, o));
        mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
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
