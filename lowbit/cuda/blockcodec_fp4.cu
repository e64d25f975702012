// lowbit/cuda/blockcodec_fp4.cu -- block_quantize with fp4 e2m1 elements (MXFP4: E8M0 scales,
// blocks of 32; NVFP4: e4m3 scales times a tensor scale, blocks of 16), bit for bit the codes
// and scales of lowbit.cpu.blockcodec.block_quantize (layout and rules in its docstring).
//
// Built with -DLOWBIT_ELEM_SPEC=<lowbit.formats.FP4_E2M1.spec> (lowbit.cuda.codec.elem_defines);
// the static_assert checks it is the e2m1 layout the thresholds below assume.
//
// One thread per block: the block's BLOCK inputs in 16-byte loads (2 or 4 of float16 /
// bfloat16, 4 or 8 of float32) where rows are whole blocks and x is 16-byte aligned, the amax
// as an integer max of |x|'s bits (16-bit lanes two at a time), the scale once, the codes
// packed into BLOCK / 2 bytes and stored at once (8 or 16 bytes).
//
// Nearest even (mode 0) by thresholds.  The e2m1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (codes
// 0..7) have the midpoints m_i = .25, .75, 1.25, 1.75, 2.5, 3.5, 5 (i = 0..6); |x| / scale
// rounds past m_i when |x| > m_i * scale (i even: the tie goes down, to the even code i) or
// |x| >= m_i * scale (i odd: up, to the even code i + 1), and saturates at 6 (code 7): the code
// is the number of midpoints passed.  Each comparison is exact: m_i * scale is an exact float64
// (the scale has at most 28 significant bits: a power of two, or an e4m3 value times a tensor
// scale of float32 precision, which the wrapper checks), and |x| > T <=> |x| > rd(T), |x| >= T
// <=> |x| > rd(T) - [T representable], with rd(T) the largest magnitude of x's type at most T
// (below_bits), compared as bits (non-negative floats order as their bits).  For NVFP4 the CPU
// rounds the float64 quotient x / scale: it lies on the same side of every m_i as the exact
// quotient, since x (24 bits) and m_i * scale (31 bits) differ by at least 2^-32 of their size
// unless equal.  |x|'s bits + (LANE_MAX - rd) carries into a lane's top bit exactly when |x| >
// rd, with no carry out of the lane, so one integer add tests two float16 lanes at once; the
// count's bits come from the 7 flags (bit 2 = flag 3, bit 1 = flags 1 & !3 | 5, bit 0 = their
// parity).  Other modes (MX): minifloat_encode_any_bits per element (the CPU's integer path).
#include "blockcodec.cuh"

typedef ElemSpec E2M1;  // (codec.cuh)
static_assert(E2M1::bits == 4 && E2M1::man_bits == 1 && E2M1::emin == 0 && E2M1::emax == 2 &&
                  E2M1::code_of_max == 7,
              "blockcodec_fp4.cu holds fp4 e2m1 kernels only");

// The input's magnitudes in 32-bit words: two 16-bit lanes of float16 / bfloat16, one float32.
template <typename T> struct Lanes;
template <> struct Lanes<__half> {
    static constexpr int PER_WORD = 2, MAN = 10, EMIN = -14, EMAX = 15;
    static constexpr u32 SIGN = 0x80008000u, ONE = 0x00010001u, LANE_MAX = 0x7fffu, INF = 0x7c00u,
                         MAX_FINITE = 0x7bffu;
};
template <> struct Lanes<u16> {  // bfloat16 bits
    static constexpr int PER_WORD = 2, MAN = 7, EMIN = -126, EMAX = 127;
    static constexpr u32 SIGN = 0x80008000u, ONE = 0x00010001u, LANE_MAX = 0x7fffu, INF = 0x7f80u,
                         MAX_FINITE = 0x7f7fu;
};
template <> struct Lanes<float> {
    static constexpr int PER_WORD = 1, MAN = 23, EMIN = -126, EMAX = 127;
    static constexpr u32 SIGN = 0x80000000u, ONE = 1u, LANE_MAX = 0x7fffffffu, INF = 0x7f800000u,
                         MAX_FINITE = 0x7f7fffffu;
};

// The float64 value of a magnitude of T given by its bits (exact).
template <typename T> __device__ __forceinline__ double lane_value(u32 m);
template <> __device__ __forceinline__ double lane_value<__half>(u32 m) { return to_f64(__ushort_as_half((u16)m)); }
template <> __device__ __forceinline__ double lane_value<u16>(u32 m) { return to_f64((u16)m); }
template <> __device__ __forceinline__ double lane_value<float>(u32 m) { return to_f64(__uint_as_float(m)); }

// rd(t) - [or_equal and t representable], as bits of T, for a normal float64 t > 0: the
// largest magnitude of T at most t (the largest finite one beyond T's range).
template <typename T>
__device__ __forceinline__ u32 below_bits(double t, bool or_equal) {
    typedef Lanes<T> L;
    const u64 tb = (u64)__double_as_longlong(t);
    const int e = (int)(tb >> 52) - 1023;
    const u64 sig = (tb & 0xfffffffffffffull) | (1ull << 52);
    u32 bits;
    bool exact;
    if (e > L::EMAX) {
        bits = L::MAX_FINITE;
        exact = false;
    } else if (e >= L::EMIN) {
        bits = ((u32)(e - L::EMIN + 1) << L::MAN) | (u32)((sig >> (52 - L::MAN)) & ((1ull << L::MAN) - 1ull));
        exact = (sig & ((1ull << (52 - L::MAN)) - 1ull)) == 0ull;
    } else {  // a subnormal of T, or below them
        const int sh = 52 - L::MAN + L::EMIN - e;
        bits = sh < 64 ? (u32)(sig >> sh) : 0u;
        exact = sh < 64 && (sig & ((1ull << sh) - 1ull)) == 0ull;
    }
    return bits - (u32)(or_equal && exact);
}

// The 7 lane constants LANE_MAX - (below_bits of m_i * scale), in every lane of a word; all 0
// (every element to a signed zero) for a block whose scale is 0 or NaN.  m_4 = 2 m_2, m_5 =
// 2 m_3, m_6 = 4 m_2 (exact float64 products): where m_2 and m_3 are normals of T whose doubles
// stay below T's top binade, rd and exactness commute with the doubling, so their bits are m_2's /
// m_3's + (1 or 2) << MAN (the same strictness: i = 2, 4, 6 strict, 3, 5 or-equal).
template <typename T>
__device__ __forceinline__ void fp4_thresholds(double scale, u32 (&c)[7]) {
    typedef Lanes<T> L;
    const double mid[7] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0};
    const bool zero = !(scale > 0.0);
    u32 t[7];
#pragma unroll
    for (int i = 0; i < 4; ++i) t[i] = below_bits<T>(mid[i] * scale, i & 1);
    const int e2 = (int)((u64)__double_as_longlong(mid[2] * scale) >> 52) - 1023;
    const int e3 = (int)((u64)__double_as_longlong(mid[3] * scale) >> 52) - 1023;
    if (e2 >= L::EMIN && e2 + 2 <= L::EMAX && e3 + 1 <= L::EMAX) {  // (e3 >= e2)
        t[4] = t[2] + (1u << L::MAN);
        t[5] = t[3] + (1u << L::MAN);
        t[6] = t[2] + (2u << L::MAN);
    } else {
#pragma unroll
        for (int i = 4; i < 7; ++i) t[i] = below_bits<T>(mid[i] * scale, i & 1);
    }
#pragma unroll
    for (int i = 0; i < 7; ++i) c[i] = zero ? 0u : (L::LANE_MAX - t[i]) * L::ONE;
}

// A word of inputs -> per lane, its top nibble = sign and e2m1 magnitude code (lower bits junk).
template <typename T>
__device__ __forceinline__ u32 fp4_nibbles(u32 w, const u32 (&c)[7]) {
    typedef Lanes<T> L;
    const u32 a = w & ~L::SIGN;
    u32 f[7];
#pragma unroll
    for (int i = 0; i < 7; ++i) f[i] = a + c[i];  // lane top bit: |x| passed midpoint i
    const u32 b0 = f[0] ^ f[1] ^ f[2] ^ f[3] ^ f[4] ^ f[5] ^ f[6];
    const u32 b1 = (f[1] & ~f[3]) | f[5];
    constexpr u32 M1 = L::SIGN, M2 = M1 | (M1 >> 1), M3 = M2 | (M1 >> 2);
    u32 r = (w & M1) | ((f[3] >> 1) & ~M1);
    r = (r & M2) | ((b1 >> 2) & ~M2);
    return (r & M3) | ((b0 >> 3) & ~M3);
}

// Four codes in the high nibbles of t's bytes -> (code 0 | code 1 << 4) in byte 0, (code 2 |
// code 3 << 4) in byte 2.
__device__ __forceinline__ u32 pair_bytes(u32 t) { return ((t >> 4) & 0x0f0f0f0fu) | ((t >> 8) & 0xf0f0f0f0u); }

// The 8 codes of elements 8k .. 8k + 7 (their fp4_nibbles words r) packed, element 8k lowest.
template <typename T>
__device__ __forceinline__ u32 fp4_pack8(const u32* r) {
    if (Lanes<T>::PER_WORD == 2)  // elements 2p, 2p + 1: the nibbles at bits 12 and 28 of r[p]
        return __byte_perm(pair_bytes(__byte_perm(r[0], r[1], 0x7531)), pair_bytes(__byte_perm(r[2], r[3], 0x7531)),
                           0x6420);
    const u32 t0 = __byte_perm(__byte_perm(r[0], r[1], 0x73), __byte_perm(r[2], r[3], 0x73), 0x5410);
    const u32 t1 = __byte_perm(__byte_perm(r[4], r[5], 0x73), __byte_perm(r[6], r[7], 0x73), 0x5410);
    return __byte_perm(pair_bytes(t0), pair_bytes(t1), 0x6420);
}

// Stochastic rounding of a finite float16 block (its BLOCK / 2 words w, element 2p in the low half
// of w[p]) into BLOCK / 8 words of 8 packed codes, element e's counter state z0 + e * 0x9E37..:
// the magnitude by sr_round (codec.cuh) of the input clamped at 6 * 2^shift (saturation), the
// sign of each float16 (bit 15 of its half) at bit 3 of its nibble.
//
// The grid of each element, sr_grid (codec.cuh) of its exponent field F and the
// block's c0, comes from a per-CTA table (fp4_sr_table): row c0 (0 .. 23, the plan's range),
// column F ^ c0 (rows skewed so that blocks of equal F and other scales read other banks); `key`
// = the row's byte offset ^ (c0 << 3), so that the entry's byte offset is ((a >> 7) & 0xf8) ^ key.
#define LOWBIT_FP4_SR_ROWS 24
__device__ __forceinline__ void fp4_sr_table(uint2* tab) {
    for (int t = threadIdx.x; t < LOWBIT_FP4_SR_ROWS * 32; t += blockDim.x) {
        const int c0 = t >> 5;
        tab[t] = sr_grid((u32)((t & 31) ^ c0), c0, 1u << (32 - (9 + c0)));  // p0 = 2^(32 - cs), cs = 9 + c0
    }
}

template <bool TIE, int BLOCK>
__device__ __forceinline__ void fp4_sr_words(const u32* w, u64 z0, const SrPlan& plan, const uint2* tab, u32* out) {
    const u32 key = ((u32)plan.c0 * 32u * (u32)sizeof(uint2)) ^ ((u32)plan.c0 << 3);
    const char* base = reinterpret_cast<const char*>(tab);
#pragma unroll
    for (int k = 0; k < BLOCK / 8; ++k) {
        u32 pair[4];  // byte p: the codes of elements 8k + 2p (low nibble) and 8k + 2p + 1
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            const u32 a2 = __vminu2(w[4 * k + p] & 0x7fff7fffu, plan.clamp2);  // saturation (SrPlan)
            const u64 z = z0 + 0x9E3779B97F4A7C15ull * (u64)(8 * k + 2 * p);
            const uint2 g0 = sr_grid_at<false>(base, a2, key), g1 = sr_grid_at<true>(base, a2, key);
            const u32 m0 = sr_round<TIE>((a2 & 0xffffu) - g0.x, g0.y, sr_not_top(z), plan);
            const u32 m1 = sr_round<TIE>((a2 >> 16) - g1.x, g1.y, sr_not_top(z + 0x9E3779B97F4A7C15ull), plan);
            pair[p] = m0 | (m1 << 4);
        }
        const u32 acc = __byte_perm(__byte_perm(pair[0], pair[1], 0x0040), __byte_perm(pair[2], pair[3], 0x0040), 0x5410);
        // bytes 1 and 3 of w[4k + p] (the sign bytes of elements 8k + 2p, 8k + 2p + 1) -> byte p
        const u32 lo = __byte_perm(w[4 * k], w[4 * k + 1], 0x7531), hi = __byte_perm(w[4 * k + 2], w[4 * k + 3], 0x7531);
        const u32 even = __byte_perm(lo, hi, 0x6420), odd = __byte_perm(lo, hi, 0x7531);
        out[k] = acc | ((even & 0x80808080u) >> 4) | (odd & 0x80808080u);
    }
}

template <typename T, int BLOCK>
union BlockIn {
    static constexpr int NQ = BLOCK * (int)sizeof(T) / 16, NW = BLOCK * (int)sizeof(T) / 4;
    uint4 q[NQ];
    u32 w[NW];
    T t[BLOCK];
};

// ---- NVFP4 scales by table -------------------------------------------------------------------
// A block's scale code is block_scale's e4m3 code of amax / 6 / tensor_scale (float64 divisions),
// a non-decreasing function of amax (each rounding is monotone), so of amax's bits (a key: the
// magnitudes of T order as their bits), and its thresholds fp4_thresholds(value(code) *
// tensor_scale) a function of the code.  Each CTA tabulates both once (nv_scale_table) and a
// block takes its code as the number of bounds its amax reaches (7 shared loads) and its 7
// lane constants in two 16-byte shared loads, instead of two float64 divisions, the codec and
// 4 - 7 below_bits per block.  NV_ROWS scale codes (the magnitudes of 8-bit codes: the
// wrapper's scale formats) and a row for blocks with NaN / Inf (block_scale of NaN).
#define LOWBIT_NV_ROWS 128

// The scale code of a finite block whose amax has the bits `key`: block_scale's, the same calls.
template <typename T>
__device__ __forceinline__ int nv_code_of_key(u32 key, const MiniSpec& ss, double tensor_scale) {
    return block_scale(lane_value<T>(key), 0, ss, tensor_scale).code;
}

// The smallest key (0 .. MAX_FINITE) whose scale code is >= c (c >= 1), MAX_FINITE + 1 if none:
// a binary search of the monotone predicate, its bracket first narrowed around the key of
// 6 * tensor_scale * (the midpoint of the scale values of codes c - 1 and c), where the code
// steps up to c (up to the float64 roundings of the two divisions, far below T's spacing: the
// answer is that key or the next).  Each narrowing is checked by the predicate itself, so a
// guess that misses only costs the full search.
template <typename T>
__device__ u32 nv_bound(int c, const MiniSpec& ss, double tensor_scale) {
    typedef Lanes<T> L;
    const u32 none = L::MAX_FINITE + 1u;
    u32 lo = 0u, hi = none;  // every key below lo has a code < c; key hi (or none) has one >= c
    const double m = 0.5 * (minifloat_decode_one((u64)(c - 1), ss) + minifloat_decode_one((u64)c, ss));
    if (m > 0.0 && m < LOWBIT_INF) {
        const u32 g = below_bits<T>(m * 6.0 * tensor_scale, false);
        if (g > 0u && nv_code_of_key<T>(g - 1u, ss, tensor_scale) < c) lo = g;
        if (g + 1u < none && nv_code_of_key<T>(g + 1u, ss, tensor_scale) >= c) hi = g + 1u;
    }
    while (lo < hi) {
        const u32 mid = lo + (hi - lo) / 2u;
        if (nv_code_of_key<T>(mid, ss, tensor_scale) >= c) hi = mid;
        else lo = mid + 1u;
    }
    return lo;
}

// bound[c] (c < NV_ROWS; bound[0] = 0), thr[2 r], thr[2 r + 1]: the 7 lane constants of scale
// code r (r < NV_ROWS) and of the NaN row NV_ROWS, nan_code[0]: the NaN row's scale code.
template <typename T>
__device__ void nv_scale_table(const MiniSpec& ss, double tensor_scale, u32* bound, uint4* thr, int* nan_code) {
    for (int i = threadIdx.x; i < 2 * LOWBIT_NV_ROWS + 1; i += blockDim.x) {
        if (i < LOWBIT_NV_ROWS) {
            bound[i] = i == 0 ? 0u : nv_bound<T>(i, ss, tensor_scale);
            continue;
        }
        const int r = i - LOWBIT_NV_ROWS;
        double scale;
        if (r < LOWBIT_NV_ROWS) {
            scale = minifloat_decode_one((u64)r, ss) * tensor_scale;  // block_scale's scale of code r
        } else {
            const BlockScale bsc = block_scale(LOWBIT_NAN, 0, ss, tensor_scale);
            scale = bsc.scale;
            nan_code[0] = bsc.code;
        }
        u32 c[7];
        fp4_thresholds<T>(scale, c);
        thr[2 * r] = make_uint4(c[0], c[1], c[2], c[3]);
        thr[2 * r + 1] = make_uint4(c[4], c[5], c[6], 0u);
    }
}

// MODE: a rounding mode; NV: NVFP4 (scale = e4m3 code of amax / 6 / tensor_scale, times it)
// instead of E8M0.  NV takes nearest even only (the wrapper's choice).
template <typename T, int BLOCK, int MODE, bool NV>
__device__ void block_quantize_fp4_loop(const T* x, long long length, int scale_emax, const MiniSpec& ss,
                                        double tensor_scale, u64 seed, long long offset, int rbits, u8* packed,
                                        u8* scales, long long n_blocks) {
    typedef Lanes<T> L;
    typedef BlockIn<T, BLOCK> In;
    constexpr int WORDS = BLOCK / 8;  // packed u32 words per block
    const bool flat = length % BLOCK == 0;
    const bool vector = flat && (unsigned long long)x % 16 == 0;
    const bool vector_out = (unsigned long long)packed % (4 * WORDS) == 0;
    const long long per_row = (length + BLOCK - 1) / BLOCK;
    const long long stride = (long long)gridDim.x * blockDim.x;
    // MX: the thresholds at scale 1 (c1); at 2^shift with EMIN + 2 <= shift <= EMAX - 2 every
    // m_i * 2^shift is an exact normal of T (m_i has 3 significant bits), so its bits are m_i's +
    // shift << MAN in each lane (c1 - that, lane by lane, no borrow: every lane stays in range)
    u32 c1[7];
    if (!NV && MODE == LOWBIT_NEAREST_EVEN) fp4_thresholds<T>(1.0, c1);
    // NV: the scale table (nv_scale_table)
    __shared__ u32 nv_bounds[NV ? LOWBIT_NV_ROWS : 1];
    __shared__ uint4 nv_thr[NV ? 2 * LOWBIT_NV_ROWS + 2 : 1];
    __shared__ int nv_nan_code[1];
    if (NV) {
        nv_scale_table<T>(ss, tensor_scale, nv_bounds, nv_thr, nv_nan_code);
        __syncthreads();
    }
    const u64 key = MODE == LOWBIT_STOCHASTIC ? mix64(seed) : 0ull;
    SrPlan plan;
    constexpr bool SR16 = MODE == LOWBIT_STOCHASTIC && SameType<T, __half>::value;
    __shared__ uint2 sr_tab[SR16 ? LOWBIT_FP4_SR_ROWS * 32 : 1];  // (fp4_sr_table)
    if (SR16) {
        fp4_sr_table(sr_tab);
        __syncthreads();
    }
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks; b += stride) {
        In in;
        if (vector) {
            const uint4* src = reinterpret_cast<const uint4*>(x + b * BLOCK);
#pragma unroll
            for (int q = 0; q < In::NQ; ++q) in.q[q] = src[q];
        } else {
            long long first = b * BLOCK, count = BLOCK;
            if (!flat) {
                const long long row = b / per_row;
                const long long j = (b - row * per_row) * BLOCK;
                first = row * length + j;
                count = min((long long)BLOCK, length - j);
            }
#pragma unroll
            for (int j = 0; j < BLOCK; ++j) in.t[j] = j < count ? x[first + j] : T();
        }
        u32 m = 0;
#pragma unroll
        for (int k = 0; k < In::NW; ++k) m = L::PER_WORD == 2 ? __vmaxu2(m, in.w[k] & ~L::SIGN) : max(m, in.w[k] & ~L::SIGN);
        const u32 amax = L::PER_WORD == 2 ? max(m & 0xffffu, m >> 16) : m;
        const bool bad = amax >= L::INF;  // NaN or Inf in the block
        int code;
        double scale = 0.0;
        int shift = 0;
        int nv_row = 0;
        if (NV) {  // block_scale's code: the number of bounds amax reaches (nv_scale_table)
            int k = 0;
#pragma unroll
            for (int step = LOWBIT_NV_ROWS / 2; step; step >>= 1) k += amax >= nv_bounds[k + step] ? step : 0;
            nv_row = bad ? LOWBIT_NV_ROWS : k;
            code = bad ? nv_nan_code[0] : k;
        } else {  // block_scale's E8M0 rule from amax's bits: floor(log2 amax) - scale_emax, clamped
            const int field = (int)(amax >> L::MAN);
            const int e = field ? field - 1 + L::EMIN : 31 - __clz(amax) - L::MAN + L::EMIN;
            shift = amax == 0u ? -127 : min(max(e - scale_emax, -127), 127);
            code = bad ? 0xff : shift + 127;
            scale = bad ? LOWBIT_NAN : pow2(shift);
        }
        if (bad) {  // NaN lanes lose their sign (scaled: NaN / NaN scale -> +0)
#pragma unroll
            for (int k = 0; k < In::NW; ++k)
                in.w[k] &= ~(((in.w[k] & ~L::SIGN) + (L::LANE_MAX - L::INF) * L::ONE) & L::SIGN);
        }
        u32 out[WORDS];
        if (MODE == LOWBIT_NEAREST_EVEN) {
            u32 c[7];
            if (NV) {
                const uint4 t0 = nv_thr[2 * nv_row], t1 = nv_thr[2 * nv_row + 1];
                c[0] = t0.x; c[1] = t0.y; c[2] = t0.z; c[3] = t0.w;
                c[4] = t1.x; c[5] = t1.y; c[6] = t1.z;
            } else if (!bad && shift >= L::EMIN + 2 && shift <= L::EMAX - 2) {
#pragma unroll
                for (int i = 0; i < 7; ++i) c[i] = c1[i] - ((u32)shift << L::MAN) * L::ONE;
            } else {
                fp4_thresholds<T>(scale, c);
            }
#pragma unroll
            for (int k = 0; k < WORDS; ++k) {
                u32 r[8 / L::PER_WORD];
#pragma unroll
                for (int p = 0; p < 8 / L::PER_WORD; ++p) r[p] = fp4_nibbles<T>(in.w[k * (8 / L::PER_WORD) + p], c);
                out[k] = fp4_pack8<T>(r);
            }
        } else if (SR16 && !bad && (plan = sr_plan(E2M1(), shift, rbits)).ok) {  // (c0 <= 23: the table's rows)
            const u64 z0 = key + 0x9E3779B97F4A7C15ull * ((u64)(offset + b * BLOCK) + 1ull);
            if (plan.tie) fp4_sr_words<true, BLOCK>(in.w, z0, plan, sr_tab, out);
            else fp4_sr_words<false, BLOCK>(in.w, z0, plan, sr_tab, out);
        } else {
            const long long index = offset + b * BLOCK;  // the padded stream's counter
#pragma unroll
            for (int k = 0; k < WORDS; ++k) {
                u32 acc = 0;
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const u32 xb = f32_bits(in.t[k * 8 + j]);
                    const u64 rnd = MODE == LOWBIT_STOCHASTIC ? random_bits(seed, index + k * 8 + j) : 0ull;
                    int st;
                    // a finite block of float16: every element +-0 or normal as float32
                    const u32 cj =
                        bad ? (xb >> 31) << 3
                        : SameType<T, __half>::value
                            ? minifloat_encode_normal_bits<MODE>(xb, shift, E2M1(), LOWBIT_SATURATE, rnd, rbits, st)
                            : minifloat_encode_any_bits<MODE>(xb, shift, E2M1(), LOWBIT_SATURATE, rnd, rbits, st);
                    acc |= cj << (4 * j);
                }
                out[k] = acc;
            }
        }
        u8* dst = packed + b * (BLOCK / 2);
        if (vector_out && WORDS == 4) {
            *reinterpret_cast<uint4*>(dst) = make_uint4(out[0], out[1], out[2 % WORDS], out[3 % WORDS]);
        } else if (vector_out && WORDS == 2) {
            *reinterpret_cast<uint2*>(dst) = make_uint2(out[0], out[1]);
        } else {
#pragma unroll
            for (int k = 0; k < WORDS; ++k)
#pragma unroll
                for (int i = 0; i < 4; ++i) dst[4 * k + i] = (u8)(out[k] >> (8 * i));
        }
        scales[b] = (u8)code;
    }
}

// MXFP4: lowbit_block_quantize_fp4_mx<M>_<input>, one per rounding mode M, blocks of 32.
#define LOWBIT_FP4_MX_KERNEL(SUFFIX, T, M)                                                                      \
    extern "C" __global__ void lowbit_block_quantize_fp4_mx##M##_##SUFFIX(                                      \
        const T* x, long long length, int scale_emax, u64 seed, long long offset, int rbits, u8* packed,        \
        u8* scales, long long n_blocks) {                                                                       \
        block_quantize_fp4_loop<T, 32, M, false>(x, length, scale_emax, MiniSpec(), 0.0, seed, offset, rbits,  \
                                                 packed, scales, n_blocks);                                     \
    }
// NVFP4: lowbit_block_quantize_fp4_nv_<input>, nearest even, blocks of 16.
#define LOWBIT_FP4_KERNELS(SUFFIX, T)                                                                           \
    LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 0) LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 1) LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 2)    \
    LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 3) LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 4) LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 5)    \
    LOWBIT_FP4_MX_KERNEL(SUFFIX, T, 6)                                                                          \
    extern "C" __global__ void lowbit_block_quantize_fp4_nv_##SUFFIX(                                           \
        const T* x, long long length, int s_bits, int s_man_bits, int s_emin, int s_emax, double s_max_value,   \
        long long s_code_of_max, long long s_code_of_inf, long long s_code_of_nan, double tensor_scale,         \
        u8* packed, u8* scales, long long n_blocks) {                                                           \
        block_quantize_fp4_loop<T, 16, LOWBIT_NEAREST_EVEN, true>(                                              \
            x, length, 0,                                                                                       \
            mini_spec(s_bits, s_man_bits, s_emin, s_emax, s_max_value, s_code_of_max, s_code_of_inf,            \
                      s_code_of_nan),                                                                           \
            tensor_scale, 0ull, 0ll, 16, packed, scales, n_blocks);                                             \
    }

LOWBIT_FP4_KERNELS(f16, __half)
LOWBIT_FP4_KERNELS(bf16, u16)
LOWBIT_FP4_KERNELS(f32, float)
