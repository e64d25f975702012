// lowbit/cuda/rtn_seg.cu -- rtn's fused single pass for 16-bit data (float16, bfloat16),
// 128 elements per lane, built from the lane pieces (rtn_lanes.cuh); twin of
// lowbit/cpu/rtn.py rtn_quantize_groups.  One module per bit width (-DLOWBIT_LANE_BITS=b).
#include "rtn.cuh"
#include "rtn_lanes.cuh"

// ---- segment kernels: 16-bit data, 128 consecutive elements per lane ----------------------
// Each lane owns a segment of four items, so that a group of 128 elements has its parameters
// computed once (by one lane) rather than on each of four lanes: the parameters cost about as
// many instructions as the codes of 32 elements.  Groups of 32 or 64 elements are 4 or 2 groups
// of a segment; larger groups span G / 128 neighbouring lanes (xor shuffles).  A warp's tile
// of 32 segments (8 KiB) travels by cp.async into shared memory with coalesced 512-byte
// copies, the next tile already in flight (SEG_STAGES - 1 tiles ahead); each lane's row of 16
// vectors is padded to 17, so that neither the copies nor the lanes' 16-byte shared loads
// conflict on banks.
#ifndef SEG_WARPS
#define SEG_WARPS 1
#endif
#ifndef SEG_STAGES
#define SEG_STAGES 2
#endif
#ifndef SEG_MIN_BLOCKS
#define SEG_MIN_BLOCKS 12
#endif
// Near-ties of groups with fast parameters: 1 = each lane redoes its own near elements (a mask
// from fast_loop, one bit per element, at one more instruction per element), 0 = the
// warp redoes each item holding one, one element per lane.  bfloat16 data have exact ties about
// ten times as often as float16 (8-bit significands), so the mask pays for itself there only.
#ifndef SEG_NEAR_MASK_F16
#define SEG_NEAR_MASK_F16 0
#endif
#ifndef SEG_NEAR_MASK_BF16
#define SEG_NEAR_MASK_BF16 1
#endif
constexpr int SEG_THREADS = 32 * SEG_WARPS;
__device__ constexpr bool seg_near_mask(const __half*) { return SEG_NEAR_MASK_F16 != 0; }
__device__ constexpr bool seg_near_mask(const u16*) { return SEG_NEAR_MASK_BF16 != 0; }
constexpr int SEG_PITCH = 17;  // 16-byte units per lane row in a tile buffer (16 + 1 pad)

__device__ __forceinline__ void cp_async16(u32 smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async16_zfill(u32 smem, const void* gmem, bool valid) {
    // src-size 0 reads nothing and fills with zeros (vectors past the end)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// 16-byte unit of vector v (0..15) of lane o's segment within its warp's tile buffer.  Rows of
// 17 units: eight lanes reading their vector v hit eight different bank groups, and the
// addresses are a lane base plus a constant.
__device__ __forceinline__ int seg_unit(int o, int v) { return o * SEG_PITCH + v; }

// Word i of a warp's staged codes, its 16-byte units xor-swizzled: lanes writing their items'
// words, and the coalesced read-out, hit distinct banks (up to 4-way for the writes).
__device__ __forceinline__ int obuf_index(int i) {
    const int u = i >> 2;
    return ((u ^ ((u >> 3) & 7)) << 2) | (i & 3);
}

template <typename T>
__device__ __forceinline__ void seg_item(const uint4* buf, int lane, int it, Item<T>& d) {
#pragma unroll
    for (int i = 0; i < 4; ++i) d.q[i] = buf[seg_unit(lane, it * 4 + i)];
}

template <typename T, int BITS>
__device__ void rtn_quantize_seg_impl(const T* x, long long n_items, int lpg, int symmetric, int fmt, int mode,
                                      u64 seed, int rbits, u8* packed, float* scale, float* offset,
                                      int* status) {
    static_assert(sizeof(T) == 2, "segment kernels take 16-bit data");
    __shared__ uint4 ring[SEG_STAGES][SEG_WARPS][32 * SEG_PITCH];
    __shared__ __align__(16) u32 obuf[SEG_WARPS][128 * BITS];  // a tile's codes
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const long long n_tiles = (n_items + 127) / 128;
    const long long tstride = (long long)gridDim.x * SEG_WARPS;
    const u32 buf0 = (u32)__cvta_generic_to_shared(&ring[0][w][0]);
    constexpr u32 STAGE_BYTES = SEG_WARPS * 32 * SEG_PITCH * 16;
    // Copy vector i * 32 + lane of the tile (512 contiguous bytes per i over the warp).  It
    // belongs to lane 2i + (lane >> 4) as its vector lane & 15: 34 i units past vector 0's.
    const u32 dst0 = 16 * seg_unit(lane >> 4, lane & 15);
    auto issue = [&](long long tile, int stage) {
        const u32 base = buf0 + stage * STAGE_BYTES;
        const uint4* src = reinterpret_cast<const uint4*>(x) + tile * 512 + lane;
        if ((tile + 1) * 128 <= n_items) {  // a whole tile
#pragma unroll
            for (int i = 0; i < 16; ++i) cp_async16(base + dst0 + i * 34 * 16, src + i * 32);
        } else {
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                const bool ok = tile * 128 + ((i * 32 + lane) >> 2) < n_items;
                cp_async16_zfill(base + dst0 + i * 34 * 16,
                                 ok ? src + i * 32 : reinterpret_cast<const uint4*>(x), ok);
            }
        }
        cp_async_commit();  // one group per tile, also when empty: wait counts stay uniform
    };
    long long tile = (long long)blockIdx.x * SEG_WARPS + w;
#pragma unroll
    for (int st = 0; st < SEG_STAGES - 1; ++st) issue(tile + st * tstride, st);
    const int gi = lpg < 4 ? lpg : 4;          // items per group within a segment
    const int lps = lpg > 4 ? lpg >> 2 : 1;    // lanes per group
    int stage = 0;
    for (; tile < n_tiles; tile += tstride) {  // uniform over the warp
        issue(tile + (SEG_STAGES - 1) * tstride, stage == 0 ? SEG_STAGES - 1 : stage - 1);
        cp_async_wait<SEG_STAGES - 1>();
        __syncwarp();  // every lane's copies of this tile have landed
        const uint4* buf = &ring[stage][w][0];
        const long long item0 = tile * 128 + lane * 4;
        float mn[4], mx[4];
#pragma unroll
        for (int it = 0; it < 4; ++it) {
            Item<T> d;
            seg_item(buf, lane, it, d);
            item_minmax(d, mn[it], mx[it]);
        }
        if (gi >= 2) {
            mn[0] = mn[1] = min_nan(mn[0], mn[1]);
            mx[0] = mx[1] = max_nan(mx[0], mx[1]);
            mn[2] = mn[3] = min_nan(mn[2], mn[3]);
            mx[2] = mx[3] = max_nan(mx[2], mx[3]);
        }
        if (gi == 4) {
            mn[0] = min_nan(mn[0], mn[2]);
            mx[0] = max_nan(mx[0], mx[2]);
            for (int o = 1; o < lps; o <<= 1) {
                mn[0] = min_nan(mn[0], __shfl_xor_sync(0xffffffffu, mn[0], o));
                mx[0] = max_nan(mx[0], __shfl_xor_sync(0xffffffffu, mx[0], o));
            }
        }
        u32* out = &obuf[w][0];
        for (int g0 = 0; g0 < 4; g0 += gi) {  // the segment's groups (or its part of one); uniform
            const float gmn = g0 == 0 ? mn[0] : (g0 == 1 ? mn[1] : (g0 == 2 ? mn[2] : mn[3]));
            const float gmx = g0 == 0 ? mx[0] : (g0 == 1 ? mx[1] : (g0 == 2 ? mx[2] : mx[3]));
            const bool valid = item0 + g0 < n_items;  // groups are whole
            const LaneParams p = lane_params<BITS>(gmn, gmx, symmetric, fmt, mode);
            if (valid && (lane & (lps - 1)) == 0) store_params((item0 + g0) / lpg, p, scale, offset, status);
            for (int it = g0; it < g0 + gi; ++it) {
                Item<T> d;
                seg_item(buf, lane, it, d);
                u32 words[BITS];
                bool near;
                if (seg_near_mask((const T*)nullptr) && p.fast) {
                    // each lane fixes its own near elements (their values from the tile buffer)
                    u32 m = fast_loop<T, BITS, true>(d, p, words);
                    for (m = valid ? m : 0u; m; m &= m - 1) {
                        const int j = __ffs(m) - 1;
                        const T v = reinterpret_cast<const T*>(&buf[seg_unit(lane, it * 4 + (j >> 3))])[j & 7];
                        // tie_code directly: exact_code's fast-path test again is measurably slower
                        const float xf = __uint_as_float(f32_bits(v));
                        const float y = __fmaf_rn(xf, p.inv32, p.c32);
                        const float r = __fsub_rn(__fadd_rn(y, 12582912.0f), 12582912.0f);
                        set_code<BITS>(words, j, tie_code<BITS>(xf, y, r, p, symmetric, mode, seed,
                                                                (tile * 128 + lane * 4 + it) * 32 + j, rbits));
                    }
                    near = false;
                } else {
                    near = fast_codes<T, BITS>(d, p, words) && valid;
                }
                // Items with a near-tie are redone by the whole warp, one element per lane.
                for (u32 todo = __ballot_sync(0xffffffffu, near); todo; todo &= todo - 1) {
                    const int src = __ffs(todo) - 1;
                    LaneParams q;
                    q.s = __shfl_sync(0xffffffffu, p.s, src);
                    q.off = __shfl_sync(0xffffffffu, p.off, src);
                    q.inv32 = __shfl_sync(0xffffffffu, p.inv32, src);
                    q.c32 = __shfl_sync(0xffffffffu, p.c32, src);
                    q.lim = __shfl_sync(0xffffffffu, p.lim, src);
                    q.fast = __shfl_sync(0xffffffffu, (int)p.fast, src) != 0;
                    q.bad = q.overflow = false;
                    const T v = reinterpret_cast<const T*>(&buf[seg_unit(src, it * 4 + (lane >> 3))])[lane & 7];
                    const long long sitem = tile * 128 + src * 4 + it;
                    const u32 c = exact_code<BITS>(__uint_as_float(f32_bits(v)), q, symmetric, mode, seed,
                                                   sitem * 32 + lane, rbits);
                    const int bit = lane * BITS;
#pragma unroll
                    for (int k = 0; k < BITS; ++k) {  // word k of the item: its lanes' codes
                        u32 part = (bit >> 5) == k ? c << (bit & 31) : 0u;
                        if ((bit & 31) + BITS > 32 && (bit >> 5) + 1 == k) part = c >> (32 - (bit & 31));
                        const u32 wk = __reduce_or_sync(0xffffffffu, part);
                        if (lane == src) words[k] = wk;
                    }
                }
#pragma unroll
                for (int k = 0; k < BITS; ++k) out[obuf_index((lane * 4 + it) * BITS + k)] = words[k];
            }
        }
        __syncwarp();
        // the tile's codes: 512 * BITS contiguous bytes, written with coalesced 16-byte stores
        {
            const long long first = tile * 128 * BITS;  // in 32-bit words
            const long long end = n_items * BITS;
            uint4* dst = reinterpret_cast<uint4*>(reinterpret_cast<u32*>(packed) + first);
#pragma unroll
            for (int i = 0; i < BITS; ++i) {
                const int v = i * 32 + lane;  // 16-byte vector of the tile's codes
                const uint4 q = reinterpret_cast<const uint4*>(out)[obuf_index(v * 4) >> 2];
                if (first + v * 4 + 4 <= end) {
                    dst[v] = q;
                } else if (first + v * 4 < end) {  // the array's last words
                    u32* d32 = reinterpret_cast<u32*>(dst + v);
                    d32[0] = q.x;
                    if (first + v * 4 + 1 < end) d32[1] = q.y;
                    if (first + v * 4 + 2 < end) d32[2] = q.z;
                }
            }
        }
        __syncwarp();  // all lanes are done with this stage before it is refilled
        stage = stage == SEG_STAGES - 1 ? 0 : stage + 1;
    }
    cp_async_wait<0>();
}

#ifdef LOWBIT_LANE_BITS
LOWBIT_QUANT_X(seg, SEG_THREADS, SEG_MIN_BLOCKS, f16, __half, LOWBIT_LANE_BITS)
LOWBIT_QUANT_X(seg, SEG_THREADS, SEG_MIN_BLOCKS, bf16, u16, LOWBIT_LANE_BITS)
#endif
