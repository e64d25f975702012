// lowbit/cuda/kvarn.cuh -- helpers shared by the fused KVarN store (kvarn.cu) and its decoders
// (kvarn_decode.cu): the constants of lowbit/cpu/kvarn.py, exact powers of two, the rotation
// scale, the scale codes and the in-shared-memory rotation of a tile's tokens.

// Overridden by the Python wrapper (values from lowbit/cpu/kvarn.py and lowbit.formats):
#ifndef LOWBIT_MEDIAN_LOG
#define LOWBIT_MEDIAN_LOG (-1)
#endif
#ifndef LOWBIT_EXPONENT_LIMIT
#define LOWBIT_EXPONENT_LIMIT 127
#endif
#ifndef LOWBIT_EXPONENT_INVALID
#define LOWBIT_EXPONENT_INVALID (-128)
#endif
#ifndef LOWBIT_RANGE_LOG
#define LOWBIT_RANGE_LOG 48
#endif
#ifndef LOWBIT_F16_SPEC  // lowbit.formats.FLOAT16.spec
#define LOWBIT_F16_SPEC 16, 10, -14, 15, 65504.0, 31743, 31744, 32256
#endif
#ifndef LOWBIT_E4M3_SPEC  // lowbit.formats.FP8_E4M3.spec
#define LOWBIT_E4M3_SPEC 8, 3, -6, 8, 448.0, 126, -1, 127
#endif

#include "codec.cuh"

__host__ __device__ constexpr int kv_pitch(int cols) { return (cols % 2) ? cols : cols + 1; }

// 2**e as float32 for -149 <= e <= 127 (exact): kvarn.py pow2_f32.
__device__ __forceinline__ f32 pow2_f32(int e) { return f32(f64_to_f32(ldexp(1.0, e))); }

// float32(1 / sqrt(D)): kvarn.py rotation_scale (IEEE sqrt and division in float64, rounded once).
__device__ __forceinline__ f32 rotation_scale(int dim) { return f32(f64_to_f32(1.0 / sqrt((double)dim))); }

// a * b + c rounded once (fma.rn, subnormals kept): the decoders' q * A + Z with q * A exact
// (docs/transforms.md "KVarN decode").
__device__ __forceinline__ f32 fma_rn(f32 a, f32 b, f32 c) {
    float r;
    asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a.v), "f"(b.v), "f"(c.v));
    return f32(r);
}

__device__ __forceinline__ u32 scale_code(double v, const MiniSpec& s) {
    int invalid, over;
    return (u32)minifloat_encode_one(v, s, LOWBIT_SATURATE, LOWBIT_NEAREST_EVEN, 0ull, 0ll, 16, invalid, over);
}

// x / d for 0 <= x, with a shift when d is a power of two (`shift` = log2(d), else -1): the
// per-element index splits of a tile without a runtime division in the common case.
__device__ __forceinline__ int pow2_shift(int d) { return (d & (d - 1)) == 0 ? __ffs(d) - 1 : -1; }
__device__ __forceinline__ int div_by(int x, int d, int shift) { return shift >= 0 ? x >> shift : x / d; }

// Element (t, d) of token-major rows [tokens][dim] held with `pitch` floats per row (`col_major`:
// the tile is [dim][tokens], element (t, d) at d * pitch + t).
__device__ __forceinline__ int token_index(int t, int d, int pitch, bool col_major) {
    return col_major ? d * pitch + t : t * pitch + d;
}

// v = scale * H_D v for every token of the tile in shared memory (D a power of two): radix-2
// butterflies of increasing stride, the lower index keeping a + b, then the scale -- the CPU's
// _sylvester and `scale * v`, fused into the last level (the same two roundings).
__device__ __forceinline__ void rotate_tokens(float* buf, int tokens, int dim, int pitch, bool col_major) {
    const f32 scale = rotation_scale(dim);
    const int half = dim >> 1, lhalf = __ffs(dim) - 2;  // dim is a power of two: shifts, no division
    for (int h = 1, lh = 0; h < dim; h <<= 1, ++lh) {
        const bool last = (h << 1) == dim;
        __syncthreads();
        for (int p = threadIdx.x; p < tokens * half; p += blockDim.x) {
            const int t = p >> lhalf, q = p & (half - 1);
            const int j = ((q >> lh) << (lh + 1)) | (q & (h - 1));
            float* lo = buf + token_index(t, j, pitch, col_major);
            float* hi = buf + token_index(t, j + h, pitch, col_major);
            const f32 a(*lo), b(*hi);
            *lo = last ? (scale * (a + b)).v : (a + b).v;
            *hi = last ? (scale * (a - b)).v : (a - b).v;
        }
    }
    if (dim == 1) {  // no butterfly: scale = 1, exact
        return;
    }
    __syncthreads();
}

// N decoded values as the 32-bit words of their output storage (float16 / bfloat16 pairs,
// float32, float64 low / high halves), for the decoders' 16-byte stores: float16 pairs by one
// cvt.rn.f16x2.f32 each (the same rounding as two conversions).
template <int N> __device__ __forceinline__ void storage_words(const f32* v, __half*, u32* w) {
#pragma unroll
    for (int j = 0; j < N; j += 2) {
        const __half2 h = __floats2half2_rn(v[j].v, v[j + 1].v);
        w[j / 2] = *reinterpret_cast<const u32*>(&h);
    }
}
template <int N> __device__ __forceinline__ void storage_words(const f32* v, u16*, u32* w) {
#pragma unroll
    for (int j = 0; j < N; j += 2)
        w[j / 2] = (u32)f32_to_bf16_bits(v[j].v) | ((u32)f32_to_bf16_bits(v[j + 1].v) << 16);
}
template <int N> __device__ __forceinline__ void storage_words(const f32* v, float*, u32* w) {
#pragma unroll
    for (int j = 0; j < N; ++j) w[j] = __float_as_uint(v[j].v);
}
template <int N> __device__ __forceinline__ void storage_words(const f32* v, double*, u32* w) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const double d = f32_to_f64(v[j].v);
        w[2 * j] = (u32)__double2loint(d);
        w[2 * j + 1] = (u32)__double2hiint(d);
    }
}

__device__ __forceinline__ void narrow_out(f32 v, __half* p) { narrow(v, p); }
__device__ __forceinline__ void narrow_out(f32 v, u16* p) { narrow(v, p); }
__device__ __forceinline__ void narrow_out(f32 v, float* p) { narrow(v, p); }
__device__ __forceinline__ void narrow_out(f32 v, double* p) { *p = f32_to_f64(v.v); }
