// lowbit/cuda/codebook.cuh -- level search of the codebook formats, shared by codebook.cu and
// kvarn_grid.cu (twins of lowbit/cpu/codebook.py nearest_code / stochastic_code, which the CPU's
// kvarn_grid.py imports too).  Level tables are float64, strictly increasing; thresholds[i] is
// the exact midpoint of levels i and i + 1.
#ifndef LOWBIT_CODEBOOK_CUH
#define LOWBIT_CODEBOOK_CUH

// Level tables of up to 2**8 entries (uint8 codes; the wrapper checks).
#define LOWBIT_MAX_LEVELS 256

// Code of the level nearest to v, from the n_thresholds midpoints; v on a threshold goes to
// the even code; NaN encodes 0 (codebook.py nearest_code: the same binary search).
__device__ __forceinline__ int nearest_code(double v, const double* thresholds, int n_thresholds) {
    int lo = 0, hi = n_thresholds;  // lo = number of thresholds below v
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (thresholds[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n_thresholds && thresholds[lo] == v && (lo & 1)) lo += 1;
    return lo;
}

// Code of one of the two levels around v, the upper one with probability proportional to v's
// distance from the lower one (codebook.py stochastic_code: round_grid's rbits-bit comparison
// with the counter-based generator at `index`); the end levels outside the range, 0 for NaN.
__device__ __forceinline__ int stochastic_code(double v, const double* levels, int n_levels, u64 seed,
                                               long long index, int rbits) {
    if (!(v > levels[0])) return 0;
    if (!(v < levels[n_levels - 1])) return n_levels - 1;
    int lo = 0, hi = n_levels - 1;  // invariant: levels[lo] <= v < levels[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (levels[mid] <= v) lo = mid;
        else hi = mid;
    }
    const double f = (v - levels[lo]) / (levels[lo + 1] - levels[lo]);
    return lo + (int)round_grid(f, LOWBIT_STOCHASTIC, seed, index, rbits);
}

#endif  // LOWBIT_CODEBOOK_CUH
