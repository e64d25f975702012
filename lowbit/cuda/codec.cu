// lowbit/cuda/codec.cu -- the format codec kernels (element and block formats); twins of
// lowbit/cpu/codec.py: minifloat_encode, minifloat_decode, fixed_encode, decode_table,
// block_absmax.  Scalar codec in codec.cuh.
//
// Layout shared by every kernel here: `x` is flat and C-contiguous, split into consecutive
// blocks of `block_size` elements; block b is divided by scale[b] (float64) before rounding
// (scale = [1.0] with block_size >= n is a direct conversion, as on the CPU, which then skips
// the division).  Input suffixes: _f16 (__half), _bf16 (bfloat16 bits), _f32, _f64; code
// suffixes: _u8, _u16, _u32 (the format's width).  Grid-stride loops; the encoder and decode_table take
// units of 8 elements with vector accesses where the arrays are aligned.
#include "codec.cuh"

// i // block_size without a 64-bit integer division (inv_block = 1.0 / block_size): the
// quotient in float64 is off by at most one for i < 2**50 and is corrected (lowbit.cpu.codec.block_of).
__device__ __forceinline__ long long block_of(long long i, long long block_size, double inv_block) {
    long long b = (long long)((double)i * inv_block);
    if (b * block_size > i) b -= 1;
    else if ((b + 1) * block_size <= i) b += 1;
    return b;
}

// Block of element i: a shift for power-of-two block sizes (block_shift >= 0), else block_of.
struct Blocks {
    long long size;
    double inv;
    int shift;
};
__device__ __forceinline__ Blocks blocks_of(long long block_size) {
    Blocks b;
    b.size = block_size;
    b.inv = 1.0 / (double)block_size;
    b.shift = (block_size & (block_size - 1)) == 0 ? __ffsll(block_size) - 1 : -1;
    return b;
}
__device__ __forceinline__ long long block_index(long long i, const Blocks& b) {
    return b.shift >= 0 ? i >> b.shift : block_of(i, b.size, b.inv);
}

// Unit8<T> (8 inputs, vector accesses) is in codec.cuh; 8 codes of C in one store:
template <typename C>
union Codes8 {
    C c[8];
    unsigned long long w[sizeof(C)];
};

template <typename T, typename C>
__device__ __forceinline__ bool units_aligned(const T* x, const C* codes) {
    return (unsigned long long)x % 16 == 0 && (unsigned long long)codes % (8 * sizeof(C)) == 0;
}

// One element through the float64 codec.  Out of line: inlined 8 times into the float32 loop
// it would hold that loop's registers (and so its occupancy and bandwidth) for the rare zero,
// subnormal and non-finite operands.
template <typename T>
__device__ __noinline__ u64 encode_at_f64(long long i, bool direct, const Blocks& blk, const double* scale,
                                          const MiniSpec& s, int overflow, int mode, u64 seed, long long offset,
                                          int rbits, T raw, int& status) {
    double v = codec_f64(raw);
    if (!direct) v = scaled(v, scale[block_index(i, blk)]);
    int bad, over;
    const u64 c = minifloat_encode_one(v, s, overflow, mode, seed, offset + i, rbits, bad, over);
    status = bad | (over << 1);
    return c;
}

// One element: the float32 path (MODE >= 0; direct, or a power-of-two block scale whose
// reciprocal is a normal float32: the product is then exact, as scaled()'s), else float64.
template <typename T, typename C, int MODE>
__device__ __forceinline__ C encode_at(long long i, bool direct, const Blocks& blk, const double* scale,
                                       const MiniSpec& s, int overflow, int mode, u64 seed, long long offset,
                                       int rbits, T raw, int& status) {
    if (MODE >= 0 && sizeof(T) <= 4) {
        const float xf = codec_f32(raw);
        const u32 xb = __float_as_uint(xf);
        bool ok = true;
        float vf = xf;
        if ((xb << 1) == 0u) {  // +-0 (bits, not a comparison: -ftz would count subnormals as zero)
            status = 0;
            return (C)((xb >> 31) ? (1ull << (s.bits - 1)) : 0ull);
        }
        if (!direct) {
            const long long sb = __double_as_longlong(scale[block_index(i, blk)]);
            const int se = (int)((sb >> 52) & 0x7ff) - 1023;
            ok = sb > 0 && (sb & 0xfffffffffffffll) == 0 && se >= -126 && se <= 126;
            if (ok) vf = xf * pow2f(-se);
        }
        u64 code;
        int over;
        if (ok && minifloat_encode_f32<MODE>(vf, s, overflow, seed, offset + i, rbits, code, over)) {
            status = over << 1;
            return (C)code;
        }
    }
    return (C)encode_at_f64<T>(i, direct, blk, scale, s, overflow, mode, seed, offset, rbits, raw, status);
}

template <typename T, typename C, int MODE>
__device__ void minifloat_encode_loop(const T* x, long long n, long long block_size, const double* scale,
                                      const MiniSpec& s, int overflow, int mode, u64 seed, long long offset,
                                      int rbits, C* codes, u8* status, long long status_size) {
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool want_status = status_size == n;
    const Blocks blk = blocks_of(block_size);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long vector_end = 0;  // elements [0, vector_end) go by units of 8
    if (units_aligned(x, codes)) {
        vector_end = n / 8 * 8;
        for (long long u = tid; u < n / 8; u += stride) {
            Unit8<T> in;
            const uint4* src = reinterpret_cast<const uint4*>(x + u * 8);
#pragma unroll
            for (int q = 0; q < Unit8<T>::NQ; ++q) in.q[q] = src[q];
            Codes8<C> out;
            int st[8];
#pragma unroll
            for (int j = 0; j < 8; ++j)
                out.c[j] = encode_at<T, C, MODE>(u * 8 + j, direct, blk, scale, s, overflow, mode, seed, offset,
                                                 rbits, in.t[j], st[j]);
            unsigned long long* dst = reinterpret_cast<unsigned long long*>(codes + u * 8);
#pragma unroll
            for (int w = 0; w < (int)sizeof(C); ++w) dst[w] = out.w[w];
            if (want_status) {
#pragma unroll
                for (int j = 0; j < 8; ++j) status[u * 8 + j] = (u8)st[j];
            }
        }
    }
    for (long long i = vector_end + tid; i < n; i += stride) {
        int st;
        codes[i] = encode_at<T, C, MODE>(i, direct, blk, scale, s, overflow, mode, seed, offset, rbits, x[i], st);
        if (want_status) status[i] = (u8)st;
    }
}

// The mode becomes a compile-time constant of the float32 path where the format allows it.
template <typename T, typename C>
__device__ void minifloat_encode_impl(const T* x, long long n, long long block_size, const double* scale,
                                      MiniSpec s, int overflow, int mode, u64 seed, long long offset,
                                      int rbits, C* codes, u8* status, long long status_size) {
#define LOWBIT_ENCODE_LOOP(M)                                                                             \
    minifloat_encode_loop<T, C, M>(x, n, block_size, scale, s, overflow, mode, seed, offset, rbits, codes, \
                                   status, status_size)
    if (sizeof(T) <= 4 && mini_fast_ok(s)) {
        switch (mode) {
            case LOWBIT_NEAREST_EVEN: LOWBIT_ENCODE_LOOP(LOWBIT_NEAREST_EVEN); return;
            case LOWBIT_NEAREST_AWAY: LOWBIT_ENCODE_LOOP(LOWBIT_NEAREST_AWAY); return;
            case LOWBIT_TOWARD_ZERO: LOWBIT_ENCODE_LOOP(LOWBIT_TOWARD_ZERO); return;
            case LOWBIT_UP: LOWBIT_ENCODE_LOOP(LOWBIT_UP); return;
            case LOWBIT_DOWN: LOWBIT_ENCODE_LOOP(LOWBIT_DOWN); return;
            case LOWBIT_ODD: LOWBIT_ENCODE_LOOP(LOWBIT_ODD); return;
            case LOWBIT_STOCHASTIC: LOWBIT_ENCODE_LOOP(LOWBIT_STOCHASTIC); return;
            default: break;
        }
    }
    LOWBIT_ENCODE_LOOP(-1);
#undef LOWBIT_ENCODE_LOOP
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

// out[i] = table[code_i] * scale[i // block_size] (float64 product, rounded once to out's type);
// one thread per unit of 8 codes, the table (<= 256 entries) in shared memory, the unit's 8
// outputs in one vector store where aligned.
template <typename T>
__device__ void decode_table_impl(const u8* packed, long long packed_size, int bits, const double* table,
                                  long long block_size, const double* scale, T* out, long long n) {
    __shared__ double tab[256];
    __shared__ T tab_out[256];  // direct decoding: the table already in out's type (the same rounding)
    for (int t = threadIdx.x; t < (1 << bits); t += blockDim.x) {
        tab[t] = table[t];
        from_f64(table[t], &tab_out[t]);
    }
    __syncthreads();
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool aligned = (unsigned long long)out % 16 == 0;
    const Blocks blk = blocks_of(block_size);
    const u64 mask = (1ull << bits) - 1ull;
    const long long units = (n + 7) / 8;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const u64 acc = load_unit(packed, u, bits, min((long long)bits, packed_size - u * bits));
        if (aligned && u * 8 + 8 <= n) {
            Unit8<T> res;
            if (direct) {
#pragma unroll
                for (int j = 0; j < 8; ++j) res.t[j] = tab_out[(acc >> (j * bits)) & mask];
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    from_f64(tab[(acc >> (j * bits)) & mask] * scale[block_index(u * 8 + j, blk)], &res.t[j]);
            }
            uint4* dst = reinterpret_cast<uint4*>(out + u * 8);
#pragma unroll
            for (int q = 0; q < Unit8<T>::NQ; ++q) dst[q] = res.q[q];
            continue;
        }
        const long long stop = min(u * 8 + 8, n);
        for (long long i = u * 8; i < stop; ++i) {
            const u64 c = (acc >> ((i - u * 8) * bits)) & mask;
            if (direct) out[i] = tab_out[c];
            else from_f64(tab[c] * scale[block_index(i, blk)], out + i);
        }
    }
}

// out[b] = max |x| over block b (float64); NaN if the block holds NaN or +-Inf; the last block
// may be short.  A thread takes a run of up to RUN elements of one block.  max is exact, so the
// order of the reduction does not matter: runs_per_block == 1 stores directly; otherwise (out
// zeroed by the wrapper) runs_per_block is a multiple of 32, a warp's runs share one block, and
// lane 0 merges the warp's maximum into out[b] by an integer atomicMax on the float64 bits
// (non-negative doubles order as their bits; NaN 0x7ff8... lies above +Inf 0x7ff0...).
template <typename T>
__device__ void block_absmax_impl(const T* x, long long n, long long block_size, long long run,
                                  long long runs_per_block, double* out, long long n_blocks) {
    const long long total = n_blocks * runs_per_block;
    const long long stride = (long long)gridDim.x * blockDim.x;
    // uniform trip count over the warp (shuffles below need every lane)
    for (long long r0 = (long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31); r0 < total; r0 += stride) {
        const long long r = r0 + (threadIdx.x & 31);
        const bool live = r < total;
        const long long b = live ? r / runs_per_block : 0;
        const long long j = live ? r - b * runs_per_block : 0;
        const long long start = b * block_size + j * run;
        const long long stop = live ? min(min(start + run, (b + 1) * block_size), n) : start;
        double m = 0.0;
        bool bad = false;
        long long i = start;
        if ((unsigned long long)x % 16 == 0 && start % 8 == 0) {  // 8 elements per vector load
            for (; i + 8 <= stop; i += 8) {
                Unit8<T> in;
                const uint4* src = reinterpret_cast<const uint4*>(x + i);
#pragma unroll
                for (int q = 0; q < Unit8<T>::NQ; ++q) in.q[q] = src[q];
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const double v = fabs(to_f64(in.t[j]));
                    bad |= !(v < LOWBIT_INF);
                    m = fmax(m, v);
                }
            }
        }
        for (; i < stop; ++i) {
            const double v = fabs(to_f64(x[i]));
            bad |= !(v < LOWBIT_INF);
            m = fmax(m, v);
        }
        u64 bits = bad ? 0x7ff8000000000000ull : (u64)__double_as_longlong(m);
        if (runs_per_block == 1) {
            if (live) out[b] = __longlong_as_double((long long)bits);
            continue;
        }
        for (int o = 16; o; o >>= 1) bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, o));
        if ((threadIdx.x & 31) == 0 && live) atomicMax(reinterpret_cast<unsigned long long*>(out + b), bits);
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

LOWBIT_CODEC_KERNELS(f16, __half)
LOWBIT_CODEC_KERNELS(bf16, u16)
LOWBIT_CODEC_KERNELS(f32, float)
LOWBIT_CODEC_KERNELS(f64, double)
