// The packed products again, for AVX-512 with VNNI (see packed_simd.cpp).
#define LW_PACKED_AVX512 1
#include "server/kernels/packed_simd.cpp"
