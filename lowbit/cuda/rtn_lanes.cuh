// lowbit/cuda/rtn_lanes.cuh -- pieces of the lane kernels (rtn_lanes.cu, rtn_seg.cu,
// rtn_decode_lanes.cu): 32 consecutive elements per lane, float32 arithmetic with exactness
// proofs, the float64 path of rtn.cuh for anything outside their preconditions.

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
// (The _X form expands LOWBIT_LANE_BITS first.)
#define LOWBIT_QUANT_X(KIND, THREADS_, MIN_BLOCKS_, SUFFIX, T, BITS) \
    LOWBIT_QUANT(KIND, THREADS_, MIN_BLOCKS_, SUFFIX, T, BITS)
