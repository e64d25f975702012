// lowbit/cuda/kv_attend.cuh -- helpers of kv_attend.cu: compile-time knobs, field and code reads.
// Overridden by the Python wrapper (lowbit/cuda/kv_attend.py):
#ifndef LOWBIT_D
#define LOWBIT_D 128          // head_dim
#endif
#ifndef LOWBIT_G
#define LOWBIT_G 128          // tokens per tile
#endif
#ifndef LOWBIT_M
#define LOWBIT_M 4            // query heads per kv head
#endif
#ifndef LOWBIT_KBITS
#define LOWBIT_KBITS 4
#endif
#ifndef LOWBIT_VBITS
#define LOWBIT_VBITS 2
#endif
#ifndef LOWBIT_VGROUPS
#define LOWBIT_VGROUPS 1      // value column groups per token row (kivi: D / 32)
#endif
// field formats (lowbit/kv/layout.py): 0 float16 bits, 1 e4m3 code, 2 float32, 3 absent
#ifndef LOWBIT_FKA
#define LOWBIT_FKA 0
#endif
#ifndef LOWBIT_FKZ
#define LOWBIT_FKZ 0
#endif
#ifndef LOWBIT_FKS
#define LOWBIT_FKS 0
#endif
#ifndef LOWBIT_FVA
#define LOWBIT_FVA 0
#endif
#ifndef LOWBIT_FVZ
#define LOWBIT_FVZ 0
#endif
#ifndef LOWBIT_FVS
#define LOWBIT_FVS 0
#endif
#ifndef LOWBIT_KROWS
#define LOWBIT_KROWS 0        // key codes: 0 [D, G] (rows = channels: kvarn, kivi), 1 [G, D] (tokens)
#endif
#ifndef LOWBIT_KCODES
#define LOWBIT_KCODES 0       // code values (lowbit/kv/layout.py): 0 integers, 1 float8 e4m3 (8 bits)
#endif
#ifndef LOWBIT_VCODES
#define LOWBIT_VCODES 0
#endif
#ifndef LOWBIT_EXACT_F16
#define LOWBIT_EXACT_F16 0    // exact tokens: 1 float16, 0 float32
#endif
#ifndef LOWBIT_ATTEND_MMA
#define LOWBIT_ATTEND_MMA 0   // 1: the tensor-core split kernel (kv_attend_mma.cuh)
#endif
#define LOWBIT_THREADS 128

#define KV_NEG_INF (-__int_as_float(0x7f800000))

#if LOWBIT_EXACT_F16
typedef __half EXACT_T;
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
#else
typedef float EXACT_T;
__device__ __forceinline__ float to_float(float x) { return x; }
#endif

// The parameters of lowbit_kv_attend_split: one list for both kernels (the CUDA-core one in
// kv_attend.cu, the tensor-core one in kv_attend_mma.cuh), which the wrapper calls alike.
#define LOWBIT_KV_ATTEND_SPLIT_PARAMS \
    const float* __restrict__ q, const float* __restrict__ q_rot, \
    const int* __restrict__ lengths, \
    const EXACT_T* __restrict__ sink_k, const EXACT_T* __restrict__ sink_v, int sink_cap, \
    const EXACT_T* __restrict__ recent_k, const EXACT_T* __restrict__ recent_v, int recent_cap, \
    const EXACT_T* __restrict__ new_k, const EXACT_T* __restrict__ new_v, int n_new, \
    const unsigned char* __restrict__ k_codes, const void* __restrict__ k_a, \
    const void* __restrict__ k_z, const void* __restrict__ k_s, \
    const unsigned char* __restrict__ v_codes, const void* __restrict__ v_a, \
    const void* __restrict__ v_z, const void* __restrict__ v_s, \
    int tile_cap, int nka, int nkz, int nks, int nva, int nvz, int nvs, \
    float scale, int chunks_per_split, float* __restrict__ ws_acc, \
    float* __restrict__ ws_ml

// float8 e4m3 (OCP, no inf; 0x7f / 0xff NaN) -> float
__device__ __forceinline__ float e4m3_value(unsigned int c) {
    const unsigned int e = (c >> 3) & 15u, m = c & 7u;
    float v;
    if ((c & 0x7fu) == 0x7fu) v = __int_as_float(0x7fc00000);
    else if (e == 0u) v = (float)m * 0.001953125f;                     // m * 2^-9
    else v = __int_as_float((int)(((e + 120u) << 23) | (m << 20)));    // (1 + m/8) 2^(e-7)
    return (c & 0x80u) ? -v : v;
}

template <int FMT>
__device__ __forceinline__ float field(const void* p, long i, float absent) {
    if (FMT == 3) return absent;
    if (FMT == 0) return __half2float(__ushort_as_half(((const unsigned short*)p)[i]));
    if (FMT == 1) return e4m3_value(((const unsigned char*)p)[i]);
    return ((const float*)p)[i];
}

// unit u of a packed code stream: 8 codes of BITS bits in BITS bytes (aligned for 2, 4, 8)
template <int BITS>
__device__ __forceinline__ unsigned long long load_unit(const unsigned char* p, long u) {
    if (BITS == 2) return *(const unsigned short*)(p + 2 * u);
    if (BITS == 4) return *(const unsigned int*)(p + 4 * u);
    return *(const unsigned long long*)(p + 8 * u);
}

// code e of unit u as float: 2**23 + code built in the mantissa, minus 2**23 (exact; two
// full-rate operations instead of an integer conversion, which issues at a quarter rate)
template <int BITS>
__device__ __forceinline__ float unit_code(unsigned long long u, int e) {
    const unsigned int c = (unsigned int)((u >> (e * BITS)) & ((1ull << BITS) - 1ull));
    return __int_as_float(0x4b000000 | (int)c) - 8388608.0f;
}

// value of code e of unit u: KIND 0 the integer (unit_code), 1 the float8 e4m3 value (8-bit
// codes; e4m3_value, the fields' decoder: the values of lowbit.kv.attend.code_values exactly)
template <int BITS, int KIND>
__device__ __forceinline__ float code_value(unsigned long long u, int e) {
    static_assert(KIND == 0 || BITS == 8, "e4m3 codes are 8 bits");
    if (KIND == 1) return e4m3_value((unsigned int)(u >> (e * 8)) & 0xffu);
    return unit_code<BITS>(u, e);
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// max(a, b) that propagates NaN (fmaxf returns the other operand): a NaN score must reach the
// softmax's running max, so that the query's output is NaN as in dense attention
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

__device__ __forceinline__ float warp_max(float x) {   // NaN if any lane holds NaN
    for (int off = 16; off > 0; off >>= 1) x = max_nan(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}
