// AVX2 + FMA kernels. This file alone is compiled with -mavx2 -mfma; dispatch.cpp selects
// the table at run time only on CPUs that have both.
#include "server/kernels/kernels.hpp"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace llamawire::kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

float dot(const float* a, const float* b, int n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), acc1);
  }
  for (; j + 8 <= n; j += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// One weight row against NB activation rows. Every (row, activation) pair is summed in
// exactly the same order whatever NB is (two interleaved accumulators over 16 floats, then
// one 8-float step, then the scalar tail), so a session's logits do not depend on what
// else is in its batch. Each weight load feeds NB FMAs: with NB = 4 the batched forward
// does four times the arithmetic per byte of weights that decoding does.
template <int NB>
inline void row_dot(const float* w, const float* x, std::size_t n, float* out, std::size_t out_stride) {
  __m256 a[NB][2];
  for (int b = 0; b < NB; ++b) a[b][0] = a[b][1] = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 w0 = _mm256_loadu_ps(w + j), w1 = _mm256_loadu_ps(w + j + 8);
    for (int b = 0; b < NB; ++b) {
      const float* xb = x + static_cast<std::size_t>(b) * n;
      a[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + j), a[b][0]);
      a[b][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + j + 8), a[b][1]);
    }
  }
  if (j + 8 <= n) {
    const __m256 w0 = _mm256_loadu_ps(w + j);
    for (int b = 0; b < NB; ++b) {
      a[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + static_cast<std::size_t>(b) * n + j), a[b][0]);
    }
    j += 8;
  }
  for (int b = 0; b < NB; ++b) {
    const float* xb = x + static_cast<std::size_t>(b) * n;
    float r = hsum(_mm256_add_ps(a[b][0], a[b][1]));
    for (std::size_t t = j; t < n; ++t) r += w[t] * xb[t];
    out[static_cast<std::size_t>(b) * out_stride] = r;
  }
}

void matmul(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin, int row_end) {
  const auto N = static_cast<std::size_t>(n);
  const auto D = static_cast<std::size_t>(d);
  // A block of rows stays in cache while the batch passes over it four items at a time.
  constexpr int kRowBlock = 8;
  for (int i0 = row_begin; i0 < row_end; i0 += kRowBlock) {
    const int i1 = std::min(i0 + kRowBlock, row_end);
    for (int b = 0; b < batch;) {
      const int left = batch - b;
      const int nb = left >= 4 ? 4 : left >= 2 ? 2 : 1;
      const float* xb = x + static_cast<std::size_t>(b) * N;
      float* ob = out + static_cast<std::size_t>(b) * D;
      for (int i = i0; i < i1; ++i) {
        const float* wi = w + static_cast<std::size_t>(i) * N;
        if (nb == 4) {
          row_dot<4>(wi, xb, N, ob + i, D);
        } else if (nb == 2) {
          row_dot<2>(wi, xb, N, ob + i, D);
        } else {
          row_dot<1>(wi, xb, N, ob + i, D);
        }
      }
      b += nb;
    }
  }
}

// Panel-layout GEMM. A tile is P panels (16 rows each) against C activation rows: 2*P*C
// accumulators stay in registers while j walks the columns, each one the sequential fused
// sum of one (row, activation) pair. Every column costs 2*P weight loads and C broadcasts
// for 2*P*C FMAs, so a 1x6 tile runs near the FMA peak from cache.
//
// Prefetch: while a tile computes from cache, it pulls every `pf_every`-th column line of
// the panels at `pf` (the next block, which a later tile reads first from memory) into L2,
// so memory streaming overlaps arithmetic instead of alternating with it.
template <int P, int C>
inline void panel_tile(const float* w, std::size_t panel_stride, const float* x, std::size_t n, float* out,
                       std::size_t out_stride, const float* pf, int pf_every, int pf_phase) {
  __m256 acc[P][C][2];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[p][c][0] = acc[p][c][1] = _mm256_setzero_ps();
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
    __m256 wv[P][2];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const float* wp = w + static_cast<std::size_t>(p) * panel_stride + j * kPanelRows;
      wv[p][0] = _mm256_loadu_ps(wp);
      wv[p][1] = _mm256_loadu_ps(wp + 8);
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_broadcast_ss(x + static_cast<std::size_t>(c) * n + j);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        acc[p][c][0] = _mm256_fmadd_ps(wv[p][0], xv, acc[p][c][0]);
        acc[p][c][1] = _mm256_fmadd_ps(wv[p][1], xv, acc[p][c][1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      float* o = out + static_cast<std::size_t>(c) * out_stride + static_cast<std::size_t>(p) * kPanelRows;
      _mm256_storeu_ps(o, acc[p][c][0]);
      _mm256_storeu_ps(o + 8, acc[p][c][1]);
    }
  }
}

// The AVX2 tiles' shapes: 1 panel x 6 activations (12 accumulators of the 16 registers),
// one panel per block; the rest of a batch as below.
struct Avx2Panels {
  static constexpr int kCols = 6, kPanels = 1, kBlock = 1;
  static constexpr int panels_for(int c) { return c == 1 ? 4 : c <= 3 ? 2 : 1; }
};

}  // namespace
}  // namespace llamawire::kernels

#include "server/kernels/panel_driver.hpp"  // needs panel_tile, above

namespace llamawire::kernels {
namespace {

void matmul_panels(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin,
                   int row_end) {
  panel_product<Avx2Panels>(out, x, w, n, d, batch, row_begin, row_end);
}

// Q8_0: one row against R batch items at once. Each 32-value step is an exact int32 dot:
// |w| as unsigned times x with w's sign, pairwise to int16 (|127*127*2| fits), then to
// int32. Each (row, item) pair runs the same float operations in the same order whatever R
// is (exact integer sums per group, one fused scale-and-add per group into float lanes,
// then hsum: a reordering of the reference's sequential float sum), so its bits do not
// depend on the batch; interleaving the R pairs shares the weight load and |w| and overlaps
// their dependency chains.
//
// The kernel is bound by instruction count (four vector operations per 32 products per
// pair), so the per-group work is kept small: S = gs / 32 steps are unrolled, the first
// one starts the group's sum (no zeroing), and the group scale w_s * x_s is one vector
// multiply of two broadcasts (the same float product in every lane).
template <int R, int S>
inline void q8_row(float* out, std::size_t out_stride, const Q8Vector& x, const std::int8_t* wq, const float* ws,
                   std::size_t n, int groups, int gs) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int g = 0; g < groups; ++g) {
    const std::size_t base = static_cast<std::size_t>(g) * static_cast<std::size_t>(gs);
    __m256i isum[R];
    auto step = [&](int k, bool first) {
      const std::size_t off = base + static_cast<std::size_t>(k) * 32;
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + off));
      const __m256i aw = _mm256_sign_epi8(wv, wv);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256i xv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + static_cast<std::size_t>(r) * n + off));
        const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones);
        isum[r] = first ? p32 : _mm256_add_epi32(isum[r], p32);
      }
    };
    step(0, true);
    if constexpr (S > 0) {
#pragma GCC unroll 4
      for (int k = 1; k < S; ++k) step(k, false);
    } else {
      for (int k = 1; k < gs / 32; ++k) step(k, false);
    }
    // The group scale w_s * x_s, multiplied in every lane (the same float product).
    const __m256 wsv = _mm256_broadcast_ss(ws + g);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 sc = _mm256_mul_ps(
          wsv, _mm256_broadcast_ss(x.s + static_cast<std::size_t>(r) * static_cast<std::size_t>(groups) + g));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), sc, acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[static_cast<std::size_t>(r) * out_stride] = hsum(acc[r]);
}

// All rows of [row_begin, row_end) against the batch, R items at a time (the row stays in
// L1 while the batch passes over it), with S steps per group (0: any multiple of 32).
template <int S>
void q8_rows(float* out, const Q8Vector& x, const Q8Matrix& w, int n, int d, int batch, int row_begin, int row_end) {
  const int gs = w.group;
  const int groups = n / gs;
  const auto N = static_cast<std::size_t>(n);
  const auto D = static_cast<std::size_t>(d);
  const auto items = [&](int first) {
    return Q8Vector{x.q + static_cast<std::size_t>(first) * N,
                    x.s + static_cast<std::size_t>(first) * static_cast<std::size_t>(groups), x.group};
  };
  for (int i = row_begin; i < row_end; ++i) {
    const std::int8_t* wq = w.q + static_cast<std::size_t>(i) * N;
    const float* ws = w.s + static_cast<std::size_t>(i) * static_cast<std::size_t>(groups);
    float* o = out + static_cast<std::size_t>(i);
    int b = 0;
    for (; b + 4 <= batch; b += 4) q8_row<4, S>(o + static_cast<std::size_t>(b) * D, D, items(b), wq, ws, N, groups, gs);
    switch (batch - b) {
      case 3: q8_row<3, S>(o + static_cast<std::size_t>(b) * D, D, items(b), wq, ws, N, groups, gs); break;
      case 2: q8_row<2, S>(o + static_cast<std::size_t>(b) * D, D, items(b), wq, ws, N, groups, gs); break;
      case 1: q8_row<1, S>(o + static_cast<std::size_t>(b) * D, D, items(b), wq, ws, N, groups, gs); break;
      default: break;
    }
  }
}

void matmul_q8(float* out, const Q8Vector& x, const Q8Matrix& w, int n, int d, int batch, int row_begin,
               int row_end) {
  switch (w.group) {
    case 32: q8_rows<1>(out, x, w, n, d, batch, row_begin, row_end); return;
    case 64: q8_rows<2>(out, x, w, n, d, batch, row_begin, row_end); return;
    default: break;
  }
  if (w.group % 32 != 0) {  // small groups (tests, tiny exports): the reference is fast enough
    scalar_table().matmul_q8(out, x, w, n, d, batch, row_begin, row_end);
    return;
  }
  q8_rows<0>(out, x, w, n, d, batch, row_begin, row_end);
}

void axpy(float* y, float a, const float* x, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] += a * x[j];
}

// dot(q, k_t) for T positions at once, each in exactly dot()'s order (two accumulators over
// 16 floats, one 8-float step, hsum, scalar tail): the T dependency chains overlap.
template <int T>
inline void dot_multi(const float* q, const float* k, std::size_t stride, int n, float* out) {
  __m256 a0[T], a1[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 q0 = _mm256_loadu_ps(q + j), q1 = _mm256_loadu_ps(q + j + 8);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const float* kt = k + static_cast<std::size_t>(t) * stride + j;
      a0[t] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(kt), a0[t]);
      a1[t] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(kt + 8), a1[t]);
    }
  }
  if (j + 8 <= n) {
    const __m256 q0 = _mm256_loadu_ps(q + j);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) a0[t] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + static_cast<std::size_t>(t) * stride + j), a0[t]);
    j += 8;
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    const float* kt = k + static_cast<std::size_t>(t) * stride;
    float s = hsum(_mm256_add_ps(a0[t], a1[t]));
    for (int r = j; r < n; ++r) s += q[r] * kt[r];
    out[t] = s;
  }
}

void attn_scores(float* att, const float* q, const float* k, std::size_t stride, int count, int n, float divisor) {
  int t = 0;
  for (; t + 4 <= count; t += 4) {
    dot_multi<4>(q, k + static_cast<std::size_t>(t) * stride, stride, n, att + t);
    for (int i = t; i < t + 4; ++i) att[i] /= divisor;
  }
  for (; t < count; ++t) att[t] = dot(q, k + static_cast<std::size_t>(t) * stride, n) / divisor;
}

void attn_values(float* out, const float* att, const float* v, std::size_t stride, int count, int n) {
  // The output slice lives in registers across the positions, 64 floats at a time; each
  // element still gets out = fma(att[t], v[t], out) in position order, as axpy() does.
  int j = 0;
  for (; j + 64 <= n; j += 64) {
    __m256 o[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) o[r] = _mm256_loadu_ps(out + j + 8 * r);
    for (int t = 0; t < count; ++t) {
      const __m256 a = _mm256_set1_ps(att[t]);
      const float* vt = v + static_cast<std::size_t>(t) * stride + j;
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) o[r] = _mm256_fmadd_ps(a, _mm256_loadu_ps(vt + 8 * r), o[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) _mm256_storeu_ps(out + j + 8 * r, o[r]);
  }
  if (j < n) {
    for (int t = 0; t < count; ++t) axpy(out + j, att[t], v + static_cast<std::size_t>(t) * stride + j, n - j);
  }
}

void rmsnorm(float* o, const float* x, const float* w, int n, float eps) {
  float ss = dot(x, x, n);
  ss /= static_cast<float>(n);
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  const __m256 vs = _mm256_set1_ps(ss);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), _mm256_mul_ps(vs, _mm256_loadu_ps(x + j))));
  }
  for (; j < n; ++j) o[j] = w[j] * (ss * x[j]);
}

void softmax(float* x, int n) {
  __m256 vmax = _mm256_set1_ps(x[0]);
  int j = 0;
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + j));
  alignas(32) float m8[8];
  _mm256_store_ps(m8, vmax);
  float max_val = x[0];
  for (float v : m8) max_val = v > max_val ? v : max_val;
  for (; j < n; ++j) max_val = x[j] > max_val ? x[j] : max_val;
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
  for (; j < n; ++j) x[j] *= 1.0f / sum;
}

}  // namespace

const KernelTable* avx2_table() {
  static const KernelTable table{"avx2", matmul, matmul_panels, matmul_q8, matmul_blocks_avx2, matmul_packed_avx2, quantize_act_avx2, scalar_table().quantize_q8, dot, attn_scores, attn_values, axpy, rmsnorm, softmax};
  return &table;
}

const KernelTable* avx2_vnni_table() {
  static const KernelTable table{"avx2-vnni", matmul, matmul_panels, matmul_q8, matmul_blocks_avxvnni, matmul_packed_avxvnni, quantize_act_avx2, scalar_table().quantize_q8, dot, attn_scores, attn_values, axpy, rmsnorm, softmax};
  return &table;
}

const KernelTable* avx512_vnni_table() {
  static const KernelTable table{"avx512-vnni", matmul, matmul_panels_avx512, matmul_q8, matmul_blocks_avx512vnni, matmul_packed_avx512, quantize_act_avx2, scalar_table().quantize_q8, dot, attn_scores, attn_values, axpy, rmsnorm, softmax};
  return &table;
}

const KernelTable* amx_table() {
  static const KernelTable table{"amx", matmul, matmul_panels_avx512, matmul_q8, matmul_blocks_avx512vnni, matmul_packed_amx, quantize_act_avx2, scalar_table().quantize_q8, dot, attn_scores, attn_values, axpy, rmsnorm, softmax};
  return &table;
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
const KernelTable* avx2_table() { return nullptr; }
const KernelTable* avx2_vnni_table() { return nullptr; }
const KernelTable* avx512_vnni_table() { return nullptr; }
const KernelTable* amx_table() { return nullptr; }
}  // namespace llamawire::kernels

#endif
