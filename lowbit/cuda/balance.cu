// lowbit/cuda/balance.cu -- KVarN dual-axis variance normalization of a batch of tiles; twin of
// lowbit/cpu/balance.py (balance_tiles).  One tile per thread block (grid-stride over tiles);
// the algorithm is balance.cuh's balance_tile.
//
//   lowbit_balance_tiles_*         the tile held in shared memory as float32 (pitch R x P, P odd)
//   lowbit_balance_tiles_global_*  tiles too large for shared memory, read from global memory
//
// Suffixes name the storage of `tiles` and `balanced` (f16, bf16 = bfloat16 bits, f32); scales
// and imbalance are float32.  Dynamic shared memory: see lowbit/cuda/balance.py (_smem_floats).

#include "balance.cuh"

__host__ __device__ constexpr int tile_pitch(int cols) { return (cols % 2) ? cols : cols + 1; }

// Row of element idx of a row-major tile with `cols` columns (`shift` = log2(cols), or -1).
__device__ __forceinline__ int row_of(int idx, int cols, int shift) { return shift >= 0 ? idx >> shift : idx / cols; }
__device__ __forceinline__ int log2_or_minus1(int d) { return (d & (d - 1)) == 0 ? __ffs(d) - 1 : -1; }

// balance_tile on one tile view, then dst = tile / col_scale / row_scale (row-major, coalesced,
// every thread of the block over the flattened tile).
// (NR, NC > 0: the tile is NR x NC, balance_tile's fixed-length sweeps.)
template <int NR = 0, int NC = 0, class V, typename T>
__device__ __forceinline__ f32 balance_and_divide(const V& view, int rows, int cols, const BalanceParams& p,
                                                  const BalanceScratch& s, float* cs, float* rs, T* dst) {
    const f32 imb = balance_tile<NR, NC>(view, rows, cols, p, s, cs, rs);
    const int shift = log2_or_minus1(cols);
    for (int idx = threadIdx.x; idx < rows * cols; idx += blockDim.x) {
        const int r = row_of(idx, cols, shift), c = idx - r * cols;
        narrow(divide_scales(view, r, c, cs, rs), dst + idx);
    }
    return imb;
}

template <typename T, bool ON_CHIP>
__device__ __forceinline__ void balance_tiles_impl(const T* tiles, long long n_tiles, int rows, int cols,
                                                   int iterations, float std_min, float std_max, float log_min,
                                                   float log_max, float imbalance_floor, T* balanced,
                                                   float* col_scale, float* row_scale, float* imbalance) {
    extern __shared__ __align__(16) float smem[];
    const int pitch = tile_pitch(cols);
    float* tile_s = smem;
    float* scales = smem + (ON_CHIP ? rows * pitch : 0);  // col_scale [C], row_scale [R]
    float* cs = scales;
    float* rs = scales + cols;
    const BalanceScratch s = balance_scratch(rs + rows, rows, cols);
    const BalanceParams p{iterations, f32(std_min), f32(std_max), f32(log_min), f32(log_max), f32(imbalance_floor)};
    const long long size = (long long)rows * cols;
    for (long long b = blockIdx.x; b < n_tiles; b += gridDim.x) {
        const T* src = tiles + b * size;
        T* dst = balanced + b * size;
        if (ON_CHIP) {  // load_tile: coalesced along rows, widened once
            const int shift = log2_or_minus1(cols);
            for (int idx = threadIdx.x; idx < rows * cols; idx += blockDim.x) {
                const int r = row_of(idx, cols, shift), c = idx - r * cols;
                tile_s[r * pitch + c] = widen(src[idx]).v;
            }
            __syncthreads();
        }
        // 128 x 128 (KVarN's D = G = 128): compile-time sizes and pitch (balance.cuh group_std_n)
        const f32 imb = !ON_CHIP ? balance_and_divide(GlobalTile<T>{src, cols}, rows, cols, p, s, cs, rs, dst)
                        : rows == 128 && cols == 128
                            ? balance_and_divide<128, 128>(FixedTile<tile_pitch(128)>{tile_s}, rows, cols, p, s, cs, rs, dst)
                            : balance_and_divide(SharedTile{tile_s, pitch}, rows, cols, p, s, cs, rs, dst);
        for (int c = threadIdx.x; c < cols; c += blockDim.x) col_scale[b * cols + c] = cs[c];
        for (int r = threadIdx.x; r < rows; r += blockDim.x) row_scale[b * rows + r] = rs[r];
        if (threadIdx.x == 0) imbalance[b] = imb.v;
        __syncthreads();  // the next tile overwrites shared memory
    }
}

// At most 256 threads (lowbit.cuda.balance.threads_for); at most 80 registers, so that three blocks
// share a multiprocessor as their shared memory does for 128 x 128 tiles (ptxas: no spills).
#define LOWBIT_BALANCE_TILES(NAME, T, ON_CHIP)                                                           \
    extern "C" __global__ void __launch_bounds__(256, 3)                                                   \
        NAME(const T* tiles, long long n_tiles, int rows, int cols, int iterations, float std_min,          \
             float std_max, float log_min, float log_max, float imbalance_floor, T* balanced, float* col_scale, \
             float* row_scale, float* imbalance) {                                                         \
        balance_tiles_impl<T, ON_CHIP>(tiles, n_tiles, rows, cols, iterations, std_min, std_max, log_min,   \
                                       log_max, imbalance_floor, balanced, col_scale, row_scale, imbalance); \
    }

LOWBIT_BALANCE_TILES(lowbit_balance_tiles_f16, __half, true)
LOWBIT_BALANCE_TILES(lowbit_balance_tiles_bf16, u16, true)
LOWBIT_BALANCE_TILES(lowbit_balance_tiles_f32, float, true)
LOWBIT_BALANCE_TILES(lowbit_balance_tiles_global_f16, __half, false)
LOWBIT_BALANCE_TILES(lowbit_balance_tiles_global_bf16, u16, false)
LOWBIT_BALANCE_TILES(lowbit_balance_tiles_global_f32, float, false)
