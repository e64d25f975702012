// lowbit/cuda/codec.cu -- the format codec kernels (element and block formats); twins of
// lowbit/cpu/codec.py: minifloat_encode, minifloat_decode, fixed_encode, decode_table,
// block_absmax.  Scalar codec and block indexing in codec.cuh; decode_table and block_absmax
// loops in codec_table.cuh.
//
// Layout shared by every kernel here: `x` is flat and C-contiguous, split into consecutive
// blocks of `block_size` elements; block b is divided by scale[b] (float64) before rounding
// (scale = [1.0] with block_size >= n is a direct conversion, as on the CPU, which then skips
// the division).  Input suffixes: _f16 (__half), _bf16 (bfloat16 bits), _f32, _f64; code
// suffixes: _u8, _u16, _u32 (the format's width).  Grid-stride loops; the encoder and decode_table take
// units of 8 elements with vector accesses where the arrays are aligned.
#include "codec.cuh"
#include "codec_table.cuh"


// Unit8<T> (8 inputs, vector accesses) is in codec.cuh; 8 codes of C in one store:
template <typename C>
union Codes8 {
    C c[8];
    unsigned long long w[sizeof(C)];
    u32 u[2 * sizeof(C)];
};

template <typename T, typename C>
__device__ __forceinline__ bool units_aligned(const T* x, const C* codes) {
    return (unsigned long long)x % 16 == 0 && (unsigned long long)codes % (8 * sizeof(C)) == 0;
}

// One element through the float64 codec.
template <typename T>
__device__ __forceinline__ u64 encode_at_f64(long long i, bool direct, const Blocks& blk, const double* scale,
                                          const MiniSpec& s, int overflow, int mode, u64 seed, long long offset,
                                          int rbits, T raw, int& status) {
    double v = codec_f64(raw);
    if (!direct) v = scaled(v, scale[block_index(i, blk)]);
    int bad, over;
    const u64 c = minifloat_encode_one(v, s, overflow, mode, seed, offset + i, rbits, bad, over);
    status = bad | (over << 1);
    return c;
}

// The float64 loop: every format and input type, one element per thread and iteration.
template <typename T, typename C>
__device__ void minifloat_encode_impl(const T* x, long long n, long long block_size, const double* scale,
                                      MiniSpec s, int overflow, int mode, u64 seed, long long offset,
                                      int rbits, C* codes, u8* status, long long status_size) {
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool want_status = status_size == n;
    const Blocks blk = blocks_of(block_size);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int st;
        codes[i] = (C)encode_at_f64<T>(i, direct, blk, scale, s, overflow, mode, seed, offset, rbits, x[i], st);
        if (want_status) status[i] = (u8)st;
    }
}

// The exponent k of a block scale 2^k with |k| <= 512 (x / scale is then x * 2^-k, exact), or
// NOT_POW2 for any other scale (the float64 call divides).
#define LOWBIT_NOT_POW2 4096
__device__ __forceinline__ int pow2_shift(double scale) {
    const long long b = __double_as_longlong(scale);
    const int k = (int)((b >> 52) & 0x7ff) - 1023;
    return (b > 0 && (b & 0xfffffffffffffll) == 0 && k >= -512 && k <= 512) ? k : LOWBIT_NOT_POW2;
}

// ---- fp8 e4m3 / e5m2 from float16 by the conversion instruction (sm_89 and later) -----------
// cvt.rn.satfinite.{e4m3x2,e5m2x2}.f16x2 rounds two float16 to nearest even, subnormals
// included, and gives finite values beyond the format's range +-max: the codes of
// minifloat_encode_any_bits<nearest even> with overflow = saturate and shift 0 for every finite
// input.  +-Inf and NaN lanes are set by hand (sign | code_of_max, sign | code_of_nan, as the
// CPU writes them) whatever the instruction gives them.  Saturating, these formats (which hold
// NaN) report no status.  HwFp8<S>::kind: 1 for e4m3, 2 for e5m2 (their specs), 0 otherwise.
// (HwFp8, LOWBIT_HW_FP8: codec.cuh.)

// Two float16 (a word, element 0 low) -> two codes (element 0 in the low byte); `fix`: set the
// Inf / NaN lanes (the caller tests for them: any lane with |x|'s bits + 0x0400 >= 0x8000).
template <typename S>
__device__ __forceinline__ u32 fp8x2_of_f16x2(u32 w, const S& s, bool fix) {
    unsigned short d = 0;
#if LOWBIT_HW_FP8
    if (HwFp8<S>::kind == 1) asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;" : "=h"(d) : "r"(w));
    else asm("cvt.rn.satfinite.e5m2x2.f16x2 %0, %1;" : "=h"(d) : "r"(w));
#endif
    u32 c = d;
    if (fix) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const u32 h = (w >> (16 * j)) & 0xffffu;
            if ((h & 0x7fffu) < 0x7c00u) continue;
            const u32 code = ((h >> 15) << 7) | (u32)((h & 0x7fffu) > 0x7c00u ? s.code_of_nan : s.code_of_max);
            c = (c & ~(0xffu << (8 * j))) | (code << (8 * j));
        }
    }
    return c;
}
__device__ __forceinline__ u32 f16x2_special(u32 w) { return ((w & 0x7fff7fffu) + 0x04000400u) & 0x80008000u; }

// The hardware loop: 16 float16 per thread and iteration (two 16-byte loads, one 16-byte store).
template <typename S>
__device__ void minifloat_encode_fp8_hw_loop(const __half* x, long long n, const S& s, u8* codes, u8* status,
                                             long long status_size) {
    const bool want_status = status_size == n;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long vector_end = 0;
    if ((unsigned long long)x % 16 == 0 && (unsigned long long)codes % 16 == 0) {
        vector_end = n / 16 * 16;
        for (long long g = tid; g < n / 16; g += stride) {
            const uint4* src = reinterpret_cast<const uint4*>(x + g * 16);
            uint4 in[2];
            in[0] = src[0];
            in[1] = src[1];
            const u32* w = reinterpret_cast<const u32*>(in);
            u32 special = 0;
#pragma unroll
            for (int k = 0; k < 8; ++k) special |= (w[k] & 0x7fff7fffu) + 0x04000400u;
            const bool fix = (special & 0x80008000u) != 0u;
            u32 out[4];
#pragma unroll
            for (int k = 0; k < 4; ++k)
                out[k] = fp8x2_of_f16x2(w[2 * k], s, fix) | (fp8x2_of_f16x2(w[2 * k + 1], s, fix) << 16);
            *reinterpret_cast<uint4*>(codes + g * 16) = make_uint4(out[0], out[1], out[2], out[3]);
            if (want_status) {
#pragma unroll
                for (int j = 0; j < 16; ++j) status[g * 16 + j] = 0;
            }
        }
    }
    for (long long i = vector_end + tid; i < n; i += stride) {
        const u32 h = (u32)__half_as_ushort(x[i]);
        codes[i] = (u8)fp8x2_of_f16x2(h, s, f16x2_special(h) != 0u);
        if (want_status) status[i] = 0;
    }
}

// Whether every element of a unit widens to a +-0 or normal float32 (minifloat_encode_normal_bits
// takes it): float16 without Inf / NaN (|x|'s bits + 0x0400 carry into bit 15 from 0x7c00 on).
template <typename T> __device__ __forceinline__ bool unit_is_plain(const Unit8<T>&) { return false; }
template <> __device__ __forceinline__ bool unit_is_plain<__half>(const Unit8<__half>& in) {
    const u32* w = reinterpret_cast<const u32*>(in.q);
    u32 special = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) special |= (w[k] & 0x7fff7fffu) + 0x04000400u;
    return (special & 0x80008000u) == 0u;
}

// The 8 codes and status bytes of a unit (elements index .. index + 7); PLAIN: every
// element +-0 or normal as float32 (unit_is_plain).
// A unit's 8 status bytes st (byte j: element i + j) at status + i, if wanted: one 8-byte store
// where status is 8-byte aligned (status_vector), else byte by byte.
__device__ __forceinline__ void store_status8(u8* status, long long i, unsigned long long st, bool want_status,
                                              bool status_vector) {
    if (status_vector) {
        *reinterpret_cast<unsigned long long*>(status + i) = st;
    } else if (want_status) {
#pragma unroll
        for (int j = 0; j < 8; ++j) status[i + j] = (u8)(st >> (8 * j));
    }
}

template <bool PLAIN, int MODE, typename T, typename C, typename S>
__device__ __forceinline__ void encode_unit(const Unit8<T>& in, int shift, const S& s, int overflow,
                                            u64 seed, long long index, int rbits, Codes8<C>& out,
                                            unsigned long long& st) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        int sj;
        const u64 rnd = MODE == LOWBIT_STOCHASTIC ? random_bits(seed, index + j) : 0ull;
        const u32 b = f32_bits(in.t[j]);
        out.c[j] = (C)(PLAIN ? minifloat_encode_normal_bits<MODE>(b, shift, s, overflow, rnd, rbits, sj)
                             : minifloat_encode_any_bits<MODE>(b, shift, s, overflow, rnd, rbits, sj));
        st |= (unsigned long long)sj << (8 * j);
    }
}

// The stochastic loop of a float16 direct conversion into an 8-bit format given at compile time,
// when sr_plan(s, shift, rbits).ok (codec.cuh): 16 elements per thread and iteration as the
// integer loop below; a unit without Inf / NaN (unit_is_plain) by sr_round, its grid from a
// per-CTA table of sr_grid (codec.cuh) (TIE: plan.tie; SAT: overflow = saturate, no status bits),
// any other unit by minifloat_encode_any_bits.  The counter state of element i is z0 + i * 0x9E37..:
// one 64-bit add per element.
template <bool TIE, bool SAT, typename S>
__device__ void minifloat_encode_sr16_loop(const __half* x, long long n, int shift, const S& s, const SrPlan& plan,
                                           int overflow, u64 seed, long long offset, int rbits, u8* codes,
                                           u8* status, long long status_size) {
    constexpr u64 GAMMA = 0x9E3779B97F4A7C15ull;
    const bool want_status = status_size == n;
    const bool status_vector = want_status && (unsigned long long)status % 8 == 0;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const u64 key = mix64(seed);
    const long long vector_end = units_aligned(x, codes) ? n / 16 * 16 : 0;
    __shared__ uint2 grid[32];  // sr_grid of every float16 exponent field (every thread gets here)
    for (int t = threadIdx.x; t < 32; t += blockDim.x) grid[t] = sr_grid((u32)t, plan.c0, plan.p0);
    __syncthreads();
    const char* base = reinterpret_cast<const char*>(grid);
    for (long long g = tid; g < vector_end / 16; g += stride) {
        Unit8<__half> in[2];
        const uint4* src = reinterpret_cast<const uint4*>(x + g * 16);
        in[0].q[0] = src[0];
        in[1].q[0] = src[1];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const long long i = g * 16 + u * 8;
            const u64 z0 = key + GAMMA * ((u64)(offset + i) + 1ull);
            Codes8<u8> out;
            unsigned long long st = 0;
            if (unit_is_plain(in[u])) {
                const u32* w = reinterpret_cast<const u32*>(in[u].q);
                u32 m[8];
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const u32 h = (w[j / 2] >> (16 * (j & 1))) & 0xffffu;
                    const u32 nt = sr_not_top(z0 + GAMMA * (u64)j);
                    if (SAT) {  // saturated by clamping the input (SrPlan::clamp2), two halves at once
                        const u32 a2 = __vminu2(w[j / 2] & 0x7fff7fffu, plan.clamp2);
                        const uint2 g = (j & 1) ? sr_grid_at<true>(base, a2, 0u) : sr_grid_at<false>(base, a2, 0u);
                        m[j] = sr_round<TIE>(((a2 >> (16 * (j & 1))) & 0xffffu) - g.x, g.y, nt, plan);
                    } else {
                        const u32 a = h & 0x7fffu;
                        const uint2 g = sr_grid_at<false>(base, a, 0u);
                        const u32 mag = sr_round<TIE>(a - g.x, g.y, nt, plan);
                        int sj;
                        out.c[j] = (u8)minifloat_code_of_mag<LOWBIT_STOCHASTIC, S>(h >> 15, mag, s, overflow, sj);
                        st |= (unsigned long long)sj << (8 * j);
                    }
                }
                if (SAT) {  // 4 codes a word; the signs (bit 15 of each float16) at bit bits - 1 of theirs
#pragma unroll
                    for (int k = 0; k < 2; ++k) {
                        const u32 mags = __byte_perm(__byte_perm(m[4 * k], m[4 * k + 1], 0x0040),
                                                     __byte_perm(m[4 * k + 2], m[4 * k + 3], 0x0040), 0x5410);
                        const u32 signs = __byte_perm(w[2 * k], w[2 * k + 1], 0x7531) >> (8 - s.bits);
                        out.u[k] = mags | (signs & (0x01010101u << (s.bits - 1)));
                    }
                }
            } else {
                encode_unit<false, LOWBIT_STOCHASTIC>(in[u], shift, s, overflow, seed, offset + i, rbits, out, st);
            }
            *reinterpret_cast<unsigned long long*>(codes + i) = out.w[0];
            store_status8(status, i, st, want_status, status_vector);
        }
    }
    for (long long i = vector_end + tid; i < n; i += stride) {
        int st;
        codes[i] = (u8)minifloat_encode_any_bits<LOWBIT_STOCHASTIC>(f32_bits(x[i]), shift, s, overflow,
                                                                    random_bits(seed, offset + i), rbits, st);
        if (want_status) status[i] = (u8)st;
    }
}

// The integer loop: a direct conversion (one block, block_size >= n, whose scale is a power of
// two -- 1 for a plain cast), float16 / bfloat16 / float32 input, a mini_bits_ok format (the
// wrapper's choice).  UNITS units of 8 elements (32 bytes of input) per thread and iteration,
// their loads issued together.  Any other scale takes the float64 loop, decided once for the
// whole launch, so that its registers do not add to this loop's.
// `s` is the format for the integer encoder (MiniSpec, or a MiniConst of a specialized build),
// `rs` the same format at run time for the float64 loop.
template <typename T, typename C, int MODE, typename S>
__device__ void minifloat_encode_bits_loop(const T* x, long long n, long long block_size, const double* scale,
                                           const MiniSpec& rs, const S& s, int overflow, u64 seed, long long offset,
                                           int rbits, C* codes, u8* status, long long status_size) {
    const int shift = pow2_shift(scale[0]);
    if (shift == LOWBIT_NOT_POW2) {
        minifloat_encode_impl<T, C>(x, n, block_size, scale, rs, overflow, MODE, seed, offset, rbits, codes, status,
                                    status_size);
        return;
    }
    if constexpr (LOWBIT_HW_FP8 && HwFp8<S>::kind != 0 && MODE == LOWBIT_NEAREST_EVEN && SameType<T, __half>::value &&
                  sizeof(C) == 1) {
        if (shift == 0 && overflow == LOWBIT_SATURATE) {
            minifloat_encode_fp8_hw_loop<S>(x, n, s, codes, status, status_size);
            return;
        }
    }
    if constexpr (MODE == LOWBIT_STOCHASTIC && !SameType<S, MiniSpec>::value && SameType<T, __half>::value &&
                  sizeof(C) == 1) {
        const SrPlan plan = sr_plan(s, shift, rbits);
        if (plan.ok) {  // (the four variants: ties or not, saturating or not)
            const bool sat = overflow == LOWBIT_SATURATE;
            if (plan.tie && sat)
                minifloat_encode_sr16_loop<true, true>(x, n, shift, s, plan, overflow, seed, offset, rbits, codes,
                                                       status, status_size);
            else if (plan.tie)
                minifloat_encode_sr16_loop<true, false>(x, n, shift, s, plan, overflow, seed, offset, rbits, codes,
                                                        status, status_size);
            else if (sat)
                minifloat_encode_sr16_loop<false, true>(x, n, shift, s, plan, overflow, seed, offset, rbits, codes,
                                                        status, status_size);
            else
                minifloat_encode_sr16_loop<false, false>(x, n, shift, s, plan, overflow, seed, offset, rbits, codes,
                                                         status, status_size);
            return;
        }
    }
    constexpr int UNITS = sizeof(T) == 4 ? 1 : 2;
    constexpr int W = 8 * UNITS;  // elements per thread and iteration
    const bool want_status = status_size == n;
    const bool status_vector = want_status && (unsigned long long)status % 8 == 0;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long vector_end = 0;  // elements [0, vector_end) go by groups of W
    if (units_aligned(x, codes)) {
        vector_end = n / W * W;
        for (long long g = tid; g < n / W; g += stride) {
            Unit8<T> in[UNITS];
            const uint4* src = reinterpret_cast<const uint4*>(x + g * W);
#pragma unroll
            for (int u = 0; u < UNITS; ++u)
#pragma unroll
                for (int q = 0; q < Unit8<T>::NQ; ++q) in[u].q[q] = src[u * Unit8<T>::NQ + q];
#pragma unroll
            for (int u = 0; u < UNITS; ++u) {
                const long long i = g * W + u * 8;
                Codes8<C> out;
                unsigned long long st = 0;  // the 8 status bytes
                // (a plain-unit path in stochastic mode of the specialized builds only: registers)
                if (MODE == LOWBIT_STOCHASTIC && !SameType<S, MiniSpec>::value && unit_is_plain(in[u]))
                    encode_unit<true, MODE>(in[u], shift, s, overflow, seed, offset + i, rbits, out, st);
                else
                    encode_unit<false, MODE>(in[u], shift, s, overflow, seed, offset + i, rbits, out, st);
                unsigned long long* dst = reinterpret_cast<unsigned long long*>(codes + i);
#pragma unroll
                for (int w = 0; w < (int)sizeof(C); ++w) dst[w] = out.w[w];
                store_status8(status, i, st, want_status, status_vector);
            }
        }
    }
    for (long long i = vector_end + tid; i < n; i += stride) {
        int st;
        const u64 rnd = MODE == LOWBIT_STOCHASTIC ? random_bits(seed, offset + i) : 0ull;
        codes[i] = (C)minifloat_encode_any_bits<MODE>(f32_bits(x[i]), shift, s, overflow, rnd, rbits, st);
        if (want_status) status[i] = (u8)st;
    }
}

template <typename C, typename T>
__device__ void minifloat_decode_impl(const C* codes, long long n, MiniSpec s, T* out) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        from_f64(minifloat_decode_one((u64)codes[i], s), out + i);
}

template <typename T>
__device__ void fixed_encode_impl(const T* x, long long n, long long block_size, const double* scale,
                                  int bits, int frac_bits, long long qmin, long long qmax, int overflow,
                                  int mode, u64 seed, long long offset, int rbits, u8* codes, u8* status,
                                  long long status_size) {
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool want_status = status_size == n;
    const Blocks blk = blocks_of(block_size);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double v = codec_f64(x[i]);
        if (!direct) {
            const double sc = scale[block_index(i, blk)];
            v = (sc != 0.0 && isfinite(sc)) ? v / sc : 0.0;
        }
        int bad, over;
        codes[i] = (u8)fixed_encode_one(v, bits, frac_bits, qmin, qmax, overflow, mode, seed, offset + i,
                                        rbits, bad, over);
        if (want_status) status[i] = (u8)(bad | (over << 1));
    }
}

#define LOWBIT_ENCODE_KERNELS(SUFFIX, T, CSUFFIX, C)                                                 \
    extern "C" __global__ void lowbit_minifloat_encode_##SUFFIX##_##CSUFFIX(                        \
        const T* x, long long n, long long block_size, const double* scale, int bits, int man_bits, \
        int emin, int emax, double max_value, long long code_of_max, long long code_of_inf,         \
        long long code_of_nan, int overflow, int mode, u64 seed, long long offset, int rbits,       \
        C* codes, u8* status, long long status_size) {                                              \
        minifloat_encode_impl<T, C>(x, n, block_size, scale,                                        \
                                    mini_spec(bits, man_bits, emin, emax, max_value, code_of_max,   \
                                              code_of_inf, code_of_nan),                            \
                                    overflow, mode, seed, offset, rbits, codes, status, status_size); \
    }                                                                                               \
    extern "C" __global__ void lowbit_minifloat_decode_##CSUFFIX##_##SUFFIX(                        \
        const C* codes, long long n, int bits, int man_bits, int emin, int emax, double max_value,  \
        long long code_of_max, long long code_of_inf, long long code_of_nan, T* out) {              \
        minifloat_decode_impl<C, T>(codes, n,                                                       \
                                    mini_spec(bits, man_bits, emin, emax, max_value, code_of_max,   \
                                              code_of_inf, code_of_nan),                            \
                                    out);                                                           \
    }

#define LOWBIT_CODEC_KERNELS(SUFFIX, T)                                                             \
    LOWBIT_ENCODE_KERNELS(SUFFIX, T, u8, u8)                                                        \
    LOWBIT_ENCODE_KERNELS(SUFFIX, T, u16, u16)                                                      \
    LOWBIT_ENCODE_KERNELS(SUFFIX, T, u32, u32)                                                      \
    extern "C" __global__ void lowbit_fixed_encode_##SUFFIX(                                        \
        const T* x, long long n, long long block_size, const double* scale, int bits,               \
        int frac_bits, long long qmin, long long qmax, int overflow, int mode, u64 seed,            \
        long long offset, int rbits, u8* codes, u8* status, long long status_size) {                \
        fixed_encode_impl<T>(x, n, block_size, scale, bits, frac_bits, qmin, qmax, overflow, mode,  \
                             seed, offset, rbits, codes, status, status_size);                      \
    }                                                                                               \
    extern "C" __global__ void lowbit_decode_table_##SUFFIX(                                        \
        const u8* packed, long long packed_size, int bits, const double* table,                     \
        long long block_size, const double* scale, T* out, long long n) {                           \
        decode_table_impl<T>(packed, packed_size, bits, table, block_size, scale, out, n);          \
    }                                                                                               \
    extern "C" __global__ void lowbit_block_absmax_##SUFFIX(                                        \
        const T* x, long long n, long long block_size, long long run, long long runs_per_block,     \
        double* out, long long n_blocks) {                                                          \
        block_absmax_impl<T>(x, n, block_size, run, runs_per_block, out, n_blocks);                 \
    }

// One integer kernel per rounding mode M (lowbit_minifloat_encode_bits<M>_<input>_<code>): the
// mode a compile-time constant, and no mode's registers counted for another's.  Built with
// -DLOWBIT_ELEM_SPEC (codec.cuh's MiniConst), the source holds only these kernels, for that one
// format (8-bit codes), its fields constants the compiler folds; the arguments stay the same.
#define LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, M)                                         \
    extern "C" __global__ void lowbit_minifloat_encode_bits##M##_##SUFFIX##_##CSUFFIX(              \
        const T* x, long long n, long long block_size, const double* scale, int bits, int man_bits, \
        int emin, int emax, double max_value, long long code_of_max, long long code_of_inf,         \
        long long code_of_nan, int overflow, u64 seed, long long offset, int rbits, C* codes,       \
        u8* status, long long status_size) {                                                        \
        const MiniSpec rs = mini_spec(bits, man_bits, emin, emax, max_value, code_of_max,           \
                                      code_of_inf, code_of_nan);                                    \
        minifloat_encode_bits_loop<T, C, M>(x, n, block_size, scale, rs, LOWBIT_ELEM(rs), overflow, \
                                            seed, offset, rbits, codes, status, status_size);       \
    }
#define LOWBIT_ENCODE_BITS_MODES(SUFFIX, T, CSUFFIX, C)                                             \
    LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 0) LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 1) \
    LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 2) LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 3) \
    LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 4) LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 5) \
    LOWBIT_ENCODE_BITS_KERNEL(SUFFIX, T, CSUFFIX, C, 6)
#define LOWBIT_ENCODE_BITS_KERNELS(SUFFIX, T)                                                       \
    LOWBIT_ENCODE_BITS_MODES(SUFFIX, T, u8, u8)                                                     \
    LOWBIT_ENCODE_BITS_MODES(SUFFIX, T, u16, u16)

#ifdef LOWBIT_ELEM_SPEC
LOWBIT_ENCODE_BITS_MODES(f16, __half, u8, u8)
LOWBIT_ENCODE_BITS_MODES(bf16, u16, u8, u8)
LOWBIT_ENCODE_BITS_MODES(f32, float, u8, u8)
#else
LOWBIT_CODEC_KERNELS(f16, __half)
LOWBIT_CODEC_KERNELS(bf16, u16)
LOWBIT_CODEC_KERNELS(f32, float)
LOWBIT_CODEC_KERNELS(f64, double)
LOWBIT_ENCODE_BITS_KERNELS(f16, __half)
LOWBIT_ENCODE_BITS_KERNELS(bf16, u16)
LOWBIT_ENCODE_BITS_KERNELS(f32, float)
#endif
