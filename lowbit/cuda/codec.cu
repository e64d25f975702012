// lowbit/cuda/codec.cu -- the format codec kernels (element and block formats); twins of
// lowbit/cpu/codec.py: minifloat_encode, minifloat_decode, fixed_encode, decode_table,
// block_absmax.  Scalar codec in codec.cuh.
//
// Layout shared by every kernel here: `x` is flat and C-contiguous, split into consecutive
// blocks of `block_size` elements; block b is divided by scale[b] (float64) before rounding
// (scale = [1.0] with block_size >= n is a direct conversion, as on the CPU, which then skips
// the division).  Input suffixes: _f16 (__half), _bf16 (bfloat16 bits), _f32, _f64; code
// suffixes: _u8, _u16, _u32 (the format's width).  Grid-stride loops, one element per step.
#include "codec.cuh"

// i // block_size without a 64-bit integer division (inv_block = 1.0 / block_size): the
// quotient in float64 is off by at most one for i < 2**50 and is corrected (lowbit.cpu.codec.block_of).
__device__ __forceinline__ long long block_of(long long i, long long block_size, double inv_block) {
    long long b = (long long)((double)i * inv_block);
    if (b * block_size > i) b -= 1;
    else if ((b + 1) * block_size <= i) b += 1;
    return b;
}

template <typename T, typename C>
__device__ void minifloat_encode_impl(const T* x, long long n, long long block_size, const double* scale,
                                      MiniSpec s, int overflow, int mode, u64 seed, long long offset,
                                      int rbits, C* codes, u8* status, long long status_size) {
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool want_status = status_size == n;
    const double inv_block = 1.0 / (double)block_size;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double v = to_f64(x[i]);
        if (!direct) v = scaled(v, scale[block_of(i, block_size, inv_block)]);
        int bad, over;
        codes[i] = (C)minifloat_encode_one(v, s, overflow, mode, seed, offset + i, rbits, bad, over);
        if (want_status) status[i] = (u8)(bad | (over << 1));
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
    const double inv_block = 1.0 / (double)block_size;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double v = to_f64(x[i]);
        if (!direct) {
            const double sc = scale[block_of(i, block_size, inv_block)];
            v = (sc != 0.0 && isfinite(sc)) ? v / sc : 0.0;
        }
        int bad, over;
        codes[i] = (u8)fixed_encode_one(v, bits, frac_bits, qmin, qmax, overflow, mode, seed, offset + i,
                                        rbits, bad, over);
        if (want_status) status[i] = (u8)(bad | (over << 1));
    }
}

// out[i] = table[code_i] * scale[i // block_size] (float64 product, rounded once to out's type);
// one thread per unit of 8 codes, the table (<= 256 entries) in shared memory.
template <typename T>
__device__ void decode_table_impl(const u8* packed, long long packed_size, int bits, const double* table,
                                  long long block_size, const double* scale, T* out, long long n) {
    __shared__ double tab[256];
    for (int t = threadIdx.x; t < (1 << bits); t += blockDim.x) tab[t] = table[t];
    __syncthreads();
    const bool direct = block_size >= n && scale[0] == 1.0;
    const double inv_block = 1.0 / (double)block_size;
    const u64 mask = (1ull << bits) - 1ull;
    const long long units = (n + 7) / 8;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const u64 acc = load_unit(packed, u, bits, min((long long)bits, packed_size - u * bits));
        const long long stop = min(u * 8 + 8, n);
        for (long long i = u * 8; i < stop; ++i) {
            double v = tab[(acc >> ((i - u * 8) * bits)) & mask];
            if (!direct) v = v * scale[block_of(i, block_size, inv_block)];
            from_f64(v, out + i);
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
        for (long long i = start; i < stop; ++i) {
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
