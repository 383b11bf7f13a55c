// The block-format products again, compiled with -mavxvnni (see avx2_blocks.cpp).
#define LW_BLOCKS_ENTRY matmul_blocks_avxvnni
#include "server/kernels/avx2_blocks.cpp"
