// The panel GEMM's driver, shared by the AVX2 (avx2_fma.cpp) and AVX-512 (avx512_f32.cpp)
// tables: which tile runs where, the row-range edges, the cache blocking and prefetch. Only
// those two files include it, after defining in their own anonymous namespace
//   template <int P, int C> void panel_tile(const float* w, std::size_t panel_stride,
//       const float* x, std::size_t n, float* out, std::size_t out_stride,
//       const float* pf, int pf_every, int pf_phase);
// (P panels against C activation rows, each output the sequential fused sum from j = 0).
// Everything here has internal linkage too, so each file keeps its own copy compiled with
// its own -m flags (a shared out-of-line copy could be the wider one).
#pragma once

#include "server/kernels/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace llamawire::kernels {
namespace {

// What one pass of the batch over a block of panels needs to know.
struct PanelPass {
  const float* w;
  std::size_t panel_stride;
  std::size_t n;
  std::size_t out_stride;
  int p0, p1;    // the block
  int pf_panel;  // first panel to prefetch (the next block), or -1
  int pf_end;    // prefetch only panels below this
  int pf_every;  // the batch's passes over the block share the prefetching
  int pf_phase;
};

// Panels [p0, p1) against C activations, P panels at a time (then one at a time).
template <int P, int C>
inline void panel_span(const PanelPass& s, const float* x, float* out) {
  auto pf_for = [&](int p, int width) -> const float* {
    if (s.pf_panel < 0) return nullptr;
    const int q = s.pf_panel + (p - s.p0);
    return q + width <= s.pf_end ? s.w + static_cast<std::size_t>(q) * s.panel_stride : nullptr;
  };
  int p = s.p0;
  for (; p + P <= s.p1; p += P) {
    panel_tile<P, C>(s.w + static_cast<std::size_t>(p) * s.panel_stride, s.panel_stride, x, s.n,
                     out + static_cast<std::size_t>(p) * kPanelRows, s.out_stride, pf_for(p, P), s.pf_every,
                     s.pf_phase);
  }
  for (; p < s.p1; ++p) {
    panel_tile<1, C>(s.w + static_cast<std::size_t>(p) * s.panel_stride, s.panel_stride, x, s.n,
                     out + static_cast<std::size_t>(p) * kPanelRows, s.out_stride, pf_for(p, 1), s.pf_every,
                     s.pf_phase);
  }
}

// The last batch % Shape::kCols activations: the tile Shape gives for that many.
template <class Shape, int C = 1>
inline void panel_rest(int rest, const PanelPass& s, const float* x, float* out) {
  if constexpr (C < Shape::kCols) {
    if (rest == C) {
      panel_span<Shape::panels_for(C), C>(s, x, out);
      return;
    }
    panel_rest<Shape, C + 1>(rest, s, x, out);
  }
}

// One row by itself (the row-major tail, or a range edge inside a panel): the same
// sequential fused sum as a tile computes, one element at a time.
inline float panel_row_dot(const float* w, int n, int d, int i, const float* x) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s = std::fma(w[panel_index(i, j, n, d)], x[j], s);
  return s;
}

// matmul_panels with Shape's tiles: a block of Shape::kBlock panels stays in cache while
// the batch passes over it Shape::kCols rows at a time (the rest in the widest tile that
// fits the registers), the passes together prefetching the next block; a lone row
// (decode) takes 4-panel blocks, four independent streams, and leaves prefetching to the
// hardware (measured: software prefetch did not speed a plain stream up).
//   Shape::kCols, Shape::kPanels: the main tile; Shape::kBlock: panels per block;
//   Shape::panels_for(C): panels of the tile for C < kCols activations.
template <class Shape>
void panel_product(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin, int row_end) {
  const auto N = static_cast<std::size_t>(n);
  const auto D = static_cast<std::size_t>(d);
  const int full = d / kPanelRows * kPanelRows;
  const int pb = (row_begin + kPanelRows - 1) / kPanelRows;
  const int pe = std::max(pb, std::min(row_end, full) / kPanelRows);
  auto single = [&](int i) {
    for (int b = 0; b < batch; ++b) {
      out[static_cast<std::size_t>(b) * D + static_cast<std::size_t>(i)] =
          panel_row_dot(w, n, d, i, x + static_cast<std::size_t>(b) * N);
    }
  };
  for (int i = row_begin; i < std::min(row_end, pb * kPanelRows); ++i) single(i);
  for (int i = std::max(row_begin, pe * kPanelRows); i < row_end; ++i) single(i);
  constexpr int kCols = Shape::kCols;
  const int rest = batch % kCols;
  const int passes = batch / kCols + (rest != 0 ? 1 : 0);
  const int block = batch == 1 ? 4 : Shape::kBlock;
  for (int p0 = pb; p0 < pe; p0 += block) {
    const int p1 = std::min(p0 + block, pe);
    const int pf_panel = batch > 1 && p1 < pe ? p1 : -1;
    PanelPass s{w, N * kPanelRows, N, D, p0, p1, pf_panel, pe, passes, 0};
    int b = 0;
    for (; batch - b >= kCols; b += kCols) {
      panel_span<Shape::kPanels, kCols>(s, x + static_cast<std::size_t>(b) * N, out + static_cast<std::size_t>(b) * D);
      ++s.pf_phase;
    }
    panel_rest<Shape>(rest, s, x + static_cast<std::size_t>(b) * N, out + static_cast<std::size_t>(b) * D);
  }
}

}  // namespace
}  // namespace llamawire::kernels
