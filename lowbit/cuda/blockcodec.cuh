// lowbit/cuda/blockcodec.cuh -- pieces of the block-format kernels shared by blockcodec.cu
// (every element format) and blockcodec_fp4.cu (fp4 e2m1 elements): block amax keys, where a
// unit of 8 elements lies, and the block scale rule (lowbit.cpu.blockcodec.block_scale).
#include "codec.cuh"

// |x| as an ordered integer key (float32 bits for 16/32-bit inputs, float64 bits for float64),
// its float64 value, and whether it is NaN or Inf.
template <typename T> struct AbsKey { typedef u32 type; };
template <> struct AbsKey<double> { typedef u64 type; };
__device__ __forceinline__ u32 abs_key(__half v) { return __float_as_uint(__half2float(v)) & 0x7fffffffu; }
__device__ __forceinline__ u32 abs_key(u16 v) { return ((u32)v << 16) & 0x7fffffffu; }
__device__ __forceinline__ u32 abs_key(float v) { return __float_as_uint(v) & 0x7fffffffu; }
__device__ __forceinline__ u64 abs_key(double v) { return (u64)__double_as_longlong(v) & 0x7fffffffffffffffull; }
__device__ __forceinline__ bool key_bad(u32 k) { return k >= 0x7f800000u; }
__device__ __forceinline__ bool key_bad(u64 k) { return k >= 0x7ff0000000000000ull; }
__device__ __forceinline__ double key_value(u32 k) { return f32_to_f64(__uint_as_float(k)); }
__device__ __forceinline__ double key_value(u64 k) { return __longlong_as_double((long long)k); }

// Where unit u lies: its first element in x, how many of its 8 elements are real (0..8), and
// its block.  `flat`: no padding (length % block_size == 0), so unit u is x[8u .. 8u + 8).
struct UnitPos {
    long long first, block;
    int count, lane;  // lane: the unit's position in its block
};
__device__ __forceinline__ UnitPos unit_pos(long long u, long long length, int block_size, int unit_shift,
                                            bool flat) {
    UnitPos p;
    p.block = u >> unit_shift;
    p.lane = (int)(u & ((1 << unit_shift) - 1));
    if (flat) {
        p.first = u * 8;
        p.count = 8;
        return p;
    }
    const long long per_row = (length + block_size - 1) / block_size;
    const long long row = p.block / per_row;
    const long long j = (p.block - row * per_row) * block_size + p.lane * 8;  // position in the row
    p.first = row * length + j;
    p.count = (int)max(0ll, min(8ll, length - j));
    return p;
}

// The unit's 8 inputs (zeros beyond count), one vector load where aligned.
template <typename T>
__device__ __forceinline__ void load_unit_of(const T* x, const UnitPos& p, bool vector, Unit8<T>& in) {
    if (vector) {
        const uint4* src = reinterpret_cast<const uint4*>(x + p.first);
#pragma unroll
        for (int q = 0; q < Unit8<T>::NQ; ++q) in.q[q] = src[q];
        return;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) in.t[j] = j < p.count ? x[p.first + j] : T();
}

// max of a key over the block's `lanes` consecutive lanes (a power of two <= 32), all lanes live.
template <typename K>
__device__ __forceinline__ K block_max(K key, int lanes) {
    for (int o = 1; o < lanes; o <<= 1) key = max(key, (K)__shfl_xor_sync(0xffffffffu, key, o));
    return key;
}

// (scale code, float64 scale, exponent of a power-of-two scale or -1024): lowbit.cpu.blockcodec.block_scale.
struct BlockScale {
    int code, shift;
    double scale;
};
__device__ __forceinline__ BlockScale block_scale(double amax, int scale_emax, const MiniSpec& ss,
                                                  double tensor_scale) {
    BlockScale r;
    if (tensor_scale == 0.0) {
        if (amax != amax) {
            r.code = 0xff; r.scale = LOWBIT_NAN; r.shift = -1024;
            return r;
        }
        long long s = -127;
        if (amax > 0.0) {
            const long long e = (__double_as_longlong(amax) >> 52) - 1023ll;  // floor(log2 amax)
            s = min(max(e - (long long)scale_emax, -127ll), 127ll);
        }
        r.code = (int)(s + 127); r.scale = pow2(s); r.shift = (int)s;
        return r;
    }
    int invalid, over;
    const u64 c = minifloat_encode_one(amax / 6.0 / tensor_scale, ss, LOWBIT_SATURATE, LOWBIT_NEAREST_EVEN, 0ull,
                                       0ll, 16, invalid, over);
    r.code = (int)c; r.scale = minifloat_decode_one(c, ss) * tensor_scale; r.shift = -1024;
    return r;
}
