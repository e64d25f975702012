// lowbit/cuda/hadamard.cu -- fast Walsh-Hadamard transform; twins of lowbit/cpu/hadamard.py
// (fwht, hadamard_signs).  Stages in hadamard.cuh.  Data is flat and C-contiguous, rows of
// `row_len` = M 2^k elements; a pass transforms consecutive segments of M 2^seg_log elements
// (core factor + the strides below the segment length), a column pass the next strides.
//
//   lowbit_fwht_warp_*    segments within a warp: each thread E consecutive elements, groups of
//                         VEC tiles per lane, warps looping over groups; the hot path
//                         (k <= log2(E/M) + 5)
//   lowbit_fwht_block_*   one segment per block: the strides beyond a warp through shared memory
//   lowbit_fwht_columns_* strides of rows longer than a block holds: F elements at stride S
//
// Suffixes name input and output storage (f16, bf16 = bfloat16 bits, f32, f64); a first pass of
// a 16-bit row that needs more passes writes float32, exact, for the next one.  The last pass
// multiplies by `scale`, then by the output signs.

// Overridden by the Python wrapper:
#ifndef LOWBIT_CORE  // M: order of the core factor (1, 12 or 20)
#define LOWBIT_CORE 1
#endif
#ifndef LOWBIT_STAGE  // 0: the warp and block kernels; 1: the column kernels
#define LOWBIT_STAGE 0
#endif
#ifndef LOWBIT_THREAD_BYTES_16  // bytes per thread and tile of 16-bit data (M = 1)
#define LOWBIT_THREAD_BYTES_16 32
#endif
#ifndef LOWBIT_THREAD_BYTES_32  // ... of float32 data
#define LOWBIT_THREAD_BYTES_32 32
#endif
#ifndef LOWBIT_THREAD_BYTES_64  // ... of float64 data
#define LOWBIT_THREAD_BYTES_64 32
#endif
#ifndef LOWBIT_BYTES_IN_FLIGHT  // warp kernel: bytes of input per thread and group
#define LOWBIT_BYTES_IN_FLIGHT 64
#endif
#ifndef LOWBIT_WARP_MIN_BLOCKS  // warp kernel: blocks of LOWBIT_WARP_THREADS resident per multiprocessor
#define LOWBIT_WARP_MIN_BLOCKS 3   // (__launch_bounds__: at most 80 registers for 3 x 256 threads)
#endif
#ifndef LOWBIT_WARP_PREFETCH  // warp kernel: 1 loads a warp's next group before this group's butterflies
#define LOWBIT_WARP_PREFETCH 1
#endif
#ifndef LOWBIT_WARP_EXCHANGE  // warp kernel, 16 elements per lane and 8 lanes per segment (n = 128 of
#define LOWBIT_WARP_EXCHANGE 0   // 16-bit data): 1 takes the lane levels through shared memory
#endif
#define LOWBIT_WARP_THREADS 256     // threads per block of the warp kernel (hadamard.py THREADS)
#ifndef LOWBIT_COLUMN_LOG  // column kernels: log2 of the factor F
#define LOWBIT_COLUMN_LOG 1
#endif

#include "hadamard.cuh"

// Elements per thread and tile, and log2 of the Sylvester levels they cover.
template <typename T>
__host__ __device__ constexpr int thread_elems() {
    return LOWBIT_CORE > 1 ? LOWBIT_CORE
           : sizeof(T) == 2 ? LOWBIT_THREAD_BYTES_16 / 2
           : sizeof(T) == 4 ? LOWBIT_THREAD_BYTES_32 / 4
                            : LOWBIT_THREAD_BYTES_64 / 8;
}
// Tiles per lane and group of the warp kernel: LOWBIT_BYTES_IN_FLIGHT bytes of input (at least one).
template <typename T>
__host__ __device__ constexpr int warp_tiles() {
    return LOWBIT_BYTES_IN_FLIGHT / (thread_elems<T>() * (int)sizeof(T)) > 0
               ? LOWBIT_BYTES_IN_FLIGHT / (thread_elems<T>() * (int)sizeof(T)) : 1;
}
__host__ __device__ constexpr int ilog2(int v) { return v <= 1 ? 0 : 1 + ilog2(v / 2); }
// Levels per shared-memory round: log2 of the largest power of two dividing E.
__host__ __device__ constexpr int round_levels(int e) { return (e & 1) ? 0 : 1 + round_levels(e / 2); }

// Compute type of data of storage type T, and the storage type of its core, signs and scale.
template <typename T>
using compute_t = typename compute_of<T>::type;
template <typename T>
using scalar_t = typename storage_of<compute_t<T>>::type;

// Position of flat element i within its row (a mask for power-of-two rows).
__device__ __forceinline__ int row_pos(long long i, int row_len) {
    return (row_len & (row_len - 1)) == 0 ? (int)(i & (row_len - 1)) : (int)(i % row_len);
}

// v[i] = signs[j] * v[i] (exact, as the CPU's multiply) for the tile of E elements starting at
// flat element `start` (a multiple of E): E consecutive signs by vector loads when the tile lies
// within one row, else position by position (rows shorter than a tile).
template <typename C, int E>
__device__ __forceinline__ void apply_signs(const typename storage_of<C>::type* signs, long long start, int row_len,
                                            C (&v)[E]) {
    typedef typename storage_of<C>::type S;
    int j = row_pos(start, row_len);
    if (row_len >= E) {
        S s[E];
        load_vector<S, E, false>(signs + j, s);
#pragma unroll
        for (int i = 0; i < E; ++i) v[i] = widen(s[i]) * v[i];
        return;
    }
#pragma unroll
    for (int i = 0; i < E; ++i) {
        v[i] = widen(signs[j]) * v[i];
        j = j + 1 == row_len ? 0 : j + 1;
    }
}

#if LOWBIT_STAGE == 0
// One round of the warp kernel on group g (VEC tiles of E elements per lane, tile u of lane l at
// ((g VEC + u) 32 + l) E), any alignment, the data's last group included.
template <typename Tin, typename Tout, int VEC>
__device__ __forceinline__ void fwht_warp_group(const Tin* x, Tout* out, long long n_elems, long long g,
                                                int levels_thread, int levels_lane, int row_len,
                                                const compute_t<Tin>* core_s, const scalar_t<Tin>* signs_in,
                                                const scalar_t<Tin>* signs_out, compute_t<Tin> scale,
                                                int final_pass) {
    typedef compute_t<Tin> C;
    constexpr int M = LOWBIT_CORE;
    constexpr int E = thread_elems<Tin>();
    constexpr int LOG = ilog2(E / M);
    const int lane = threadIdx.x & 31;
    C v[VEC][E];
#pragma unroll
    for (int u = 0; u < VEC; ++u) {  // load_tile
        const long long start = ((g * VEC + u) * 32 + lane) * E;
        const long long left = n_elems - start;
        if (left > 0) {
            load_tile<Tin, C, E>(x + start, v[u], left < E ? (int)left : E);
        } else {
#pragma unroll
            for (int i = 0; i < E; ++i) v[u][i] = C(0.0f);
        }
        if (signs_in != nullptr && left > 0) apply_signs<C, E>(signs_in, start, row_len, v[u]);
    }
#pragma unroll
    for (int u = 0; u < VEC; ++u) butterfly_in_thread<M, LOG, C>(v[u], core_s, levels_thread);
#pragma unroll
    for (int u = 0; u < VEC; ++u) butterfly_across_warp<C, E>(v[u], levels_lane);
#pragma unroll
    for (int u = 0; u < VEC; ++u) {  // store_tile
        const long long start = ((g * VEC + u) * 32 + lane) * E;
        const long long left = n_elems - start;
        if (left <= 0) continue;
        if (final_pass) {
#pragma unroll
            for (int i = 0; i < E; ++i) v[u][i] = scale * v[u][i];
            if (signs_out != nullptr) apply_signs<C, E>(signs_out, start, row_len, v[u]);
        }
        store_tile<Tout, C, E>(out + start, v[u], left < E ? (int)left : E);
    }
}

// Lane levels through shared memory (LOWBIT_WARP_EXCHANGE; E = 16, segments of 8 lanes = 128
// elements, 16-bit data): lane l writes its 16 float32 values at word 20 l + 16 (l >> 3) of its
// warp's buffer (XBUF words: rows padded to 20 words, segment s shifted by 16 s words, so the
// 16-byte writes, 8 lanes a phase, and the 8-byte reads, 16 lanes a phase, meet no bank
// conflict: a numpy emulation of these addresses checked both and the result); lane j of segment s then reads columns 2 j, 2 j + 1 of the segment's 8 rows t, and
// does the strides 16, 32, 64 (the rows t = lane bits) in registers, in the shuffles' order (the
// lower row keeps a + b, the upper a - b).  The last pass's scale and output signs follow, and
// the pairs are stored as 4-byte (16-bit output) or 8-byte words at seg_out + 16 t + 2 j.
constexpr int XBUF = 32 * 20 + 4 * 16;
template <int BYTES> struct word_of;  // the unsigned word of BYTES bytes
template <> struct word_of<4> { typedef unsigned type; };
template <> struct word_of<8> { typedef uint2 type; };
template <typename Tout>
__device__ __forceinline__ void lanes_by_shared(const f32 (&v)[16], float* buf, Tout* seg_out, long long seg_start,
                                                int row_len, const float* signs_out, f32 scale, int final_pass,
                                                bool reuse) {
    typedef typename word_of<2 * sizeof(Tout)>::type Word;
    const int lane = threadIdx.x & 31, s = lane >> 3, j = lane & 7;
    Word* pair_out = reinterpret_cast<Word*>(seg_out + 2 * j);  // pair t at word 8 t
    float* wr = buf + 20 * lane + 16 * s;
#pragma unroll
    for (int q = 0; q < 4; ++q)
        reinterpret_cast<float4*>(wr)[q] = make_float4(v[4 * q].v, v[4 * q + 1].v, v[4 * q + 2].v, v[4 * q + 3].v);
    __syncwarp();
    const float* rd = buf + 176 * s + 2 * j;  // row t of segment s, column 2 j: 20 (8 s + t) + 16 s + 2 j
    f32 w[8][2];
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        const float2 p = reinterpret_cast<const float2*>(rd + 20 * t)[0];
        w[t][0] = f32(p.x);
        w[t][1] = f32(p.y);
    }
    if (reuse) __syncwarp();  // every lane has read before the buffer is written again
#pragma unroll
    for (int l = 0; l < 3; ++l) {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            if (((t >> l) & 1) == 0) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const f32 a = w[t][c], b = w[t + (1 << l)][c];
                    w[t][c] = a + b;
                    w[t + (1 << l)][c] = a - b;
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        if (final_pass) {
            w[t][0] = scale * w[t][0];
            w[t][1] = scale * w[t][1];
            if (signs_out != nullptr) {
                const int k = row_pos(seg_start + 16 * t + 2 * j, row_len);  // even: k + 1 in the row
                w[t][0] = widen(signs_out[k]) * w[t][0];
                w[t][1] = widen(signs_out[k + 1]) * w[t][1];
            }
        }
        union { Tout t[2]; Word u; } b;
        narrow_tile(w[t], b.t);
        if (LOWBIT_STREAMING) __stcs(pair_out + 8 * t, b.u);  // a constant offset from one address
        else pair_out[8 * t] = b.u;
    }
}
// The wide path of the warp kernel: groups g, g + warps, ... below `full` (groups wholly within
// the data, x and out 16-byte aligned, whole tiles per segment: levels_thread = LOG), the
// LANE_LEVELS levels across lanes known at compile time (M = 1).  A group's 16-byte loads are all issued
// before its first conversion; with LOWBIT_WARP_PREFETCH those of the warp's next group are
// issued before this group's butterflies (in flight while it computes).  Tiles are transformed
// one after the other (E compute values live).  Returns the first group it did not take.
template <typename Tin, typename Tout, int LANE_LEVELS>
__device__ __forceinline__ long long fwht_warp_wide(const Tin* x, Tout* out, long long g, long long full,
                                                    long long warps, int row_len, const compute_t<Tin>* core_s,
                                                    const scalar_t<Tin>* signs_in, const scalar_t<Tin>* signs_out,
                                                    compute_t<Tin> scale, int final_pass) {
    typedef compute_t<Tin> C;
    constexpr int M = LOWBIT_CORE;
    constexpr int E = thread_elems<Tin>();
    constexpr int LOG = ilog2(E / M);
    constexpr int VEC = warp_tiles<Tin>();
    constexpr int QIN = E * (int)sizeof(Tin) / 16;  // 16-byte words per tile
    constexpr int QOUT = E * (int)sizeof(Tout) / 16;
    // the lane levels through shared memory (lanes_by_shared) where it applies
    constexpr bool EXCHANGE = LOWBIT_WARP_EXCHANGE && E == 16 && LANE_LEVELS == 3 && sizeof(C) == 4;
    __shared__ __align__(16) float xbuf[EXCHANGE ? LOWBIT_WARP_THREADS / 32 : 1][VEC][EXCHANGE ? XBUF : 4];
    const int lane = threadIdx.x & 31;
    uint4 raw[VEC][QIN];
    if (LOWBIT_WARP_PREFETCH && g < full) {
#pragma unroll
        for (int u = 0; u < VEC; ++u) load_words<QIN>(x + ((g * VEC + u) * 32 + lane) * E, raw[u]);
    }
    for (; g < full; g += warps) {
        uint4 cur[VEC][QIN];
        if (LOWBIT_WARP_PREFETCH) {
#pragma unroll
            for (int u = 0; u < VEC; ++u)
#pragma unroll
                for (int i = 0; i < QIN; ++i) cur[u][i] = raw[u][i];
            if (g + warps < full) {
#pragma unroll
                for (int u = 0; u < VEC; ++u) load_words<QIN>(x + (((g + warps) * VEC + u) * 32 + lane) * E, raw[u]);
            }
        } else {
#pragma unroll
            for (int u = 0; u < VEC; ++u) load_words<QIN>(x + ((g * VEC + u) * 32 + lane) * E, cur[u]);
        }
#pragma unroll
        for (int u = 0; u < VEC; ++u) {
            const long long start = ((g * VEC + u) * 32 + lane) * E;
            C v[E];
            {
                union { uint4 q[QIN]; Tin t[E]; } b;
#pragma unroll
                for (int i = 0; i < QIN; ++i) b.q[i] = cur[u][i];
#pragma unroll
                for (int i = 0; i < E; ++i) v[i] = widen(b.t[i]);
            }
            if (signs_in != nullptr) apply_signs<C, E>(signs_in, start, row_len, v);
            butterfly_in_thread<M, LOG, C>(v, core_s, LOG);
            if constexpr (EXCHANGE) {
                const long long seg_start = start - (long long)(lane & 7) * E;
                lanes_by_shared<Tout>(v, xbuf[threadIdx.x >> 5][u], out + seg_start, seg_start, row_len, signs_out,
                                      scale, final_pass, VEC == 1);
                continue;
            }
            butterfly_across_warp<C, E>(v, LANE_LEVELS);
            if (final_pass) {
#pragma unroll
                for (int i = 0; i < E; ++i) v[i] = scale * v[i];
                if (signs_out != nullptr) apply_signs<C, E>(signs_out, start, row_len, v);
            }
            union { uint4 q[QOUT]; Tout t[E]; } b;
            narrow_tile(v, b.t);
            store_words<QOUT>(out + start, b.q);
        }
    }
    return g;
}

// Warp w of the grid takes groups w, w + W, w + 2 W, ... (W warps in the grid: one group each
// when the grid covers the data, several when the wrapper launches only the resident blocks):
// the wide path where it applies, fwht_warp_group for the rest (the data's last group, unaligned
// data, segments shorter than a tile).
template <typename Tin, typename Tout>
__device__ __forceinline__ void fwht_warp(const Tin* x, Tout* out, long long n_elems, int seg_log, int row_len,
                                          const scalar_t<Tin>* core, const scalar_t<Tin>* signs_in,
                                          const scalar_t<Tin>* signs_out, compute_t<Tin> scale, int final_pass) {
    typedef compute_t<Tin> C;
    constexpr int M = LOWBIT_CORE;
    constexpr int E = thread_elems<Tin>();
    constexpr int LOG = ilog2(E / M);
    constexpr int VEC = warp_tiles<Tin>();
    // the wide path for the Sylvester kernels (M = 1) only: its 6 instantiations cost compile time
    constexpr bool WIDE = M == 1 && (E * sizeof(Tin)) % 16 == 0 && (E * sizeof(Tout)) % 16 == 0;
    static_assert((M << LOG) == E, "E = M 2^LOG");
    __shared__ C core_s[M * M];
    if (M > 1) {
        for (int i = threadIdx.x; i < M * M; i += blockDim.x) core_s[i] = widen(core[i]);
        __syncthreads();
    }
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const long long group = 32LL * VEC * E;  // elements per warp and group
    const long long groups = (n_elems + group - 1) / group;
    long long g = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int levels_thread = seg_log < LOG ? seg_log : LOG;
    const int levels_lane = seg_log - levels_thread;
    if constexpr (WIDE) {
      if (levels_thread == LOG && (((unsigned long long)x | (unsigned long long)out) & 15) == 0) {
        const long long full = n_elems / group;
#define LOWBIT_WIDE_CASE(L)                                                                                   \
    case L:                                                                                                   \
        g = fwht_warp_wide<Tin, Tout, L>(x, out, g, full, warps, row_len, core_s, signs_in, signs_out, scale, \
                                         final_pass);                                                         \
        break;
        switch (levels_lane) {
            LOWBIT_WIDE_CASE(0) LOWBIT_WIDE_CASE(1) LOWBIT_WIDE_CASE(2) LOWBIT_WIDE_CASE(3) LOWBIT_WIDE_CASE(4)
            LOWBIT_WIDE_CASE(5)
        }
#undef LOWBIT_WIDE_CASE
      }
    }
    for (; g < groups; g += warps)
        fwht_warp_group<Tin, Tout, VEC>(x, out, n_elems, g, levels_thread, levels_lane, row_len, core_s, signs_in,
                                        signs_out, scale, final_pass);
}

// One segment of n = M 2^seg_log elements per block, n / E threads (dynamic shared memory:
// n compute values).
template <typename Tin, typename Tout>
__device__ __forceinline__ void fwht_block(const Tin* x, Tout* out, int seg_log, int row_len, const scalar_t<Tin>* core,
                                           const scalar_t<Tin>* signs_in, const scalar_t<Tin>* signs_out,
                                           compute_t<Tin> scale, int final_pass) {
    typedef compute_t<Tin> C;
    constexpr int M = LOWBIT_CORE;
    constexpr int E = thread_elems<Tin>();
    constexpr int LOG = ilog2(E / M);
    constexpr int G = round_levels(E) < 4 ? round_levels(E) : 4;
    static_assert(G >= 1, "a shared-memory round needs an even number of elements per thread");
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    C* buf = reinterpret_cast<C*>(smem_bytes);
    __shared__ C core_s[M * M];
    if (M > 1) {
        for (int i = threadIdx.x; i < M * M; i += blockDim.x) core_s[i] = widen(core[i]);
        __syncthreads();
    }
    const int n = M << seg_log;
    const long long start = (long long)blockIdx.x * n + (long long)threadIdx.x * E;
    C v[E];
    load_tile<Tin, C, E>(x + start, v);
    if (signs_in != nullptr) apply_signs<C, E>(signs_in, start, row_len, v);
    butterfly_in_thread<M, LOG, C>(v, core_s, LOG);
    butterfly_across_warp<C, E>(v, 5);
#pragma unroll
    for (int i = 0; i < E; ++i) buf[threadIdx.x * E + i] = v[i];
    butterfly_across_block<G, C>(buf, n, 32 * E, seg_log - LOG - 5);
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = buf[threadIdx.x * E + i];
    if (final_pass) {
#pragma unroll
        for (int i = 0; i < E; ++i) v[i] = scale * v[i];
        if (signs_out != nullptr) apply_signs<C, E>(signs_out, start, row_len, v);
    }
    store_tile<Tout, C, E>(out + start, v);
}

#define LOWBIT_FWHT_ROWS(SIN, SOUT, TIN, TOUT, S)                                                            \
    extern "C" __global__ void __launch_bounds__(LOWBIT_WARP_THREADS, LOWBIT_WARP_MIN_BLOCKS)                 \
        lowbit_fwht_warp_##SIN##_##SOUT(                                                                      \
        const TIN* x, TOUT* out, long long n_elems, int seg_log, int row_len, const S* core, const S* signs_in, \
        const S* signs_out, S scale, int final_pass) {                                                        \
        fwht_warp<TIN, TOUT>(x, out, n_elems, seg_log, row_len, core, signs_in, signs_out,                    \
                             compute_of<TIN>::type(scale), final_pass);                                       \
    }                                                                                                          \
    extern "C" __global__ void lowbit_fwht_block_##SIN##_##SOUT(                                              \
        const TIN* x, TOUT* out, int seg_log, int row_len, const S* core, const S* signs_in,                  \
        const S* signs_out, S scale, int final_pass) {                                                        \
        fwht_block<TIN, TOUT>(x, out, seg_log, row_len, core, signs_in, signs_out,                            \
                              compute_of<TIN>::type(scale), final_pass);                                      \
    }

LOWBIT_FWHT_ROWS(f16, f16, __half, __half, float)
LOWBIT_FWHT_ROWS(bf16, bf16, u16, u16, float)
LOWBIT_FWHT_ROWS(f32, f32, float, float, float)
LOWBIT_FWHT_ROWS(f64, f64, double, double, double)
LOWBIT_FWHT_ROWS(f16, f32, __half, float, float)
LOWBIT_FWHT_ROWS(bf16, f32, u16, float, float)
#endif  // LOWBIT_STAGE == 0

#if LOWBIT_STAGE == 1
// Strides S, 2S, ..., S F/2 of flat data: thread t owns the F elements base + f S, with
// base = (t / S) F S + t % S (consecutive threads, consecutive addresses).
template <typename Tin, typename Tout>
__device__ __forceinline__ void fwht_columns(const Tin* x, Tout* out, long long n_elems, long long stride,
                                             int row_len,
                                             const scalar_t<Tin>* signs_out, compute_t<Tin> scale, int final_pass) {
    typedef compute_t<Tin> C;
    constexpr int LOGF = LOWBIT_COLUMN_LOG;
    constexpr int F = 1 << LOGF;
    static_assert(LOGF >= 1 && LOGF <= 6, "column factor 2..64");
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_elems / F) return;
    const long long base = (t / stride) * stride * F + t % stride;
    C v[F];
#pragma unroll
    for (int f = 0; f < F; ++f) v[f] = widen(x[base + f * stride]);
#pragma unroll
    for (int l = 0; l < LOGF; ++l) {
#pragma unroll
        for (int f = 0; f < F; ++f) {
            if (((f >> l) & 1) == 0) {
                const C a = v[f], b = v[f + (1 << l)];
                v[f] = a + b;
                v[f + (1 << l)] = a - b;
            }
        }
    }
#pragma unroll
    for (int f = 0; f < F; ++f) {
        if (final_pass) {
            v[f] = scale * v[f];
            if (signs_out != nullptr) v[f] = widen(signs_out[row_pos(base + f * stride, row_len)]) * v[f];
        }
        narrow(v[f], out + base + f * stride);
    }
}

#define LOWBIT_FWHT_COLUMNS(SIN, SOUT, TIN, TOUT, S)                                                       \
    extern "C" __global__ void lowbit_fwht_columns_##SIN##_##SOUT(                                          \
        const TIN* x, TOUT* out, long long n_elems, long long stride, int row_len, const S* signs_out,      \
        S scale, int final_pass) {                                                                          \
        fwht_columns<TIN, TOUT>(x, out, n_elems, stride, row_len, signs_out, compute_of<TIN>::type(scale),  \
                                final_pass);                                                                \
    }

LOWBIT_FWHT_COLUMNS(f32, f32, float, float, float)
LOWBIT_FWHT_COLUMNS(f64, f64, double, double, double)
LOWBIT_FWHT_COLUMNS(f32, f16, float, __half, float)
LOWBIT_FWHT_COLUMNS(f32, bf16, float, u16, float)
#endif  // LOWBIT_STAGE == 1

// Random signs of a randomized Hadamard: out[j] = 1 - 2 (random_bits(seed, j) >> 63).
#define LOWBIT_HADAMARD_SIGNS(SUFFIX, T)                                                              \
    extern "C" __global__ void lowbit_hadamard_signs_##SUFFIX(u64 seed, T* out, long long n) {         \
        for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < n;                   \
             j += (long long)gridDim.x * blockDim.x)                                                   \
            out[j] = (T)(1.0 - 2.0 * (double)(random_bits(seed, j) >> 63));                           \
    }
LOWBIT_HADAMARD_SIGNS(f32, float)
LOWBIT_HADAMARD_SIGNS(f64, double)
