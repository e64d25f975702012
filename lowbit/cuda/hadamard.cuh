// lowbit/cuda/hadamard.cuh -- stages of the fast Walsh-Hadamard transform, device functions for
// hadamard.cu and for kernels that rotate data they hold (the fused KVarN store):
//   load_tile -> butterfly_in_thread -> butterfly_across_warp [-> butterfly_across_block] -> store_tile
// Twins of lowbit/cpu/hadamard.py: the M x M core factor on each chunk of M consecutive elements
// (acc = 0; acc = acc + core[i][j] * v[j], j ascending), then radix-2 Sylvester butterflies in
// order of increasing stride (M, 2M, 4M, ...), the lower index keeping a + b and the upper a - b,
// in IEEE float32 (f32) or float64.  Every output is therefore the same expression as on the CPU
// and equal to it bit for bit, however the strides are split between a thread's registers, the
// lanes of a warp and the warps of a block.
#ifndef LOWBIT_HADAMARD_CUH
#define LOWBIT_HADAMARD_CUH

// Storage type of a compute value (core factor, signs, scale arguments).
template <typename C> struct storage_of { typedef float type; };
template <> struct storage_of<double> { typedef double type; };

// Flip the sign of v when mask has its top bit set (exact, NaN included).
__device__ __forceinline__ f32 flip_sign(f32 v, u32 mask) { return f32(__uint_as_float(__float_as_uint(v.v) ^ mask)); }
__device__ __forceinline__ double flip_sign(double v, u32 mask) {
    return __longlong_as_double(__double_as_longlong(v) ^ ((long long)mask << 32));
}
__device__ __forceinline__ f32 shfl_xor(f32 v, int m) { return f32(__shfl_xor_sync(0xffffffffu, v.v, m)); }
__device__ __forceinline__ double shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
// other + sign * v for sign = +1 or -1, in one fused multiply-add: the product is exact (v or -v),
// so the one rounding is that of other + v or other + (-v) (NaN, infinities and zeros included).
__device__ __forceinline__ f32 add_signed(f32 other, f32 sign, f32 v) {
    float r;
    asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(sign.v), "f"(v.v), "f"(other.v));
    return f32(r);
}
__device__ __forceinline__ double add_signed(double other, double sign, double v) { return __fma_rn(sign, v, other); }

// ---- load_tile / store_tile: K consecutive elements at p, widest vector accesses p allows ----
#ifndef LOWBIT_STREAMING  // 1: streaming cache hints (__ldcs / __stcs) on 16-byte accesses
#define LOWBIT_STREAMING 1
#endif

// Q 16-byte words at p (16-byte aligned), with the streaming hints when STREAM.
template <int Q, bool STREAM = (LOWBIT_STREAMING != 0)>
__device__ __forceinline__ void load_words(const void* p, uint4 (&q)[Q]) {
#pragma unroll
    for (int i = 0; i < Q; ++i)
        q[i] = STREAM ? __ldcs(reinterpret_cast<const uint4*>(p) + i) : reinterpret_cast<const uint4*>(p)[i];
}
template <int Q>
__device__ __forceinline__ void store_words(void* p, const uint4 (&q)[Q]) {
#pragma unroll
    for (int i = 0; i < Q; ++i) {
        if (LOWBIT_STREAMING) __stcs(reinterpret_cast<uint4*>(p) + i, q[i]);
        else reinterpret_cast<uint4*>(p)[i] = q[i];
    }
}

template <typename T, int K, bool STREAM = (LOWBIT_STREAMING != 0)>
__device__ __forceinline__ void load_vector(const T* p, T (&raw)[K]) {
    constexpr int BYTES = K * (int)sizeof(T);
    union { T t[K]; uint4 q[(BYTES + 15) / 16]; uint2 d[(BYTES + 7) / 8]; unsigned w[(BYTES + 3) / 4]; } buf;
    const unsigned long long addr = (unsigned long long)p;
    if (BYTES % 16 == 0 && addr % 16 == 0) {
        load_words<(BYTES + 15) / 16, STREAM>(p, buf.q);
    } else if (BYTES % 8 == 0 && addr % 8 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 8; ++i) buf.d[i] = reinterpret_cast<const uint2*>(p)[i];
    } else if (BYTES % 4 == 0 && addr % 4 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 4; ++i) buf.w[i] = reinterpret_cast<const unsigned*>(p)[i];
    } else {
#pragma unroll
        for (int i = 0; i < K; ++i) buf.t[i] = p[i];
    }
#pragma unroll
    for (int i = 0; i < K; ++i) raw[i] = buf.t[i];
}

template <typename T, int K>
__device__ __forceinline__ void store_vector(T* p, const T (&raw)[K]) {
    constexpr int BYTES = K * (int)sizeof(T);
    union { T t[K]; uint4 q[(BYTES + 15) / 16]; uint2 d[(BYTES + 7) / 8]; unsigned w[(BYTES + 3) / 4]; } buf;
#pragma unroll
    for (int i = 0; i < K; ++i) buf.t[i] = raw[i];
    const unsigned long long addr = (unsigned long long)p;
    if (BYTES % 16 == 0 && addr % 16 == 0) {
        store_words<(BYTES + 15) / 16>(p, buf.q);
    } else if (BYTES % 8 == 0 && addr % 8 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 8; ++i) reinterpret_cast<uint2*>(p)[i] = buf.d[i];
    } else if (BYTES % 4 == 0 && addr % 4 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 4; ++i) reinterpret_cast<unsigned*>(p)[i] = buf.w[i];
    } else {
#pragma unroll
        for (int i = 0; i < K; ++i) p[i] = buf.t[i];
    }
}

// The first `count` (< K) elements of a tile at the end of the data; the rest read as zeros.
template <typename T, typename C, int K>
__device__ __forceinline__ void load_tile(const T* p, C (&v)[K], int count = K) {
    if (count >= K) {
        T raw[K];
        load_vector<T, K>(p, raw);
#pragma unroll
        for (int i = 0; i < K; ++i) v[i] = widen(raw[i]);
        return;
    }
#pragma unroll
    for (int i = 0; i < K; ++i) v[i] = i < count ? widen(p[i]) : C(0.0f);
}

// Round a tile to storage (float16 two at a time: one cvt.rn.f16x2.f32, the same rounding).
template <typename T, typename C, int K>
__device__ __forceinline__ void narrow_tile(const C (&v)[K], T (&raw)[K]) {
#pragma unroll
    for (int i = 0; i < K; ++i) narrow(v[i], &raw[i]);
}
template <int K>
__device__ __forceinline__ void narrow_tile(const f32 (&v)[K], __half (&raw)[K]) {
#pragma unroll
    for (int i = 0; i + 1 < K; i += 2) {
        const __half2 h = __floats2half2_rn(v[i].v, v[i + 1].v);
        raw[i] = __low2half(h);
        raw[i + 1] = __high2half(h);
    }
    if (K % 2) narrow(v[K - 1], &raw[K - 1]);
}

template <typename T, typename C, int K>
__device__ __forceinline__ void store_tile(T* p, const C (&v)[K], int count = K) {
    if (count >= K) {
        T raw[K];
        narrow_tile(v, raw);
        store_vector<T, K>(p, raw);
        return;
    }
#pragma unroll
    for (int i = 0; i < K; ++i)
        if (i < count) narrow(v[i], p + i);
}

// ---- butterflies ----------------------------------------------------------------------------
// In registers: the core factor on each chunk of M consecutive elements of v (`core` row-major
// [M][M], read only when M > 1), then the first `levels` (<= LOG) Sylvester levels, strides
// M, 2M, ..., M 2^(levels-1).  v holds E = M 2^LOG consecutive elements of one segment, or
// several whole segments when the segment is shorter (levels < LOG).
template <int M, int LOG, typename C>
__device__ __forceinline__ void butterfly_in_thread(C (&v)[M << LOG], const C* core, int levels) {
    constexpr int E = M << LOG;
    static_assert(M == 1 || M == 12 || M == 20, "core orders: 1, 12, 20");
    static_assert(LOG >= 0 && E <= 64, "at most 64 elements per thread");
    if (M > 1) {
#pragma unroll
        for (int c0 = 0; c0 < E; c0 += M) {
            C tmp[M];
#pragma unroll
            for (int i = 0; i < M; ++i) {
                C acc = C(0.0f);
#pragma unroll
                for (int j = 0; j < M; ++j) acc = acc + core[i * M + j] * v[c0 + j];
                tmp[i] = acc;
            }
#pragma unroll
            for (int i = 0; i < M; ++i) v[c0 + i] = tmp[i];
        }
    }
#pragma unroll
    for (int l = 0; l < LOG; ++l) {
        if (l < levels) {
            const int h = M << l;
#pragma unroll
            for (int i = 0; i < E; ++i) {
                if ((i / h) % 2 == 0) {
                    const C a = v[i], b = v[i + h];
                    v[i] = a + b;
                    v[i + h] = a - b;
                }
            }
        }
    }
}

// Across lanes: level s (s < levels <= 5) pairs the elements of lanes that differ in bit s, at
// stride E 2^s: the lower lane keeps a + b, the upper b' - a' (= other + (-mine), exactly).
// A segment's 2^levels lanes are consecutive and aligned; every lane of the warp must call.
// One fused multiply-add per element and level (add_signed; the sign is the lane's).
template <typename C, int E>
__device__ __forceinline__ void butterfly_across_warp(C (&v)[E], int levels) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int s = 0; s < 5; ++s) {
        if (s < levels) {
            const C sign = flip_sign(C(1.0f), ((lane >> s) & 1) ? 0x80000000u : 0u);
#pragma unroll
            for (int i = 0; i < E; ++i) v[i] = add_signed(shfl_xor(v[i], 1 << s), sign, v[i]);
        }
    }
}

// Across warps, through shared memory: `buf` holds one segment of n elements; the remaining
// `levels` levels start at stride `stride` (elements).  Rounds of up to G levels: in a round each
// thread gathers groups of 2^g elements at stride `stride`, transforms them in registers
// (increasing stride) and writes them back.  Brackets its rounds with __syncthreads().
template <int G, typename C>
__device__ __forceinline__ void butterfly_across_block(C* buf, int n, int stride, int levels) {
    constexpr int MAXG = 1 << G;
    static_assert(G >= 1 && G <= 4, "1 to 4 levels per round");
    while (levels > 0) {
        const int g = levels < G ? levels : G;
        __syncthreads();
        const int groups = n >> g;
        for (int q = threadIdx.x; q < groups; q += blockDim.x) {
            const int base = (q / stride) * (stride << g) + (q % stride);
            C w[MAXG];
#pragma unroll
            for (int f = 0; f < MAXG; ++f)
                if (f < (1 << g)) w[f] = buf[base + f * stride];
#pragma unroll
            for (int l = 0; l < G; ++l) {
                if (l < g) {
#pragma unroll
                    for (int f = 0; f < MAXG; ++f) {
                        if (((f >> l) & 1) == 0 && f + (1 << l) < (1 << g)) {
                            const C a = w[f], b = w[f + (1 << l)];
                            w[f] = a + b;
                            w[f + (1 << l)] = a - b;
                        }
                    }
                }
            }
#pragma unroll
            for (int f = 0; f < MAXG; ++f)
                if (f < (1 << g)) buf[base + f * stride] = w[f];
        }
        stride <<= g;
        levels -= g;
    }
    __syncthreads();
}

#endif  // LOWBIT_HADAMARD_CUH
