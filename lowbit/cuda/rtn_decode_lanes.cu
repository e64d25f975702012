// lowbit/cuda/rtn_decode_lanes.cu -- rtn's vectorized decoder, 32 elements per lane, for
// float16, bfloat16 and float32 outputs; twin of lowbit/cpu/rtn.py rtn_decode.
// One module per bit width (-DLOWBIT_LANE_BITS=b, lowbit/cuda/rtn.py).
#include "rtn.cuh"
#include "rtn_lanes.cuh"

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
#define LOWBIT_DECODE_LANES_X(SUFFIX, T, BITS, BOUNDS) LOWBIT_DECODE_LANES(SUFFIX, T, BITS, BOUNDS)
#ifdef LOWBIT_LANE_BITS
LOWBIT_DECODE_LANES_X(f16, __half, LOWBIT_LANE_BITS, DECODE16_BOUNDS)
LOWBIT_DECODE_LANES_X(bf16, u16, LOWBIT_LANE_BITS, DECODE16_BOUNDS)
LOWBIT_DECODE_LANES_X(f32, float, LOWBIT_LANE_BITS, )
#endif
