// lowbit/cuda/rtn_lanes.cu -- rtn's fused single pass for float32 data, 32 elements per lane
// (lane pieces in rtn_lanes.cuh); twin of lowbit/cpu/rtn.py rtn_quantize_groups.
// Compiled as a separate module per bit width (-DLOWBIT_LANE_BITS=b, lowbit/cuda/rtn.py), so
// that a first call compiles only what it uses.
#include "rtn.cuh"
#include "rtn_lanes.cuh"

// Single pass (statistics, scale, codes, packing) over n_items items, grid-stride: while a
// warp works on one item it already loads its next one (two buffers, so memory stays busy).
// The 32 items of a warp are consecutive, so a group's lanes are in one warp.
template <typename T, int BITS>
__device__ void rtn_quantize_lanes_impl(const T* x, long long n_items, int lpg, int symmetric, int fmt,
                                        int mode, u64 seed, int rbits, u8* packed, float* scale,
                                        float* offset, int* status) {
    const long long stride = (long long)gridDim.x * LANE_THREADS;
    const long long lane = threadIdx.x & 31;
    long long item = (long long)blockIdx.x * LANE_THREADS + threadIdx.x;
    Item<T> a, b;
    if (item < n_items) load_item(x, item, a);
    while (item - lane < n_items) {  // uniform over the warp
        if (item + stride < n_items) load_item(x, item + stride, b);
        quantize_item<T, BITS>(a, item, item < n_items, lpg, symmetric, fmt, mode, seed, rbits, packed,
                               scale, offset, status);
        item += stride;
        if (item - lane >= n_items) break;
        if (item + stride < n_items) load_item(x, item + stride, a);
        quantize_item<T, BITS>(b, item, item < n_items, lpg, symmetric, fmt, mode, seed, rbits, packed,
                               scale, offset, status);
        item += stride;
    }
}

#ifdef LOWBIT_LANE_BITS
LOWBIT_QUANT_X(lanes, LANE_THREADS, LANE_MIN_BLOCKS, f32, float, LOWBIT_LANE_BITS)
#endif
