// The block-format products again, compiled with AVX-512 VNNI (see avx2_blocks.cpp).
#define LW_BLOCKS_ENTRY matmul_blocks_avx512vnni
#include "server/kernels/avx2_blocks.cpp"
