// lowbit/cuda/common.cuh -- scalar helpers shared by lowbit's CUDA kernels.
// Line-for-line twins of lowbit/cpu/scalar.py; prepended to every .cu source by
// lowbit/cuda/_module.py (so CuPy's compile cache hashes it too).
//
// CuPy compiles with -ftz=true, which flushes float32 subnormals in float32
// arithmetic and conversions.  lowbit therefore does grid arithmetic in float64
// and converts float32 <-> float64 with the exact helpers below.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

// NVRTC has no <math.h> macros.
#define LOWBIT_INF __longlong_as_double(0x7ff0000000000000ll)
#define LOWBIT_NAN __longlong_as_double(0x7ff8000000000000ll)

#define LOWBIT_NEAREST_EVEN 0
#define LOWBIT_NEAREST_AWAY 1
#define LOWBIT_TOWARD_ZERO 2
#define LOWBIT_UP 3
#define LOWBIT_DOWN 4
#define LOWBIT_ODD 5
#define LOWBIT_STOCHASTIC 6

// float32 -> float64, exact also for subnormals (no ftz).
__device__ __forceinline__ double f32_to_f64(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7f800000u) == 0u) {
        double m = (double)(b & 0x7fffffu) * 1.401298464324817070923730e-45;  // 2^-149
        return (b >> 31) ? -m : m;
    }
    return (double)f;
}

// float64 -> float32 rounded to nearest even, subnormal results kept (no ftz).
__device__ __forceinline__ float f64_to_f32(double d) {
    if (fabs(d) < 1.1754943508222875e-38) {  // 2^-126: result is subnormal or zero
        double m = rint(fabs(d) * 713623846352979940529142984724747568191373312.0);  // 2^149
        u32 b = (u32)m | ((d < 0.0 || (d == 0.0 && signbit(d))) ? 0x80000000u : 0u);
        return __uint_as_float(b);
    }
    return __double2float_rn(d);
}

// float32 -> bfloat16 bits, nearest even (quiet NaN 0x7fc0), as lowbit.arrays.to_dtype.
__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)0x7fc0;
    return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// Reading inputs (T in {__half, u16 = bfloat16 bits, float, double}) as float64.
__device__ __forceinline__ double to_f64(__half v) { return (double)__half2float(v); }
__device__ __forceinline__ double to_f64(u16 v) { return f32_to_f64(__uint_as_float(((u32)v) << 16)); }
__device__ __forceinline__ double to_f64(float v) { return f32_to_f64(v); }
__device__ __forceinline__ double to_f64(double v) { return v; }

// Writing results: float64 -> float32 (nearest even) -> storage type, as the CPU path.
__device__ __forceinline__ void from_f64(double d, __half* p) { *p = __float2half_rn(f64_to_f32(d)); }
__device__ __forceinline__ void from_f64(double d, u16* p) { *p = f32_to_bf16_bits(f64_to_f32(d)); }
__device__ __forceinline__ void from_f64(double d, float* p) { *p = f64_to_f32(d); }
__device__ __forceinline__ void from_f64(double d, double* p) { *p = d; }

// splitmix64 finalizer: a bijective 64-bit mixing function.
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// 64 random bits for (seed, global element index).
__device__ __forceinline__ u64 random_bits(u64 seed, long long index) {
    u64 k = mix64(seed);
    return mix64(k + 0x9E3779B97F4A7C15ull * ((u64)index + 1ull));
}

// Round v (grid units) to an integer-valued double with `mode` (see lowbit/cpu/scalar.py).
// NaN and +-Inf come back unchanged; stochastic works on |v| (sign-magnitude).
__device__ __forceinline__ double round_grid(double v, int mode, u64 seed, long long index, int rbits) {
    if (mode == LOWBIT_NEAREST_EVEN) return rint(v);
    if (mode == LOWBIT_DOWN) return floor(v);
    if (mode == LOWBIT_UP) return ceil(v);
    if (mode == LOWBIT_TOWARD_ZERO) return trunc(v);
    if (mode == LOWBIT_ODD) {
        double f = floor(v);
        if (f == v) return v;
        return fmod(fabs(f), 2.0) == 1.0 ? f : f + 1.0;  // keep the odd neighbour
    }
    double a = fabs(v);
    double i = floor(a);
    double frac = a - i;  // exact
    if (!(frac > 0.0)) return v;  // integer, +-Inf or NaN
    if (mode == LOWBIT_NEAREST_AWAY) return copysign(frac >= 0.5 ? i + 1.0 : i, v);
    // stochastic: P(away from zero) = rint(frac * 2^rbits) / 2^rbits
    u64 threshold = (u64)rint(ldexp(frac, rbits));
    u64 u = random_bits(seed, index) >> (64 - rbits);
    return copysign(u < threshold ? i + 1.0 : i, v);
}

__device__ __forceinline__ double clamp(double v, double lo, double hi) { return fmin(fmax(v, lo), hi); }

// ---- packed units: 8 codes of `bits` bits = `bits` bytes (layout in docs/packing.md) ----
// The `bits` packed bytes of one unit (8 codes), little-endian, with one aligned load when possible.
__device__ __forceinline__ u64 load_unit(const u8* packed, long long unit, int bits, long long nbytes) {
    const u8* p = packed + unit * bits;
    if (nbytes == bits && (unsigned long long)p % bits == 0) {  // aligned: one load
        if (bits == 8) return *reinterpret_cast<const u64*>(p);
        if (bits == 4) return *reinterpret_cast<const u32*>(p);
        if (bits == 2) return *reinterpret_cast<const unsigned short*>(p);
    }
    u64 acc = 0;
    for (long long b = 0; b < nbytes; ++b) acc |= ((u64)p[b]) << (8 * b);
    return acc;
}

__device__ __forceinline__ void store_unit(u8* packed, long long unit, int bits, long long nbytes, u64 acc) {
    u8* p = packed + unit * bits;
    if (nbytes == bits && (unsigned long long)p % bits == 0) {  // aligned: one store
        if (bits == 8) { *reinterpret_cast<u64*>(p) = acc; return; }
        if (bits == 4) { *reinterpret_cast<u32*>(p) = (u32)acc; return; }
        if (bits == 2) { *reinterpret_cast<unsigned short*>(p) = (unsigned short)acc; return; }
    }
    for (long long b = 0; b < nbytes; ++b) p[b] = (u8)((acc >> (8 * b)) & 0xffull);
}

