// lowbit/cuda/blockcodec.cu -- the block formats (MX, NVFP4) in one pass: block_quantize,
// block_dequantize, finite_block_amax.  Twins of lowbit/cpu/blockcodec.py (layout, scales and
// element rules in its docstring); scalar codec in codec.cuh.
//
// One thread per unit of 8 elements (one 16-byte load of float16 / bfloat16, two of float32,
// four of float64), block_size / 8 consecutive lanes per block (block_size a power of two,
// 8 .. 256, checked by the wrapper); the MX kernels (E8M0 scales, MiniFloat elements) take two
// units of 16-bit input per thread and encode in integer operations only, the general kernel
// (MXINT8, NVFP4, float64 input) by the float64 codec.  Stages: load_unit_of -> block amax across the block's
// lanes (integer max of |x|'s bits by warp shuffles: non-negative floats order as their bits,
// and NaN / Inf lie above every finite value) -> block_scale -> element_code x 8 -> one
// store_unit (bits bytes) per thread, the scale code by the block's first lane.
// Input suffixes: _f16 (__half), _bf16 (bfloat16 bits), _f32, _f64.
#include "blockcodec.cuh"

struct FixedSpec {
    int bits, frac_bits;
    long long qmin, qmax;
};

// The code of x / scale in the element format by the float64 encoders (lowbit.cpu.blockcodec.
// element_code without its integer path).
template <typename T>
__device__ __forceinline__ u32 element_code_f64(T raw, const BlockScale& bsc, const MiniSpec& s, const FixedSpec& f,
                                                int mode, u64 seed, long long index, int rbits) {
    int invalid, over;
    if (f.bits > 0) {
        const double sc = bsc.scale;
        const double xi = (sc != 0.0 && isfinite(sc)) ? codec_f64(raw) / sc : 0.0;
        return (u32)fixed_encode_one(xi, f.bits, f.frac_bits, f.qmin, f.qmax, LOWBIT_SATURATE, mode, seed, index,
                                     rbits, invalid, over);
    }
    return (u32)minifloat_encode_one(scaled(codec_f64(raw), bsc.scale), s, LOWBIT_SATURATE, mode, seed, index,
                                     rbits, invalid, over);
}

// The general loop, float64 encoders: fixed point (MXINT8), NVFP4's non-power-of-two scales,
// float64 input and formats past mini_bits_ok.
template <typename T>
__device__ void block_quantize_impl(const T* x, long long n, long long length, int block_size, const MiniSpec& s,
                                    const FixedSpec& f, int scale_emax, const MiniSpec& ss, double tensor_scale,
                                    int mode, u64 seed, long long offset, int rbits, u8* packed, u8* scales,
                                    long long n_blocks) {
    typedef typename AbsKey<T>::type K;
    const int lanes = block_size / 8;
    const int unit_shift = __ffs(lanes) - 1;
    const int bits = f.bits > 0 ? f.bits : s.bits;
    const bool flat = length % block_size == 0;
    const bool vector = flat && (unsigned long long)x % 16 == 0;
    const long long n_units = n_blocks * lanes;
    const long long stride = (long long)gridDim.x * blockDim.x;
    // uniform trip count over the warp (the shuffles need every lane); a block's lanes share a warp
    for (long long u0 = (long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31); u0 < n_units; u0 += stride) {
        const long long u = u0 + (threadIdx.x & 31);
        const bool live = u < n_units;
        const UnitPos p = unit_pos(live ? u : 0, length, block_size, unit_shift, flat);
        Unit8<T> in;
        K key = 0;
        if (live) {
            load_unit_of<T>(x, p, vector, in);
#pragma unroll
            for (int j = 0; j < 8; ++j)
                if (j < p.count) key = max(key, abs_key(in.t[j]));
        }
        key = block_max<K>(key, lanes);
        if (!live) continue;
        const BlockScale bsc = block_scale(key_bad(key) ? LOWBIT_NAN : key_value(key), scale_emax, ss, tensor_scale);
        const long long index = offset + u * 8;  // the padded stream: unit u is elements 8u .. 8u + 7
        u64 acc = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j)
            if (j < p.count)
                acc |= (u64)element_code_f64<T>(in.t[j], bsc, s, f, mode, seed, index + j, rbits) << (j * bits);
        store_unit(packed, u, bits, bits, acc);
        if (p.lane == 0) scales[p.block] = (u8)bsc.code;
    }
}

// ---- MiniFloat elements under E8M0 scales (MX): integer operations only --------------------
// The MX loop (float16 / bfloat16 / float32 input, mini_bits_ok elements, E8M0 scales: the
// wrapper's choice).  The E8M0 scale is 2^shift with |shift| <= 127, so every element of a finite
// block is minifloat_encode_any_bits of its bits (x / scale exactly), zeros and subnormals
// included; a block with NaN / Inf has scale code 0xff and elements +-0 (NaN: +0), as
// lowbit.cpu.codec.scaled gives them.  A warp takes UNITS x 32 consecutive units per iteration
// (UNITS loads issued together); blocks never straddle its 32-unit rows.
// `s`: the element format for the integer encoder (MiniSpec, or the MiniConst of a build with
// -DLOWBIT_ELEM_SPEC: its fields folded), `rs` the same at run time.
// mx_fp8_by_instruction: float16 input, fp8 e4m3 / e5m2 elements, nearest even, the OCP scale
// rule (scale_emax = the element's emax), sm_89+: x / 2^shift is exact in float32 and normal or
// zero there (|x| >= 2^-24 and shift <= 15 - emax in a float16 block, |x| / 2^shift <
// 2^(emax + 1); shift = -127 only for an all-zero block), so one float32 product and the
// conversion instruction (fp8x2_of_f32: nearest even, saturating) give the integer encoder's codes.
template <typename T, int MODE, typename S>
__device__ void block_quantize_mx_loop(const T* x, long long length, int block_size, const MiniSpec& rs,
                                       const S& s, int scale_emax, u64 seed, long long offset, int rbits,
                                       u8* packed, u8* scales, long long n_blocks) {
    constexpr int UNITS = sizeof(T) == 4 ? 1 : 2;
    const int lanes = block_size / 8;
    const int unit_shift = __ffs(lanes) - 1;
    const bool flat = length % block_size == 0;
    const bool vector = flat && (unsigned long long)x % 16 == 0;
    const long long n_units = n_blocks * lanes;
    const int lane = threadIdx.x & 31;
    const long long stride = (long long)gridDim.x * blockDim.x * UNITS;
    for (long long u0 = ((long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31)) * UNITS; u0 < n_units;
         u0 += stride) {
        Unit8<T> in[UNITS];
        UnitPos p[UNITS];
        u32 key[UNITS];
#pragma unroll
        for (int r = 0; r < UNITS; ++r) {
            const long long u = u0 + r * 32 + lane;
            p[r] = unit_pos(u < n_units ? u : 0, length, block_size, unit_shift, flat);
            key[r] = 0;
            if (u < n_units) load_unit_of<T>(x, p[r], vector, in[r]);
        }
#pragma unroll
        for (int r = 0; r < UNITS; ++r) {
            const long long u = u0 + r * 32 + lane;
            if (u < n_units) {
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    if (j < p[r].count) key[r] = max(key[r], abs_key(in[r].t[j]));
            }
            key[r] = block_max<u32>(key[r], lanes);
        }
#pragma unroll
        for (int r = 0; r < UNITS; ++r) {
            const long long u = u0 + r * 32 + lane;
            if (u >= n_units) continue;
            const bool nan_block = key_bad(key[r]);
            // block_scale's E8M0 rule (shift -1024 and code 0xff for a NaN block)
            const BlockScale bsc = block_scale(nan_block ? LOWBIT_NAN : key_value(key[r]), scale_emax, rs, 0.0);
            const long long index = offset + u * 8;  // the padded stream: unit u is elements 8u .. 8u + 7
            u64 acc = 0;
            if constexpr (LOWBIT_HW_FP8 && HwFp8<S>::kind != 0 && MODE == LOWBIT_NEAREST_EVEN &&
                          SameType<T, __half>::value) {
                if (!nan_block && scale_emax == s.emax) {  // by instruction (mx_fp8_by_instruction)
                    const float inv = __uint_as_float((u32)(127 - bsc.shift) << 23);  // 2^-shift
#pragma unroll
                    for (int j = 0; j < 8; j += 2)
                        acc |= (u64)fp8x2_of_f32<HwFp8<S>::kind>(__fmul_rn(__half2float(in[r].t[j]), inv),
                                                                 __fmul_rn(__half2float(in[r].t[j + 1]), inv))
                               << (8 * j);
                    store_unit(packed, u, 8, 8, acc);
                    if (p[r].lane == 0) scales[p[r].block] = (u8)bsc.code;
                    continue;
                }
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                if (j >= p[r].count) continue;
                const u32 b = f32_bits(in[r].t[j]);
                const u64 rnd = MODE == LOWBIT_STOCHASTIC ? random_bits(seed, index + j) : 0ull;
                int st;
                // a finite block of float16: every element +-0 or normal as float32
                const u32 c = nan_block ? ((b & 0x7fffffffu) > 0x7f800000u ? 0u : (b >> 31) << (s.bits - 1))
                              : SameType<T, __half>::value && !SameType<S, MiniSpec>::value
                                  ? minifloat_encode_normal_bits<MODE>(b, bsc.shift, s, LOWBIT_SATURATE, rnd, rbits, st)
                                  : minifloat_encode_any_bits<MODE>(b, bsc.shift, s, LOWBIT_SATURATE, rnd, rbits, st);
                acc |= (u64)c << (j * s.bits);
            }
            store_unit(packed, u, s.bits, s.bits, acc);
            if (p[r].lane == 0) scales[p[r].block] = (u8)bsc.code;
        }
    }
}

// out (rows of length, padding dropped) = table[code] * scale (float64 product, rounded once to
// out's type).  For codes of at most 4 bits and 16/32-bit outputs every product a block can
// hold is in a per-CTA table lut[scale code][element code], built by the same float64 product
// and rounding (from_f64(table[c] * scale)): one shared load per element, no float64
// arithmetic or conversion in the loop.  Otherwise the product per element (the table and the
// scale of every scale code in shared memory).  Unpadded rows, aligned out and 1/2/4-bit codes
// of the table path (MXFP4, NVFP4) take the vector loop: a warp takes DEQ_UNITS x 32
// consecutive units of 8 codes per iteration, their packed words and scale codes loaded
// together, each unit's 8 outputs in whole uint4 stores.  Everything else a thread per unit.
#define LOWBIT_DEQ_UNITS 4
template <typename T>
__device__ void block_dequantize_impl(const u8* packed, const u8* scales, long long length, int block_size,
                                      int bits, const double* table, MiniSpec ss, double tensor_scale, T* out,
                                      long long n_blocks) {
    typedef typename Raw<T>::type R;
    constexpr bool LUT_TYPE = sizeof(T) <= 4;
    __shared__ double tab[256];
    __shared__ double row_scale[256];  // the scale of every scale code
    __shared__ R lut[LUT_TYPE ? 256 * 16 : 1];
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
        if (t < (1 << bits)) tab[t] = table[t];
        row_scale[t] = tensor_scale == 0.0 ? (t == 0xff ? LOWBIT_NAN : pow2(t - 127))
                                           : minifloat_decode_one((u64)t, ss) * tensor_scale;
    }
    __syncthreads();
    const bool use_lut = LUT_TYPE && bits <= 4;
    if (use_lut) {
        for (int e = threadIdx.x; e < 256 * 16; e += blockDim.x) {
            if ((e & 15) >= (1 << bits)) continue;
            T v;
            from_f64(tab[e & 15] * row_scale[e >> 4], &v);
            lut[e] = (R)raw_bits(v);
        }
        __syncthreads();
    }
    const int lanes = block_size / 8;
    const int unit_shift = __ffs(lanes) - 1;
    const bool flat = length % block_size == 0;
    const bool vector = flat && (unsigned long long)out % 16 == 0;
    const u32 mask = (1u << bits) - 1u;
    const long long n_units = n_blocks * lanes;
    if (LUT_TYPE && use_lut && vector && bits != 3 && (unsigned long long)packed % 4 == 0) {
        constexpr int UNITS = LOWBIT_DEQ_UNITS;
        const int lane = threadIdx.x & 31;
        const long long stride = (long long)gridDim.x * blockDim.x * UNITS;
        for (long long u0 = ((long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31)) * UNITS; u0 < n_units;
             u0 += stride) {
            u32 acc[UNITS];
            int row[UNITS];
#pragma unroll
            for (int r = 0; r < UNITS; ++r) {  // the loads first: UNITS words and scale codes in flight
                const long long u = u0 + r * 32 + lane;
                acc[r] = 0u;
                row[r] = 0;
                if (u < n_units) {
                    acc[r] = bits == 4 ? reinterpret_cast<const u32*>(packed)[u]
                                       : bits == 2 ? reinterpret_cast<const u16*>(packed)[u] : packed[u];
                    row[r] = scales[u >> unit_shift];
                }
            }
#pragma unroll
            for (int r = 0; r < UNITS; ++r) {
                const long long u = u0 + r * 32 + lane;
                if (u >= n_units) continue;
                const R* l = lut + row[r] * 16;
                Words8<T> res;
#pragma unroll
                for (int j = 0; j < 8; ++j) put_bits(res, j, l[(acc[r] >> (j * bits)) & mask]);
                store_words8(out, u * 8, 8, true, res);
            }
        }
        return;
    }
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < n_units;
         u += (long long)gridDim.x * blockDim.x) {
        const UnitPos p = unit_pos(u, length, block_size, unit_shift, flat);
        if (p.count == 0) continue;
        const int code = scales[p.block];
        const u64 acc = load_unit(packed, u, bits, bits);
        Words8<T> res;
        if (LUT_TYPE && use_lut) {
            const R* l = lut + code * 16;
#pragma unroll
            for (int j = 0; j < 8; ++j) put_bits(res, j, l[(acc >> (j * bits)) & mask]);
        } else {
            const double sc = row_scale[code];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                T v;
                from_f64(tab[(acc >> (j * bits)) & mask] * sc, &v);
                put_bits(res, j, raw_bits(v));
            }
        }
        store_words8(out, p.first, p.count, vector, res);
    }
}

// The |x| key of a unit's first `count` elements (AbsKey: keys order as the values): of 16-bit
// inputs by a lane-wise max of the magnitudes' bits (__vmaxu2) and one widening of the
// largest, which is monotone (NaN above Inf).
template <typename T>
__device__ __forceinline__ typename AbsKey<T>::type unit_key(const Unit8<T>& in, int count) {
    typename AbsKey<T>::type key = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
        if (j < count) key = max(key, abs_key(in.t[j]));
    return key;
}
__device__ __forceinline__ u32 unit_max_bits16(const uint4& q, int count) {
    const u32 w[4] = {q.x, q.y, q.z, q.w};
    u32 m = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k)
        m = __vmaxu2(m, w[k] & ((2 * k < count ? 0x7fffu : 0u) | (2 * k + 1 < count ? 0x7fff0000u : 0u)));
    return max(m & 0xffffu, m >> 16);
}
template <> __device__ __forceinline__ u32 unit_key<__half>(const Unit8<__half>& in, int count) {
    return abs_key(__ushort_as_half((u16)unit_max_bits16(in.q[0], count)));
}
template <> __device__ __forceinline__ u32 unit_key<u16>(const Unit8<u16>& in, int count) {
    return abs_key((u16)unit_max_bits16(in.q[0], count));
}

// The largest finite block key of a thread's units (finite_block_amax): a warp takes UNITS x 32
// consecutive units per iteration, their loads issued together; VECTOR: unpadded rows and
// 16-byte aligned x (unit u is x[8u .. 8u + 8), whole uint4 loads).  The trip count is uniform
// over the warp (block_max shuffles need every lane; a block's lanes share a warp).
template <typename T, int UNITS, bool VECTOR>
__device__ __forceinline__ typename AbsKey<T>::type finite_amax_loop(const T* x, long long length, int block_size,
                                                                    long long n_blocks) {
    typedef typename AbsKey<T>::type K;
    const int lanes = block_size / 8;
    const int unit_shift = __ffs(lanes) - 1;
    const long long n_units = n_blocks * lanes;
    const int lane = threadIdx.x & 31;
    const long long stride = (long long)gridDim.x * blockDim.x * UNITS;
    K best = 0;
    for (long long u0 = ((long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31)) * UNITS; u0 < n_units;
         u0 += stride) {
        Unit8<T> in[UNITS];
        int count[UNITS];
#pragma unroll
        for (int r = 0; r < UNITS; ++r) {  // the loads first
            const long long u = u0 + r * 32 + lane;
            count[r] = 0;
            if (u < n_units) {
                if (VECTOR) {
                    count[r] = 8;
                    const uint4* src = reinterpret_cast<const uint4*>(x + u * 8);
#pragma unroll
                    for (int q = 0; q < Unit8<T>::NQ; ++q) in[r].q[q] = src[q];
                } else {
                    const UnitPos p = unit_pos(u, length, block_size, unit_shift, false);
                    count[r] = p.count;
                    load_unit_of<T>(x, p, false, in[r]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < UNITS; ++r) {
            const K key = block_max<K>(unit_key<T>(in[r], count[r]), lanes);
            if (u0 + r * 32 + lane < n_units && !key_bad(key)) best = max(best, key);
        }
    }
    return best;
}

// out[0] = the largest amax over the blocks without NaN / Inf (out zeroed by the wrapper): the
// block amax as in block_quantize (unit keys, block_max across the block's lanes), the finite
// ones kept as a per-thread integer max of keys (which order as the values), AMAX_UNITS units
// per thread and iteration where unpadded and aligned; then a warp max, a CTA max in shared
// memory and one atomicMax on the float64 bits per CTA.
#define LOWBIT_AMAX_UNITS 4
template <typename T>
__device__ void finite_block_amax_impl(const T* x, long long length, int block_size, double* out,
                                       long long n_blocks) {
    typedef typename AbsKey<T>::type K;
    constexpr int UNITS = sizeof(T) == 8 ? 2 : LOWBIT_AMAX_UNITS;  // (float64: 2 units of 64 bytes)
    const bool vector = length % block_size == 0 && (unsigned long long)x % 16 == 0;
    K best = vector ? finite_amax_loop<T, UNITS, true>(x, length, block_size, n_blocks)
                    : finite_amax_loop<T, 1, false>(x, length, block_size, n_blocks);
    __shared__ K warp_best[32];
    for (int o = 16; o; o >>= 1) best = max(best, (K)__shfl_xor_sync(0xffffffffu, best, o));
    if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x < 32) {
        best = threadIdx.x < (blockDim.x >> 5) ? warp_best[threadIdx.x] : (K)0;
        for (int o = 16; o; o >>= 1) best = max(best, (K)__shfl_xor_sync(0xffffffffu, best, o));
        if (threadIdx.x == 0 && best)
            atomicMax(reinterpret_cast<unsigned long long*>(out), (u64)__double_as_longlong(key_value(best)));
    }
}

#define LOWBIT_BLOCK_KERNELS(SUFFIX, T)                                                                         \
    extern "C" __global__ void lowbit_block_quantize_##SUFFIX(                                                  \
        const T* x, long long n, long long length, int block_size, int bits, int man_bits, int emin, int emax,  \
        double max_value, long long code_of_max, long long code_of_inf, long long code_of_nan, int fixed_bits,  \
        int frac_bits, long long qmin, long long qmax, int scale_emax, int s_bits, int s_man_bits, int s_emin,   \
        int s_emax, double s_max_value, long long s_code_of_max, long long s_code_of_inf,                       \
        long long s_code_of_nan, double tensor_scale, int mode, u64 seed, long long offset, int rbits,          \
        u8* packed, u8* scales, long long n_blocks) {                                                           \
        FixedSpec f;                                                                                            \
        f.bits = fixed_bits; f.frac_bits = frac_bits; f.qmin = qmin; f.qmax = qmax;                             \
        block_quantize_impl<T>(x, n, length, block_size,                                                        \
                               mini_spec(bits, man_bits, emin, emax, max_value, code_of_max, code_of_inf,       \
                                         code_of_nan),                                                          \
                               f, scale_emax,                                                                   \
                               mini_spec(s_bits, s_man_bits, s_emin, s_emax, s_max_value, s_code_of_max,        \
                                         s_code_of_inf, s_code_of_nan),                                         \
                               tensor_scale, mode, seed, offset, rbits, packed, scales, n_blocks);              \
    }                                                                                                           \
    extern "C" __global__ void lowbit_block_dequantize_##SUFFIX(                                                \
        const u8* packed, const u8* scales, long long length, int block_size, int bits, const double* table,    \
        int s_bits, int s_man_bits, int s_emin, int s_emax, double s_max_value, long long s_code_of_max,        \
        long long s_code_of_inf, long long s_code_of_nan, double tensor_scale, T* out, long long n_blocks) {     \
        block_dequantize_impl<T>(packed, scales, length, block_size, bits, table,                               \
                                 mini_spec(s_bits, s_man_bits, s_emin, s_emax, s_max_value, s_code_of_max,      \
                                           s_code_of_inf, s_code_of_nan),                                       \
                                 tensor_scale, out, n_blocks);                                                  \
    }                                                                                                           \
    extern "C" __global__ void lowbit_finite_block_amax_##SUFFIX(const T* x, long long length, int block_size,  \
                                                                 double* out, long long n_blocks) {             \
        finite_block_amax_impl<T>(x, length, block_size, out, n_blocks);                                        \
    }

// One MX kernel per rounding mode M (lowbit_block_quantize_mx<M>_<input>): the mode a
// compile-time constant, and no mode's registers counted for another's (in one kernel with a
// switch they were 66 against 40 each).  Built with -DLOWBIT_ELEM_SPEC (codec.cuh's MiniConst)
// the source holds only these kernels, for that one element format, with the same arguments.
#define LOWBIT_MX_KERNEL(SUFFIX, T, M)                                                                          \
    extern "C" __global__ void lowbit_block_quantize_mx##M##_##SUFFIX(                                          \
        const T* x, long long length, int block_size, int bits, int man_bits, int emin, int emax,               \
        double max_value, long long code_of_max, long long code_of_inf, long long code_of_nan, int scale_emax,  \
        u64 seed, long long offset, int rbits, u8* packed, u8* scales, long long n_blocks) {                    \
        const MiniSpec rs = mini_spec(bits, man_bits, emin, emax, max_value, code_of_max, code_of_inf,          \
                                      code_of_nan);                                                             \
        block_quantize_mx_loop<T, M>(x, length, block_size, rs, LOWBIT_ELEM(rs), scale_emax, seed, offset,      \
                                     rbits, packed, scales, n_blocks);                                          \
    }
#define LOWBIT_MX_KERNELS(SUFFIX, T)                                                                            \
    LOWBIT_MX_KERNEL(SUFFIX, T, 0) LOWBIT_MX_KERNEL(SUFFIX, T, 1) LOWBIT_MX_KERNEL(SUFFIX, T, 2)                \
    LOWBIT_MX_KERNEL(SUFFIX, T, 3) LOWBIT_MX_KERNEL(SUFFIX, T, 4) LOWBIT_MX_KERNEL(SUFFIX, T, 5)                \
    LOWBIT_MX_KERNEL(SUFFIX, T, 6)

#ifndef LOWBIT_ELEM_SPEC
LOWBIT_BLOCK_KERNELS(f16, __half)
LOWBIT_BLOCK_KERNELS(bf16, u16)
LOWBIT_BLOCK_KERNELS(f32, float)
LOWBIT_BLOCK_KERNELS(f64, double)
#endif
LOWBIT_MX_KERNELS(f16, __half)
LOWBIT_MX_KERNELS(bf16, u16)
LOWBIT_MX_KERNELS(f32, float)
