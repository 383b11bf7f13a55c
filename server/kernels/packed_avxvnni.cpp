// The packed products again, compiled with -mavxvnni (see packed_simd.cpp).
#include "server/kernels/packed_simd.cpp"
