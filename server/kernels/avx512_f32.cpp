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
inline void tile(const float* w, std::size_t panel_stride, const float* x, std::size_t n, float* out,
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

// One pass of C activations over panels [p0, p1), P at a time (a lone panel at the end).
struct Pass {
  const float* w;
  std::size_t panel_stride, n, out_stride;
  int p0, p1;
  int pf_panel, pf_end, pf_every, pf_phase;  // prefetch of the next block (pf_panel < 0: none)
};

template <int P, int C>
inline void span(const Pass& s, const float* x, float* out) {
  auto pf_for = [&](int p, int width) -> const float* {
    if (s.pf_panel < 0) return nullptr;
    const int q = s.pf_panel + (p - s.p0);
    return q + width <= s.pf_end ? s.w + static_cast<std::size_t>(q) * s.panel_stride : nullptr;
  };
  int p = s.p0;
  for (; p + P <= s.p1; p += P) {
    tile<P, C>(s.w + static_cast<std::size_t>(p) * s.panel_stride, s.panel_stride, x, s.n,
               out + static_cast<std::size_t>(p) * kPanelRows, s.out_stride, pf_for(p, P), s.pf_every, s.pf_phase);
  }
  for (; p < s.p1; ++p) {
    tile<1, C>(s.w + static_cast<std::size_t>(p) * s.panel_stride, s.panel_stride, x, s.n,
               out + static_cast<std::size_t>(p) * kPanelRows, s.out_stride, pf_for(p, 1), s.pf_every, s.pf_phase);
  }
}

inline float row_dot(const float* w, int n, int d, int i, const float* x) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s = std::fma(w[panel_index(i, j, n, d)], x[j], s);
  return s;
}

}  // namespace

void matmul_panels_avx512(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                          int row_end) {
  const auto N = static_cast<std::size_t>(n);
  const auto D = static_cast<std::size_t>(d);
  const int full = d / kPanelRows * kPanelRows;
  const int pb = (row_begin + kPanelRows - 1) / kPanelRows;
  const int pe = std::max(pb, std::min(row_end, full) / kPanelRows);
  auto single = [&](int i) {
    for (int b = 0; b < batch; ++b) {
      out[static_cast<std::size_t>(b) * D + static_cast<std::size_t>(i)] = row_dot(w, n, d, i, x + static_cast<std::size_t>(b) * N);
    }
  };
  for (int i = row_begin; i < std::min(row_end, pb * kPanelRows); ++i) single(i);
  for (int i = std::max(row_begin, pe * kPanelRows); i < row_end; ++i) single(i);
  // A block of two panels (32 rows) stays in L2 while the batch passes over it twelve rows
  // at a time, then the rest in the widest tile that fits; the passes share the prefetch of
  // the next block. A lone row (decode) streams four panels at once.
  constexpr int kCols = 12;
  const int rest = batch % kCols;
  const int passes = batch / kCols + (rest != 0 ? 1 : 0);
  const int block = batch == 1 ? 4 : 2;
  for (int p0 = pb; p0 < pe; p0 += block) {
    const int p1 = std::min(p0 + block, pe);
    const int pf_panel = batch > 1 && p1 < pe ? p1 : -1;
    Pass s{w, N * kPanelRows, N, D, p0, p1, pf_panel, pe, passes, 0};
    int b = 0;
    for (; batch - b >= kCols; b += kCols) {
      span<2, kCols>(s, x + static_cast<std::size_t>(b) * N, out + static_cast<std::size_t>(b) * D);
      ++s.pf_phase;
    }
    const float* xb = x + static_cast<std::size_t>(b) * N;
    float* ob = out + static_cast<std::size_t>(b) * D;
    switch (rest) {
      case 1: span<4, 1>(s, xb, ob); break;
      case 2: span<2, 2>(s, xb, ob); break;
      case 3: span<2, 3>(s, xb, ob); break;
      case 4: span<2, 4>(s, xb, ob); break;
      case 5: span<2, 5>(s, xb, ob); break;
      case 6: span<2, 6>(s, xb, ob); break;
      case 7: span<2, 7>(s, xb, ob); break;
      case 8: span<2, 8>(s, xb, ob); break;
      case 9: span<2, 9>(s, xb, ob); break;
      case 10: span<2, 10>(s, xb, ob); break;
      case 11: span<2, 11>(s, xb, ob); break;
      default: break;
    }
  }
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
