// lowbit/cuda/diffusion.cu -- error diffusion; twins of lowbit/cpu/diffusion.py (same float64
// operations in the same order, so the results are bit-identical).  Values are in grid units;
// the quantizer is rint followed by a clip to [lo, hi]; the carried error is clamped to
// [-1/2, 1/2].

// Python's (and Numba's) max(a, b) / min(a, b): b if b > a (b < a) else a.  Not fmax / fmin,
// which may order -0.0 below +0.0: a clip to lo = 0 must keep rint's -0.0 as the CPU does.
__device__ __forceinline__ double py_max(double a, double b) { return b > a ? b : a; }
__device__ __forceinline__ double py_min(double a, double b) { return b < a ? b : a; }
__device__ __forceinline__ double quantize_clip(double w, double lo, double hi) { return py_min(py_max(rint(w), lo), hi); }
__device__ __forceinline__ double clamp_carry(double e) { return py_min(py_max(e, -0.5), 0.5); }

// ---- sigma-delta along rows: one thread per row, a warp per 32 rows --------------------------
// Rows are independent, so each lane runs its row's recursion in registers.  A warp moves its
// 32 rows through shared memory in tiles of 32 columns, loading and storing a tile row by row
// (coalesced), the next tile's loads in flight while the current one is processed.
#define DIFFUSE_WARPS 4
constexpr int DIFFUSE_TILE = 32;

template <typename T>
__device__ __forceinline__ void load_tile_regs(const T* x, long long rows, long long n, long long row0,
                                               long long c, T* reg) {
#pragma unroll
    for (int k = 0; k < 32; ++k) {
        const long long r = row0 + k;
        if (r < rows && c < n) reg[k] = x[r * n + c];
    }
}

template <typename T>
__device__ void diffuse_rows_impl(const T* x, long long rows, long long n, int order, double lo,
                                  double hi, T* out) {
    __shared__ double tile[DIFFUSE_WARPS][32][DIFFUSE_TILE + 1];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    double (*t)[DIFFUSE_TILE + 1] = tile[warp];
    const long long step = (long long)gridDim.x * DIFFUSE_WARPS * 32;
    for (long long row0 = ((long long)blockIdx.x * DIFFUSE_WARPS + warp) * 32; row0 < rows; row0 += step) {
        double e1 = 0.0, e2 = 0.0;
        T reg[32];
        load_tile_regs(x, rows, n, row0, (long long)lane, reg);
        for (long long c0 = 0; c0 < n; c0 += DIFFUSE_TILE) {
#pragma unroll
            for (int k = 0; k < 32; ++k) t[k][lane] = to_f64(reg[k]);  // row k, column c0 + lane
            __syncwarp();
            load_tile_regs(x, rows, n, row0, c0 + DIFFUSE_TILE + lane, reg);  // next tile in flight
            const int cols = (int)min((long long)DIFFUSE_TILE, n - c0);
            for (int c = 0; c < cols; ++c) {
                const double xi = t[lane][c];
                const double w = order == 1 ? xi + e1 : xi + 2.0 * e1 - e2;
                const double y = quantize_clip(w, lo, hi);
                e2 = e1;
                e1 = clamp_carry(w - y);
                t[lane][c] = y;
            }
            __syncwarp();
            const long long col = c0 + lane;
#pragma unroll
            for (int k = 0; k < 32; ++k) {
                const long long r = row0 + k;
                if (r < rows && col < n) from_f64(t[k][lane], out + r * n + col);
            }
            __syncwarp();
        }
    }
}

// 16-bit data in wide tiles: each row's tile is 256 contiguous bytes (128 columns), moved with
// 16-byte accesses (two rows per warp instruction), so that the 32 rows a warp reads at once
// are read in long runs; shared memory holds the tile as 32-bit words (two elements each, rows
// padded by one word: no bank conflicts), and each lane updates its row's words in place.
// Taken when n is a multiple of 128 and both arrays are 16-byte aligned (the wrapper checks).
constexpr int WIDE_TILE = 128;
constexpr int WIDE_WORDS = WIDE_TILE / 2 + 1;
__device__ __forceinline__ double bits16_f64(u16 b, const __half*) { return to_f64(__ushort_as_half(b)); }
__device__ __forceinline__ double bits16_f64(u16 b, const u16*) { return to_f64(b); }
__device__ __forceinline__ u32 f64_bits16(double d, const __half*) {
    __half h;
    from_f64(d, &h);
    return (u32)__half_as_ushort(h);
}
__device__ __forceinline__ u32 f64_bits16(double d, const u16*) {
    u16 b;
    from_f64(d, &b);
    return (u32)b;
}

template <typename T>
__device__ __forceinline__ void load_wide(const T* x, long long rows, long long n, long long row0, long long c0,
                                          int lane, uint4* reg) {
    if (c0 >= n) return;
#pragma unroll
    for (int k = 0; k < 16; ++k) {
        const long long r = row0 + 2 * k + (lane >> 4);
        if (r < rows) reg[k] = *reinterpret_cast<const uint4*>(x + r * n + c0 + (lane & 15) * 8);
    }
}

template <typename T>
__device__ void diffuse_rows_wide_impl(const T* x, long long rows, long long n, int order, double lo,
                                       double hi, T* out) {
    __shared__ u32 tile[DIFFUSE_WARPS][32 * WIDE_WORDS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    u32* t = tile[warp];
    u32* mine = t + lane * WIDE_WORDS;
    const long long step = (long long)gridDim.x * DIFFUSE_WARPS * 32;
    for (long long row0 = ((long long)blockIdx.x * DIFFUSE_WARPS + warp) * 32; row0 < rows; row0 += step) {
        double e1 = 0.0, e2 = 0.0;
        uint4 reg[16];
        load_wide(x, rows, n, row0, 0, lane, reg);
        for (long long c0 = 0; c0 < n; c0 += WIDE_TILE) {
#pragma unroll
            for (int k = 0; k < 16; ++k) {
                u32* dst = t + (2 * k + (lane >> 4)) * WIDE_WORDS + (lane & 15) * 4;
                dst[0] = reg[k].x; dst[1] = reg[k].y; dst[2] = reg[k].z; dst[3] = reg[k].w;
            }
            __syncwarp();
            load_wide(x, rows, n, row0, c0 + WIDE_TILE, lane, reg);  // the next tile in flight
#pragma unroll 4
            for (int w = 0; w < WIDE_TILE / 2; ++w) {
                const u32 pair = mine[w];
                u32 res = 0;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const double xi = bits16_f64((u16)(pair >> (16 * h)), x);
                    const double v = order == 1 ? xi + e1 : xi + 2.0 * e1 - e2;
                    const double y = quantize_clip(v, lo, hi);
                    e2 = e1;
                    e1 = clamp_carry(v - y);
                    res |= f64_bits16(y, x) << (16 * h);
                }
                mine[w] = res;
            }
            __syncwarp();
#pragma unroll
            for (int k = 0; k < 16; ++k) {
                const long long r = row0 + 2 * k + (lane >> 4);
                const u32* src = t + (2 * k + (lane >> 4)) * WIDE_WORDS + (lane & 15) * 4;
                if (r < rows)
                    *reinterpret_cast<uint4*>(out + r * n + c0 + (lane & 15) * 8) = make_uint4(src[0], src[1], src[2], src[3]);
            }
            __syncwarp();
        }
    }
}

// ---- 2-D error diffusion: one thread per image ----------------------------------------------
// The CPU's visiting order and accumulation order exactly (pixels row by row, serpentine rows
// mirrored, each error added to its targets in tap order), so every sum is the same; `acc` is
// this image's ring buffer of (depth + 1) pending error rows (zeroed by the wrapper).
template <typename T>
__device__ void diffuse_2d_impl(const T* x, long long batch, long long h, long long w, const long long* dy,
                                const long long* dx, const double* weight, int taps, int serpentine,
                                double lo, double hi, T* out, double* acc_all) {
    long long depth = 0;
    for (int k = 0; k < taps; ++k) depth = max(depth, dy[k]);
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < batch;
         b += (long long)gridDim.x * blockDim.x) {
        double* acc = acc_all + b * (depth + 1) * w;
        const T* img = x + b * h * w;
        T* res = out + b * h * w;
        for (long long i = 0; i < h; ++i) {
            const long long row = i % (depth + 1);
            const bool reverse = serpentine && (i % 2 == 1);
            for (long long jj = 0; jj < w; ++jj) {
                const long long j = reverse ? w - 1 - jj : jj;
                const double v = to_f64(img[i * w + j]) + acc[row * w + j];
                acc[row * w + j] = 0.0;
                const double y = quantize_clip(v, lo, hi);
                const double e = clamp_carry(v - y);
                from_f64(y, res + i * w + j);
                for (int k = 0; k < taps; ++k) {
                    const long long ti = i + dy[k];
                    const long long tj = reverse ? j - dx[k] : j + dx[k];
                    if (ti < h && 0 <= tj && tj < w) {
                        double* a = acc + (ti % (depth + 1)) * w + tj;
                        *a = *a + weight[k] * e;
                    }
                }
            }
        }
    }
}

#define LOWBIT_DIFFUSE_KERNELS(SUFFIX, T)                                                          \
    extern "C" __global__ void __launch_bounds__(DIFFUSE_WARPS * 32) lowbit_diffuse_rows_##SUFFIX(  \
        const T* x, long long rows, long long n, int order, double lo, double hi, T* out) {        \
        diffuse_rows_impl<T>(x, rows, n, order, lo, hi, out);                                      \
    }                                                                                              \
    extern "C" __global__ void lowbit_diffuse_2d_##SUFFIX(                                         \
        const T* x, long long batch, long long h, long long w, const long long* dy,                \
        const long long* dx, const double* weight, int taps, int serpentine, double lo, double hi, \
        T* out, double* acc) {                                                                     \
        diffuse_2d_impl<T>(x, batch, h, w, dy, dx, weight, taps, serpentine, lo, hi, out, acc);    \
    }

#define LOWBIT_DIFFUSE_WIDE(SUFFIX, T)                                                             \
    extern "C" __global__ void __launch_bounds__(DIFFUSE_WARPS * 32)                               \
        lowbit_diffuse_rows_wide_##SUFFIX(const T* x, long long rows, long long n, int order,      \
                                          double lo, double hi, T* out) {                          \
        diffuse_rows_wide_impl<T>(x, rows, n, order, lo, hi, out);                                 \
    }

LOWBIT_DIFFUSE_WIDE(f16, __half)
LOWBIT_DIFFUSE_WIDE(bf16, u16)
LOWBIT_DIFFUSE_KERNELS(f16, __half)
LOWBIT_DIFFUSE_KERNELS(bf16, u16)
LOWBIT_DIFFUSE_KERNELS(f32, float)
LOWBIT_DIFFUSE_KERNELS(f64, double)
