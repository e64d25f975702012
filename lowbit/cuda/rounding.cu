// lowbit/cuda/rounding.cu -- element-wise rounding of values in grid units (lowbit.round);
// twin of lowbit/cpu/rounding.py.  out[i] = clip(round_grid(x[i], mode, seed, offset + i, rbits),
// lo, hi) in float64, stored in out's type (the input's) rounded once; NaN stays NaN.

template <typename T>
__device__ void round_elementwise_impl(const T* x, long long n, int mode, u64 seed, long long offset,
                                       int rbits, double lo, double hi, T* out) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double r = round_grid(to_f64(x[i]), mode, seed, offset + i, rbits);
        if (r < lo) r = lo;
        else if (r > hi) r = hi;
        from_f64(r, out + i);
    }
}

#define LOWBIT_ROUND_KERNELS(SUFFIX, T)                                                            \
    extern "C" __global__ void lowbit_round_elementwise_##SUFFIX(                                  \
        const T* x, long long n, int mode, u64 seed, long long offset, int rbits, double lo,       \
        double hi, T* out) {                                                                       \
        round_elementwise_impl<T>(x, n, mode, seed, offset, rbits, lo, hi, out);                   \
    }

LOWBIT_ROUND_KERNELS(f16, __half)
LOWBIT_ROUND_KERNELS(bf16, u16)
LOWBIT_ROUND_KERNELS(f32, float)
LOWBIT_ROUND_KERNELS(f64, double)
