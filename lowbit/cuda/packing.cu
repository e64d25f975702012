// lowbit/cuda/packing.cu -- pack / unpack k-bit codes; twins of lowbit/cpu/packing.py.
// Code c occupies bits [c*k, c*k + k) of a little-endian bit stream: 8 codes = k bytes
// ("a unit"); one thread per unit.

extern "C" __global__ void lowbit_pack_codes(const u8* codes, long long n, int bits, u8* packed,
                                             long long packed_size) {
    const long long units = (n + 7) / 8;
    const u64 mask = (1ull << bits) - 1ull;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const long long start = u * 8;
        const long long stop = min(start + 8, n);
        u64 acc = 0;
        for (long long i = start; i < stop; ++i) acc |= ((u64)codes[i] & mask) << ((i - start) * bits);
        store_unit(packed, u, bits, min((long long)bits, packed_size - u * bits), acc);
    }
}

extern "C" __global__ void lowbit_unpack_codes(const u8* packed, long long packed_size, int bits,
                                               u8* codes, long long n) {
    const long long units = (n + 7) / 8;
    const u64 mask = (1ull << bits) - 1ull;
    for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < units;
         u += (long long)gridDim.x * blockDim.x) {
        const long long start = u * 8;
        const long long stop = min(start + 8, n);
        const u64 acc = load_unit(packed, u, bits, min((long long)bits, packed_size - u * bits));
        for (long long i = start; i < stop; ++i) codes[i] = (u8)((acc >> ((i - start) * bits)) & mask);
    }
}
