// lowbit/cuda/codebook.cu -- codebook formats (lowbit.formats.Codebook): encode and group norms;
// twins of lowbit/cpu/codebook.py (codebook_encode, block_norm).  Decoding is codec.cu's
// decode_table, packing packing.cu's pack_codes.
//
// Layout as in codec.cu: `x` is flat and C-contiguous, split into consecutive blocks of
// `block_size` elements, block b divided by scale[b] (float64; codec.cuh's scaled(): a block
// whose scale is 0 or not finite encodes signed zeros).  Every step is the CPU's float64 or
// integer operation on the same values (x widened exactly by to_f64, which keeps float32
// subnormals despite CuPy's -ftz=true; float64 arithmetic is never flushed), so codes and
// norms equal the CPU's bit for bit.  Input suffixes: _f16, _bf16 (bfloat16 bits), _f32, _f64.
#include "codec.cuh"
#include "codebook.cuh"

// codes[i] = code of x[i] / scale[i / block_size]: nearest_even (mode 0) or stochastic (mode 6,
// counter offset + i); the level and threshold tables in shared memory.  Grid-stride loop.
template <typename T>
__device__ void codebook_encode_impl(const T* x, long long n, long long block_size, const double* scale,
                                     const double* levels, int n_levels, const double* thresholds,
                                     int n_thresholds, int mode, u64 seed, long long offset, int rbits,
                                     u8* codes) {
    __shared__ double lv[LOWBIT_MAX_LEVELS];
    __shared__ double th[LOWBIT_MAX_LEVELS];
    for (int t = threadIdx.x; t < n_levels; t += blockDim.x) lv[t] = levels[t];
    for (int t = threadIdx.x; t < n_thresholds; t += blockDim.x) th[t] = thresholds[t];
    __syncthreads();
    const bool stochastic = mode == LOWBIT_STOCHASTIC;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const double v = scaled(to_f64(x[i]), scale[i / block_size]);
        codes[i] = (u8)(stochastic ? stochastic_code(v, lv, n_levels, seed, offset + i, rbits)
                                   : nearest_code(v, th, n_thresholds));
    }
}

// out[b] = ||block b||_2 (float64), NaN if the block holds NaN or +-Inf: amax * sqrt(sum (x /
// amax)^2), the sum in element order (codebook.py block_norm; --fmad=false keeps r * r and the
// addition two roundings).  One thread per block, grid-stride over blocks.
template <typename T>
__device__ void block_norm_impl(const T* x, long long n, long long block_size, double* out, long long n_blocks) {
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks;
         b += (long long)gridDim.x * blockDim.x) {
        const long long start = b * block_size;
        const long long stop = min(start + block_size, n);
        double m = 0.0;
        bool bad = false;
        for (long long i = start; i < stop; ++i) {  // lowbit.cpu.codec.span_absmax
            const double v = fabs(to_f64(x[i]));
            bad |= !(v < LOWBIT_INF);
            m = fmax(m, v);
        }
        if (bad) m = LOWBIT_NAN;
        if (!(m > 0.0)) {  // NaN (a non-finite value) or 0
            out[b] = m;
            continue;
        }
        double acc = 0.0;
        for (long long i = start; i < stop; ++i) {
            const double r = to_f64(x[i]) / m;
            acc += r * r;
        }
        out[b] = m * sqrt(acc);
    }
}

#define LOWBIT_CODEBOOK_KERNELS(SUFFIX, T)                                                              \
    extern "C" __global__ void lowbit_codebook_encode_##SUFFIX(                                         \
        const T* x, long long n, long long block_size, const double* scale, const double* levels,       \
        int n_levels, const double* thresholds, int n_thresholds, int mode, u64 seed, long long offset, \
        int rbits, u8* codes) {                                                                         \
        codebook_encode_impl<T>(x, n, block_size, scale, levels, n_levels, thresholds, n_thresholds,    \
                                mode, seed, offset, rbits, codes);                                      \
    }                                                                                                   \
    extern "C" __global__ void lowbit_block_norm_##SUFFIX(const T* x, long long n, long long block_size, \
                                                          double* out, long long n_blocks) {            \
        block_norm_impl<T>(x, n, block_size, out, n_blocks);                                            \
    }

LOWBIT_CODEBOOK_KERNELS(f16, __half)
LOWBIT_CODEBOOK_KERNELS(bf16, u16)
LOWBIT_CODEBOOK_KERNELS(f32, float)
LOWBIT_CODEBOOK_KERNELS(f64, double)
