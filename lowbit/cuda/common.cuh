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

// Writing results: float64 -> storage type, rounded once (nearest even, +-Inf beyond the
// range), as the CPU path (lowbit.arrays.to_dtype of the float64 value).  Never through
// float32: a float32 rounding landing on a 16-bit midpoint would round a second time.
// __double2half is one cvt.rn.f16.f64; __double2bfloat16 one cvt.rn.bf16.f64 on sm_90 (a
// round-to-odd sequence before); neither is affected by -ftz.  NaN: bfloat16 0x7fc0.
__device__ __forceinline__ void from_f64(double d, __half* p) { *p = __double2half(d); }
__device__ __forceinline__ void from_f64(double d, u16* p) {
    *p = d != d ? (u16)0x7fc0 : __bfloat16_as_ushort(__double2bfloat16(d));
}
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


// ---- IEEE float32 arithmetic that keeps subnormals ------------------------------------------
// CuPy compiles with -ftz=true, so plain float arithmetic, comparisons, min/max and sqrt flush
// subnormals to zero; Numba's float32 does not.  Kernels whose float32 results must equal the
// Numba twin's bit for bit compute on `f32` values: each operator is one correctly rounded PTX
// instruction without .ftz (and, being explicit, never contracted into a fused multiply-add).
// There is no implicit conversion from float, so a stray flushing operation does not compile.
struct f32 {
    float v;
    f32() = default;
    __device__ __forceinline__ explicit f32(float x) : v(x) {}
};

#define LOWBIT_F32_BINARY(OP, PTX)                                                              \
    __device__ __forceinline__ f32 operator OP(f32 a, f32 b) {                                  \
        float r;                                                                                \
        asm(PTX " %0, %1, %2;" : "=f"(r) : "f"(a.v), "f"(b.v));                                 \
        return f32(r);                                                                          \
    }
LOWBIT_F32_BINARY(+, "add.rn.f32")
LOWBIT_F32_BINARY(-, "sub.rn.f32")
LOWBIT_F32_BINARY(*, "mul.rn.f32")
LOWBIT_F32_BINARY(/, "div.rn.f32")
#undef LOWBIT_F32_BINARY

#define LOWBIT_F32_COMPARE(OP, PTX)                                                             \
    __device__ __forceinline__ bool operator OP(f32 a, f32 b) {                                 \
        unsigned r;                                                                             \
        asm("{ .reg .pred p; " PTX " p, %1, %2; selp.u32 %0, 1, 0, p; }"                        \
            : "=r"(r) : "f"(a.v), "f"(b.v));                                                    \
        return r != 0u;                                                                         \
    }
LOWBIT_F32_COMPARE(<, "setp.lt.f32")
LOWBIT_F32_COMPARE(<=, "setp.le.f32")
LOWBIT_F32_COMPARE(>, "setp.gt.f32")
LOWBIT_F32_COMPARE(>=, "setp.ge.f32")
#undef LOWBIT_F32_COMPARE

__device__ __forceinline__ f32 operator-(f32 a) { return f32(__uint_as_float(__float_as_uint(a.v) ^ 0x80000000u)); }
__device__ __forceinline__ bool is_nan(f32 a) { return (__float_as_uint(a.v) & 0x7fffffffu) > 0x7f800000u; }
__device__ __forceinline__ f32 sqrt_rn(f32 a) {
    float r;
    asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(a.v));
    return f32(r);
}
// min / max of two non-NaN values (exact; a NaN operand yields the other operand, as PTX does)
__device__ __forceinline__ f32 minimum(f32 a, f32 b) {
    float r;
    asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(a.v), "f"(b.v));
    return f32(r);
}
__device__ __forceinline__ f32 maximum(f32 a, f32 b) {
    float r;
    asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a.v), "f"(b.v));
    return f32(r);
}
// `lo` if v < lo, `hi` if v > hi, else v (NaN passes through): lowbit.cpu.scalar.clip_f32.
__device__ __forceinline__ f32 clip_f32(f32 v, f32 lo, f32 hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---- exp and log in float64 from IEEE basic operations only (twins of lowbit/cpu/scalar.py) ----
// libm's exp/log differ between CUDA and glibc; these are evaluated identically on both sides.
#define LOWBIT_LN2_HI 0x1.62e42fee00000p-1
#define LOWBIT_LN2_LO 0x1.a39ef35793c76p-33
#define LOWBIT_INV_LN2 0x1.71547652b82fep+0
#define LOWBIT_SQRT_HALF 0x1.6a09e667f3bcdp-1

// e**x: x = k ln2 + r (|r| <= ln2/2), e**r by its Taylor polynomial (Horner), times 2**k.
__device__ __forceinline__ double exp_f64(double x) {
    if (x != x) return x;
    if (x > 709.782712893384) return LOWBIT_INF;
    if (x < -745.1332191019412) return 0.0;
    const double k = rint(x * LOWBIT_INV_LN2);
    const double r = (x - k * LOWBIT_LN2_HI) - k * LOWBIT_LN2_LO;
    double p = 0x1.6124613a86d09p-33;  // 1/13!
    p = p * r + 0x1.1eed8eff8d898p-29;
    p = p * r + 0x1.ae64567f544e4p-26;
    p = p * r + 0x1.27e4fb7789f5cp-22;
    p = p * r + 0x1.71de3a556c734p-19;
    p = p * r + 0x1.a01a01a01a01ap-16;
    p = p * r + 0x1.a01a01a01a01ap-13;
    p = p * r + 0x1.6c16c16c16c17p-10;
    p = p * r + 0x1.1111111111111p-7;
    p = p * r + 0x1.5555555555555p-5;
    p = p * r + 0x1.5555555555555p-3;
    p = p * r + 0x1.0000000000000p-1;
    p = p * r + 1.0;
    p = p * r + 1.0;
    return ldexp(p, (int)k);
}

// ln x: x = m 2**e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1) / (m + 1)) by its series.
__device__ __forceinline__ double log_f64(double x) {
    if (!(x > 0.0)) return x == 0.0 ? -LOWBIT_INF : LOWBIT_NAN;
    if (x == LOWBIT_INF) return x;
    int e;
    double m = frexp(x, &e);
    if (m < LOWBIT_SQRT_HALF) {
        m = m + m;
        e -= 1;
    }
    const double f = (m - 1.0) / (m + 1.0);
    const double s = f * f;
    double p = 0x1.642c8590b2164p-5;  // 1/23
    p = p * s + 0x1.8618618618618p-5;
    p = p * s + 0x1.af286bca1af28p-5;
    p = p * s + 0x1.e1e1e1e1e1e1ep-5;
    p = p * s + 0x1.1111111111111p-4;
    p = p * s + 0x1.3b13b13b13b14p-4;
    p = p * s + 0x1.745d1745d1746p-4;
    p = p * s + 0x1.c71c71c71c71cp-4;
    p = p * s + 0x1.2492492492492p-3;
    p = p * s + 0x1.999999999999ap-3;
    p = p * s + 0x1.5555555555555p-2;
    p = p * s + 1.0;
    double t = f * p;
    t = t + t;
    const double k = (double)e;
    return k * LOWBIT_LN2_HI + (k * LOWBIT_LN2_LO + t);
}

__device__ __forceinline__ f32 exp_f32(f32 x) { return f32(f64_to_f32(exp_f64(f32_to_f64(x.v)))); }
__device__ __forceinline__ f32 log_f32(f32 x) { return f32(f64_to_f32(log_f64(f32_to_f64(x.v)))); }

// ---- storage <-> compute values (float16 / bfloat16 bits / float32 as f32; float64 as double) ----
// Widening is exact; narrowing rounds once to nearest even, as lowbit.arrays.to_dtype does
// (bfloat16 NaN -> 0x7fc0; float32 subnormals become float16 zeros either way).
template <typename T> struct compute_of { typedef f32 type; };
template <> struct compute_of<double> { typedef double type; };
__device__ __forceinline__ f32 widen(__half v) { return f32(__half2float(v)); }
__device__ __forceinline__ f32 widen(u16 v) { return f32(__uint_as_float(((u32)v) << 16)); }
__device__ __forceinline__ f32 widen(float v) { return f32(v); }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ void narrow(f32 c, __half* p) { *p = __float2half_rn(c.v); }
__device__ __forceinline__ void narrow(f32 c, u16* p) { *p = f32_to_bf16_bits(c.v); }
__device__ __forceinline__ void narrow(f32 c, float* p) { *p = c.v; }
__device__ __forceinline__ void narrow(double c, double* p) { *p = c; }
