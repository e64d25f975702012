// lowbit/cuda/codec_table.cuh -- the table decoder and the block amax of lowbit/cuda/codec.cu
// (decode_table, block_absmax: twins of lowbit/cpu/codec.py), apart from its encoders.
#include "codec.cuh"

// out[i] = table[code_i] * scale[i // block_size] (float64 product, rounded once to out's type);
// the table (<= 256 entries) in shared memory, and for a direct decoding (no scale) already in
// out's type (the same rounding).  A direct decoding of 1/2/4/8-bit codes into aligned out takes
// the vector loop over the whole units: a warp takes DT_UNITS x 32 consecutive units of 8 codes
// per iteration, their packed words loaded together, each unit's 8 outputs in whole uint4
// stores.  Everything else (and the last partial unit) a thread per unit, one scale load per
// unit whose elements share a block, the outputs in registers (Words8) and one vector store
// where aligned.
#define LOWBIT_DT_UNITS 4
template <typename T>
__device__ void decode_table_impl(const u8* packed, long long packed_size, int bits, const double* table,
                                  long long block_size, const double* scale, T* out, long long n) {
    typedef typename Raw<T>::type R;
    __shared__ double tab[256];
    __shared__ R tab_out[256];  // direct decoding: the table already in out's type (the same rounding)
    for (int t = threadIdx.x; t < (1 << bits); t += blockDim.x) {
        tab[t] = table[t];
        T v;
        from_f64(table[t], &v);
        tab_out[t] = (R)raw_bits(v);
    }
    __syncthreads();
    const bool direct = block_size >= n && scale[0] == 1.0;
    const bool aligned = (unsigned long long)out % 16 == 0;
    const Blocks blk = blocks_of(block_size);
    const u32 mask = (1u << bits) - 1u;
    const long long units = (n + 7) / 8;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long first_unit = 0;  // the units before it went by the vector loop
    const long long whole = n / 8;  // the units of 8 real codes
    if (direct && aligned && (bits & (bits - 1)) == 0 && (unsigned long long)packed % bits == 0 &&
        packed_size >= whole * bits) {
        constexpr int UNITS = LOWBIT_DT_UNITS;
        const int lane = threadIdx.x & 31;
        for (long long u0 = (tid & ~31ll) * UNITS; u0 < whole; u0 += stride * UNITS) {
            u64 acc[UNITS];
#pragma unroll
            for (int r = 0; r < UNITS; ++r) {  // the loads first: UNITS words in flight
                const long long u = u0 + r * 32 + lane;
                acc[r] = 0ull;
                if (u < whole) {
                    acc[r] = bits == 8   ? reinterpret_cast<const u64*>(packed)[u]
                             : bits == 4 ? reinterpret_cast<const u32*>(packed)[u]
                             : bits == 2 ? reinterpret_cast<const u16*>(packed)[u]
                                         : packed[u];
                }
            }
#pragma unroll
            for (int r = 0; r < UNITS; ++r) {
                const long long u = u0 + r * 32 + lane;
                if (u >= whole) continue;
                Words8<T> res;
#pragma unroll
                for (int j = 0; j < 8; ++j) put_bits(res, j, tab_out[(u32)(acc[r] >> (j * bits)) & mask]);
                store_words8(out, u * 8, 8, true, res);
            }
        }
        first_unit = whole;
    }
    for (long long u = first_unit + tid; u < units; u += stride) {
        const u64 acc = load_unit(packed, u, bits, min((long long)bits, packed_size - u * bits));
        const long long first = u * 8;
        const int count = (int)min(8ll, n - first);
        Words8<T> res;
        if (direct) {
#pragma unroll
            for (int j = 0; j < 8; ++j) put_bits(res, j, tab_out[(u32)(acc >> (j * bits)) & mask]);
        } else {
            const long long b0 = block_index(first, blk);
            if (b0 != block_index(first + count - 1, blk)) {  // the unit spans blocks: a scale per element
                for (int j = 0; j < count; ++j)
                    from_f64(tab[(u32)(acc >> (j * bits)) & mask] * scale[block_index(first + j, blk)], out + first + j);
                continue;
            }
            const double sc = scale[b0];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                T v;
                from_f64(tab[(u32)(acc >> (j * bits)) & mask] * sc, &v);
                put_bits(res, j, raw_bits(v));
            }
        }
        store_words8(out, first, count, aligned && count == 8, res);
    }
}

// out[b] = max |x| over block b (float64); NaN if the block holds NaN or +-Inf; the last block
// may be short.  A thread takes a run of up to RUN elements of one block.  max is exact, so the
// order of the reduction does not matter: runs_per_block == 1 stores directly; otherwise (out
// zeroed by the wrapper) runs_per_block is a multiple of 32, a warp's runs share one block, and
// lane 0 merges the warp's maximum into out[b] by an integer atomicMax on the float64 bits
// (non-negative doubles order as their bits; NaN 0x7ff8... lies above +Inf 0x7ff0...).
template <typename T>
__device__ void block_absmax_impl(const T* x, long long n, long long block_size, long long run,
                                  long long runs_per_block, double* out, long long n_blocks) {
    const long long total = n_blocks * runs_per_block;
    const long long stride = (long long)gridDim.x * blockDim.x;
    // uniform trip count over the warp (shuffles below need every lane)
    for (long long r0 = (long long)blockIdx.x * blockDim.x + (threadIdx.x & ~31); r0 < total; r0 += stride) {
        const long long r = r0 + (threadIdx.x & 31);
        const bool live = r < total;
        const long long b = live ? r / runs_per_block : 0;
        const long long j = live ? r - b * runs_per_block : 0;
        const long long start = b * block_size + j * run;
        const long long stop = live ? min(min(start + run, (b + 1) * block_size), n) : start;
        double m = 0.0;
        bool bad = false;
        long long i = start;
        if ((unsigned long long)x % 16 == 0 && start % 8 == 0) {  // 8 elements per vector load
            for (; i + 8 <= stop; i += 8) {
                Unit8<T> in;
                const uint4* src = reinterpret_cast<const uint4*>(x + i);
#pragma unroll
                for (int q = 0; q < Unit8<T>::NQ; ++q) in.q[q] = src[q];
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const double v = fabs(to_f64(in.t[j]));
                    bad |= !(v < LOWBIT_INF);
                    m = fmax(m, v);
                }
            }
        }
        for (; i < stop; ++i) {
            const double v = fabs(to_f64(x[i]));
            bad |= !(v < LOWBIT_INF);
            m = fmax(m, v);
        }
        u64 bits = bad ? 0x7ff8000000000000ull : (u64)__double_as_longlong(m);
        if (runs_per_block == 1) {
            if (live) out[b] = __longlong_as_double((long long)bits);
            continue;
        }
        for (int o = 16; o; o >>= 1) bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, o));
        if ((threadIdx.x & 31) == 0 && live) atomicMax(reinterpret_cast<unsigned long long*>(out + b), bits);
    }
}
