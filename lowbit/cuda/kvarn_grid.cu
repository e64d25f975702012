// lowbit/cuda/kvarn_grid.cu -- KVarN tiles on a codebook grid; twins of lowbit/cpu/kvarn_grid.py
// (kvarn_grid_encode, kvarn_grid_decode).  The encoder is kvarn.cu's store with the uniform
// row RTN replaced by the fitted codebook grid; one thread block per tile (grid-stride over the
// tiles of one launch), the tile in shared memory as float32:
//
//   load_tile -> balance_tile (balance.cuh) -> col_scale codes -> fit_row (one thread per row:
//   least-squares A, Z on the level table, kvarn_grid.py _fit_row) -> row codes -> pack
//
// The input is rotated float32 (the front rotates; no tile exponent).  Every step performs the
// CPU's operations in the CPU's order: float32 ones through common.cuh's f32 (no flushing),
// the fit and the codes in float64 (never flushed), scale codes through codec.cuh's encoder and
// the level search through codebook.cuh's, so codes and scale bytes equal the CPU's bit for bit.
// The decoder writes float32 (the CPU's float64 reconstruction rounded once), one thread per
// output element in token-major order.

#include "balance.cuh"
#include "codebook.cuh"
#include "kvarn.cuh"

// Dynamic shared memory of one encode block, in bytes (kvarn_grid.py encode_smem_bytes mirrors
// it): float64 levels, thresholds [L] and stored s_col [C]; float32 tile, s_col, s_row and the
// balance scratch; the uint8 codes [R * C].
__host__ __device__ constexpr long long grid_encode_smem_bytes(int rows, int cols, int threads, int n_levels) {
    return 8ll * (2 * n_levels + cols) +
           4ll * (rows * kv_pitch(cols) + cols + rows + balance_scratch_floats(rows, cols, threads)) +
           (long long)rows * cols;
}

// Row r of the balanced tile as kvarn_grid.py's u: tile[r, c] / stored s_col[c] in float64
// (0 where the stored scale is 0).  Recomputed where the CPU reads its u array: the same value.
struct GridRow {
    const float* row;
    const double* scv;
    __device__ __forceinline__ double u(int c) const { return scv[c] > 0.0 ? f32_to_f64(row[c]) / scv[c] : 0.0; }
};

// kvarn_grid.py _fit_row: (A, Z) after `fits` least-squares rounds from the row's std and mean;
// codes[0..cols) the last round's nearest-level codes.
__device__ __forceinline__ void fit_row(const GridRow& g, int cols, const double* lv, const double* th, int nt,
                                        int fits, u8* codes, double& a_out, double& z_out) {
    const double n = (double)cols;
    double mean = 0.0;
    for (int c = 0; c < cols; ++c) mean += g.u(c);
    mean /= n;
    double var = 0.0;
    for (int c = 0; c < cols; ++c) {
        const double d = g.u(c) - mean;
        var += d * d;
    }
    double a = sqrt(var / n);
    double z = mean;
    if (!(a > 0.0)) a = 1e-10;
    for (int it = 0; it < fits + 1; ++it) {
        double sl = 0.0, sll = 0.0, sul = 0.0, su = 0.0;
        for (int c = 0; c < cols; ++c) {
            const double uc = g.u(c);
            const int q = nearest_code((uc - z) / a, th, nt);
            codes[c] = (u8)q;
            const double l = lv[q];
            sl += l;
            sll += l * l;
            sul += uc * l;
            su += uc;
        }
        const double det = sll - sl * sl / n;
        if (det > 0.0) {
            const double slope = (sul - sl * su / n) / det;
            if (slope > 0.0) {
                a = slope;
                z = (su - a * sl) / n;
            }
        }
    }
    a_out = a;
    z_out = z;
}

extern "C" __global__ void lowbit_kvarn_grid_encode(const float* x, long long n, int tokens, int dim, int key,
                                                    int bits, const double* levels, const double* thresholds,
                                                    int iterations, int fits, int scale_format, u8* packed,
                                                    u16* row_scale, u16* row_offset, u16* col_scale) {
    extern __shared__ __align__(16) double smem_d[];
    const int rows = key ? dim : tokens, cols = key ? tokens : dim;
    const int pitch = kv_pitch(cols);
    const int n_levels = 1 << bits, nt = n_levels - 1;
    double* lv = smem_d;
    double* th = lv + n_levels;
    double* scv = th + n_levels;  // the stored s_col values
    float* tile = reinterpret_cast<float*>(scv + cols);
    float* cs = tile + rows * pitch;  // s_col of the balance
    float* rs = cs + cols;            // s_row (unused: the fit absorbs it, as on the CPU)
    const BalanceScratch scratch = balance_scratch(rs + rows, rows, cols);
    u8* codes = reinterpret_cast<u8*>(rs + rows + balance_scratch_floats(rows, cols, blockDim.x));
    const BalanceParams params{iterations, f32(1e-3f), f32(1e3f), f32(-0.3f), f32(10.0f), f32(1e-8f)};
    const MiniSpec f16 = mini_spec(LOWBIT_F16_SPEC), e4m3 = mini_spec(LOWBIT_E4M3_SPEC);
    const MiniSpec& sspec = scale_format == 0 ? f16 : e4m3;
    for (int t = threadIdx.x; t < n_levels; t += blockDim.x) lv[t] = levels[t];
    for (int t = threadIdx.x; t < nt; t += blockDim.x) th[t] = thresholds[t];
    const long long nel = (long long)rows * cols;
    const long long code_bytes = (nel * bits + 7) / 8;
    const long long units = (nel + 7) / 8;
    const u64 mask = (1ull << bits) - 1ull;
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        // load_tile: coalesced along the tokens' channels, transposed into K tiles
        const float* src = x + i * nel;
        for (int idx = threadIdx.x; idx < nel; idx += blockDim.x) {
            const int t = idx / dim, d = idx - t * dim;
            tile[token_index(t, d, pitch, key != 0)] = src[idx];
        }
        __syncthreads();
        if (rows >= 2 && cols >= 2) {
            balance_tile(SharedTile{tile, pitch}, rows, cols, params, scratch, cs, rs);
        } else {  // a 1-token tile has no token std: identity scales
            for (int c = threadIdx.x; c < cols; c += blockDim.x) cs[c] = 1.0f;
            __syncthreads();
        }
        // col_scale: the codes, and the stored values the rows are divided by
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const u32 code = scale_code(f32_to_f64(cs[c]), sspec);
            col_scale[i * cols + c] = (u16)code;
            scv[c] = minifloat_decode_one(code, sspec);
        }
        __syncthreads();
        // rows: one thread per row, kvarn_grid.py's row loop
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
            const GridRow g{tile + r * pitch, scv};
            u8* rc = codes + (long long)r * cols;
            double a, z;
            fit_row(g, cols, lv, th, nt, fits, rc, a, z);
            const u32 acode = scale_code(a, sspec);
            const double a_s = minifloat_decode_one(acode, sspec);
            double sl = 0.0, su = 0.0;
            for (int c = 0; c < cols; ++c) {
                sl += a_s > 0.0 ? lv[rc[c]] : 0.0;
                su += g.u(c);
            }
            const u32 zcode = scale_code((su - a_s * sl) / (double)cols, f16);
            const double z_s = minifloat_decode_one(zcode, f16);
            row_scale[i * rows + r] = (u16)acode;
            row_offset[i * rows + r] = (u16)zcode;
            // A = 0 (a row too flat for the format's smallest step): every value decodes to Z
            for (int c = 0; c < cols; ++c) rc[c] = a_s > 0.0 ? (u8)nearest_code((g.u(c) - z_s) / a_s, th, nt) : (u8)0;
        }
        __syncthreads();
        // pack: unit u = codes 8u .. 8u + 7 into `bits` bytes (fewer for the last unit)
        u8* dst = packed + i * code_bytes;
        for (long long u = threadIdx.x; u < units; u += blockDim.x) {
            const long long start = u * 8;
            const int count = nel - start < 8 ? (int)(nel - start) : 8;
            u64 acc = 0ull;
            for (int j = 0; j < count; ++j) acc |= ((u64)codes[start + j] & mask) << (j * bits);
            const long long left = code_bytes - u * bits;
            store_unit(dst, u, bits, left < bits ? left : bits, acc);
        }
        __syncthreads();  // the next tile overwrites shared memory
    }
}

// out[i, t, d] = float32((levels[q] * A[r] + Z[r]) * s_col[c]) with (r, c) = (d, t) for keys,
// (t, d) for values: kvarn_grid.py kvarn_grid_decode, the float64 value rounded once.
extern "C" __global__ void lowbit_kvarn_grid_decode(const u8* packed, long long n, int tokens, int dim, int key,
                                                    int bits, const double* levels, int scale_format,
                                                    const u16* row_scale, const u16* row_offset,
                                                    const u16* col_scale, float* out) {
    __shared__ double lv[LOWBIT_MAX_LEVELS];
    const int n_levels = 1 << bits;
    for (int t = threadIdx.x; t < n_levels; t += blockDim.x) lv[t] = levels[t];
    __syncthreads();
    const int rows = key ? dim : tokens, cols = key ? tokens : dim;
    const MiniSpec f16 = mini_spec(LOWBIT_F16_SPEC), e4m3 = mini_spec(LOWBIT_E4M3_SPEC);
    const MiniSpec& sspec = scale_format == 0 ? f16 : e4m3;
    const long long nel = (long long)rows * cols;
    const long long code_bytes = (nel * bits + 7) / 8;
    const u64 mask = (1ull << bits) - 1ull;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < n * nel;
         o += (long long)gridDim.x * blockDim.x) {
        const long long i = o / nel;
        const int idx = (int)(o - i * nel);
        const int t = idx / dim, d = idx - t * dim;
        const int r = key ? d : t, c = key ? t : d;
        const long long e = (long long)r * cols + c;
        const long long unit = e >> 3;
        const long long left = code_bytes - unit * bits;
        const u64 acc = load_unit(packed + i * code_bytes, unit, bits, left < bits ? left : bits);
        const u64 q = (acc >> ((e & 7) * bits)) & mask;
        const double a = minifloat_decode_one(row_scale[i * rows + r], sspec);
        const double z = minifloat_decode_one(row_offset[i * rows + r], f16);
        const double s = minifloat_decode_one(col_scale[i * cols + c], sspec);
        out[o] = f64_to_f32((lv[q] * a + z) * s);
    }
}
