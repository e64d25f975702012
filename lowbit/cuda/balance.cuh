// lowbit/cuda/balance.cuh -- KVarN's dual-axis variance normalization of one tile by one thread
// block (DESIGN.md section 4 step 2), device functions for balance.cu and the fused KVarN store.
// Twin of lowbit/cpu/balance.py's balance_tile: the same float32 operations in the same order
// (f32 arithmetic keeps subnormals; exp/log are common.cuh's exp_f32/log_f32, identical to
// lowbit.cpu.scalar's), so scales, imbalance and balanced tiles equal the CPU's bit for bit.
//
// Work split: thread t owns columns c = t, t + blockDim.x, ... and rows r likewise; a column's
// (row's) statistics are one thread's sequential sums, in the CPU's order.  A tile is read
// through a view V with `f32 operator()(int r, int c)`; SharedTile is the usual one.
#ifndef LOWBIT_BALANCE_CUH
#define LOWBIT_BALANCE_CUH

// A float32 tile in shared memory, row-major with `pitch` floats per row (an odd pitch keeps
// both column sweeps, lanes along a row, and row sweeps, lanes down a column, conflict-free).
struct SharedTile {
    const float* p;
    int pitch;
    __device__ __forceinline__ f32 operator()(int r, int c) const { return f32(p[r * pitch + c]); }
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

// Unbiased std over i = 0..n-1 of t(i, j) * w[i], two-pass with the mean taken around the first
// element: m = x0 + sum(x - x0) / n, var = sum((x - m)^2) / (n - 1); sums in groups of four
// elements, acc = acc + ((d0 + d1) + (d2 + d3)), as balance.py's _weighted_std.
template <class V>
__device__ __forceinline__ f32 weighted_std(const V& t, int n, int j, const float* w) {
    const f32 x0 = t(0, j) * f32(w[0]);
    f32 acc = f32(0.0f);
    int i = 1;
#pragma unroll 2
    for (; i + 4 <= n; i += 4) {
        acc = acc + (((t(i, j) * f32(w[i]) - x0) + (t(i + 1, j) * f32(w[i + 1]) - x0))
                     + ((t(i + 2, j) * f32(w[i + 2]) - x0) + (t(i + 3, j) * f32(w[i + 3]) - x0)));
    }
    for (; i < n; ++i) acc = acc + (t(i, j) * f32(w[i]) - x0);
    const f32 mean = x0 + acc / f32((float)n);
    acc = f32(0.0f);
    i = 0;
#pragma unroll 2
    for (; i + 4 <= n; i += 4) {
        const f32 d0 = t(i, j) * f32(w[i]) - mean;
        const f32 d1 = t(i + 1, j) * f32(w[i + 1]) - mean;
        const f32 d2 = t(i + 2, j) * f32(w[i + 2]) - mean;
        const f32 d3 = t(i + 3, j) * f32(w[i + 3]) - mean;
        acc = acc + ((d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3));
    }
    for (; i < n; ++i) {
        const f32 d = t(i, j) * f32(w[i]) - mean;
        acc = acc + d * d;
    }
    return sqrt_rn(acc / f32((float)(n - 1)));
}

// max(std) / max(min(std), floor) over std[0..count), NaN if one is NaN (balance.py _spread);
// every thread gets the result.  `red` holds 3 floats per warp.  Starts and ends with a barrier.
__device__ __forceinline__ f32 block_spread(const float* std, int count, f32 floor, float* red) {
    __syncthreads();
    f32 lo = f32(__uint_as_float(0x7f800000u)), hi = f32(__uint_as_float(0xff800000u));
    unsigned bad = 0u;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const f32 v = f32(std[i]);
        bad |= is_nan(v) ? 1u : 0u;
        lo = minimum(lo, v);
        hi = maximum(hi, v);
    }
    for (int o = 16; o; o >>= 1) {
        lo = minimum(lo, f32(__shfl_xor_sync(0xffffffffu, lo.v, o)));
        hi = maximum(hi, f32(__shfl_xor_sync(0xffffffffu, hi.v, o)));
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
    }
    const int warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    if ((threadIdx.x & 31) == 0) {
        red[3 * warp] = lo.v;
        red[3 * warp + 1] = hi.v;
        red[3 * warp + 2] = __uint_as_float(bad);
    }
    __syncthreads();
    for (int w = 0; w < warps; ++w) {  // min, max and or are exact: any order gives the same
        lo = minimum(lo, f32(red[3 * w]));
        hi = maximum(hi, f32(red[3 * w + 1]));
        bad |= __float_as_uint(red[3 * w + 2]);
    }
    __syncthreads();
    return bad ? f32(__uint_as_float(0x7fc00000u)) : hi / maximum(lo, floor);
}

// Shared-memory vectors balance_tile works in: [C] per column, [R] per row, 3 floats per warp.
struct BalanceScratch {
    float *log_col, *inv_col, *std_col, *best_col;
    float *log_row, *inv_row, *std_row, *best_row;
    float* red;
};

// Floats of shared memory a BalanceScratch needs for an R x C tile and `threads` threads.
__host__ __device__ constexpr int balance_scratch_floats(int rows, int cols, int threads) {
    return 4 * cols + 4 * rows + 3 * ((threads + 31) / 32);
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
    s.std_row = p + 2 * rows;
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
template <class V>
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
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s.std_col[c] = weighted_std(t, rows, c, s.inv_row).v;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) s.std_row[r] = weighted_std(tt, cols, r, s.inv_col).v;
    f32 best = block_spread(s.std_col, cols, p.floor, s.red) + block_spread(s.std_row, rows, p.floor, s.red);
    bool identity = true;
    for (int it = 0; it < p.iterations; ++it) {
        // columns: std_col holds the column stds of the current iterate
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            update_log_scale(s.log_col, s.inv_col, c, f32(s.std_col[c]), p.std_min, p.std_max, p.log_min, p.log_max);
        __syncthreads();
        // rows: std over columns of cur[r, :] = inv_row[r] * std of T[r, :] * inv_col
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            const f32 base = weighted_std(tt, cols, r, s.inv_col);
            update_log_scale(s.log_row, s.inv_row, r, f32(s.inv_row[r]) * base, p.std_min, p.std_max, p.log_min,
                             p.log_max);
            s.std_row[r] = (f32(s.inv_row[r]) * base).v;
        }
        __syncthreads();
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            s.std_col[c] = (f32(s.inv_col[c]) * weighted_std(t, rows, c, s.inv_row)).v;
        const f32 imb = block_spread(s.std_col, cols, p.floor, s.red) + block_spread(s.std_row, rows, p.floor, s.red);
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
