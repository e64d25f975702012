// lowbit/cuda/kv_attend_mma.cuh -- lowbit_kv_attend_split on tensor cores (LOWBIT_ATTEND_MMA=1) for key
// codes [D, G] of integers only (kvarn, kivi; quarot / rtn / fp8 run the CUDA-core kernel), included by
// kv_attend.cu; same signature and workspace meaning as the CUDA-core kernel there, except that each
// block writes LOWBIT_ATTEND_WARPS workspace entries (one per warp) per split.
// Block: WB warps over one split of one (sequence, kv head).  Tiles go through shared memory by
// cp.async, double-buffered (tile i+1 is copied while tile i is computed; one __syncthreads per
// tile).  Warp w takes tokens [w TW, (w+1) TW) of every chunk (TW = G / WB) with its own online
// softmax, so no block-wide reduction is needed; the combine kernel merges the warps' and the
// splits' (max, sum) like any other split.
//
// Tensor cores: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, D[16x8] = A[16x8] B[8x8] + C.
// The codes are always the A operand (16 rows), the query side the B operand (8 columns = the M <= 8
// query heads of the kv head, zero-padded):
//   keys   scores^T[token, head] = sum_ch codes^T[token, ch] W[ch, head],  W = tf32(q_rot * A_k)
//   values out^T[ch, head]      += sum_tok codes^T[ch, tok] P[tok, head],  P = tf32(p * A_v[tok, grp])
// Fragment layouts (PTX ISA, section "Matrix Fragments for mma.m16n8k8", .tf32 operands; lane =
// 4 groupID + tig, groupID = lane >> 2, tig = lane & 3):
//   A 16x8 row-major, 4 registers: a0 (row groupID,   col tig), a1 (row groupID+8, col tig),
//                                  a2 (row groupID,   col tig+4), a3 (row groupID+8, col tig+4)
//   B 8x8 "col", 2 registers:      b0 (row k = tig, col n = groupID), b1 (row k = tig+4, col groupID)
//   C/D 16x8 float, 4 registers:   c0 (row groupID, col 2 tig), c1 (row groupID, col 2 tig+1),
//                                  c2 (row groupID+8, col 2 tig), c3 (row groupID+8, col 2 tig+1)
// Rows and the k index are free permutations as long as A, B and C agree; they are chosen so that
// each lane reads a contiguous run of packed codes:
//   keys:   k index tig / tig+4 of k-step ks = channel 8 ks + tig / 8 ks + tig + 4; row groupID (+8)
//           of m-tile mt = token w TW + KRUN groupID + 2 mt (+1), KRUN = TW / 8 tokens per lane;
//   values: k index tig / tig+4 of k-step ks = token w TW + 8 ks + tig / + 4; row groupID (+8) of
//           m-tile grp VRUN/2 + ml = channel grp CG + VRUN groupID + 2 ml (+1), VRUN = CG / 8, so
//           every m-tile lies in one value column group (one A_v per (token, group) per B).
// A code c at bit offset o of a 16-bit half word becomes the float c 2^o exactly by one LOP3 and one
// FADD (2^23 + c 2^o built in the mantissa, minus 2^23; c 2^o has <= 8 significant bits, so it is an
// exact tf32); the row scale 2^-o is applied to D after the mma.  TF32 rounding is confined to the
// B operand (cvt.rna: relative error <= 2^-11 per product), the accumulation is float32.  With
// LOWBIT_ATTEND_SPLIT (default) B = hi + lo, hi = tf32(B), lo = tf32(B - hi) (B - hi is exact),
// and each product is two mma's on the same A registers: relative error <= 2^-22 per product, as
// good as float32 for the sums here, for twice the tensor-core work and no more code unpacking.
// LOWBIT_ATTEND_PACK (M <= 4) puts the hi parts of the M heads in B columns 0..3 and the lo parts
// in 4..7 (column n: head n & 3, part n >> 2): one mma gives both, and D's columns j and j + 4,
// held by lanes tig and tig ^ 2, are added with one shuffle (the "lo lanes" tig >= 2 then hold the
// same sums as tig - 2 and write nothing).
// NaN (the CPU twin's rules, as the CUDA-core kernel): max_nan maxima; masked tokens' value fields
// and exact values are never read (a weight-0 B operand / the loop starts at the first attended
// token), attended ones always (0 * NaN is NaN); the exact output is rescaled by products only.
#ifndef LOWBIT_ATTEND_WARPS
#define LOWBIT_ATTEND_WARPS 2
#endif
#ifndef LOWBIT_ATTEND_SPLIT
#define LOWBIT_ATTEND_SPLIT 1  // 1: B = tf32 hi + tf32 lo, two mma's on the same codes (|error| <= 2^-22 |B|)
#endif
#ifndef LOWBIT_ATTEND_PACK
#define LOWBIT_ATTEND_PACK 0   // 1 (with SPLIT, M <= 4): hi in B columns 0..3, lo in 4..7, one mma
#endif

namespace kvmma {
constexpr int D = LOWBIT_D, G = LOWBIT_G, M = LOWBIT_M, KB = LOWBIT_KBITS, VB = LOWBIT_VBITS;
constexpr int VG = LOWBIT_VGROUPS, WB = LOWBIT_ATTEND_WARPS, NT = 32 * WB;
constexpr int TW = G / WB;             // tokens per warp per chunk
constexpr int KRUN = TW / 8;           // key tokens per lane per channel row
constexpr int MTK = TW / 16;           // key m-tiles per warp
constexpr int KSK = D / 8;             // key k-steps
constexpr int CG = D / VG;             // channels per value column group
constexpr int VRUN = CG / 8;           // value channels per lane per group
constexpr int MTV = D / 16;            // value m-tiles
constexpr int KSV = TW / 8;            // value k-steps per warp
constexpr int DPL = D / 32;            // exact values: channels per lane
__host__ __device__ constexpr int fsz(int f) { return f == 0 ? 2 : f == 1 ? 1 : f == 2 ? 4 : 0; }
__host__ __device__ constexpr int al16(int x) { return (x + 15) & ~15; }
constexpr int KC_B = D * G * KB / 8, VC_B = G * D * VB / 8;
constexpr int KROW = G * KB / 8, VROW = D * VB / 8;       // bytes per code row
// one stage = one tile's codes and fields, each region 16-byte aligned
constexpr int O_KC = 0, O_VC = O_KC + KC_B, O_KA = O_VC + VC_B;
constexpr int O_KZ = O_KA + al16(D * fsz(LOWBIT_FKA)), O_KS = O_KZ + al16(D * fsz(LOWBIT_FKZ));
constexpr int O_VA = O_KS + al16(G * fsz(LOWBIT_FKS)), O_VZ = O_VA + al16(G * VG * fsz(LOWBIT_FVA));
constexpr int O_VS = O_VZ + al16(G * VG * fsz(LOWBIT_FVZ)), SB = O_VS + al16(D * fsz(LOWBIT_FVS));
constexpr int PS = TW * 8 + 64;        // per-warp weights p[token][head], padded (see p_at)
constexpr int QS = D + 4;              // q_rot row stride (conflict-free B loads)
constexpr int REST = 4 * (WB * PS + 8 * QS);
// resident blocks the registers are capped for (~170 registers a thread, 12 warps per SM: the two
// tile stages of k4v2 at D = G = 128 let 6 blocks of 2 warps share an SM's shared memory); one
// warp per block needs more registers (twice the tokens per warp) and is not capped
#ifndef LOWBIT_ATTEND_MIN_BLOCKS
#define LOWBIT_ATTEND_MIN_BLOCKS (LOWBIT_ATTEND_WARPS == 1 ? 1 : 12 / LOWBIT_ATTEND_WARPS)
#endif
constexpr int MIN_BLOCKS = LOWBIT_ATTEND_MIN_BLOCKS;
constexpr int NSTAGE = (2 * SB + REST <= 48 * 1024) ? 2 : 1;
static_assert(NSTAGE * SB + REST <= 48 * 1024, "tile stage does not fit static shared memory");
static_assert(M >= 1 && M <= 8, "at most 8 query heads per kv head (the mma's 8 columns)");
constexpr bool PACK = LOWBIT_ATTEND_SPLIT && LOWBIT_ATTEND_PACK && M <= 4;
static_assert(G % WB == 0 && TW % 32 == 0 && D % 32 == 0, "G / warps must be a multiple of 32");
static_assert(KRUN * KB >= 8 && KRUN * KB <= 128 && (KRUN * KB) % 8 == 0, "key run of 1..16 bytes");
static_assert(CG % 16 == 0 && VRUN * VB >= 8 && VRUN * VB <= 128, "value run of 1..16 bytes");

// index of p[token t][head j] in a warp's weight buffer: rows of 8 heads, 8 extra floats after
// each lane's run of KRUN tokens (conflict-free float2 stores by the score layout and scalar
// loads by the B layout)
__device__ __forceinline__ int p_at(int t, int j) { return t * 8 + (t / KRUN) * 8 + j; }

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// nbytes from global src to shared dst by the block's threads: 16-byte cp.async when both are
// aligned, 4-byte cp.async, else plain byte copies (a field of one value per tile)
__device__ __forceinline__ void stage_copy(unsigned char* dst, const unsigned char* src, int nbytes, int tid) {
    const unsigned long long a = (unsigned long long)src | (unsigned long long)nbytes;
    if ((a & 15ull) == 0ull) {
        for (int i = tid * 16; i < nbytes; i += NT * 16)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(smem_u32(dst + i)), "l"(src + i));
    } else if ((a & 3ull) == 0ull) {
        for (int i = tid * 4; i < nbytes; i += NT * 4)
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" :: "r"(smem_u32(dst + i)), "l"(src + i));
    } else {
        for (int i = tid; i < nbytes; i += NT) dst[i] = src[i];
    }
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <int FMT>
__device__ __forceinline__ void stage_field(unsigned char* dst, const void* f, long fk, int n, int tid) {
    if (FMT == 3) return;
    stage_copy(dst, (const unsigned char*)f + fk * n * fsz(FMT), n * fsz(FMT), tid);
}

// a run of BITS packed bits (8..128) at p, as 32-bit words (the unused high bits zero)
template <int BITS>
__device__ __forceinline__ void load_run(const unsigned char* p, unsigned (&w)[(BITS + 31) / 32]) {
    if constexpr (BITS == 8) w[0] = *p;
    else if constexpr (BITS == 16) w[0] = *(const unsigned short*)p;
    else if constexpr (BITS == 32) w[0] = *(const unsigned*)p;
    else if constexpr (BITS == 64) { const uint2 v = *(const uint2*)p; w[0] = v.x; w[1] = v.y; }
    else { const uint4 v = *(const uint4*)p; w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w; }
}

// code e of a run as the exact tf32 value code * 2^((e BITS) % 16) (see the head comment)
template <int BITS, int NW>
__device__ __forceinline__ unsigned code_tf32(const unsigned (&w)[NW], int e) {
    const int bit = e * BITS, off = bit % 32;
    const unsigned h = off >= 16 ? (w[bit / 32] >> 16) : w[bit / 32];
    const unsigned x = h & (((1u << BITS) - 1u) << (off % 16));
    return __float_as_uint(__uint_as_float(0x4b000000u | x) - 8388608.0f);
}

// 2^-((e BITS) % 16): undoes code_tf32's scale of row e (exact)
template <int BITS>
__device__ __forceinline__ float code_unscale(int e) {
    return __uint_as_float((unsigned)(127 - (e * BITS) % 16) << 23);
}

__device__ __forceinline__ unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// B operand: tf32 hi part and (LOWBIT_ATTEND_SPLIT) the tf32 rounding of the remainder
struct bop { unsigned hi, lo; };
__device__ __forceinline__ bop to_bop(float x) {
    const unsigned hi = to_tf32(x);
    return {hi, LOWBIT_ATTEND_SPLIT ? to_tf32(x - __uint_as_float(hi)) : 0u};
}
// the products of A with B (lo_col: this lane's B column holds the lo parts, PACK only)
__device__ __forceinline__ void mma_bop(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                        bop b0, bop b1, bool lo_col) {
    if (PACK) {
        mma_tf32(d, a0, a1, a2, a3, lo_col ? b0.lo : b0.hi, lo_col ? b1.lo : b1.hi);
        return;
    }
    mma_tf32(d, a0, a1, a2, a3, b0.hi, b1.hi);
    if (LOWBIT_ATTEND_SPLIT) mma_tf32(d, a0, a1, a2, a3, b0.lo, b1.lo);
}

// exact tokens: 4 (load4) or D / 32 (load_dpl) consecutive elements as float (aligned)
__device__ __forceinline__ float4 load4(const EXACT_T* p) {
#if LOWBIT_EXACT_F16
    const uint2 u = *(const uint2*)p;
    const float2 a = __half22float2(*(const __half2*)&u.x), b = __half22float2(*(const __half2*)&u.y);
    return make_float4(a.x, a.y, b.x, b.y);
#else
    return *(const float4*)p;
#endif
}
__device__ __forceinline__ void load_dpl(const EXACT_T* p, float (&v)[DPL]) {
    if constexpr (DPL == 4) {
        const float4 x = load4(p);
        v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
    } else {
#pragma unroll
        for (int u = 0; u < DPL; ++u) v[u] = to_float(p[u]);
    }
}

__device__ __forceinline__ float shfl(float x, int lane) { return __shfl_sync(0xffffffffu, x, lane); }

// max (NaN-propagating) / sum over the 8 lanes of one tig (lane bits 2..4): every lane gets the same bits
__device__ __forceinline__ float group_max(float x) {
    for (int off = 4; off < 32; off <<= 1) x = max_nan(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}
__device__ __forceinline__ float group_sum(float x) {
    for (int off = 4; off < 32; off <<= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}
// sum over the 4 lanes of one groupID (lane bits 0..1)
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
}  // namespace kvmma

extern "C" __global__ void __launch_bounds__(kvmma::NT, kvmma::MIN_BLOCKS)
lowbit_kv_attend_split(LOWBIT_KV_ATTEND_SPLIT_PARAMS)
{
    using namespace kvmma;
    __shared__ __align__(16) unsigned char stage_s[NSTAGE][SB];
    __shared__ __align__(16) float p_s[WB][PS];
    __shared__ __align__(16) float q_s[8][QS];

    const int split = blockIdx.x, kv = blockIdx.y, b = blockIdx.z;
    const int hk = gridDim.y, hq = hk * M, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    // this lane's B column: head hb (part lo_col); its D columns: heads 2 hp + c (PACK: the lo parts
    // in lo lanes, tig >= 2, which after the column-pair shuffle hold the same sums as tig - 2)
    const int hb = PACK ? (g & 3) : g, hp = PACK ? (tig & 1) : tig;
    const bool lo_col = PACK && g >= 4, lo_lane = PACK && tig >= 2;
    const int start = lengths[4 * b + 0], n_sink = lengths[4 * b + 1];
    const int n_tiles = lengths[4 * b + 2], n_recent = lengths[4 * b + 3];
    const int cs = (n_sink + G - 1) / G, cr = (n_recent + G - 1) / G, cn = (n_new + G - 1) / G;
    const int total_chunks = cs + n_tiles + cr + cn;
    const int c0 = split * chunks_per_split;
    const int c1 = min(total_chunks, c0 + chunks_per_split);
    const long seq_kv = (long)b * hk + kv;
    const int entries = gridDim.x * WB, entry = split * WB + warp;
    const long bh0 = (long)b * hq + kv * M;            // query head row of j = 0
    const float* qa = q + bh0 * D;                      // original frame (exact tokens)

    for (int i = tid; i < 8 * D; i += NT) {
        const int j = i / D, d = i % D;
        q_s[j][d] = j < M ? q_rot[bh0 * D + i] : 0.f;
    }
    float* pw = p_s[warp];

    // this warp's state: softmax (max, sum) of heads 2 hp + c (same in the 8 lanes of a tig),
    // the tiles' output in the values' D layout, the reference max of the exact output (which
    // accumulates in this warp's workspace entry, rescaled only when an exact chunk adds to it)
    float m_r[2] = {KV_NEG_INF, KV_NEG_INF}, l_r[2] = {0.f, 0.f};
    float acc[MTV][4];
#pragma unroll
    for (int mt = 0; mt < MTV; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
    float m_e[M];
#pragma unroll
    for (int j = 0; j < M; ++j) m_e[j] = KV_NEG_INF;
    bool e_written = false;   // the exact output entry holds sums (else it is not read)

    // ---- exact tokens of one chunk (CUDA cores): lane = token for scores, lane = channels for values
    auto exact_chunk = [&](const EXACT_T* ek, const EXACT_T* ev, int count, int pos0) {
        const int t0 = warp * TW, n = min(TW, count - t0);
        if (n <= 0 || pos0 + t0 + n <= start) return;
        float s[TW / 32][M];
#pragma unroll
        for (int i = 0; i < TW / 32; ++i) {
            const int t = t0 + i * 32 + lane;
#pragma unroll
            for (int j = 0; j < M; ++j) s[i][j] = 0.f;
            if (t < count) {
                const EXACT_T* kr = ek + (long)t * D;
                for (int d = 0; d < D; d += 4) {
                    const float4 k4 = load4(kr + d);
#pragma unroll
                    for (int j = 0; j < M; ++j) {
                        const float4 q4 = __ldg((const float4*)(qa + j * D + d));
                        s[i][j] = __fmaf_rn(q4.w, k4.w, __fmaf_rn(q4.z, k4.z, __fmaf_rn(q4.y, k4.y,
                                  __fmaf_rn(q4.x, k4.x, s[i][j]))));
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < M; ++j) s[i][j] = (t < count && pos0 + t >= start) ? s[i][j] * scale : KV_NEG_INF;
        }
        float al[2] = {1.f, 1.f}, f[M];
        __syncwarp();
#pragma unroll
        for (int j = 0; j < M; ++j) {
            float mx = KV_NEG_INF;
#pragma unroll
            for (int i = 0; i < TW / 32; ++i) mx = max_nan(mx, s[i][j]);
            mx = warp_max(mx);
            const float old = shfl(m_r[j & 1], j >> 1), old_l = shfl(l_r[j & 1], j >> 1);
            const float nm = max_nan(old, mx);
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < TW / 32; ++i) {
                const float p = (nm == KV_NEG_INF) ? 0.f : __expf(s[i][j] - nm);
                pw[(i * 32 + lane) * 8 + j] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            const float alpha = (old == KV_NEG_INF) ? 0.f : __expf(old - nm);
            if ((j >> 1) == hp) {
                al[j & 1] = alpha;
                m_r[j & 1] = nm;
                l_r[j & 1] = old_l * alpha + sum;
            }
            f[j] = (m_e[j] == KV_NEG_INF) ? 0.f : __expf(m_e[j] - nm);   // exact output: old max -> new
            m_e[j] = nm;
        }
#pragma unroll
        for (int mt = 0; mt < MTV; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][i] *= al[i & 1];
        // the exact output (this warp's workspace entry): rescaled (a product, so that NaN stays),
        // plus this chunk's attended tokens (NaN: from the first attended one, zero weights included)
        const int ta = max(start - pos0 - t0, 0);
        __syncwarp();
#pragma unroll
        for (int j = 0; j < M; ++j) {
            float* we = ws_acc + (((bh0 + j) * entries + entry) * 2 + 1) * D + lane * DPL;
            float e[DPL];
#pragma unroll
            for (int u = 0; u < DPL; ++u) e[u] = e_written ? we[u] * f[j] : 0.f;
            for (int t = ta; t < n; ++t) {
                float v[DPL];
                load_dpl(ev + (long)(t0 + t) * D + lane * DPL, v);
                const float p = pw[t * 8 + j];
#pragma unroll
                for (int u = 0; u < DPL; ++u) e[u] = __fmaf_rn(p, v[u], e[u]);
            }
#pragma unroll
            for (int u = 0; u < DPL; ++u) we[u] = e[u];
        }
        e_written = true;
        __syncwarp();
    };

    // ---- a quantized tile from stage st, this warp's tokens -----------------------------------
    auto tile_chunk = [&](const unsigned char* st, int pos0) {
        // keys: scores^T[token, head] over the D channels
        float sk[MTK][4];
#pragma unroll
        for (int mt = 0; mt < MTK; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) sk[mt][i] = 0.f;
        float qz = 0.f;   // sum_d q_rot[g][d] Z_k[d], this lane's channels
        const unsigned char* kc = st + O_KC + (warp * TW + g * KRUN) * KB / 8;
#pragma unroll 4
        for (int ks = 0; ks < KSK; ++ks) {
            const int ch0 = ks * 8 + tig, ch1 = ch0 + 4;
            unsigned w0[(KRUN * KB + 31) / 32], w1[(KRUN * KB + 31) / 32];
            load_run<KRUN * KB>(kc + ch0 * KROW, w0);
            load_run<KRUN * KB>(kc + ch1 * KROW, w1);
            const float q0 = q_s[hb][ch0], q1 = q_s[hb][ch1];
            const bop b0 = to_bop(q0 * field<LOWBIT_FKA>(st + O_KA, nka == 1 ? 0 : ch0, 1.f));
            const bop b1 = to_bop(q1 * field<LOWBIT_FKA>(st + O_KA, nka == 1 ? 0 : ch1, 1.f));
            qz = __fmaf_rn(q0, field<LOWBIT_FKZ>(st + O_KZ, nkz == 1 ? 0 : ch0, 0.f), qz);
            qz = __fmaf_rn(q1, field<LOWBIT_FKZ>(st + O_KZ, nkz == 1 ? 0 : ch1, 0.f), qz);
#pragma unroll
            for (int mt = 0; mt < MTK; ++mt)
                mma_bop(sk[mt], code_tf32<KB>(w0, 2 * mt), code_tf32<KB>(w0, 2 * mt + 1),
                         code_tf32<KB>(w1, 2 * mt), code_tf32<KB>(w1, 2 * mt + 1), b0, b1, lo_col);
        }
        qz = quad_sum(qz);                                   // head hb, in the 4 lanes of group g
        const float qzc[2] = {shfl(qz, (2 * hp) * 4), shfl(qz, (2 * hp + 1) * 4)};
        if (PACK)                                            // hi + lo columns
#pragma unroll
            for (int mt = 0; mt < MTK; ++mt)
#pragma unroll
                for (int i = 0; i < 4; ++i) sk[mt][i] += __shfl_xor_sync(0xffffffffu, sk[mt][i], 2);
        // scores, masked; online softmax of heads 2 hp + c over this warp's TW tokens
        float mx[2] = {KV_NEG_INF, KV_NEG_INF};
#pragma unroll
        for (int mt = 0; mt < MTK; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int e = 2 * mt + (i >> 1), t = warp * TW + g * KRUN + e, j = 2 * hp + (i & 1);
                const float st_t = field<LOWBIT_FKS>(st + O_KS, nks == 1 ? 0 : t, 1.f);
                const float s = __fmaf_rn(sk[mt][i], code_unscale<KB>(e), qzc[i & 1]);
                sk[mt][i] = (j >= M || pos0 + t < start) ? KV_NEG_INF : st_t * scale * s;
                mx[i & 1] = max_nan(mx[i & 1], sk[mt][i]);
            }
        float al[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const float nm = max_nan(m_r[c], group_max(mx[c]));
            al[c] = (m_r[c] == KV_NEG_INF) ? 0.f : __expf(m_r[c] - nm);
            float sum = 0.f;
#pragma unroll
            for (int mt = 0; mt < MTK; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float& x = sk[mt][2 * h + c];
                    x = (nm == KV_NEG_INF) ? 0.f : __expf(x - nm);
                    sum += x;
                }
            l_r[c] = l_r[c] * al[c] + group_sum(sum);
            m_r[c] = nm;
        }
        __syncwarp();
        if (!lo_lane)
#pragma unroll
            for (int mt = 0; mt < MTK; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h)
                    *(float2*)&pw[p_at(g * KRUN + 2 * mt + h, 2 * hp)] = make_float2(sk[mt][2 * h], sk[mt][2 * h + 1]);
        __syncwarp();
        // values: out^T[channel, head] over this warp's TW tokens
        float cv[MTV][4];
#pragma unroll
        for (int mt = 0; mt < MTV; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) cv[mt][i] = 0.f;
        float pz[VG];     // sum_t p[t][g] Z_v[t, grp], this lane's tokens
#pragma unroll
        for (int gr = 0; gr < VG; ++gr) pz[gr] = 0.f;
        const unsigned char* vc = st + O_VC + (g * VRUN) * VB / 8;
#pragma unroll 2
        for (int ks = 0; ks < KSV; ++ks) {
            const int l0 = ks * 8 + tig, t0 = warp * TW + l0, t1 = t0 + 4;
            const float p0 = pw[p_at(l0, hb)], p1 = pw[p_at(l0 + 4, hb)];
            const bool a0 = pos0 + t0 >= start, a1 = pos0 + t1 >= start;   // NaN: masked fields unread
#pragma unroll
            for (int gr = 0; gr < VG; ++gr) {
                const long f0 = (long)t0 * VG + gr, f1 = (long)t1 * VG + gr;
                const bop b0 = to_bop(a0 ? p0 * field<LOWBIT_FVA>(st + O_VA, nva == 1 ? 0 : f0, 1.f) : 0.f);
                const bop b1 = to_bop(a1 ? p1 * field<LOWBIT_FVA>(st + O_VA, nva == 1 ? 0 : f1, 1.f) : 0.f);
                if (a0) pz[gr] = __fmaf_rn(p0, field<LOWBIT_FVZ>(st + O_VZ, nvz == 1 ? 0 : f0, 0.f), pz[gr]);
                if (a1) pz[gr] = __fmaf_rn(p1, field<LOWBIT_FVZ>(st + O_VZ, nvz == 1 ? 0 : f1, 0.f), pz[gr]);
                unsigned r0[(VRUN * VB + 31) / 32], r1[(VRUN * VB + 31) / 32];
                load_run<VRUN * VB>(vc + t0 * VROW + gr * CG * VB / 8, r0);
                load_run<VRUN * VB>(vc + t1 * VROW + gr * CG * VB / 8, r1);
#pragma unroll
                for (int ml = 0; ml < VRUN / 2; ++ml)
                    mma_bop(cv[gr * (VRUN / 2) + ml], code_tf32<VB>(r0, 2 * ml), code_tf32<VB>(r0, 2 * ml + 1),
                             code_tf32<VB>(r1, 2 * ml), code_tf32<VB>(r1, 2 * ml + 1), b0, b1, lo_col);
            }
        }
#pragma unroll
        for (int gr = 0; gr < VG; ++gr) {
            const float z = quad_sum(pz[gr]);                // head hb
            // every lane shuffles (full mask), then the lo lanes take 0: a shfl.sync they skip is undefined
            const float z0 = shfl(z, (2 * hp) * 4), z1 = shfl(z, (2 * hp + 1) * 4);
            const float zc[2] = {lo_lane ? 0.f : z0, lo_lane ? 0.f : z1};
#pragma unroll
            for (int ml = 0; ml < VRUN / 2; ++ml)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int e = 2 * ml + (i >> 1), ch = gr * CG + g * VRUN + e;
                    const float sd = field<LOWBIT_FVS>(st + O_VS, nvs == 1 ? 0 : ch, 1.f);
                    float& a = acc[gr * (VRUN / 2) + ml][i];
                    a = __fmaf_rn(sd, __fmaf_rn(cv[gr * (VRUN / 2) + ml][i], code_unscale<VB>(e), zc[i & 1]), a * al[i & 1]);
                }
        }
    };

    // ---- the split's chunks: sink, tiles (pipelined through shared memory), recent, new -------
    auto issue = [&](int tile, int buf) {
        const long fk = seq_kv * tile_cap + tile;
        unsigned char* st = stage_s[buf];
        stage_copy(st + O_KC, k_codes + fk * KC_B, KC_B, tid);
        stage_copy(st + O_VC, v_codes + fk * VC_B, VC_B, tid);
        stage_field<LOWBIT_FKA>(st + O_KA, k_a, fk, nka, tid);
        stage_field<LOWBIT_FKZ>(st + O_KZ, k_z, fk, nkz, tid);
        stage_field<LOWBIT_FKS>(st + O_KS, k_s, fk, nks, tid);
        stage_field<LOWBIT_FVA>(st + O_VA, v_a, fk, nva, tid);
        stage_field<LOWBIT_FVZ>(st + O_VZ, v_z, fk, nvz, tid);
        stage_field<LOWBIT_FVS>(st + O_VS, v_s, fk, nvs, tid);
        cp_async_commit();
    };
    const int skip = start > n_sink ? (start - n_sink) / G : 0;     // tiles wholly before start
    const int tb = max(max(c0, cs) - cs, skip), te = min(c1, cs + n_tiles) - cs;
    if (tb < te) issue(tb, 0);
    __syncthreads();                                                  // q_s
    for (int c = c0; c < min(c1, cs); ++c) {
        const int pos0 = c * G;
        exact_chunk(sink_k + (seq_kv * sink_cap + pos0) * D, sink_v + (seq_kv * sink_cap + pos0) * D,
                    min(G, n_sink - pos0), pos0);
    }
    for (int tile = tb, k = 0; tile < te; ++tile, ++k) {
        cp_async_wait_all();
        __syncthreads();               // tile's stage visible; every warp is done with the other one
        if (NSTAGE == 2 && tile + 1 < te) issue(tile + 1, (k + 1) % NSTAGE);
        tile_chunk(stage_s[k % NSTAGE], n_sink + tile * G);
        if (NSTAGE == 1 && tile + 1 < te) { __syncthreads(); issue(tile + 1, 0); }
    }
    for (int c = max(c0, cs + n_tiles); c < c1; ++c) {
        if (c < cs + n_tiles + cr) {
            const int r0 = (c - cs - n_tiles) * G;
            exact_chunk(recent_k + (seq_kv * recent_cap + r0) * D, recent_v + (seq_kv * recent_cap + r0) * D,
                        min(G, n_recent - r0), n_sink + n_tiles * G + r0);
        } else {
            const int r0 = (c - cs - n_tiles - cr) * G;
            exact_chunk(new_k + (seq_kv * n_new + r0) * D, new_v + (seq_kv * n_new + r0) * D,
                        min(G, n_new - r0), n_sink + n_tiles * G + n_recent + r0);
        }
    }

    // ---- this warp's entry: tiles' output, exact output at the final max, (max, sum) ----------
    if (PACK)                                                // hi + lo columns
#pragma unroll
        for (int mt = 0; mt < MTV; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][i] += __shfl_xor_sync(0xffffffffu, acc[mt][i], 2);
#pragma unroll
    for (int gr = 0; gr < VG; ++gr)
#pragma unroll
        for (int ml = 0; ml < VRUN / 2; ++ml)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int j = 2 * hp + (i & 1), ch = gr * CG + g * VRUN + 2 * ml + (i >> 1);
                if (j < M && !lo_lane) ws_acc[((bh0 + j) * entries + entry) * 2 * D + ch] = acc[gr * (VRUN / 2) + ml][i];
            }
#pragma unroll
    for (int j = 0; j < M; ++j) {
        const float mf = shfl(m_r[j & 1], j >> 1);
        float* we = ws_acc + (((bh0 + j) * entries + entry) * 2 + 1) * D;
        const float f = (m_e[j] == KV_NEG_INF) ? 0.f : __expf(m_e[j] - mf);
#pragma unroll
        for (int u = 0; u < DPL; ++u) we[lane * DPL + u] = e_written ? we[lane * DPL + u] * f : 0.f;
    }
    if (g == 0 && !lo_lane)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int j = 2 * hp + c;
            if (j < M) {
                ws_ml[((bh0 + j) * entries + entry) * 2] = m_r[c];
                ws_ml[((bh0 + j) * entries + entry) * 2 + 1] = l_r[c];
            }
        }
}

#include "kv_attend_mma_combine.cuh"
