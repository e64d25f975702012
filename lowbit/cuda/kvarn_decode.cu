// lowbit/cuda/kvarn_decode.cu -- kvarn_decode's kernels; twins of lowbit/cpu/kvarn.py kvarn_decode.
// Both compute (code * A + Z) * (s_col * 2**e) in float32 in that order (s_col * 2**e once per
// column, docs/transforms.md "KVarN decode"), then (rotate) the
// normalized Hadamard butterflies of the CPU's _sylvester, then round once to the output storage
// (f16, bf16 = bfloat16 bits, f32, f64), so the results equal the CPU's bit for bit:
//
//   lowbit_kvarn_decode_<out>       any tile: the tile in shared memory as float32, rotated there
//                                   level by level (one barrier per level).
//   lowbit_kvarn_decode_fast_<k|v><128|any>_<out>  D a power of two in 16..512 (128 compiled as a
//                                   constant): the packed record staged in shared memory (a K tile's
//                                   codes then unpacked token-major as bytes), each thread decodes
//                                   16 channels of a token in registers (butterflies of stride < 16
//                                   in registers, the rest by warp shuffles) and writes them with
//                                   16-byte stores: two barriers per tile (three for K).

#include "kvarn.cuh"
#include "hadamard.cuh"

// Shared memory of one decode block, in floats: the token-major tile and A, Z, s_col.
__host__ __device__ constexpr int decode_smem_floats(int tokens, int dim, int rows, int cols) {
    return tokens * kv_pitch(dim) + 2 * rows + cols;
}


template <typename TOut>
__device__ __forceinline__ void kvarn_decode_impl(const u8* packed, long long n, int tokens, int dim, int rotate,
                                                  int key, int bits, int scale_format, const u16* row_scale,
                                                  const u16* row_offset, const u16* col_scale,
                                                  const signed char* tile_exponent, TOut* out) {
    extern __shared__ __align__(16) float smem[];
    const int rows = key ? dim : tokens, cols = key ? tokens : dim;
    const int pitch = kv_pitch(dim);
    float* tile = smem;  // token-major [tokens][pitch]
    float* a = tile + tokens * pitch;
    float* z = a + rows;
    float* s = z + rows;
    const MiniSpec f16 = mini_spec(LOWBIT_F16_SPEC), e4m3 = mini_spec(LOWBIT_E4M3_SPEC);
    const MiniSpec& sspec = scale_format == 0 ? f16 : e4m3;
    const long long nel = (long long)rows * cols;
    const long long code_bytes = (nel * bits + 7) / 8;
    const long long units = (nel + 7) / 8;
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            a[r] = f64_to_f32(minifloat_decode_one(row_scale[i * rows + r], sspec));
            z[r] = f64_to_f32(minifloat_decode_one(row_offset[i * rows + r], f16));
        }
        const f32 pe = pow2_f32((int)tile_exponent[i]);
        for (int c = threadIdx.x; c < cols; c += blockDim.x)  // s_col 2**e, once per column
            s[c] = (f32(f64_to_f32(minifloat_decode_one(col_scale[i * cols + c], sspec))) * pe).v;
        __syncthreads();
        const u8* src = packed + i * code_bytes;
        // (rows * cols < 2**31, checked by the wrapper: int32 positions; one division per unit)
        for (int u = threadIdx.x; u < (int)units; u += blockDim.x) {
            const int start = u * 8;
            const int count = (int)nel - start < 8 ? (int)nel - start : 8;
            const long long left = code_bytes - (long long)u * bits;
            const u64 acc = load_unit(src, u, bits, left < bits ? left : bits);
            int r = start / cols, c = start - r * cols;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                if (j < count) {
                    const f32 q((float)((acc >> (j * bits)) & ((1ull << bits) - 1ull)));
                    const f32 val = (q * f32(a[r]) + f32(z[r])) * f32(s[c]);
                    tile[key ? c * pitch + r : r * pitch + c] = val.v;
                    if (++c == cols) {
                        c = 0;
                        ++r;
                    }
                }
            }
        }
        if (rotate) rotate_tokens(tile, tokens, dim, pitch, false);
        __syncthreads();
        TOut* dst = out + i * nel;
        // token t, channel d of element idx, stepped without a division per element
        const int step_t = blockDim.x / dim, step_d = blockDim.x - step_t * dim;
        int t = threadIdx.x / dim, d = threadIdx.x - t * dim;
        for (int idx = threadIdx.x; idx < (int)nel; idx += blockDim.x) {
            narrow_out(f32(tile[t * pitch + d]), dst + idx);
            t += step_t;
            d += step_d;
            if (d >= dim) {
                d -= dim;
                ++t;
            }
        }
        __syncthreads();
    }
}

#define LOWBIT_KVARN_DECODE(NAME, TOut)                                                                          \
    extern "C" __global__ void NAME(const u8* packed, long long n, int tokens, int dim, int rotate, int key,       \
                                    int bits, int scale_format, const u16* row_scale, const u16* row_offset,       \
                                    const u16* col_scale, const signed char* tile_exponent, TOut* out) {           \
        kvarn_decode_impl<TOut>(packed, n, tokens, dim, rotate, key, bits, scale_format, row_scale, row_offset,   \
                                col_scale, tile_exponent, out);                                                    \
    }

LOWBIT_KVARN_DECODE(lowbit_kvarn_decode_f16, __half)
LOWBIT_KVARN_DECODE(lowbit_kvarn_decode_bf16, u16)
LOWBIT_KVARN_DECODE(lowbit_kvarn_decode_f32, float)
LOWBIT_KVARN_DECODE(lowbit_kvarn_decode_f64, double)

// ---- the fast decoder ---------------------------------------------------------------------------

#define LOWBIT_DECODE_E 16  // channels of one token per thread
#define LOWBIT_DECODE_PAD 16  // bytes after each token's row of unpacked codes (keeps 16-byte rows)

// Shared word of packed word w: one pad word after every 32, so that the rows of a K tile
// (32 tokens x bits apart) that one warp reads fall into different banks.
__device__ __forceinline__ int skewed(int w) { return w + (w >> 5); }

__host__ __device__ constexpr int fast_words(long long code_bytes) {
    return (int)((code_bytes + 3) / 4);
}

// Shared memory of one fast decode block in bytes: A, Z, s_col (float32), the skewed packed words
// and [tokens][dim + PAD] code bytes (lowbit/cuda/kvarn.py fast_decode_smem_bytes mirrors it).
__host__ __device__ constexpr int fast_codes_offset(int rows, int cols, long long code_bytes) {
    return ((4 * (2 * rows + cols) + 4 * (fast_words(code_bytes) + fast_words(code_bytes) / 32 + 1)) + 15) / 16 * 16;
}

// The `bits`-bit code at bit position `pos` of the little-endian packed stream (docs/packing.md).
__device__ __forceinline__ u32 code_at(const u32* words, int pos, int bits, u32 mask) {
    const int w = pos >> 5, off = pos & 31;
    u32 v = words[skewed(w)] >> off;
    if (off + bits > 32) v |= words[skewed(w + 1)] << (32 - off);
    return v & mask;
}

// 16 values to dst (16-byte aligned) by st.global.v4 (uint4 stores, from a local array or from
// registers, were split into 4-byte stores by NVVM here)
template <typename TOut>
__device__ __forceinline__ void store16(TOut* dst, const f32* v) {
    constexpr int W = LOWBIT_DECODE_E * (int)sizeof(TOut) / 4;
    u32 w[W];
    storage_words<LOWBIT_DECODE_E>(v, dst, w);
#pragma unroll
    for (int k = 0; k < W / 4; ++k)
        asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(reinterpret_cast<uint4*>(dst) + k),
                     "r"(w[4 * k]), "r"(w[4 * k + 1]), "r"(w[4 * k + 2]), "r"(w[4 * k + 3])
                     : "memory");
}

// Four consecutive floats of shared memory (16-byte aligned).
__device__ __forceinline__ float4 smem4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// KEY: K tile (codes [D][T], A and Z per channel, s_col per token) or V tile (codes [T][D], A and Z
// per token, s_col per channel).  DIM: head_dim as a compile-time constant, or 0 (the argument).
template <typename TOut, bool KEY, int DIM>
__device__ __forceinline__ void kvarn_decode_fast_impl(const u8* packed, long long n, int tokens, int dim_arg,
                                                       int rotate, int bits, int scale_format,
                                                       const u16* row_scale, const u16* row_offset,
                                                       const u16* col_scale, const signed char* tile_exponent,
                                                       TOut* out) {
    extern __shared__ __align__(16) float smem[];
    constexpr int E = LOWBIT_DECODE_E;
    const int dim = DIM ? DIM : dim_arg;
    const int rows = KEY ? dim : tokens, cols = KEY ? tokens : dim;
    const int nel = rows * cols;  // < 2**31 (the wrapper checks tiles against shared memory)
    const long long code_bytes = ((long long)nel * bits + 7) / 8;
    const int nwords = fast_words(code_bytes);
    float* a = smem;  // rows, then z (rows), then s (cols): 16-byte aligned when rows % 4 == 0
    float* z = a + rows;
    float* s = z + rows;
    u32* words = reinterpret_cast<u32*>(s + cols);
    u8* codes = reinterpret_cast<u8*>(smem) + fast_codes_offset(rows, cols, code_bytes);
    const int cpitch = dim + LOWBIT_DECODE_PAD;
    const int ldim = __ffs(dim) - 1;  // dim is a power of two
    const u32 mask = (1u << bits) - 1u;
    const MiniSpec f16 = mini_spec(LOWBIT_F16_SPEC), e4m3 = mini_spec(LOWBIT_E4M3_SPEC);
    const MiniSpec& sspec = scale_format == 0 ? f16 : e4m3;
    const f32 scale = rotation_scale(dim);
    // thread -> (token of the warp's group, 16 channels): `lanes` threads per token
    const int lanes = dim / E, per_warp = 32 / lanes;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int sub = lane / lanes, d0 = (lane % lanes) * E;
    // vector reads of a / z (K) or s (V) at d0 need 16-byte alignment: rows % 4 == 0 for K
    // (rows = dim >= 16); s starts at 2 * rows floats, aligned when tokens % 2 == 0
    const bool vec = KEY || (tokens % 2 == 0);
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        // stage 0: scales decoded to float32, the packed record copied to shared memory
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            a[r] = f64_to_f32(minifloat_decode_one(row_scale[i * rows + r], sspec));
            z[r] = f64_to_f32(minifloat_decode_one(row_offset[i * rows + r], f16));
        }
        const f32 pe = pow2_f32((int)tile_exponent[i]);
        for (int c = threadIdx.x; c < cols; c += blockDim.x)  // s_col 2**e, once per column
            s[c] = (f32(f64_to_f32(minifloat_decode_one(col_scale[i * cols + c], sspec))) * pe).v;
        const u8* src = packed + i * code_bytes;
        const bool aligned = ((unsigned long long)src & 3ull) == 0ull;
        for (int w = threadIdx.x; w < nwords; w += blockDim.x) {
            u32 v;
            if (aligned && 4ll * w + 4 <= code_bytes) {
                v = reinterpret_cast<const u32*>(src)[w];
            } else {
                v = 0u;
                for (int b = 0; b < 4 && 4ll * w + b < code_bytes; ++b) v |= ((u32)src[4 * w + b]) << (8 * b);
            }
            words[skewed(w)] = v;
        }
        __syncthreads();
        if (KEY) {
            // stage 1 (K): codes unpacked token-major [t][d]; the warp's lanes take consecutive
            // channels (rows) of one token
            for (int idx = threadIdx.x; idx < nel; idx += blockDim.x) {
                const int d = idx & (dim - 1), t = idx >> ldim;
                codes[t * cpitch + d] = (u8)code_at(words, (d * cols + t) * bits, bits, mask);
            }
            __syncthreads();
        }
        // stage 2: 16 channels of one token per thread (the loop bound is uniform per warp, so
        // every lane takes part in the shuffles; lanes past the last token compute and drop)
        TOut* dst = out + i * (long long)nel;
        for (int t0 = warp * per_warp; t0 < tokens; t0 += warps * per_warp) {
            const int t = t0 + sub;
            const bool live = t < tokens;
            const int tt = live ? t : tokens - 1;
            u32 q[E];
            if (KEY) {
                const uint4 raw = *reinterpret_cast<const uint4*>(codes + tt * cpitch + d0);
                const u32 qw[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
                for (int j = 0; j < E; ++j) q[j] = (qw[j >> 2] >> (8 * (j & 3))) & 0xffu;
            } else {
                const int p0 = ((tt << ldim) + d0) * bits;
#pragma unroll
                for (int j = 0; j < E; ++j) q[j] = code_at(words, p0 + j * bits, bits, mask);
            }
            // per-channel factors of this thread's 16 channels (A, Z for K; s_col for V)
            float c1[E], c2[E];
            if (KEY || vec) {
#pragma unroll
                for (int j = 0; j < E; j += 4) {
                    const float4 x = smem4((KEY ? a : s) + d0 + j);
                    c1[j] = x.x; c1[j + 1] = x.y; c1[j + 2] = x.z; c1[j + 3] = x.w;
                    if (KEY) {
                        const float4 y = smem4(z + d0 + j);
                        c2[j] = y.x; c2[j + 1] = y.y; c2[j + 2] = y.z; c2[j + 3] = y.w;
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < E; ++j) c1[j] = s[d0 + j];
            }
            f32 v[E];
            const f32 tok1(KEY ? s[tt] : a[tt]), tok2(KEY ? 0.0f : z[tt]);
#pragma unroll
            for (int j = 0; j < E; ++j) {
                const f32 code = f32(__uint_as_float(0x4b000000u | q[j])) - f32(8388608.0f);  // exact, no I2F
                v[j] = KEY ? (code * f32(c1[j]) + f32(c2[j])) * tok1 : (code * tok1 + tok2) * f32(c1[j]);
            }
            if (rotate) {
#pragma unroll
                for (int h = 1; h < E; h <<= 1) {
                    const bool last = 2 * h == dim;
#pragma unroll
                    for (int j = 0; j < E; ++j) {
                        if (j & h) continue;
                        const f32 x = v[j], y = v[j + h];
                        v[j] = last ? scale * (x + y) : x + y;
                        v[j + h] = last ? scale * (x - y) : x - y;
                    }
                }
#pragma unroll
                for (int h = E; h < (DIM ? DIM : 512); h <<= 1) {
                    if (h >= dim) break;
                    const bool last = 2 * h == dim;
                    const f32 sign((d0 & h) ? -1.0f : 1.0f);  // the upper lane: other - mine = a - b
#pragma unroll
                    for (int j = 0; j < E; ++j) {
                        const f32 other(__shfl_xor_sync(0xffffffffu, v[j].v, h / E));
                        const f32 r = add_signed(other, sign, v[j]);
                        v[j] = last ? scale * r : r;
                    }
                }
            }
            if (live) store16(dst + ((long long)t << ldim) + d0, v);
        }
        __syncthreads();  // the next tile overwrites shared memory
    }
}

#define LOWBIT_KVARN_DECODE_FAST(NAME, TOut, KEY, DIM)                                                          \
    extern "C" __global__ void NAME(const u8* packed, long long n, int tokens, int dim, int rotate, int key,     \
                                    int bits, int scale_format, const u16* row_scale, const u16* row_offset,     \
                                    const u16* col_scale, const signed char* tile_exponent, TOut* out) {         \
        kvarn_decode_fast_impl<TOut, KEY, DIM>(packed, n, tokens, dim, rotate, bits, scale_format, row_scale,   \
                                               row_offset, col_scale, tile_exponent, out);                      \
    }
#define LOWBIT_KVARN_DECODE_FAST_ALL(OUT, TOut)                                                                 \
    LOWBIT_KVARN_DECODE_FAST(lowbit_kvarn_decode_fast_k128_##OUT, TOut, true, 128)                              \
    LOWBIT_KVARN_DECODE_FAST(lowbit_kvarn_decode_fast_v128_##OUT, TOut, false, 128)                             \
    LOWBIT_KVARN_DECODE_FAST(lowbit_kvarn_decode_fast_kany_##OUT, TOut, true, 0)                                \
    LOWBIT_KVARN_DECODE_FAST(lowbit_kvarn_decode_fast_vany_##OUT, TOut, false, 0)

LOWBIT_KVARN_DECODE_FAST_ALL(f16, __half)
LOWBIT_KVARN_DECODE_FAST_ALL(bf16, u16)
LOWBIT_KVARN_DECODE_FAST_ALL(f32, float)
LOWBIT_KVARN_DECODE_FAST_ALL(f64, double)
