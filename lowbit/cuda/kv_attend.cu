// Decode attention over a quantized KV cache, reading packed codes and per-tile fields
// (the CUDA twin of lowbit/cpu/kv_attend.py; the separable form of DESIGN.md section 4).
//
// One query token per sequence.  Grid (splits, Hk, B), 128 threads: a block serves the M
// query heads of one kv head over one split of the sequence's chunks (chunks of G tokens:
// the sink's, the quantized tiles, the recent tokens', the new tokens'), with an online
// softmax; lowbit_kv_attend_combine merges the splits with their (max, sum) (log-sum-exp).
// Key tiles have codes [D, G] (rows = channels: kvarn, kivi) or, with LOWBIT_KROWS=1, [G, D]
// (rows = tokens: quarot, rtn, fp8), value tiles [G, D] (rows = tokens, in VGROUPS column
// groups): per code one fused multiply-add per query head.  Codes are integers or, with
// LOWBIT_KCODES / LOWBIT_VCODES = 1, float8 e4m3 values (fp8; code_value in kv_attend.cuh).
// LOWBIT_ATTEND_MMA=1 selects the tensor-core kernel of kv_attend_mma.cuh instead (same entry).
//
// NaN (the CPU twin's docstring has the rules): the maxima use max_nan, so a NaN (or, through
// inf - inf, a +inf) score makes the running max, sum and accumulators NaN (__expf(NaN) is
// NaN); value loops start at the first attended token (never read a masked one, read every
// attended one, zero weights included: 0 * NaN is NaN); the combine keeps NaN from any split
// and gives 0 / 0 = NaN to a query whose attended scores are all -inf.  Marked "NaN:" below.
#include "kv_attend.cuh"

#if LOWBIT_ATTEND_MMA
#if LOWBIT_KROWS || LOWBIT_KCODES || LOWBIT_VCODES
#error "the tensor-core kernel reads key codes [D, G] of integer codes (lowbit.cuda.kv_attend.uses_mma)"
#endif
#include "kv_attend_mma.cuh"
#else
extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)
lowbit_kv_attend_split(LOWBIT_KV_ATTEND_SPLIT_PARAMS)
{
    constexpr int D = LOWBIT_D, G = LOWBIT_G, M = LOWBIT_M, T = LOWBIT_THREADS;
    constexpr int UK = G / 8, DS = T / UK;          // key tile: unit columns x row slices
    constexpr int UV = D / 8, TS = T / UV;          // value tile: unit columns x token slices
    constexpr int CG = D / LOWBIT_VGROUPS;          // channels per value column group
    static_assert(G % 8 == 0 && D % 8 == 0 && 32 % UK == 0 && T % UV == 0 && D % DS == 0 && G % TS == 0,
                  "unsupported D / G");
    static_assert(CG % 8 == 0, "value column groups must hold whole 8-code units");
    constexpr long KBYTES = (long)D * G * LOWBIT_KBITS / 8, VBYTES = (long)G * D * LOWBIT_VBITS / 8;

#if LOWBIT_KROWS
    __shared__ float qr_s[M][D], qa_s[M][D];
    __shared__ __align__(16) float w_s[M][D];      // float4 reads (token-row key tiles)
    __shared__ float sc_s[M][G];
#else
    __shared__ float qr_s[M][D], qa_s[M][D], w_s[M][D], sc_s[M][G];
#endif
    __shared__ float red_s[T / 32][M][G];
    __shared__ float oute_s[M][D], outr_s[M][D];
    __shared__ float qz_s[M], m_s[M], l_s[M], alpha_s[M];

    const int split = blockIdx.x, kv = blockIdx.y, b = blockIdx.z;
    const int hk = gridDim.y, hq = hk * M, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int start = lengths[4 * b + 0], n_sink = lengths[4 * b + 1];
    const int n_tiles = lengths[4 * b + 2], n_recent = lengths[4 * b + 3];
    const int cs = (n_sink + G - 1) / G, cr = (n_recent + G - 1) / G, cn = (n_new + G - 1) / G;
    const int total_chunks = cs + n_tiles + cr + cn;
    const int c0 = split * chunks_per_split;
    const int c1 = min(total_chunks, c0 + chunks_per_split);
    const long seq_kv = (long)b * hk + kv;

    for (int i = tid; i < M * D; i += T) {
        const int j = i / D, d = i % D;
        const long qi = ((long)b * hq + kv * M + j) * D + d;
        qa_s[j][d] = q[qi];
        qr_s[j][d] = q_rot[qi];
        oute_s[j][d] = 0.f;
        outr_s[j][d] = 0.f;
    }
    if (tid < M) { m_s[tid] = KV_NEG_INF; l_s[tid] = 0.f; }
    // value accumulators of this thread: M queries x its 8 channels (tiles' frame)
    const int vcol = tid % UV, tslice = tid / UV;
    float acc[M][8];
#pragma unroll
    for (int j = 0; j < M; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j][e] = 0.f;
    __syncthreads();

    for (int c = c0; c < c1; ++c) {
        // ---- which chunk: exact tokens (pointer, count, first position) or tile -----------
        const EXACT_T* ek = nullptr;
        const EXACT_T* ev = nullptr;
        int count = G, pos0, tile = -1;
        if (c < cs) {
            pos0 = c * G; count = min(G, n_sink - pos0);
            ek = sink_k + (seq_kv * sink_cap + pos0) * D; ev = sink_v + (seq_kv * sink_cap + pos0) * D;
        } else if (c < cs + n_tiles) {
            tile = c - cs; pos0 = n_sink + tile * G;
        } else if (c < cs + n_tiles + cr) {
            const int r0 = (c - cs - n_tiles) * G;
            pos0 = n_sink + n_tiles * G + r0; count = min(G, n_recent - r0);
            ek = recent_k + (seq_kv * recent_cap + r0) * D; ev = recent_v + (seq_kv * recent_cap + r0) * D;
        } else {
            const int r0 = (c - cs - n_tiles - cr) * G;
            pos0 = n_sink + n_tiles * G + n_recent + r0; count = min(G, n_new - r0);
            ek = new_k + (seq_kv * n_new + r0) * D; ev = new_v + (seq_kv * n_new + r0) * D;
        }
        if (pos0 + count <= start) continue;   // uniform across the block

        if (tile >= 0) {
#if LOWBIT_KROWS == 0
            // ---- scores of a key tile: S[t] (sum_d (q_d A_d) code[d, t] + sum_d q_d Z_d) ----
            const long fk = seq_kv * tile_cap + tile;
            for (int i = tid; i < M * D; i += T) {
                const int j = i / D, d = i % D;
                w_s[j][d] = qr_s[j][d] * field<LOWBIT_FKA>(k_a, fk * nka + (nka == 1 ? 0 : d), 1.f);
            }
            for (int j = warp; j < M; j += T / 32) {
                float s = 0.f;
                for (int d = lane; d < D; d += 32)
                    s = __fmaf_rn(qr_s[j][d], field<LOWBIT_FKZ>(k_z, fk * nkz + (nkz == 1 ? 0 : d), 0.f), s);
                s = warp_sum(s);
                if (lane == 0) qz_s[j] = s;
            }
            __syncthreads();
            const unsigned char* kc = k_codes + fk * KBYTES;
            const int kcol = tid % UK, dslice = tid / UK;
            float ks[M][8];
#pragma unroll
            for (int j = 0; j < M; ++j)
#pragma unroll
                for (int e = 0; e < 8; ++e) ks[j][e] = 0.f;
#pragma unroll 4
            for (int d = dslice; d < D; d += DS) {
                const unsigned long long u = load_unit<LOWBIT_KBITS>(kc, (long)d * UK + kcol);
                float code[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) code[e] = unit_code<LOWBIT_KBITS>(u, e);
#pragma unroll
                for (int j = 0; j < M; ++j) {
                    const float wj = w_s[j][d];
#pragma unroll
                    for (int e = 0; e < 8; ++e) ks[j][e] = __fmaf_rn(wj, code[e], ks[j][e]);
                }
            }
#pragma unroll
            for (int j = 0; j < M; ++j)
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    float x = ks[j][e];
#pragma unroll
                    for (int off = UK; off < 32; off <<= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
                    if (lane < UK) red_s[warp][j][kcol * 8 + e] = x;
                }
            __syncthreads();
            for (int i = tid; i < M * G; i += T) {
                const int j = i / G, t = i % G;
                float s = 0.f;
#pragma unroll
                for (int w = 0; w < T / 32; ++w) s += red_s[w][j][t];
                const float st = field<LOWBIT_FKS>(k_s, fk * nks + (nks == 1 ? 0 : t), 1.f);
                sc_s[j][t] = (pos0 + t < start) ? KV_NEG_INF : st * scale * (s + qz_s[j]);
            }
#else
            // ---- scores of a key tile with codes [G, D] (rows = tokens): A[t] sum_d w_d code[t, d]
            // + Z[t] sum_d w_d, w_d = q_d S[d]; KT threads per token row, DP channels each ------
            constexpr int KT = T / G, DP = D / KT, CW = 64 / LOWBIT_KBITS;   // CW codes per word
            static_assert(T % G == 0 && KT <= T / 32 && DP % CW == 0 && CW % 4 == 0, "unsupported D / G");
            const long fk = seq_kv * tile_cap + tile;
            for (int i = tid; i < M * D; i += T) {
                const int j = i / D, d = i % D;
                w_s[j][d] = qr_s[j][d] * field<LOWBIT_FKS>(k_s, fk * nks + (nks == 1 ? 0 : d), 1.f);
            }
            if (LOWBIT_FKZ != 3)
                for (int j = warp; j < M; j += T / 32) {
                    float s = 0.f;
                    for (int d = lane; d < D; d += 32)
                        s = __fmaf_rn(qr_s[j][d], field<LOWBIT_FKS>(k_s, fk * nks + (nks == 1 ? 0 : d), 1.f), s);
                    s = warp_sum(s);
                    if (lane == 0) qz_s[j] = s;
                }
            const int kt = tid % G, part = tid / G;   // a warp: 32 tokens, one part (w_s broadcast)
            const unsigned long long* kw =
                (const unsigned long long*)(k_codes + fk * KBYTES) + ((long)kt * D + part * DP) / CW;
            constexpr int NW = DP / CW, CH = NW < 8 ? NW : 8;   // 8-byte words, in chunks of CH
            unsigned long long u[CH];                 // the first chunk loaded before the sync
#pragma unroll
            for (int i = 0; i < CH; ++i) u[i] = kw[i];
            __syncthreads();
            float ks[M];
#pragma unroll
            for (int j = 0; j < M; ++j) ks[j] = 0.f;
#pragma unroll
            for (int h = 0; h < NW; h += CH) {
                if (h > 0)
#pragma unroll
                    for (int i = 0; i < CH; ++i) u[i] = kw[h + i];
#pragma unroll
                for (int i = 0; i < CH; ++i)
#pragma unroll
                    for (int e = 0; e < CW; e += 4) {
                        float code[4];
#pragma unroll
                        for (int k = 0; k < 4; ++k) code[k] = code_value<LOWBIT_KBITS, LOWBIT_KCODES>(u[i], e + k);
                        const int d = part * DP + (h + i) * CW + e;
#pragma unroll
                        for (int j = 0; j < M; ++j) {
                            const float4 w4 = *reinterpret_cast<const float4*>(&w_s[j][d]);
                            ks[j] = __fmaf_rn(w4.x, code[0], ks[j]);
                            ks[j] = __fmaf_rn(w4.y, code[1], ks[j]);
                            ks[j] = __fmaf_rn(w4.z, code[2], ks[j]);
                            ks[j] = __fmaf_rn(w4.w, code[3], ks[j]);
                        }
                    }
            }
#pragma unroll
            for (int j = 0; j < M; ++j) red_s[part][j][kt] = ks[j];
            __syncthreads();
            for (int i = tid; i < M * G; i += T) {
                const int j = i / G, t = i % G;
                float s = red_s[0][j][t];
#pragma unroll
                for (int p = 1; p < KT; ++p) s += red_s[p][j][t];
                float st = field<LOWBIT_FKA>(k_a, fk * nka + (nka == 1 ? 0 : t), 1.f) * s;
                if (LOWBIT_FKZ != 3)
                    st = __fmaf_rn(field<LOWBIT_FKZ>(k_z, fk * nkz + (nkz == 1 ? 0 : t), 0.f), qz_s[j], st);
                sc_s[j][t] = (pos0 + t < start) ? KV_NEG_INF : scale * st;
            }
#endif
        } else {
            // ---- scores of exact tokens (original frame) -----------------------------------
            for (int i = tid; i < M * G; i += T) {
                const int j = i / G, t = i % G;
                float s = KV_NEG_INF;
                if (t < count && pos0 + t >= start) {
                    s = 0.f;
                    const EXACT_T* kr = ek + (long)t * D;
                    for (int d = 0; d < D; ++d) s = __fmaf_rn(qa_s[j][d], to_float(kr[d]), s);
                    s *= scale;
                }
                sc_s[j][t] = s;
            }
        }
        __syncthreads();
        // ---- online softmax over the chunk: weights into sc_s, alpha_s rescales -------------
        for (int j = warp; j < M; j += T / 32) {
            float mx = KV_NEG_INF;   // NaN: max_nan, not fmaxf (a NaN score must stick)
            for (int t = lane; t < G; t += 32) mx = max_nan(mx, sc_s[j][t]);
            mx = warp_max(mx);
            const float old = m_s[j];
            const float nm = max_nan(old, mx);
            float sum = 0.f;
            for (int t = lane; t < G; t += 32) {
                const float p = (nm == KV_NEG_INF) ? 0.f : __expf(sc_s[j][t] - nm);
                sc_s[j][t] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float alpha = (old == KV_NEG_INF) ? 0.f : __expf(old - nm);
                alpha_s[j] = alpha;
                l_s[j] = l_s[j] * alpha + sum;
                m_s[j] = nm;
            }
        }
        __syncthreads();
        for (int i = tid; i < M * D; i += T) oute_s[i / D][i % D] *= alpha_s[i / D];
#pragma unroll
        for (int j = 0; j < M; ++j) {
            const float a = alpha_s[j];
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[j][e] *= a;
        }
        if (tile >= 0) {
            // ---- value tile: S[d] (sum_t (p_t A[t,g]) code[t, d] + sum_t p_t Z[t,g]) -------
            const long fv = seq_kv * tile_cap + tile;
            const unsigned char* vc = v_codes + fv * VBYTES;
            const int g = (vcol * 8) / CG;
            // NaN: the first token this thread's slice attends (masked tokens' fields are not read)
            const int tv0 = tslice + (max(start - pos0 - tslice, 0) + TS - 1) / TS * TS;
            float tmp[M][8], pz[M];
#pragma unroll
            for (int j = 0; j < M; ++j) {
                pz[j] = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) tmp[j][e] = 0.f;
            }
#pragma unroll 2
            for (int t = tv0; t < G; t += TS) {
                const long fi = (long)t * LOWBIT_VGROUPS + g;
                const float at = field<LOWBIT_FVA>(v_a, fv * nva + (nva == 1 ? 0 : fi), 1.f);
                const float zt = field<LOWBIT_FVZ>(v_z, fv * nvz + (nvz == 1 ? 0 : fi), 0.f);
                const unsigned long long u = load_unit<LOWBIT_VBITS>(vc, (long)t * UV + vcol);
                float code[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) code[e] = code_value<LOWBIT_VBITS, LOWBIT_VCODES>(u, e);
#pragma unroll
                for (int j = 0; j < M; ++j) {
                    const float p = sc_s[j][t];
                    const float pa = p * at;
                    pz[j] = __fmaf_rn(p, zt, pz[j]);
#pragma unroll
                    for (int e = 0; e < 8; ++e) tmp[j][e] = __fmaf_rn(pa, code[e], tmp[j][e]);
                }
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int d = vcol * 8 + e;
                const float sd = field<LOWBIT_FVS>(v_s, fv * nvs + (nvs == 1 ? 0 : d), 1.f);
#pragma unroll
                for (int j = 0; j < M; ++j) acc[j][e] = __fmaf_rn(sd, tmp[j][e] + pz[j], acc[j][e]);
            }
        } else {
            // ---- exact values, original frame, coalesced over d ----------------------------
            for (int i = tid; i < M * D; i += T) {
                const int j = i / D, d = i % D;
                float s = oute_s[j][d];
                // NaN: from the first attended token (a masked one is not read)
                for (int t = max(start - pos0, 0); t < count; ++t) s = __fmaf_rn(sc_s[j][t], to_float(ev[(long)t * D + d]), s);
                oute_s[j][d] = s;
            }
        }
        __syncthreads();
    }
    // ---- this split's partial sums: the token slices added in slice order (not atomics), so
    // the result is the same bits on every run and in a replayed CUDA graph -----------------
    for (int sl = 0; sl < TS; ++sl) {
        if (tslice == sl) {
#pragma unroll
            for (int j = 0; j < M; ++j)
#pragma unroll
                for (int e = 0; e < 8; ++e) outr_s[j][vcol * 8 + e] += acc[j][e];
        }
        __syncthreads();
    }
    const int splits = gridDim.x;
    for (int i = tid; i < M * D; i += T) {
        const int j = i / D, d = i % D;
        const long bh = (long)b * hq + kv * M + j;
        float* dst = ws_acc + ((bh * splits + split) * 2) * D;
        dst[d] = outr_s[j][d];
        dst[D + d] = oute_s[j][d];
    }
    if (tid < M) {
        const long bh = (long)b * hq + kv * M + tid;
        ws_ml[(bh * splits + split) * 2] = m_s[tid];
        ws_ml[(bh * splits + split) * 2 + 1] = l_s[tid];
    }
}

// out_rot, out_exact [B * Hq, D] = the splits' sums weighted by e^(m_s - max m) / total weight.
// NaN: the max keeps a NaN split max; a split whose scores are all -inf is weighted by 0, not
// skipped (its sums hold NaN if an attended value is NaN: 0 * NaN is NaN); a query that attends
// a token (start <= its position, total - 1) but has total weight 0 gets 0 / 0 = NaN.
extern "C" __global__ void lowbit_kv_attend_combine(const float* __restrict__ ws_acc,
                                                    const float* __restrict__ ws_ml, int splits,
                                                    const int* __restrict__ lengths, int n_new, int hq,
                                                    float* __restrict__ out_exact, float* __restrict__ out_rot)
{
    constexpr int D = LOWBIT_D, G = LOWBIT_G;
    const long bh = blockIdx.x;
    float mx = KV_NEG_INF;
    for (int s = 0; s < splits; ++s) mx = max_nan(mx, ws_ml[(bh * splits + s) * 2]);
    float tot = 0.f;
    if (mx != KV_NEG_INF)
        for (int s = 0; s < splits; ++s) {
            const float m = ws_ml[(bh * splits + s) * 2];
            if (m != KV_NEG_INF) tot += __expf(m - mx) * ws_ml[(bh * splits + s) * 2 + 1];
        }
    const int* len = lengths + 4 * (bh / hq);
    const bool sees = max(len[0], 0) < len[1] + len[2] * G + len[3] + n_new;
    const float inv = tot != 0.f ? 1.f / tot : (sees ? __int_as_float(0x7fc00000) : 0.f);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float r = 0.f, e = 0.f;
        if (tot != 0.f)
            for (int s = 0; s < splits; ++s) {
                const float m = ws_ml[(bh * splits + s) * 2];
                const float w = (m == KV_NEG_INF) ? 0.f : __expf(m - mx);
                const float* src = ws_acc + ((bh * splits + s) * 2) * D;
                r = __fmaf_rn(w, src[d], r);
                e = __fmaf_rn(w, src[D + d], e);
            }
        out_rot[bh * D + d] = r * inv;
        out_exact[bh * D + d] = e * inv;
    }
}
#endif  // LOWBIT_ATTEND_MMA
