// lowbit/cuda/kvarn_decode128.cu -- kvarn_decode for the presets' tiles: D = 128, 2- or 4-bit codes
// (lowbit/cuda/kvarn.py picks it; kvarn_decode.cu's decoders take every other tile).  Twins of
// lowbit/cpu/kvarn.py kvarn_decode, the same values as kvarn_decode.cu bit for bit: per element
// (code * A + Z) * (s_col * 2**e) in float32 in that order (s_col * 2**e once per column: per
// tile for V, per token for K), then (rotate) the normalized Hadamard
// butterflies of the CPU's _sylvester (strides 1, 2, ..., 64, the lower index keeping a + b, the
// scale fused into the last level), then one rounding to the output storage.
//
//   lowbit_kvarn_decode128_<k|v><2|4>_<f16|bf16|f32|f64>
//
// One warp per tile (grid-stride over tiles), no shared memory, no barrier.  Lane = 4 b + g holds
// 32 channels of one token: register r <-> channel d(r, g) = (r & 7) | g << 3 | (r >> 3) << 5, so
// butterflies of stride 1, 2, 4, 32, 64 are in registers and strides 8, 16 are lane shuffles
// (xor 1, 2), and the 4 lanes of a token store 8 consecutive channels each (16 bytes of float16)
// side by side: every 16-byte store instruction writes whole 32-byte sectors.
//   V tile (codes [T][128], A / Z per token, s_col per channel): the warp decodes tokens
//   t0 + b, t0 = 0, 8, ...; a lane reads its 4 chunks of 8 codes (2 or 4 bytes each, the next
//   token's prefetched while it computes one) and keeps s_col of its 32 channels in registers.
//   K tile (codes [128][T], A / Z per channel, s_col per token; T * bits a multiple of 32): the
//   lane reads word w0 + b of each of its 32 channels' rows (16 or 8 tokens of codes) and decodes
//   those tokens one by one; A and Z of its 32 channels stay in registers for the tile.
// Exact rewrites of the CPU's operations (the same rounded values):
//   code -> float as (2**23 + code) - 2**23 (V: code i of a chunk in place, q 2**p with p = bits i,
//   times A 2**-p, exact products);  (q * A) + Z as one fma.rn: q * A is exact in
//   float32 (q < 16 and A a float16 / e4m3 value: at most 15 significant bits), so rounding
//   q * A + Z once is the CPU's mul-then-add;  the upper lane of a shuffled butterfly computes
//   a - b as fma(-1, b, a) (hadamard.cuh add_signed).
//   Scale codes as float32 by the hardware's exact float16 -> float32 conversion (e4m3: its
//   value as float16, times 256); the values of minifloat_decode_one, and NaN for its NaN codes
//   (any NaN: the first float32 operation makes every NaN the canonical one).

#include "kvarn.cuh"
#include "hadamard.cuh"

#define LOWBIT_D128_WARPS 4  // warps (tiles in flight) per block: lowbit/cuda/kvarn.py DECODE128_WARPS

// A / Z / s_col code as float32: float16 bits, or an e4m3 code (low byte).
__device__ __forceinline__ f32 scale_f32(u32 code, bool e4m3) {
    if (!e4m3) return f32(__half2float(__ushort_as_half((unsigned short)code)));
    const u32 mag = code & 0x7fu;  // e4m3 magnitude m: the float16 with bits m << 7 is m's value / 256
    float v = __half2float(__ushort_as_half((unsigned short)(mag << 7))) * 256.0f;  // exact
    if (mag == 0x7fu) v = __uint_as_float(0x7fc00000u);
    return f32(__uint_as_float(__float_as_uint(v) | ((code & 0x80u) << 24)));
}

// The 8 scale codes at p (16-byte aligned) as float32, into f[0..7].
__device__ __forceinline__ void scale8(const u16* p, bool e4m3, f32* f) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        f[2 * j] = scale_f32(w[j] & 0xffffu, e4m3);
        f[2 * j + 1] = scale_f32(w[j] >> 16, e4m3);
    }
}

// 2**e as float32 (exact for -149 <= e <= 127): kvarn.py pow2_f32.
__device__ __forceinline__ f32 pow2_bits(int e) {
    return f32(__uint_as_float(e >= -126 ? (u32)(e + 127) << 23 : 1u << (e + 149)));
}

// The bits `mask` (below bit 23) of `word` as float32, exactly: (2**23 + (word & mask)) - 2**23,
// the masking and the 2**23 in one lop3 ((word & mask) | 0x4b000000; mask a constant after unrolling).
__device__ __forceinline__ f32 code_f32(u32 word, u32 mask) {
    u32 r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(word), "r"(mask), "n"(0x4b000000));
    return f32(__uint_as_float(r)) - f32(8388608.0f);
}

// v = scale * H_128 v over the warp's token: strides 1, 2, 4 (registers), 8, 16 (lanes xor 1, 2),
// 32, 64 (registers; the scale fused into the last level).
__device__ __forceinline__ void fwht128(f32 (&v)[32], f32 sign8, f32 sign16, f32 scale) {
#pragma unroll
    for (int h = 1; h < 8; h <<= 1) {
#pragma unroll
        for (int r = 0; r < 32; ++r) {
            if (r & h) continue;
            const f32 a = v[r], b = v[r + h];
            v[r] = a + b;
            v[r + h] = a - b;
        }
    }
#pragma unroll
    for (int s = 0; s < 2; ++s) {
        const f32 sign = s ? sign16 : sign8;
#pragma unroll
        for (int r = 0; r < 32; ++r) {
            v[r] = add_signed(shfl_xor(v[r], 1 << s), sign, v[r]);  // lower lane: other + mine; upper: other - mine
        }
    }
#pragma unroll
    for (int r = 0; r < 8; ++r) {
        const f32 a = v[r], b = v[r + 8], c = v[r + 16], d = v[r + 24];
        const f32 ab = a + b, amb = a - b, cd = c + d, cmd = c - d;
        v[r] = scale * (ab + cd);
        v[r + 16] = scale * (ab - cd);
        v[r + 8] = scale * (amb + cmd);
        v[r + 24] = scale * (amb - cmd);
    }
}

// Row `orow` of the output: chunk k (channels 32 k + 8 g .. + 7) from v[8 k .. 8 k + 7], 16-byte stores.
template <typename TOut>
__device__ __forceinline__ void store_row(TOut* orow, int g, const f32 (&v)[32]) {
    constexpr int W = 8 * (int)sizeof(TOut) / 4;  // storage words of a chunk
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        u32 w[W];
        storage_words<8>(v + 8 * k, orow, w);
        uint4* o = reinterpret_cast<uint4*>(orow + 32 * k + 8 * g);
#pragma unroll
        for (int q = 0; q < W / 4; ++q) o[q] = make_uint4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3]);
    }
}

// float64: a pair's two doubles stored as soon as they are converted (storage_words<8> first for the
// whole chunk gives NVVM a different schedule: 3-4 more PTX instructions in the V kernels)
__device__ __forceinline__ void store_row(double* orow, int g, const f32 (&v)[32]) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        uint4* o = reinterpret_cast<uint4*>(orow + 32 * k + 8 * g);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const double a = f32_to_f64(v[8 * k + 2 * j].v), b = f32_to_f64(v[8 * k + 2 * j + 1].v);
            o[j] = make_uint4(__double2loint(a), __double2hiint(a), __double2loint(b), __double2hiint(b));
        }
    }
}

template <typename TOut, bool KEY, int BITS>
__device__ __forceinline__ void kvarn_decode128_impl(const u8* packed, long long n, int tokens, int rotate,
                                                     int scale_format, const u16* row_scale, const u16* row_offset,
                                                     const u16* col_scale, const signed char* tile_exponent,
                                                     TOut* out) {
    static_assert(BITS == 2 || BITS == 4, "2- or 4-bit codes");
    constexpr u32 MASK = (1u << BITS) - 1u;
    const int lane = threadIdx.x & 31, g = lane & 3, b = lane >> 2;
    const bool e4m3 = scale_format != 0;
    const f32 sign8((g & 1) ? -1.0f : 1.0f), sign16((g & 2) ? -1.0f : 1.0f);
    const f32 scale = rotation_scale(128);
    const long long code_bytes = 16ll * tokens * BITS;  // 128 * tokens * BITS / 8
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long i = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); i < n; i += warps) {
        const u8* src = packed + i * code_bytes;
        TOut* dst = out + i * tokens * 128ll;
        const f32 pe = pow2_bits((int)tile_exponent[i]);
        if (!KEY) {
            // V: s_col of the lane's 32 channels; tokens t0 + b
            f32 s[32];
#pragma unroll
            for (int k = 0; k < 4; ++k) scale8(col_scale + i * 128 + 32 * k + 8 * g, e4m3, s + 8 * k);
#pragma unroll
            for (int r = 0; r < 32; ++r) s[r] = s[r] * pe;  // s_col 2**e
            const u16* ra = row_scale + i * tokens;
            const u16* rz = row_offset + i * tokens;
            // the lane's 4 chunks of 8 codes of token tt (chunk k: channels 32 k + 8 g .. + 7)
            auto chunks = [&](int tt, u32 (&c)[4]) {
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    if (BITS == 2) c[k] = reinterpret_cast<const unsigned short*>(src + tt * 32)[4 * k + g];
                    else c[k] = reinterpret_cast<const u32*>(src + tt * 64)[4 * k + g];
                }
            };
            int tt = b < tokens ? b : tokens - 1;
            u32 c[4];
            chunks(tt, c);
            u32 ca = ra[tt], cz = rz[tt];
            for (int t0 = 0; t0 < tokens; t0 += 8) {  // uniform over the warp: every lane shuffles
                const int t = t0 + b;
                const bool live = t < tokens;
                // code i of a chunk read in place at bit p = BITS i (below bit 23; 4-bit codes 5..7
                // from the chunk >> 20) as q 2**p, against A 2**-p (exact: A >= 2**-24)
                constexpr int LOW = BITS == 2 ? 8 : 5;  // codes read in place
                const f32 a = scale_f32(ca, e4m3), z = scale_f32(cz, false);
                f32 ap[LOW];
#pragma unroll
                for (int k = 0; k < LOW; ++k) ap[k] = k ? a * f32(__uint_as_float((u32)(127 - BITS * k) << 23)) : a;
                f32 v[32];
#pragma unroll
                for (int r = 0; r < 32; ++r) {
                    const int ci = r & 7, lo = ci < LOW ? ci : ci - LOW;  // code ci of chunk r >> 3
                    const u32 word = ci < LOW ? c[r >> 3] : c[r >> 3] >> (BITS * LOW);
                    const f32 q = code_f32(word, MASK << (BITS * lo));  // q 2**(BITS lo)
                    v[r] = fma_rn(q, ap[lo], z) * s[r];
                }
                if (t0 + 8 < tokens) {  // prefetch the next token's codes and row scales
                    const int tn = t + 8 < tokens ? t + 8 : tokens - 1;
                    chunks(tn, c);
                    ca = ra[tn];
                    cz = rz[tn];
                }
                if (rotate) fwht128(v, sign8, sign16, scale);
                if (live) store_row(dst + (long long)t * 128, g, v);
            }
        } else {
            // K: A, Z of the lane's 32 channels; words w0 + b of their rows
            f32 a[32], z[32];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                scale8(row_scale + i * 128 + 32 * k + 8 * g, e4m3, a + 8 * k);
                scale8(row_offset + i * 128 + 32 * k + 8 * g, false, z + 8 * k);
            }
            constexpr int PER_WORD = 32 / BITS;  // tokens per word
            const int words = tokens / PER_WORD;  // per channel row (T * BITS % 32 == 0: the wrapper checks)
            const u32* src32 = reinterpret_cast<const u32*>(src);
            const u16* cs = col_scale + i * tokens;
            for (int w0 = 0; w0 < words; w0 += 8) {  // uniform over the warp
                const int w = w0 + b;
                const bool live = w < words;
                const int ww = live ? w : words - 1;
                u32 q[32];
#pragma unroll
                for (int r = 0; r < 32; ++r) q[r] = src32[((r & 7) | (g << 3) | ((r >> 3) << 5)) * words + ww];
#pragma unroll 1
                for (int j = 0; j < PER_WORD; ++j) {
                    const int t = ww * PER_WORD + j;
                    const f32 st = scale_f32(cs[t], e4m3) * pe;  // s_col 2**e
                    f32 v[32];
#pragma unroll
                    for (int r = 0; r < 32; ++r) {
                        const f32 qf = code_f32(q[r] >> (BITS * j), MASK);
                        v[r] = fma_rn(qf, a[r], z[r]) * st;
                    }
                    if (rotate) fwht128(v, sign8, sign16, scale);
                    if (live) store_row(dst + (long long)t * 128, g, v);
                }
            }
        }
    }
}

#define LOWBIT_KVARN_DECODE128(NAME, TOut, KEY, BITS)                                                            \
    extern "C" __global__ void __launch_bounds__(32 * LOWBIT_D128_WARPS)                                          \
    NAME(const u8* packed, long long n, int tokens, int dim, int rotate, int key, int bits, int scale_format,     \
         const u16* row_scale, const u16* row_offset, const u16* col_scale, const signed char* tile_exponent,     \
         TOut* out) {                                                                                              \
        kvarn_decode128_impl<TOut, KEY, BITS>(packed, n, tokens, rotate, scale_format, row_scale, row_offset,     \
                                              col_scale, tile_exponent, out);                                     \
    }
#define LOWBIT_KVARN_DECODE128_ALL(OUT, TOut)                                                                     \
    LOWBIT_KVARN_DECODE128(lowbit_kvarn_decode128_k2_##OUT, TOut, true, 2)                                       \
    LOWBIT_KVARN_DECODE128(lowbit_kvarn_decode128_v2_##OUT, TOut, false, 2)                                      \
    LOWBIT_KVARN_DECODE128(lowbit_kvarn_decode128_k4_##OUT, TOut, true, 4)                                       \
    LOWBIT_KVARN_DECODE128(lowbit_kvarn_decode128_v4_##OUT, TOut, false, 4)

LOWBIT_KVARN_DECODE128_ALL(f16, __half)
LOWBIT_KVARN_DECODE128_ALL(bf16, u16)
LOWBIT_KVARN_DECODE128_ALL(f32, float)
LOWBIT_KVARN_DECODE128_ALL(f64, double)
