// lowbit/cuda/kv_attend_mma_combine.cuh -- the combine kernel of the tensor-core kv_attend
// (kv_attend_mma.cuh, whose kvmma constants it uses; included at its end): one entry per warp
// and split, merged as the CUDA-core kernel's combine merges its splits.
// out_rot, out_exact [B * Hq, D] = the entries' sums weighted by e^(m_s - max m) / total weight
// (the CUDA-core kernel's combine, NaN rules included, with the entries - twice the splits, or
// more - strided over 8 warps and the warps' sums added in warp order: the same bits every run)
extern "C" __global__ void __launch_bounds__(256)
lowbit_kv_attend_combine(const float* __restrict__ ws_acc, const float* __restrict__ ws_ml, int splits,
                         const int* __restrict__ lengths, int n_new, int hq,
                         float* __restrict__ out_exact, float* __restrict__ out_rot)
{
    using namespace kvmma;
    constexpr int CW = 8;
    __shared__ float red_s[CW][2][D];
    __shared__ float mx_s[CW], tot_s[CW];
    const long bh = blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float* ml = ws_ml + bh * splits * 2;
    float mx = KV_NEG_INF;     // NaN: max_nan keeps a NaN split max
    for (int s = tid; s < splits; s += 32 * CW) mx = max_nan(mx, ml[2 * s]);
    mx = warp_max(mx);
    if (lane == 0) mx_s[warp] = mx;
    __syncthreads();
    mx = mx_s[0];
#pragma unroll
    for (int w = 1; w < CW; ++w) mx = max_nan(mx, mx_s[w]);
    float tot = 0.f;
    for (int s = tid; s < splits; s += 32 * CW) {
        const float m = ml[2 * s];
        if (m != KV_NEG_INF) tot += __expf(m - mx) * ml[2 * s + 1];
    }
    tot = warp_sum(tot);
    if (lane == 0) tot_s[warp] = tot;
    __syncthreads();
    tot = tot_s[0];
#pragma unroll
    for (int w = 1; w < CW; ++w) tot += tot_s[w];
    float r[DPL], e[DPL];
#pragma unroll
    for (int u = 0; u < DPL; ++u) r[u] = e[u] = 0.f;
    if (tot != 0.f)
        for (int s = warp; s < splits; s += CW) {
            const float m = ml[2 * s];
            const float w = (m == KV_NEG_INF) ? 0.f : __expf(m - mx);   // NaN: weighted by 0, not skipped
            const float* src = ws_acc + ((bh * splits + s) * 2) * D + lane;
#pragma unroll
            for (int u = 0; u < DPL; ++u) {
                r[u] = __fmaf_rn(w, src[32 * u], r[u]);
                e[u] = __fmaf_rn(w, src[D + 32 * u], e[u]);
            }
        }
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
        red_s[warp][0][lane + 32 * u] = r[u];
        red_s[warp][1][lane + 32 * u] = e[u];
    }
    __syncthreads();
    // NaN: a query that attends a token (start < total) but has total weight 0 gets 0 / 0
    const int* len = lengths + 4 * (bh / hq);
    const bool sees = max(len[0], 0) < len[1] + len[2] * G + len[3] + n_new;
    const float inv = tot != 0.f ? 1.f / tot : (sees ? __int_as_float(0x7fc00000) : 0.f);
    for (int i = tid; i < D; i += 32 * CW) {
        float a = red_s[0][0][i], x = red_s[0][1][i];
#pragma unroll
        for (int w = 1; w < CW; ++w) {
            a += red_s[w][0][i];
            x += red_s[w][1][i];
        }
        out_rot[bh * D + i] = a * inv;
        out_exact[bh * D + i] = x * inv;
    }
}
