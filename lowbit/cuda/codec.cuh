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

// The same fields as compile-time constants (a format specialized at compile time: the
// wrapper passes its spec as -DLOWBIT_ELEM_SPEC=bits,man_bits,emin,emax,code_of_max,code_of_inf,
// code_of_nan, lowbit.cuda.codec.elem_defines).  The integer encoders below take either type.
template <int BITS, int MAN_BITS, int EMIN, int EMAX, long long CODE_OF_MAX, long long CODE_OF_INF,
          long long CODE_OF_NAN>
struct MiniConst {
    static constexpr int bits = BITS, man_bits = MAN_BITS, emin = EMIN, emax = EMAX;
    static constexpr long long code_of_max = CODE_OF_MAX, code_of_inf = CODE_OF_INF, code_of_nan = CODE_OF_NAN;
};

// The build's format: ElemSpec (a MiniConst) when compiled with -DLOWBIT_ELEM_SPEC, and
// LOWBIT_ELEM(rs) the spec the encoders are given: those constants, or the run-time spec `rs`.
#ifdef LOWBIT_ELEM_SPEC
typedef MiniConst<LOWBIT_ELEM_SPEC> ElemSpec;
#define LOWBIT_ELEM(rs) ElemSpec()
#else
#define LOWBIT_ELEM(rs) (rs)
#endif

__device__ __forceinline__ MiniSpec mini_spec(int bits, int man_bits, int emin, int emax, double max_value,
                                              long long code_of_max, long long code_of_inf,
                                              long long code_of_nan) {
    MiniSpec s;
    s.bits = bits; s.man_bits = man_bits; s.emin = emin; s.emax = emax; s.max_value = max_value;
    s.code_of_max = code_of_max; s.code_of_inf = code_of_inf; s.code_of_nan = code_of_nan;
    return s;
}

template <typename A, typename B> struct SameType { static constexpr bool value = false; };
template <typename A> struct SameType<A, A> { static constexpr bool value = true; };

// The formats the GPU converts to by instruction (sm_89+: cvt.rn.satfinite.{e4m3x2,e5m2x2}):
// HwFp8<S>::kind is 1 for fp8 e4m3, 2 for e5m2 (their specs), 0 for every other format.
template <typename S> struct HwFp8 { static constexpr int kind = 0; };
template <> struct HwFp8<MiniConst<8, 3, -6, 8, 126, -1, 127>> { static constexpr int kind = 1; };
template <> struct HwFp8<MiniConst<8, 2, -14, 15, 123, 124, 126>> { static constexpr int kind = 2; };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define LOWBIT_HW_FP8 1
#else
#define LOWBIT_HW_FP8 0
#endif

// Two float32 (normal or zero) -> their codes, lo in the low byte: nearest even, subnormals of
// the format included, beyond its range +-max (satfinite); kind as HwFp8.
template <int KIND>
__device__ __forceinline__ u32 fp8x2_of_f32(float lo, float hi) {
    unsigned short d = 0;
#if LOWBIT_HW_FP8
    if (KIND == 1) asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(d) : "f"(hi), "f"(lo));
    else asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(d) : "f"(hi), "f"(lo));
#endif
    return d;
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

// ---- the integer path: minifloat_encode_one in integer operations ---------------------------
// Formats it takes: bits <= 16 and man_bits <= 22 (lowbit.cuda.codec.integer_path), every
// MiniFloat lowbit stores elements in below float32.  A float32 operand x (its bits b) is divided
// by 2^shift exactly.

// The magnitude code of |v| = sig * 2^(big_e - 23), sig in [2^23, 2^24) (or sig = 0 with big_e
// below every binade: code 0), before saturation (it may exceed code_of_max).  v's binade is
// big_e, the grid exponent e = clip(big_e, emin, emax + 1), and v in grid units is sig * 2^-sh
// with sh = 23 - man_bits + e - min(big_e, emax + 1) >= 1: k = sig >> sh = floor(|v|), r = sig
// mod 2^sh its fraction, rounded by MODE as round_grid does (stochastic: rint(frac * 2^rbits)
// from r exactly, by the nearest-even right shift (r + 2^(d-1) - 1 + bit d of r) >> d, which is 0
// for d >= 26 since r < 2^25; `rnd` = random_bits(seed, index), read in that mode only; a shift
// beyond 25 leaves k = 0 and the deterministic decisions of 25).  Rounding carries into the
// exponent field and codes are monotone in the value, so the value overflows exactly when mag >
// code_of_max.  Twin of the body of lowbit.cpu.codec.minifloat_encode_bits (which saturates it
// for normal inputs).
template <int MODE, typename S>
__device__ __forceinline__ u32 minifloat_mag_bits(u32 neg, int big_e, u32 sig, const S& s, u64 rnd, int rbits) {
    const int ec = min(big_e, s.emax + 1);
    const int e = max(ec, s.emin);
    const int sh = 23 - s.man_bits + e - ec;
    const int shc = min(sh, 25);
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
        const int dr = min(max(d, 1), 26);
        const u64 thr = d <= 0 ? (u64)r << max(-d, 0)
                               : (u64)((r + (1u << (dr - 1)) - 1u + ((r >> dr) & 1u)) >> dr);
        up = (u64)((u32)(rnd >> 32) >> (32 - rbits)) < thr;  // rnd >> (64 - rbits), rbits <= 32
    }
    return ((u32)(e - s.emin) << s.man_bits) + k + (up ? 1u : 0u);
}

// The code (sign included) of a magnitude code `mag` from minifloat_mag_bits, with the
// overflow policy and its status (bit 1 over) when mag > code_of_max.
template <int MODE, typename S>
__device__ __forceinline__ u32 minifloat_code_of_mag(u32 neg, u32 mag, const S& s, int overflow, int& status) {
    const u32 sign = neg << (s.bits - 1);
    status = 0;
    if (mag <= (u32)s.code_of_max) return sign | mag;
    if (overflow == LOWBIT_NONFINITE) {
        const bool toward_zero = MODE == LOWBIT_TOWARD_ZERO || MODE == LOWBIT_ODD ||
                                 (MODE == LOWBIT_DOWN && !neg) || (MODE == LOWBIT_UP && neg);
        if (toward_zero) return sign | (u32)s.code_of_max;
        return sign | (u32)(s.code_of_inf >= 0 ? s.code_of_inf : s.code_of_nan);
    }
    status = (overflow == LOWBIT_ERROR) << 1;
    return sign | (u32)s.code_of_max;
}

// minifloat_encode_any_bits for a float32 b that is +-0 or normal (no NaN, Inf or subnormal),
// without a branch on its class: a zero goes through minifloat_mag_bits as sig = 0 below every
// binade (code 0 in every mode).  Every float16 input widens to such a float32.
template <int MODE, typename S>
__device__ __forceinline__ u32 minifloat_encode_normal_bits(u32 b, int shift, const S& s, int overflow, u64 rnd,
                                                            int rbits, int& status) {
    const u32 neg = b >> 31;
    const u32 a = b & 0x7fffffffu;
    const int big_e = a != 0u ? (int)(a >> 23) - 127 - shift : -1024;
    const u32 sig = a != 0u ? (a & 0x7fffffu) | 0x800000u : 0u;
    return minifloat_code_of_mag<MODE, S>(neg, minifloat_mag_bits<MODE, S>(neg, big_e, sig, s, rnd, rbits), s, overflow,
                                          status);
}

// minifloat_encode_one(x * 2^-shift, s, overflow, MODE, ...) for every float32 x given by its
// bits b -- zero, subnormal, normal, Inf, NaN -- with |shift| <= 512 (the product is then an
// exact float64, as the float64 path computes it): the same code and status (bit 0 invalid, bit
// 1 over) in integer operations only; `rnd` = random_bits(seed, index) (stochastic mode).  A
// subnormal x is normalized first: its binade is that of its leading significand bit, below
// every emin of a mini_bits_ok format but float32's own.
template <int MODE, typename S>
__device__ __forceinline__ u32 minifloat_encode_any_bits(u32 b, int shift, const S& s, int overflow, u64 rnd,
                                                         int rbits, int& status) {
    const u32 neg = b >> 31;
    const u32 sign = neg << (s.bits - 1);
    const u32 field = (b >> 23) & 0xffu;
    const u32 man = b & 0x7fffffu;
    status = 0;
    if (field == 255u) {
        if (man != 0u) {  // NaN
            if (s.code_of_nan < 0) {
                status = 1;
                return sign;
            }
            return sign | (u32)s.code_of_nan;
        }
        if (overflow == LOWBIT_NONFINITE) return sign | (u32)(s.code_of_inf >= 0 ? s.code_of_inf : s.code_of_nan);
        status = (overflow == LOWBIT_ERROR) << 1;
        return sign | (u32)s.code_of_max;
    }
    if (field == 0u && man != 0u) {  // subnormal
        const int lead = 31 - __clz(man);  // 0..22: x = 1.f * 2^(lead - 149)
        const u32 mag = minifloat_mag_bits<MODE, S>(neg, lead - 149 - shift, man << (23 - lead), s, rnd, rbits);
        return minifloat_code_of_mag<MODE, S>(neg, mag, s, overflow, status);
    }
    return minifloat_encode_normal_bits<MODE, S>(b, shift, s, overflow, rnd, rbits, status);
}

// ---- stochastic rounding of float16 by one 64-bit multiply-add (the fast path) ------------
// minifloat_encode_normal_bits<stochastic> for float16 inputs (no Inf / NaN) and 8-bit formats
// given at compile time, rewritten around one 64-bit multiply-add per value (no class branches,
// no variable-width threshold): the same codes, by the derivation below (docs/rounding.md, "The
// GPU's fast path").
//
// Input a = |x|'s 15 bits, F = a >> 10 its exponent field; the block scale is 2^shift.  With
// c0 = 14 + shift + emin (>= 0), mm = clip(F - 1, 0, c0) and xx = a - (mm << 10), |x| / 2^shift
// in grid units is v = xx / 2^s with s = cs - mm, cs = 10 - man_bits + c0 (s = 10 - man_bits
// where the target is normal, mm = c0; F - 1 < c0: a subnormal target, xx = the significand with
// its implicit bit, F = 0 and 1 sharing the spacing 2^-24).  cs <= 32 (the caller checks), so the
// 64-bit xx * 2^(32 - s) = (k, A) holds k = floor(v) -- the magnitude code, the exponent field
// included (k counts grid steps from code 0, ((e - emin) << man_bits) + floor(|v|) of round_grid's
// grid) -- and the exact fraction A = frac(v) * 2^32.  With u = the top r = rbits bits of the
// random word t, Q = 2^(32 - r), W = u Q + Q / 2 and b = u & 1, the rule u < rint(frac * 2^r)
// (ties to even) is A + b > W, i.e. A + (~W + b) >= 2^32: k + up = hi(xx * 2^(32 - s) + L) with
// L = ~W + b = (~t & ~(Q - 1)) | (Q / 2 - (bit 32 - r of ~t)).  When every element's fraction is a
// multiple of Q (cs <= min(r, 31): no ties) it is u Q < A <=> t < A, and L = ~t.  Only bits 1..31 of
// t = hi32(random_bits) enter, and those of hi32(mix64's z * C2) are the same (mix64's last step
// z ^ (z >> 31) changes bit 0 of the top word only), and ~hi32(y) = hi32(~y), ~(z * C2) = z * (-C2)
// - 1: sr_not_top(z) below returns ~t from three multiply-adds.
struct SrPlan {
    bool ok, tie;       // the fast path applies; L needs the tie term
    int c0;             // 14 + shift + emin
    u32 p0;             // 2^(32 - cs)
    u32 mask_hi, half;  // ~(Q - 1), Q / 2
    u32 q;              // Q
    u32 clamp2;         // max_value * 2^shift as float16 bits (0x7bff if beyond), in both halves
};

// The plan for format S (man_bits M, emin), a block scale 2^shift and rbits: ok when c0 >= 0,
// cs <= 32 and the bits are covered (r <= 31, or no ties: cs <= 31).
template <typename S>
__device__ __forceinline__ SrPlan sr_plan(const S& s, int shift, int rbits) {
    SrPlan p;
    p.c0 = 14 + shift + s.emin;
    const int cs = 10 - s.man_bits + p.c0;
    p.tie = cs > min(rbits, 31);
    p.ok = p.c0 >= 0 && cs <= 32 && !(p.tie && rbits > 31);
    p.p0 = p.ok ? 1u << (32 - cs) : 0u;
    const int bs = 32 - min(rbits, 31);
    p.q = 1u << bs;
    p.mask_hi = ~(p.q - 1u);
    p.half = p.q >> 1;
    // saturation as a clamp of the input: |x| > max * 2^shift (an exact float16, c0 >= 0) has code
    // code_of_max with fraction 0, and every |x| <= it rounds to at most code_of_max
    const int top = (int)(s.code_of_max >> s.man_bits) + s.emin + 14 + shift;  // its float16 field
    const u32 t = top >= 31 ? 0x7bffu
                            : ((u32)top << 10) | (((u32)s.code_of_max & ((1u << s.man_bits) - 1u)) << (10 - s.man_bits));
    p.clamp2 = t * 0x10001u;
    return p;
}

// ~hi32(random_bits) in bits 1..31 for the counter state z = mix64(seed) + 0x9E37.. * (index + 1).
__device__ __forceinline__ u32 sr_not_top(u64 z) {
    // z ^ (z >> n) with the high word's shift as a multiply-high, umulhi(x, 2^(32 - n)) = x >> n
    // (the multiply-add pipe, not the integer one that the rest of the encoder fills)
    z ^= ((u64)__umulhi((u32)(z >> 32), 4u) << 32) | (u32)(z >> 30);
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= ((u64)__umulhi((u32)(z >> 32), 32u) << 32) | (u32)(z >> 27);
    return (u32)((z * 0x6B2FB644ECCEEE15ull + 0xFFFFFFFFFFFFFFFFull) >> 32);  // -0x94D049BB133111EB
}

// The magnitude code k + up (before saturation; <= code_of_max for a <= the low half of
// plan.clamp2) of a float16 magnitude a (15 bits, exponent field F) with ~t = nt is
// sr_round(a - (mm << 10), p0 << mm, nt) with mm = sr_mm(F, c0) = clip(F - 1, 0, c0); the kernels
// read (mm << 10, p0 << mm) from a per-CTA table of sr_grid(F) (one row per c0).
__device__ __forceinline__ int sr_mm(u32 field, int c0) { return min(max((int)field - 1, 0), c0); }

// k + up = hi32(xx * p2 + L) (L: the tie term, or ~t).
template <bool TIE>
__device__ __forceinline__ u32 sr_round(u32 xx, u32 p2, u32 nt, const SrPlan& p) {
    u32 l = nt;
    if (TIE) l = (nt & p.mask_hi) | ((nt & p.q) ? p.half - 1u : p.half);
    return (u32)(((u64)xx * (u64)p2 + l) >> 32);
}

// The grid (mm << 10, p0 << mm) of exponent field F, as the kernels' per-CTA tables hold it, and
// the entry of the float16 magnitude in the low (HI false) or high half of a2 in such a table of
// 32 entries at `base` (bytes; `key` xored into the byte offset F * 8).
__device__ __forceinline__ uint2 sr_grid(u32 field, int c0, u32 p0) {
    const int mm = sr_mm(field, c0);
    return make_uint2((u32)mm << 10, p0 << mm);
}
template <bool HI>
__device__ __forceinline__ uint2 sr_grid_at(const char* base, u32 a2, u32 key) {
    return *reinterpret_cast<const uint2*>(base + (((a2 >> (HI ? 23 : 7)) & 0xf8u) ^ key));
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

// 8 decoded outputs as their storage bits in 32-bit words (element 0 lowest), built in registers
// by constant indices only (a union indexed at run time lives in local memory) and written by
// store_words8: whole uint4 stores where `vector`, else the first `count` elements one by one.
template <typename T> struct Raw { typedef u16 type; };  // __half, u16 = bfloat16 bits
template <> struct Raw<float> { typedef u32 type; };
template <> struct Raw<double> { typedef u64 type; };
__device__ __forceinline__ u64 raw_bits(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ u64 raw_bits(u16 v) { return v; }
__device__ __forceinline__ u64 raw_bits(float v) { return __float_as_uint(v); }
__device__ __forceinline__ u64 raw_bits(double v) { return (u64)__double_as_longlong(v); }
template <typename T>
struct Words8 {
    static constexpr int N = 2 * (int)sizeof(T);  // 32-bit words of 8 outputs
    u32 w[N];
};
// element j (a constant after unrolling) = the storage bits b
template <typename T>
__device__ __forceinline__ void put_bits(Words8<T>& o, int j, u64 b) {
    if (sizeof(T) == 2) {
        if (j & 1) o.w[j >> 1] |= (u32)b << 16;
        else o.w[j >> 1] = (u32)b;
    } else if (sizeof(T) == 4) {
        o.w[j] = (u32)b;
    } else {
        o.w[2 * j] = (u32)b;
        o.w[2 * j + 1] = (u32)(b >> 32);
    }
}
template <typename T>
__device__ __forceinline__ u64 get_bits(const Words8<T>& o, int j) {
    if (sizeof(T) == 2) return (o.w[j >> 1] >> (16 * (j & 1))) & 0xffffu;
    if (sizeof(T) == 4) return o.w[j];
    return (u64)o.w[2 * j] | ((u64)o.w[2 * j + 1] << 32);
}
template <typename T>
__device__ __forceinline__ void store_words8(T* out, long long first, int count, bool vector, const Words8<T>& o) {
    if (vector) {
        uint4* dst = reinterpret_cast<uint4*>(out + first);
#pragma unroll
        for (int q = 0; q < Words8<T>::N / 4; ++q)
            dst[q] = make_uint4(o.w[4 * q], o.w[4 * q + 1], o.w[4 * q + 2], o.w[4 * q + 3]);
        return;
    }
    typedef typename Raw<T>::type R;
#pragma unroll
    for (int j = 0; j < 8; ++j)
        if (j < count) reinterpret_cast<R*>(out)[first + j] = (R)get_bits(o, j);
}

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

// The float32 bits of a float16 / bfloat16 / float32 input (exact; NaN keeps its sign, as on the CPU).
__device__ __forceinline__ u32 f32_bits(__half v) {  // the sign by hand: the conversion drops NaN's
    return (__float_as_uint(__half2float(v)) & 0x7fffffffu) | ((u32)(__half_as_ushort(v) & 0x8000u) << 16);
}
__device__ __forceinline__ u32 f32_bits(u16 v) { return (u32)v << 16; }
__device__ __forceinline__ u32 f32_bits(float v) { return __float_as_uint(v); }

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
