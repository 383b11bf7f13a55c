// The panel-layout float GEMM for AVX-512 (this file alone is compiled with -mavx512f).
// A panel's 16 rows are one zmm register per column, so a tile of P panels against C
// activation rows holds P*C accumulators, each the sequential fused sum over the columns
// of one (row, activation) pair: fma(w[i][j], x[b][j], acc) for j = 0, 1, ... from 0.
// That is exactly the sum the AVX2 panels and panel_row_dot compute, so this table gives
// their bits, whatever the batch or the row range.
#include "server/kernels/kernels.hpp"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace llamawire::kernels {
namespace {

// P panels against C activations. Every column costs P weight loads and C broadcasts (folded
// into the FMAs) for P*C FMAs; 2x12 keeps 24 independent chains in flight, enough to hide
// the FMA latency on two ports. While the tile computes from cache it pulls every
// `pf_every`-th column line of the next block's panels (`pf`) into L2.
template <int P, int C>
inline void panel_tile(const float* w, std::size_t panel_stride, const float* x, std::size_t n, float* out,
                 std::size_t out_stride, const float* pf, int pf_every, int pf_phase) {
  __m512 acc[P][C];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[p][c] = _mm512_setzero_ps();
  }
  int countdown = pf_phase + 1;
  for (std::size_t j = 0; j < n; ++j) {
    if (pf != nullptr && --countdown == 0) {
      countdown = pf_every;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(pf + static_cast<std::size_t>(p) * panel_stride + j * kPanelRows),
                     _MM_HINT_T1);
      }
    }
    __m512 wv[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) wv[p] = _mm512_loadu_ps(w + static_cast<std::size_t>(p) * panel_stride + j * kPanelRows);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_set1_ps(x[static_cast<std::size_t>(c) * n + j]);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p][c] = _mm512_fmadd_ps(wv[p], xv, acc[p][c]);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      _mm512_storeu_ps(out + static_cast<std::size_t>(c) * out_stride + static_cast<std::size_t>(p) * kPanelRows,
                       acc[p][c]);
    }
  }
}

// 2 panels x 12 activations (24 accumulators of the 32 registers), two panels per block.
struct Avx512Panels {
  static constexpr int kCols = 12, kPanels = 2, kBlock = 2;
  static constexpr int panels_for(int c) { return c == 1 ? 4 : 2; }
};

}  // namespace
}  // namespace llamawire::kernels

#include "server/kernels/panel_driver.hpp"  // needs panel_tile, above

namespace llamawire::kernels {

void matmul_panels_avx512(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                          int row_end) {
  panel_product<Avx512Panels>(out, x, w, n, d, batch, row_begin, row_end);
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
void matmul_panels_avx512(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                          int row_end) {
  scalar_table().matmul_panels(out, x, w, n, d, batch, row_begin, row_end);
}
}  // namespace llamawire::kernels

#endif
