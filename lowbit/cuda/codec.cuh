// lowbit/cuda/codec.cuh -- the format codec on the device: encode one value into / decode one code
// from any MiniFloat (fp4 e2m1 .. float32, float16, bfloat16) and FixedPoint format.
// Line-for-line twins of minifloat_encode_one / minifloat_decode_one / fixed_encode_one in
// lowbit/cpu/codec.py (one algorithm, so the codes are bit-identical); every kernel that stores a
// value in a format includes this header (lowbit/cuda/codec.cu; the KV scale codes may too).
//
// A format reaches the device as its spec (lowbit.formats.MiniFloat.spec): bits, man_bits, emin,
// emax, max_value, code_of_max, code_of_inf, code_of_nan (-1 where the format has none).
// Every value is rounded once: the input is widened to float64 exactly (to_f64 in common.cuh,
// which keeps float32 subnormals despite CuPy's -ftz=true), scaled to grid units at its own
// binade by an exact power of two, and rounded there by round_grid (common.cuh), the twin of
// lowbit.cpu.scalar.round_grid.  All arithmetic here is float64 or integer (not flushed).

// Overflow policies (lowbit.formats.OVERFLOW_POLICIES order).
#define LOWBIT_SATURATE 0
#define LOWBIT_NONFINITE 1
#define LOWBIT_WRAP 2
#define LOWBIT_ERROR 3

struct MiniSpec {
    int bits, man_bits, emin, emax;
    double max_value;
    long long code_of_max, code_of_inf, code_of_nan;
};

__device__ __forceinline__ MiniSpec mini_spec(int bits, int man_bits, int emin, int emax, double max_value,
                                              long long code_of_max, long long code_of_inf,
                                              long long code_of_nan) {
    MiniSpec s;
    s.bits = bits; s.man_bits = man_bits; s.emin = emin; s.emax = emax; s.max_value = max_value;
    s.code_of_max = code_of_max; s.code_of_inf = code_of_inf; s.code_of_nan = code_of_nan;
    return s;
}

// 2.0**k for -1022 <= k <= 1023, built from its bits (lowbit.cpu.codec.pow2).
__device__ __forceinline__ double pow2(long long k) { return __longlong_as_double((k + 1023ll) << 52); }

// One float64 value -> code in the format `s`; `invalid` (NaN/Inf the format cannot hold) and
// `over` (rounded value beyond the range, overflow = error) are set to 0 or 1.
__device__ __forceinline__ u64 minifloat_encode_one(double x, const MiniSpec& s, int overflow, int mode,
                                                    u64 seed, long long index, int rbits, int& invalid,
                                                    int& over) {
    invalid = 0;
    over = 0;
    const bool neg = __double_as_longlong(x) < 0;  // the sign bit, also of -0.0 and NaN
    const u64 sign = neg ? (1ull << (s.bits - 1)) : 0ull;
    if (x != x) {
        if (s.code_of_nan < 0) {
            invalid = 1;
            return sign;
        }
        return sign | (u64)s.code_of_nan;
    }
    const double a = fabs(x);
    if (a == LOWBIT_INF) {
        if (overflow == LOWBIT_NONFINITE) {
            if (s.code_of_inf >= 0) return sign | (u64)s.code_of_inf;
            return sign | (u64)s.code_of_nan;
        }
        over = overflow == LOWBIT_ERROR;
        return sign | (u64)s.code_of_max;
    }
    if (a == 0.0) return sign;
    // exponent of the grid at x's binade: floor(log2 a), within [emin, emax + 1]
    // (float64 subnormals give -1023, below every emin)
    long long e = (__double_as_longlong(a) >> 52) - 1023ll;
    e = min(max(e, (long long)s.emin), (long long)s.emax + 1ll);
    const double v = x * pow2(s.man_bits - e);  // exact: a power-of-two scaling of a float64
    const double k = fabs(round_grid(v, mode, seed, index, rbits));
    if (k * pow2(e - s.man_bits) <= s.max_value)
        return sign | (u64)(((e - s.emin) << s.man_bits) + (long long)k);
    if (overflow == LOWBIT_NONFINITE) {
        const bool toward_zero = mode == LOWBIT_TOWARD_ZERO || mode == LOWBIT_ODD ||
                                 (mode == LOWBIT_DOWN && !neg) || (mode == LOWBIT_UP && neg);
        if (toward_zero) return sign | (u64)s.code_of_max;
        if (s.code_of_inf >= 0) return sign | (u64)s.code_of_inf;
        return sign | (u64)s.code_of_nan;
    }
    over = overflow == LOWBIT_ERROR;
    return sign | (u64)s.code_of_max;
}

// ---- the float32 path: the same codes as minifloat_encode_one, without float64 -------------
// For a normal nonzero float32 v, every step of minifloat_encode_one is exact in float32 as well:
// the binade e is v's exponent field, w = v * 2^(man_bits - e) and k * 2^(e - man_bits) are
// power-of-two scalings that stay normal (mini_fast_ok bounds the exponents), the rounding
// functions of an integer-plus-fraction with at most 24 significant bits are exact, and
// max_value is a float32.  So the codes are bit-identical; the float64 path remains for zero,
// subnormal (CuPy's -ftz=true would flush them), NaN and Inf operands and other formats.
__device__ __forceinline__ bool mini_fast_ok(const MiniSpec& s) {
    return s.bits <= 16 && s.man_bits - s.emin <= 126 && s.emax + 1 - s.man_bits <= 126 &&
           (double)(float)s.max_value == s.max_value;
}

// 2.0f**k for -126 <= k <= 127, from its bits.
__device__ __forceinline__ float pow2f(int k) { return __uint_as_float((u32)(k + 127) << 23); }

// round_grid in float32 (v normal or an integer-valued float32); MODE a compile-time mode.
template <int MODE>
__device__ __forceinline__ float round_grid_f32(float v, u64 seed, long long index, int rbits) {
    if (MODE == LOWBIT_NEAREST_EVEN) return rintf(v);
    if (MODE == LOWBIT_DOWN) return floorf(v);
    if (MODE == LOWBIT_UP) return ceilf(v);
    if (MODE == LOWBIT_TOWARD_ZERO) return truncf(v);
    if (MODE == LOWBIT_ODD) {
        const float f = floorf(v);
        if (f == v) return v;
        return fmodf(fabsf(f), 2.0f) == 1.0f ? f : f + 1.0f;
    }
    const float a = fabsf(v);
    const float i = floorf(a);
    const float frac = a - i;  // exact
    if (!(frac > 0.0f)) return v;
    if (MODE == LOWBIT_NEAREST_AWAY) return copysignf(frac >= 0.5f ? i + 1.0f : i, v);
    // stochastic: frac * 2^rbits is exact (frac has at most 24 significant bits), as in float64
    const u64 threshold = (u64)rint(ldexp((double)frac, rbits));
    const u64 u = random_bits(seed, index) >> (64 - rbits);
    return copysignf(u < threshold ? i + 1.0f : i, v);
}

// minifloat_encode_one for a float32 v under mini_fast_ok(s): false (nothing written) when v is
// zero, subnormal, NaN or Inf, which the float64 path takes.
template <int MODE>
__device__ __forceinline__ bool minifloat_encode_f32(float v, const MiniSpec& s, int overflow, u64 seed,
                                                     long long index, int rbits, u64& code, int& over) {
    const u32 b = __float_as_uint(v);
    const int field = (int)((b >> 23) & 0xffu);
    if (field == 0 || field == 255) return false;
    const bool neg = (b >> 31) != 0u;
    const u64 sign = neg ? (1ull << (s.bits - 1)) : 0ull;
    const int e = min(max(field - 127, s.emin), s.emax + 1);
    const float k = fabsf(round_grid_f32<MODE>(v * pow2f(s.man_bits - e), seed, index, rbits));
    over = 0;
    if (k * pow2f(e - s.man_bits) <= (float)s.max_value) {
        code = sign | (u64)((((long long)(e - s.emin)) << s.man_bits) + (long long)k);
        return true;
    }
    if (overflow == LOWBIT_NONFINITE) {
        const bool toward_zero = MODE == LOWBIT_TOWARD_ZERO || MODE == LOWBIT_ODD ||
                                 (MODE == LOWBIT_DOWN && !neg) || (MODE == LOWBIT_UP && neg);
        if (toward_zero) code = sign | (u64)s.code_of_max;
        else if (s.code_of_inf >= 0) code = sign | (u64)s.code_of_inf;
        else code = sign | (u64)s.code_of_nan;
        return true;
    }
    over = overflow == LOWBIT_ERROR;
    code = sign | (u64)s.code_of_max;
    return true;
}

// ---- the integer path: minifloat_encode_one's saturating code of v = x * 2^-shift -----------
// For a normal float32 x given by its bits b (exponent field 1..254), any shift, man_bits <= 22
// and bits <= 16: v's binade E = field - 127 - shift is exact, the grid exponent
// e = clip(E, emin, emax + 1), and v in grid units is sig * 2^-sh with sh = 23 - man_bits + e -
// min(E, emax + 1) >= 1: k = sig >> sh = floor(|v|), r = sig mod 2^sh its fraction, rounded by
// MODE as round_grid does (stochastic: rint(frac * 2^rbits) from r exactly; a shift beyond 25
// leaves k = 0 and the deterministic decisions of 25).  Codes are monotone in the value and
// rounding carries into the exponent field, so overflow is mag > code_of_max (saturated).
// Twin of lowbit.cpu.codec.minifloat_encode_bits; no float arithmetic (no -ftz concerns).
template <int MODE>
__device__ __forceinline__ u32 minifloat_encode_bits(u32 b, int shift, const MiniSpec& s, u64 seed,
                                                     long long index, int rbits) {
    const u32 neg = b >> 31;
    const int big_e = (int)((b >> 23) & 0xffu) - 127 - shift;
    const int ec = min(big_e, s.emax + 1);
    const int e = max(ec, s.emin);
    const int sh = 23 - s.man_bits + e - ec;
    const int shc = min(sh, 25);
    const u32 sig = (b & 0x7fffffu) | 0x800000u;
    const u32 k = sig >> shc;
    const u32 r = sig & ((1u << shc) - 1u);
    const u32 half = 1u << (shc - 1);
    bool up;
    if (MODE == LOWBIT_NEAREST_EVEN) up = r > half || (r == half && (k & 1u));
    else if (MODE == LOWBIT_NEAREST_AWAY) up = r >= half;
    else if (MODE == LOWBIT_TOWARD_ZERO) up = false;
    else if (MODE == LOWBIT_UP) up = r != 0u && neg == 0u;
    else if (MODE == LOWBIT_DOWN) up = r != 0u && neg == 1u;
    else if (MODE == LOWBIT_ODD) up = r != 0u && (k & 1u) == 0u;
    else {  // stochastic: threshold = rint(r * 2^(rbits - sh)), nearest even
        const int d = sh - rbits;
        u64 thr;
        if (d <= 0) {
            thr = (u64)r << (-d);
        } else if (d >= 26) {
            thr = 0ull;
        } else {
            thr = r >> d;
            const u32 rem = r & ((1u << d) - 1u);
            const u32 hd = 1u << (d - 1);
            if (rem > hd || (rem == hd && (thr & 1ull))) thr += 1ull;
        }
        const u64 u = random_bits(seed, index) >> (64 - rbits);
        up = u < thr;
    }
    u32 mag = ((u32)(e - s.emin) << s.man_bits) + k + (up ? 1u : 0u);
    mag = min(mag, (u32)s.code_of_max);
    return (neg << (s.bits - 1)) | mag;
}

// The float64 value of `code` in the format `s` (exact; NaN keeps its sign).
__device__ __forceinline__ double minifloat_decode_one(u64 code, const MiniSpec& s) {
    const long long c = (long long)code;
    const long long mag = c & ((1ll << (s.bits - 1)) - 1ll);
    const long long neg = (c >> (s.bits - 1)) & 1ll;
    double v;
    if ((s.code_of_inf >= 0 && mag > s.code_of_inf) || (s.code_of_inf < 0 && mag == s.code_of_nan)) {
        v = LOWBIT_NAN;
    } else if (mag == s.code_of_inf) {
        v = LOWBIT_INF;
    } else {
        const long long field = mag >> s.man_bits;
        const long long m = mag & ((1ll << s.man_bits) - 1ll);
        if (field == 0) v = (double)m * pow2(s.emin - s.man_bits);  // subnormal (or zero)
        else v = (double)(m + (1ll << s.man_bits)) * pow2(field + s.emin - 1 - s.man_bits);
    }
    return neg ? -v : v;
}

// v rounded into the format `s` with a deterministic `mode`, as a float64 value: a result beyond
// +-max after rounding with an unbounded exponent (and +-Inf input) is +-Inf, whatever the mode.
// Twin of lowbit.cpu.codec.minifloat_round (scale storage: e4m3 / float16 / bfloat16 scales).
__device__ __forceinline__ double minifloat_round(double v, const MiniSpec& s, int mode) {
    int invalid, over;
    const u64 code = minifloat_encode_one(v, s, LOWBIT_ERROR, mode, 0ull, 0ll, 16, invalid, over);
    if (over) return copysign(LOWBIT_INF, v);
    return minifloat_decode_one(code, s);
}

// 8 consecutive elements (a "unit") with the widest aligned vector accesses: 16 bytes of
// float16 / bfloat16, 32 of float32, 64 of float64 (whole uint4s).
template <typename T>
union Unit8 {
    static constexpr int NQ = (8 * (int)sizeof(T) + 15) / 16;
    uint4 q[NQ];
    T t[8];
};

// The input as float64, exactly, NaN with its sign: the CPU widens NaN keeping its sign (and the
// encoders keep the sign bit of NaN), while a float conversion on the device may not.
__device__ __forceinline__ double nan_signed(bool neg) {
    return __longlong_as_double(neg ? (long long)0xfff8000000000000ull : 0x7ff8000000000000ll);
}
__device__ __forceinline__ double codec_f64(__half v) {
    const double d = to_f64(v);
    return d == d ? d : nan_signed(__half_as_ushort(v) >> 15);
}
__device__ __forceinline__ double codec_f64(u16 v) {  // bfloat16 bits
    const double d = to_f64(v);
    return d == d ? d : nan_signed(v >> 15);
}
__device__ __forceinline__ double codec_f64(float v) {
    const double d = to_f64(v);
    return d == d ? d : nan_signed(__float_as_uint(v) >> 31);
}
__device__ __forceinline__ double codec_f64(double v) { return v; }

// The input as float32 (exact for float16, bfloat16 and float32; float64 never takes the fast path).
__device__ __forceinline__ float codec_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float codec_f32(u16 v) { return __uint_as_float(((u32)v) << 16); }
__device__ __forceinline__ float codec_f32(float v) { return v; }
__device__ __forceinline__ float codec_f32(double v) { return (float)v; }

// x / scale; a signed zero for a block whose scale is 0 or not finite (lowbit.cpu.codec.scaled).
// A NaN x stays x (as x86's division returns its NaN operand: the sign is kept).  A power-of-two
// scale multiplies by its exact reciprocal instead: the same correctly rounded quotient, without
// a float64 division.
__device__ __forceinline__ double scaled(double x, double scale) {
    if (scale == 0.0 || !isfinite(scale)) return x == x ? copysign(0.0, x) : 0.0;
    if (x != x) return x;
    const long long b = __double_as_longlong(scale);
    const long long field = (b >> 52) & 0x7ff;
    if ((b & 0xfffffffffffffll) == 0 && field > 1 && field < 2045)  // 2^-1021 .. 2^1021: 1/scale exact, normal
        return x * __longlong_as_double((b & (long long)0x8000000000000000ull) | ((2046ll - field) << 52));
    return x / scale;
}

// One float64 value -> two's-complement code in `bits` bits of q = round(x * 2**frac_bits),
// clamped to [qmin, qmax] (or wrapped); twin of lowbit.cpu.codec.fixed_encode_one.
__device__ __forceinline__ u64 fixed_encode_one(double x, int bits, int frac_bits, long long qmin,
                                                long long qmax, int overflow, int mode, u64 seed,
                                                long long index, int rbits, int& invalid, int& over) {
    invalid = 0;
    over = 0;
    const long long mask = (1ll << bits) - 1ll;
    if (x != x) {
        invalid = 1;
        return 0ull;
    }
    if (fabs(x) == LOWBIT_INF) {
        if (overflow == LOWBIT_WRAP) {
            invalid = 1;
            return 0ull;
        }
        const long long q = x > 0 ? qmax : qmin;
        over = overflow == LOWBIT_ERROR;
        return (u64)(q & mask);
    }
    const double r = round_grid(x * pow2(frac_bits), mode, seed, index, rbits);
    if (r > (double)qmax || r < (double)qmin) {
        if (overflow == LOWBIT_WRAP) {
            const double w = r - floor(r * pow2(-bits)) * pow2(bits);  // r mod 2**bits, exact
            return (u64)((long long)w & mask);
        }
        const long long q = r > (double)qmax ? qmax : qmin;
        over = overflow == LOWBIT_ERROR;
        return (u64)(q & mask);
    }
    return (u64)((long long)r & mask);
}
