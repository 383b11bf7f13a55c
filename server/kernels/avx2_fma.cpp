// AVX2 + FMA kernels. Compiled with -mavx2 -mfma (this file only); selected at run time.
#include "server/kernels/kernels.hpp"

namespace llamawire::kernels {

const KernelTable* avx2_table() { return nullptr; }

}  // namespace llamawire::kernels
