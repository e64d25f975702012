// lowbit/cuda/balance.cuh -- KVarN's dual-axis variance normalization of one tile by one thread
// block (DESIGN.md section 4 step 2), device functions for balance.cu and the fused KVarN store.
// Twin of lowbit/cpu/balance.py's balance_tile: the same float32 operations in the same order
// (f32 arithmetic keeps subnormals; exp/log are common.cuh's exp_f32/log_f32, identical to
// lowbit.cpu.scalar's), so scales, imbalance and balanced tiles equal the CPU's bit for bit.
//
// Work split: a column's (row's) std is computed by one group of LOWBIT_LANES = 8 lanes of a
// warp; lane p sums the elements i = p, p + 8, p + 16, ... in increasing i, four at a time per
// block of 32 rows (balance.py's partial p, in its order), and the 8 partials are combined by a
// __shfl_xor butterfly over lane offsets 1, 2, 4, which forms ((P0 + P1) + (P2 + P3)) + ((P4 +
// P5) + (P6 + P7)) in every lane (a + b == b + a in IEEE arithmetic), balance.py's _lane_tree.
// A lane keeps its elements x_i in registers between the two passes of a std when the vector has
// at most 8 * 16 elements.
// Vectors go to groups in rounds: round u of chunk b is vectors 32 b + u + 8 q for the warp's
// groups q = 0..3 (with a tile pitch of 1 mod 32, the 32 lanes of a warp read 32 different
// banks, in column and row sweeps alike); warp w takes rounds w, w + warps, ...  Lane 0 of a
// group writes the vector's std.  blockDim.x must be a multiple of 32.
// A tile is read through a view V with `f32 operator()(int r, int c)`; SharedTile is the usual one.
#ifndef LOWBIT_BALANCE_CUH
#define LOWBIT_BALANCE_CUH

// A float32 tile in shared memory, row-major with `pitch` floats per row (an odd pitch keeps
// both column sweeps, lanes along a row, and row sweeps, lanes down a column, conflict-free).
struct SharedTile {
    const float* p;
    int pitch;
    __device__ __forceinline__ f32 operator()(int r, int c) const { return f32(p[r * pitch + c]); }
};

// SharedTile with a compile-time pitch: the offsets of a lane's elements are immediates.
template <int PITCH>
struct FixedTile {
    const float* p;
    __device__ __forceinline__ f32 operator()(int r, int c) const { return f32(p[r * PITCH + c]); }
};

// A tile of storage type T in global memory (row-major, `ld` elements per row).
template <typename T>
struct GlobalTile {
    const T* p;
    long long ld;
    __device__ __forceinline__ f32 operator()(int r, int c) const { return widen(p[r * ld + c]); }
};

// The transpose of a view: element (i, j) is element (j, i) of `t`.
template <class V>
struct Transposed {
    V t;
    __device__ __forceinline__ f32 operator()(int i, int j) const { return t(j, i); }
};

#define LOWBIT_LANES 8        // lanes per column / row (balance.py LANES)
#define LOWBIT_LANE_CACHE 16  // elements a lane keeps in registers: vectors of up to 128

// The sum over the 8 lanes of a group of one value per lane, in every lane of the group:
// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) (balance.py _lane_tree).
__device__ __forceinline__ f32 lane_sum(f32 s) {
    s = s + f32(__shfl_xor_sync(0xffffffffu, s.v, 1));
    s = s + f32(__shfl_xor_sync(0xffffffffu, s.v, 2));
    s = s + f32(__shfl_xor_sync(0xffffffffu, s.v, 4));
    return s;
}

// Unbiased std over i = 0..n-1 of x_i = t(i, j) * w[i], two-pass with the mean taken around the
// first element: m = x0 + sum(x - x0) / n, var = sum((x - m)^2) / (n - 1); called by the 8
// lanes p of a group together (all with the same j), every lane gets the result.  Each sum is
// lane p's partial over i = p (mod 8) -- from 0.0, acc = acc + ((s_i + s_i+8) + (s_i+16 + s_i+24))
// for i = 32 g + p, g < ceil(n / 32), terms past n being +0.0 -- then lane_sum: balance.py's
// _weighted_std.  (The weights stay in shared memory: one broadcast read serves the warp's four
// groups, and caching them too cost 47 registers.)
template <class V>
__device__ __forceinline__ f32 group_std(const V& t, int n, int j, const float* w, int p) {
    const f32 x0 = t(0, j) * f32(w[0]);
    const f32 zero(0.0f);
    f32 acc(0.0f);
    if (n <= LOWBIT_LANES * LOWBIT_LANE_CACHE) {  // the lane's elements stay in registers
        f32 x[LOWBIT_LANE_CACHE];
#pragma unroll
        for (int k = 0; k < LOWBIT_LANE_CACHE; ++k) {
            const int i = p + LOWBIT_LANES * k;
            x[k] = i < n ? t(i, j) * f32(w[i]) : zero;
        }
#pragma unroll
        for (int g = 0; g < LOWBIT_LANE_CACHE / 4; ++g) {
            if (32 * g < n) {  // uniform across the group
                f32 a[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) a[e] = p + 32 * g + 8 * e < n ? x[4 * g + e] - x0 : zero;
                acc = acc + ((a[0] + a[1]) + (a[2] + a[3]));
            }
        }
        const f32 mean = x0 + lane_sum(acc) / f32((float)n);
        acc = zero;
#pragma unroll
        for (int g = 0; g < LOWBIT_LANE_CACHE / 4; ++g) {
            if (32 * g < n) {
                f32 a[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const f32 d = x[4 * g + e] - mean;
                    a[e] = p + 32 * g + 8 * e < n ? d * d : zero;
                }
                acc = acc + ((a[0] + a[1]) + (a[2] + a[3]));
            }
        }
        return sqrt_rn(lane_sum(acc) / f32((float)(n - 1)));
    }
    for (int i = p; i < n + p; i += 32) {  // i = 32 g + p for g < ceil(n / 32)
        f32 a[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = i + 8 * e < n ? t(i + 8 * e, j) * f32(w[i + 8 * e]) - x0 : zero;
        acc = acc + ((a[0] + a[1]) + (a[2] + a[3]));
    }
    const f32 mean = x0 + lane_sum(acc) / f32((float)n);
    acc = zero;
    for (int i = p; i < n + p; i += 32) {
        f32 a[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const f32 d = i + 8 * e < n ? t(i + 8 * e, j) * f32(w[i + 8 * e]) - mean : zero;
            a[e] = i + 8 * e < n ? d * d : zero;
        }
        acc = acc + ((a[0] + a[1]) + (a[2] + a[3]));
    }
    return sqrt_rn(lane_sum(acc) / f32((float)(n - 1)));
}

// The first vector of round `rd` (its group q = 0 takes it, group q takes it + 8 q).
__device__ __forceinline__ int round_first(int rd) { return ((rd >> 3) << 5) + (rd & 7); }
__device__ __forceinline__ int round_count(int count) { return ((count + 31) >> 5) * LOWBIT_LANES; }

// s / N in float32 for a compile-time count N: a product by the exact 1 / N when N is a power of
// two (both round the same real number s / N once, subnormal results included), else a division.
template <int N>
__device__ __forceinline__ f32 over_count(f32 s) {
    return (N & (N - 1)) == 0 ? s * f32(1.0f / (float)N) : s / f32((float)N);
}

// group_std for vectors of a compile-time length N (a multiple of 32, at most 8 * LOWBIT_LANE_CACHE),
// in two parts: group_ssd_n, the sum of squared deviations sum((x - m)^2) in every lane of the
// group, and std_of_ssd, sqrt(ssd / (N - 1)); the same operations in the same order, without
// bounds tests.  x0 comes from lane 0 of the group (a shuffle of its x[0] = t(0, j) * w[0]) and the
// lane's weights w[p + 8 k] from registers (`wl`, loaded once per sweep).  Every lane of the warp
// must call group_ssd_n.
template <int N, class V>
__device__ __forceinline__ f32 group_ssd_n(const V& t, int j, const f32 (&wl)[N / LOWBIT_LANES], int p) {
    constexpr int K = N / LOWBIT_LANES;
    static_assert(N % 32 == 0 && K <= LOWBIT_LANE_CACHE, "N: a multiple of 32, at most 128");
    f32 x[K];
#pragma unroll
    for (int k = 0; k < K; ++k) x[k] = t(p + LOWBIT_LANES * k, j) * wl[k];
    const f32 x0(__shfl_sync(0xffffffffu, x[0].v, 0, LOWBIT_LANES));
    f32 acc(0.0f);
#pragma unroll
    for (int g = 0; g < K / 4; ++g)
        acc = acc + (((x[4 * g] - x0) + (x[4 * g + 1] - x0)) + ((x[4 * g + 2] - x0) + (x[4 * g + 3] - x0)));
    const f32 mean = x0 + over_count<N>(lane_sum(acc));
    acc = f32(0.0f);
#pragma unroll
    for (int g = 0; g < K / 4; ++g) {
        f32 d[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) d[e] = x[4 * g + e] - mean;
        acc = acc + ((d[0] * d[0] + d[1] * d[1]) + (d[2] * d[2] + d[3] * d[3]));
    }
    return lane_sum(acc);
}

template <int N>
__device__ __forceinline__ f32 std_of_ssd(f32 ssd) { return sqrt_rn(over_count<N - 1>(ssd)); }

// f(v, std over i of t(i, v) * w[i]) (group_std) in one lane of the group of every vector v < count
// (the rounds above); every lane of every warp must call it.  N > 0: vectors of that compile-time
// length n = N (group_ssd_n), the weights read once per sweep, and the last division and square
// root of up to 8 rounds done by one instruction each: lane p of a group keeps its group's sum of
// the warp's p-th pending round, and f runs in lanes p < pending.  COUNT > 0: count == COUNT at
// compile time; a multiple of 32 fills every round (no vector tests).
template <int N = 0, int COUNT = 0, class V, class F>
__device__ __forceinline__ void sweep(const V& t, int n, int count, const float* w, F f) {
    constexpr bool full = COUNT > 0 && COUNT % 32 == 0;
    if (COUNT > 0) count = COUNT;
    const int lane = threadIdx.x & 31, p = lane & (LOWBIT_LANES - 1), q = lane >> 3;
    f32 wl[N > 0 ? N / LOWBIT_LANES : 1];
    if (N > 0) {
#pragma unroll
        for (int k = 0; k < N / LOWBIT_LANES; ++k) wl[k] = f32(w[p + LOWBIT_LANES * k]);
    }
    int pending = 0, v_held = 0;  // N > 0: rounds whose std is not taken yet (uniform), lane p's vector
    f32 ssd_held(0.0f);
    const auto finish = [&]() {
        const f32 s = std_of_ssd<N>(ssd_held);
        if (p < pending && (full || v_held < count)) f(v_held, s);
        pending = 0;
    };
    for (int rd = threadIdx.x >> 5; rd < round_count(count); rd += blockDim.x >> 5) {
        const int first = round_first(rd);
        if (!full && first >= count) continue;  // uniform across the warp
        const int v = first + q * LOWBIT_LANES;
        const int j = full || v < count ? v : first;
        if constexpr (N > 0) {
            const f32 ssd = group_ssd_n<N>(t, j, wl, p);
            if (p == pending) {
                ssd_held = ssd;
                v_held = v;
            }
            if (++pending == LOWBIT_LANES) finish();
        } else {
            const f32 s = group_std(t, n, j, w, p);
            if (v < count && p == 0) f(v, s);
        }
    }
    if (N > 0 && pending > 0) finish();
}

// Running min / max / NaN flag of the stds a lane owns, for the imbalance.  Every std added is
// >= +0 (sign bit clear: the square root of a sum of squares from +0, or that times a positive
// scale) or NaN, so +0 is the identity of their max and lo / hi (never NaN: min / max drop a NaN
// operand) order as their bits do as unsigned integers.
struct SpreadAcc {
    f32 lo, hi;
    unsigned bad;
    __device__ __forceinline__ void reset() {
        lo = f32(__uint_as_float(0x7f800000u));
        hi = f32(0.0f);
        bad = 0u;
    }
    __device__ __forceinline__ void add(f32 v) {
        bad |= is_nan(v) ? 1u : 0u;
        lo = minimum(lo, v);
        hi = maximum(hi, v);
    }
};

// Imb = max(std_col) / max(min(std_col), floor) + max(std_row) / max(min(std_row), floor), NaN if
// one std is NaN (balance.py _spread + _spread), from every lane's column and row accumulators;
// every thread gets the result.  `red` holds 5 floats per warp; one barrier (red is next
// written after at least one more barrier).  After the barrier lane w of every warp takes warp w's
// values and a second warp reduction combines them (min, max and or are exact: any order gives the
// same; lo / hi by their bits, SpreadAcc).
__device__ __forceinline__ void spread_reduce(SpreadAcc& c, SpreadAcc& r, unsigned& bad) {
    c.lo = f32(__uint_as_float(__reduce_min_sync(0xffffffffu, __float_as_uint(c.lo.v))));
    c.hi = f32(__uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(c.hi.v))));
    r.lo = f32(__uint_as_float(__reduce_min_sync(0xffffffffu, __float_as_uint(r.lo.v))));
    r.hi = f32(__uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(r.hi.v))));
    bad = __any_sync(0xffffffffu, bad != 0u) ? 1u : 0u;
}

__device__ __forceinline__ f32 block_imbalance(SpreadAcc c, SpreadAcc r, f32 floor, float* red) {
    unsigned bad = c.bad | r.bad;
    spread_reduce(c, r, bad);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        red[5 * warp] = c.lo.v;
        red[5 * warp + 1] = c.hi.v;
        red[5 * warp + 2] = r.lo.v;
        red[5 * warp + 3] = r.hi.v;
        red[5 * warp + 4] = __uint_as_float(bad);
    }
    __syncthreads();
    c.reset();
    r.reset();
    bad = 0u;
    if (lane < warps) {  // at most 32 warps
        c.lo = f32(red[5 * lane]);
        c.hi = f32(red[5 * lane + 1]);
        r.lo = f32(red[5 * lane + 2]);
        r.hi = f32(red[5 * lane + 3]);
        bad = __float_as_uint(red[5 * lane + 4]);
    }
    spread_reduce(c, r, bad);
    return bad ? f32(__uint_as_float(0x7fc00000u)) : c.hi / maximum(c.lo, floor) + r.hi / maximum(r.lo, floor);
}

// Shared-memory vectors balance_tile works in: [C] per column, [R] per row, 5 floats per warp.
struct BalanceScratch {
    float *log_col, *inv_col, *std_col, *best_col;
    float *log_row, *inv_row, *base_row, *best_row;
    float* red;
};

// Floats of shared memory a BalanceScratch needs for an R x C tile and `threads` threads
// (lowbit/cuda/balance.py scratch_floats mirrors it).
__host__ __device__ constexpr int balance_scratch_floats(int rows, int cols, int threads) {
    return 4 * cols + 4 * rows + 5 * ((threads + 31) / 32);
}

// Carve a BalanceScratch out of `p` (balance_scratch_floats floats).
__device__ __forceinline__ BalanceScratch balance_scratch(float* p, int rows, int cols) {
    BalanceScratch s;
    s.log_col = p;
    s.inv_col = p + cols;
    s.std_col = p + 2 * cols;
    s.best_col = p + 3 * cols;
    p += 4 * cols;
    s.log_row = p;
    s.inv_row = p + rows;
    s.base_row = p + 2 * rows;
    s.best_row = p + 3 * rows;
    s.red = p + 4 * rows;
    return s;
}

// L = clip(L + ln(clip(std, std_min, std_max)), log_min, log_max); inv = e^-L (balance.py
// _update_log_scale) for one entry.
__device__ __forceinline__ void update_log_scale(float* log_scale, float* inv, int i, f32 std, f32 std_min,
                                                 f32 std_max, f32 log_min, f32 log_max) {
    const f32 s = clip_f32(std, std_min, std_max);
    const f32 v = clip_f32(f32(log_scale[i]) + log_f32(s), log_min, log_max);
    log_scale[i] = v.v;
    inv[i] = exp_f32(-v).v;
}

struct BalanceParams {
    int iterations;
    f32 std_min, std_max, log_min, log_max, floor;
};

// Balance the R x C tile `t` (R, C >= 2) with the whole block: writes e^Lc and e^Lr of the best
// candidate to col_scale [C] and row_scale [R] (shared memory; exactly 1 when the identity
// won) and returns the best imbalance (NaN for a tile holding NaN or Inf).  Ends with a barrier.
// The stds come from sweep() (8-lane groups); the scale updates (float64 exp / log) run one
// thread per column / row, so that whole warps share them: four barriers per round.
// NR, NC > 0: rows == NR and cols == NC at compile time (sweep's fixed-length path).
template <int NR = 0, int NC = 0, class V>
__device__ f32 balance_tile(const V& t, int rows, int cols, const BalanceParams& p, const BalanceScratch& s,
                            float* col_scale, float* row_scale) {
    const Transposed<V> tt{t};
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        s.log_col[c] = 0.0f;
        s.inv_col[c] = 1.0f;
        s.best_col[c] = 0.0f;
    }
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        s.log_row[r] = 0.0f;
        s.inv_row[r] = 1.0f;
        s.best_row[r] = 0.0f;
    }
    __syncthreads();
    SpreadAcc sc, sr;
    sc.reset();
    sr.reset();
    sweep<NR, NC>(t, rows, cols, s.inv_row, [&](int c, f32 v) {
        s.std_col[c] = v.v;
        sc.add(v);
    });
    sweep<NC, NR>(tt, cols, rows, s.inv_col, [&](int, f32 v) { sr.add(v); });
    f32 best = block_imbalance(sc, sr, p.floor, s.red);  // std_col is read after its barrier
    bool identity = true;
    for (int it = 0; it < p.iterations; ++it) {
        // columns: std_col holds the column stds of the current iterate
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            update_log_scale(s.log_col, s.inv_col, c, f32(s.std_col[c]), p.std_min, p.std_max, p.log_min, p.log_max);
        __syncthreads();
        // rows: std over columns of cur[r, :] = inv_row[r] * std of T[r, :] * inv_col
        sweep<NC, NR>(tt, cols, rows, s.inv_col, [&](int r, f32 base) { s.base_row[r] = base.v; });
        __syncthreads();
        sr.reset();
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            const f32 base(s.base_row[r]);
            update_log_scale(s.log_row, s.inv_row, r, f32(s.inv_row[r]) * base, p.std_min, p.std_max, p.log_min,
                             p.log_max);
            sr.add(f32(s.inv_row[r]) * base);
        }
        __syncthreads();
        sc.reset();
        sweep<NR, NC>(t, rows, cols, s.inv_row, [&](int c, f32 base) {
            const f32 v = f32(s.inv_col[c]) * base;
            s.std_col[c] = v.v;
            sc.add(v);
        });
        const f32 imb = block_imbalance(sc, sr, p.floor, s.red);
        if (imb <= best) {  // ties go to the later iterate
            best = imb;
            identity = false;
            for (int c = threadIdx.x; c < cols; c += blockDim.x) s.best_col[c] = s.log_col[c];
            for (int r = threadIdx.x; r < rows; r += blockDim.x) s.best_row[r] = s.log_row[r];
        }
    }
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        col_scale[c] = identity ? 1.0f : exp_f32(f32(s.best_col[c])).v;
    for (int r = threadIdx.x; r < rows; r += blockDim.x)
        row_scale[r] = identity ? 1.0f : exp_f32(f32(s.best_row[r])).v;
    __syncthreads();
    return best;
}

// balanced(r, c) = t(r, c) / col_scale[c] / row_scale[r], in that order (balance.py divide_scales).
template <class V>
__device__ __forceinline__ f32 divide_scales(const V& t, int r, int c, const float* col_scale, const float* row_scale) {
    return t(r, c) / f32(col_scale[c]) / f32(row_scale[r]);
}

#endif  // LOWBIT_BALANCE_CUH
