// lowbit/cuda/kvarn.cu -- the fused KVarN store; twin of lowbit/cpu/kvarn.py kvarn_encode
// (its decoders are in kvarn_decode.cu).  One thread block per tile (grid-stride over all the (batch,
// head, tile) items of one launch), the tile held in shared memory as float32 from the load to
// the packed record; nothing intermediate goes to global memory:
//
//   load_tile -> rotate_tokens (hadamard.cuh's butterfly order) -> tile_exponent -> balance_tile
//   (balance.cuh) -> encode_scales -> rtn_rows (fold into A / Z) -> pack_codes
//
// D = 128 with the rotation: load, rotation and exponent histogram in registers
// (load_rotate_d128); 128 x 128 tiles: balance_tile's fixed-size sweeps; C % 8 == 0: codes and
// packing in one step.  256 threads per 128 x 128 tile (kvarn.py encode_threads); any multiple
// of 32 gives the same bytes.
//
// Every step performs the CPU's float32 / float64 operations in the CPU's order (f32 arithmetic
// without flushing, codec.cuh's encoder for the scale codes), so codes and scale bytes equal the
// CPU's bit for bit.  Suffixes name the token storage (f16, bf16 = bfloat16 bits, f32).

#include "balance.cuh"
#include "hadamard.cuh"
#include "kvarn.cuh"

// Histogram bins of float32 binades floor(log2|v|) = -149 .. 127 (lowbit/cpu/kvarn.py _BINS).
#define LOWBIT_BINS 277
#define LOWBIT_BIN0 149

// floor(log2(a)) of a positive finite float32 (subnormals included): kvarn.py _binade.
__device__ __forceinline__ int binade_f32(float a) {
    const u32 b = __float_as_uint(a) & 0x7fffffffu;
    const u32 ex = b >> 23;
    return ex ? (int)ex - 127 : (31 - __clz(b)) - 149;
}

// The tile's exponent (kvarn.py tile_exponent_of): the binade of the lower-median nonzero
// magnitude minus LOWBIT_MEDIAN_LOG, from a histogram of binades (integer atomics: the same
// counts in any order).  `hist` holds LOWBIT_BINS + 2 ints: the bins, then the count of Inf / NaN
// elements (the slot their exponent field 255 maps to), then a spare.  Three steps: hist_clear;
// every element through binade_count; exponent_of_hist (the nonzero count is the bins' sum).

__device__ __forceinline__ void hist_clear(int* hist) {
    for (int b = threadIdx.x; b < LOWBIT_BINS + 2; b += blockDim.x) hist[b] = 0;
}

// One element into the bins, by shared-memory atomics aggregated per warp: lanes with the same
// binade add once (most magnitudes share a few binades, and one atomic per element serialized on
// them).  Every lane of the warp calls it (`valid`: the lane holds an element).
__device__ __forceinline__ void binade_count(float v, bool valid, int* hist) {
    // |v| by its bits: fabsf flushes subnormals under CuPy's -ftz=true (the CPU counts them)
    const u32 bits = valid ? __float_as_uint(v) & 0x7fffffffu : 0u;
    const u32 ex = bits >> 23;
    // binade_f32 + LOWBIT_BIN0 for a nonzero finite |v| (ex - 127, or (31 - clz) - 149 for a
    // subnormal); zero: 31 - clz(0) = -1, not counted; Inf / NaN: 255 - 127 + 149 = LOWBIT_BINS
    const int bin = ex ? (int)ex + (LOWBIT_BIN0 - 127) : 31 - __clz(bits);
    const unsigned same = __match_any_sync(0xffffffffu, bin);
    unsigned below;  // the lanes before this one
    asm("mov.u32 %0, %%lanemask_lt;" : "=r"(below));
    if (bin >= 0 && (same & below) == 0u) atomicAdd(hist + bin, __popc(same));  // the first of its bin
}

// The exponent from a complete histogram (starts with a barrier); every thread gets the result.
__device__ int exponent_of_hist(const int* hist) {
    __syncthreads();
    __shared__ int result;
    const int lane = threadIdx.x & 31;
    const int nonfinite = hist[LOWBIT_BINS];
    if (threadIdx.x < 32) {  // warp 0: lane l scans bins [9 l, 9 l + 9) after an exclusive prefix sum
        const int b0 = lane * 9;  // 32 * 9 = 288 >= LOWBIT_BINS
        int own = 0;
        for (int b = b0; b < b0 + 9 && b < LOWBIT_BINS; ++b) own += hist[b];
        int incl = own;
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        // med: the last nonzero bin whose preceding count is <= k (the lower median's); top: the
        // last nonzero bin; integer counts, so the warp's max equals the sequential scan's
        const int nnz = __shfl_sync(0xffffffffu, incl, 31);  // every nonzero finite element is in one bin
        const int k = (nnz - 1) / 2;
        int cum = incl - own, med = -1, top = -1;
        for (int b = b0; b < b0 + 9 && b < LOWBIT_BINS; ++b) {
            if (hist[b]) {
                if (cum <= k) med = b;
                top = b;
            }
            cum += hist[b];
        }
        for (int o = 16; o; o >>= 1) {
            med = max(med, __shfl_xor_sync(0xffffffffu, med, o));
            top = max(top, __shfl_xor_sync(0xffffffffu, top, o));
        }
        if (lane == 0) {
            int e;
            if (nonfinite) e = LOWBIT_EXPONENT_INVALID;
            else if (nnz == 0) e = 0;
            else {
                e = (med - LOWBIT_BIN0) - LOWBIT_MEDIAN_LOG;
                const int t = top - LOWBIT_BIN0;
                if (e < -LOWBIT_EXPONENT_LIMIT || e > LOWBIT_EXPONENT_LIMIT || t >= 127 || t - e > LOWBIT_RANGE_LOG)
                    e = LOWBIT_EXPONENT_INVALID;
            }
            result = e;
        }
    }
    __syncthreads();
    const int e = result;
    __syncthreads();  // `result` is rewritten by the next tile
    return e;
}

// The exponent of a tile in shared memory (after a barrier that follows its last write).
__device__ int tile_exponent_of(const float* tile, int rows, int cols, int pitch, int* hist) {
    hist_clear(hist);
    __syncthreads();
    const int cshift = pow2_shift(cols);
    for (int base = 0; base < rows * cols; base += blockDim.x) {  // uniform per warp (blockDim % 32 == 0)
        const int idx = base + threadIdx.x;
        const bool valid = idx < rows * cols;
        float v = 0.0f;
        if (valid) {
            const int r = div_by(idx, cols, cshift), c = idx - r * cols;
            v = tile[r * pitch + c];
        }
        binade_count(v, valid, hist);
    }
    return exponent_of_hist(hist);
}

// load_tile + rotate_tokens for D = 128 in registers, the rotated values straight into the tile
// (`pitch` floats per row) and, with `hist`, into the exponent histogram: 16 lanes per token,
// lane L holding channels 8 L .. 8 L + 7 (one 16-byte load of float16 / bfloat16), Sylvester
// levels 1, 2, 4 in the thread and 8 .. 64 across the lanes (hadamard.cuh's butterfly_in_thread /
// butterfly_across_warp: the same a + b and a - b per element as rotate_tokens and the CPU), then
// the scale.  No barrier.
// PITCH > 0: `pitch` == PITCH at compile time (immediate offsets for K tiles).  HIST: count into
// `hist` (a compile-time choice: no test per element).
template <typename T, bool KEY, bool HIST, int PITCH = 0>
__device__ __forceinline__ void load_rotate_d128(const T* src, int tokens, float* tile, int pitch, int* hist) {
    if (PITCH > 0) pitch = PITCH;
    constexpr int D = 128;
    const int lane = threadIdx.x & 31, L = lane & 15;
    const f32 scale = rotation_scale(D);
    for (int t0 = 2 * (int)(threadIdx.x >> 5); t0 < tokens; t0 += 2 * (int)(blockDim.x >> 5)) {  // uniform per warp
        const int t = t0 + (lane >> 4);
        const bool valid = t < tokens;
        f32 v[8];
        if (valid) load_tile<T, f32, 8>(src + t * D + 8 * L, v);
        else {
#pragma unroll
            for (int m = 0; m < 8; ++m) v[m] = f32(0.0f);
        }
        butterfly_in_thread<1, 3, f32>(v, nullptr, 3);
        butterfly_across_warp<f32, 8>(v, 4);
        float* out = tile + token_index(t, 8 * L, pitch, KEY);  // channel 8 L + m at out[m * stride]
        const int stride = KEY ? pitch : 1;
#pragma unroll
        for (int m = 0; m < 8; ++m) {
            v[m] = scale * v[m];
            if (HIST) binade_count(v[m].v, valid, hist);
            if (valid) out[m * stride] = v[m].v;
        }
    }
}

// load_rotate_d128 with the histogram (`counted`: a run-time choice) or without.
template <typename T, bool KEY, int PITCH = 0>
__device__ __forceinline__ void load_rotate_d128_counted(bool counted, const T* src, int tokens, float* tile,
                                                         int pitch, int* hist) {
    if (counted) load_rotate_d128<T, KEY, true, PITCH>(src, tokens, tile, pitch, hist);
    else load_rotate_d128<T, KEY, false, PITCH>(src, tokens, tile, pitch, hist);
}

// The RTN code of a normalized value: clip(rint((v - base) / step), 0, L) (kvarn.py's row loop;
// max / min are exact and give 0 for -0 and NaN, as the CPU's conversion does).
__device__ __forceinline__ u32 rtn_code(f32 v, f32 base, f32 step, f32 lf) {
    const f32 q = f32(rintf(((v - base) / step).v));
    return (u32)minimum(maximum(q, f32(0.0f)), lf).v;
}

// Codes and packing in one step for C % 8 == 0 (every unit's 8 codes in one row): the units of a
// row to the lanes of its 8-lane group (balance.cuh's rounds), lane p taking units p, p + 8, ...,
// each code shifted to its place in the unit register (32 bits for bits <= 4) and the unit stored.
// BITS > 0: bits == BITS at compile time.
template <int BITS>
__device__ __forceinline__ void pack_rows(const float* tile, int rows, int cols, int pitch, int bits,
                                          const float* rbase, const float* rstep, u8* dst) {
    if (BITS > 0) bits = BITS;
    const f32 lf((float)((1 << bits) - 1));
    const int lane = threadIdx.x & 31, lp = lane & (LOWBIT_LANES - 1);
    const int upr = cols >> 3;  // units per row
    for (int rd = threadIdx.x >> 5; rd < round_count(rows); rd += blockDim.x >> 5) {
        const int r = round_first(rd) + (lane >> 3) * LOWBIT_LANES;
        if (r >= rows) continue;  // no warp-wide operation below
        const float* row = tile + r * pitch;
        const f32 base(rbase[r]), step(rstep[r]);
        for (int uu = lp; uu < upr; uu += LOWBIT_LANES) {
            const float* u8v = row + 8 * uu;
            u64 acc = 0ull;
            if (bits <= 4) {
                u32 a = 0u;
#pragma unroll
                for (int k = 0; k < 8; ++k) a |= rtn_code(f32(u8v[k]), base, step, lf) << (k * bits);
                acc = a;
            } else {
#pragma unroll
                for (int k = 0; k < 8; ++k) acc |= (u64)rtn_code(f32(u8v[k]), base, step, lf) << (k * bits);
            }
            store_unit(dst, (long long)r * upr + uu, bits, bits, acc);
        }
    }
}

// Shared memory of one encode block, in floats (kvarn.py's wrapper mirrors it: smem_bytes).
__host__ __device__ constexpr int encode_smem_floats(int rows, int cols, int threads) {
    return rows * kv_pitch(cols) + cols + rows + balance_scratch_floats(rows, cols, threads) + LOWBIT_BINS + 2;
}

template <typename T>
__device__ __forceinline__ void kvarn_encode_impl(const T* x, long long n, int tokens, int dim, int rotate, int key,
                                                  int bits, int iterations, int scale_format, int normalize,
                                                  u8* packed, u16* row_scale, u16* row_offset, u16* col_scale,
                                                  signed char* tile_exponent) {
    extern __shared__ __align__(16) float smem[];
    const int rows = key ? dim : tokens, cols = key ? tokens : dim;
    const int pitch = kv_pitch(cols);
    float* tile = smem;
    float* cs = tile + rows * pitch;  // s_col of the balance, then the stored values
    float* rs = cs + cols;            // s_row
    const BalanceScratch scratch = balance_scratch(rs + rows, rows, cols);
    int* hist = reinterpret_cast<int*>(rs + rows + balance_scratch_floats(rows, cols, blockDim.x));
    const BalanceParams params{iterations, f32(1e-3f), f32(1e3f), f32(-0.3f), f32(10.0f), f32(1e-8f)};
    const MiniSpec f16 = mini_spec(LOWBIT_F16_SPEC), e4m3 = mini_spec(LOWBIT_E4M3_SPEC);
    const MiniSpec& sspec = scale_format == 0 ? f16 : e4m3;
    const int levels = (1 << bits) - 1;
    const f32 lf((float)levels);
    const long long nel = (long long)rows * cols;
    const long long code_bytes = (nel * bits + 7) / 8;
    const long long units = (nel + 7) / 8;
    const int dshift = pow2_shift(dim), cshift = pow2_shift(cols);
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const T* src = x + i * nel;
        int e = 0;
        if (rotate && dim == 128) {  // in registers, the histogram on the way (load_rotate_d128)
            if (normalize) {
                hist_clear(hist);
                __syncthreads();
            }
            if (key && tokens == 128)
                load_rotate_d128_counted<T, true, kv_pitch(128)>(normalize, src, tokens, tile, pitch, hist);
            else if (key) load_rotate_d128_counted<T, true>(normalize, src, tokens, tile, pitch, hist);
            else load_rotate_d128_counted<T, false>(normalize, src, tokens, tile, pitch, hist);
            if (normalize) e = exponent_of_hist(hist);  // (its first barrier completes the tile)
            else __syncthreads();
        } else {
            // load_tile: coalesced along the tokens' channels, transposed into K tiles
            for (int idx = threadIdx.x; idx < nel; idx += blockDim.x) {
                const int t = div_by(idx, dim, dshift), d = idx - t * dim;
                tile[token_index(t, d, pitch, key != 0)] = widen(src[idx]).v;
            }
            if (rotate) rotate_tokens(tile, tokens, dim, pitch, key != 0);
            __syncthreads();
            if (normalize) e = tile_exponent_of(tile, rows, cols, pitch, hist);
        }
        if (threadIdx.x == 0) tile_exponent[i] = (signed char)e;
        if (e == LOWBIT_EXPONENT_INVALID) continue;  // uniform across the block; the front raises
        if (e != 0) {
            const f32 p = pow2_f32(-e);
            for (int idx = threadIdx.x; idx < nel; idx += blockDim.x) {
                const int r = div_by(idx, cols, cshift), c = idx - r * cols;
                tile[r * pitch + c] = (f32(tile[r * pitch + c]) * p).v;
            }
            __syncthreads();
        }
        // balance_tile (identity scales for a 1-token tile: no token std)
        if (rows >= 2 && cols >= 2) {
            if (rows == 128 && cols == 128)  // D = G = 128: compile-time sizes (balance.cuh group_std_n)
                balance_tile<128, 128>(FixedTile<kv_pitch(128)>{tile}, rows, cols, params, scratch, cs, rs);
            else
                balance_tile(SharedTile{tile, pitch}, rows, cols, params, scratch, cs, rs);
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) cs[c] = 1.0f;
            for (int r = threadIdx.x; r < rows; r += blockDim.x) rs[r] = 1.0f;
            __syncthreads();
        }
        // encode_scales: s_col codes; cs becomes the value the codes are computed against
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const u32 code = scale_code(f32_to_f64(cs[c]), sspec);
            col_scale[i * cols + c] = (u16)code;
            if (scale_format != 0) cs[c] = f64_to_f32(minifloat_decode_one(code, e4m3));
        }
        __syncthreads();
        // rtn_rows (kvarn.py's row loop, same operations), in three steps: an 8-lane group per row
        // (balance.cuh's rounds, lane p taking the columns c = p mod 8) normalizes the row in
        // place and finds its min / max (exact: any order gives the same); one thread per row
        // derives step and base and the stored A / Z codes; the groups write the codes.
        float* rbase = scratch.base_row;  // [R] each, free after the balance
        float* rstep = scratch.best_row;
        const int lane = threadIdx.x & 31, lp = lane & (LOWBIT_LANES - 1);
        for (int rd = threadIdx.x >> 5; rd < round_count(rows); rd += blockDim.x >> 5) {
            const int first = round_first(rd);
            if (first >= rows) continue;  // uniform across the warp
            const int r = first + (lane >> 3) * LOWBIT_LANES;
            f32 lo(__uint_as_float(0x7f800000u)), hi(__uint_as_float(0xff800000u));
            if (r < rows) {
                const f32 sr(rs[r]);
                float* row = tile + r * pitch;  // becomes the normalized row (the tile is not read again)
                for (int c = lp; c < cols; c += LOWBIT_LANES) {
                    const f32 v = scale_format == 0 ? (f32(row[c]) / f32(cs[c])) / sr : f32(row[c]) / f32(cs[c]);
                    row[c] = v.v;
                    lo = minimum(lo, v);
                    hi = maximum(hi, v);
                }
            }
            for (int o = 1; o < LOWBIT_LANES; o <<= 1) {
                lo = minimum(lo, f32(__shfl_xor_sync(0xffffffffu, lo.v, o)));
                hi = maximum(hi, f32(__shfl_xor_sync(0xffffffffu, hi.v, o)));
            }
            if (r < rows && lp == 0) {
                rbase[r] = lo.v;
                rstep[r] = hi.v;
            }
        }
        __syncthreads();
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            const f32 sr(rs[r]), lo(rbase[r]), hi(rstep[r]);
            f32 step, base;
            if (scale_format == 0) {
                step = maximum((hi - lo) / lf, f32(1e-10f));
                base = lo;
                row_scale[i * rows + r] = (u16)scale_code(f32_to_f64((sr * step).v), f16);
                row_offset[i * rows + r] = (u16)scale_code(f32_to_f64((sr * lo).v), f16);
            } else {
                u32 acode = scale_code(f32_to_f64(((hi - lo) / lf).v), e4m3);
                if (acode == 0u) acode = 1u;  // smallest positive e4m3 subnormal, 2**-9
                step = f32(f64_to_f32(minifloat_decode_one(acode, e4m3)));
                const double mid = (f32_to_f64(lo.v) + f32_to_f64(hi.v)) * 0.5;
                const u32 zcode = scale_code(mid - (f32_to_f64(step.v) * (double)levels) * 0.5, f16);
                base = f32(f64_to_f32(minifloat_decode_one(zcode, f16)));
                row_scale[i * rows + r] = (u16)acode;
                row_offset[i * rows + r] = (u16)zcode;
            }
            rbase[r] = base.v;
            rstep[r] = step.v;
        }
        __syncthreads();
        u8* dst = packed + i * code_bytes;
        if (cols % 8 == 0) {  // the presets' code widths with a compile-time shift per code
            if (bits == 4) pack_rows<4>(tile, rows, cols, pitch, bits, rbase, rstep, dst);
            else if (bits == 2) pack_rows<2>(tile, rows, cols, pitch, bits, rbase, rstep, dst);
            else pack_rows<0>(tile, rows, cols, pitch, bits, rbase, rstep, dst);
        } else {
            // the codes overwrite the row's own bytes: in step c0 the group reads floats c0 .. c0 + 7 and
            // then (after a __syncwarp) writes bytes c0 .. c0 + 7, which lie in floats c0 / 4 and
            // c0 / 4 + 1, read in this or an earlier step; so no unread value is clobbered (no code
            // buffer: one more block fits a multiprocessor)
            for (int rd = threadIdx.x >> 5; rd < round_count(rows); rd += blockDim.x >> 5) {
                const int first = round_first(rd);
                if (first >= rows) continue;  // uniform across the warp
                const int r = first + (lane >> 3) * LOWBIT_LANES;
                const bool own = r < rows;
                float* row = tile + (own ? r : first) * pitch;
                u8* out = reinterpret_cast<u8*>(row);
                const f32 base(rbase[own ? r : first]), step(rstep[own ? r : first]);
                for (int c0 = 0; c0 < cols; c0 += LOWBIT_LANES) {
                    const int c = c0 + lp;
                    u8 code = 0;
                    if (own && c < cols) code = (u8)rtn_code(f32(row[c]), base, step, lf);
                    __syncwarp();
                    if (own && c < cols) out[c] = code;
                }
            }
            __syncthreads();
            // pack_codes: unit u = codes 8u .. 8u + 7 into `bits` bytes (fewer for the last unit)
            for (long long u = threadIdx.x; u < units; u += blockDim.x) {
                const long long start = u * 8;
                const int count = nel - start < 8 ? (int)(nel - start) : 8;
                u64 acc = 0ull;
                for (int j = 0; j < count; ++j) {
                    const int e = (int)start + j, r = div_by(e, cols, cshift);
                    const u8 code = reinterpret_cast<const u8*>(tile + r * pitch)[e - r * cols];
                    acc |= ((u64)(code & levels)) << (j * bits);
                }
                const long long left = code_bytes - u * bits;
                store_unit(dst, u, bits, left < bits ? left : bits, acc);
            }
        }
        __syncthreads();  // the next tile overwrites shared memory
    }
}

// At most 256 threads (lowbit.cuda.balance.threads_for); 80 registers let three blocks share a
// multiprocessor, as their shared memory does for D = G = 128 (ptxas: no spills).
#define LOWBIT_KVARN_ENCODE(NAME, T)                                                                          \
    extern "C" __global__ void __launch_bounds__(256, 3)                                                      \
        NAME(const T* x, long long n, int tokens, int dim, int rotate, int key, int bits, int iterations,     \
             int scale_format, int normalize, u8* packed, u16* row_scale, u16* row_offset, u16* col_scale,     \
             signed char* tile_exponent) {                                                                    \
        kvarn_encode_impl<T>(x, n, tokens, dim, rotate, key, bits, iterations, scale_format, normalize, packed,   \
                             row_scale, row_offset, col_scale, tile_exponent);                                    \
    }

LOWBIT_KVARN_ENCODE(lowbit_kvarn_encode_f16, __half)
LOWBIT_KVARN_ENCODE(lowbit_kvarn_encode_bf16, u16)
LOWBIT_KVARN_ENCODE(lowbit_kvarn_encode_f32, float)

