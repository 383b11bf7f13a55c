// AVX2 + FMA kernels. This file alone is compiled with -mavx2 -mfma; dispatch.cpp selects
// the table at run time only on CPUs that have both.
#include "server/kernels/kernels.hpp"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

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

inline std::int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
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

// Four weight rows against one or two activation rows: each weight load feeds 1-2 FMAs,
// and the four rows stream from memory together.
void matmul_4x2(float* o0, float* o1, const float* x0, const float* x1, const float* w, std::size_t n, int nb) {
  const float* w0 = w;
  const float* w1 = w + n;
  const float* w2 = w + 2 * n;
  const float* w3 = w + 3 * n;
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a02 = _mm256_setzero_ps(), a03 = _mm256_setzero_ps();
  __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(), a12 = _mm256_setzero_ps(), a13 = _mm256_setzero_ps();
  std::size_t j = 0;
  if (nb == 2) {
    for (; j + 8 <= n; j += 8) {
      const __m256 xa = _mm256_loadu_ps(x0 + j), xb = _mm256_loadu_ps(x1 + j);
      const __m256 v0 = _mm256_loadu_ps(w0 + j), v1 = _mm256_loadu_ps(w1 + j);
      const __m256 v2 = _mm256_loadu_ps(w2 + j), v3 = _mm256_loadu_ps(w3 + j);
      a00 = _mm256_fmadd_ps(v0, xa, a00);
      a01 = _mm256_fmadd_ps(v1, xa, a01);
      a02 = _mm256_fmadd_ps(v2, xa, a02);
      a03 = _mm256_fmadd_ps(v3, xa, a03);
      a10 = _mm256_fmadd_ps(v0, xb, a10);
      a11 = _mm256_fmadd_ps(v1, xb, a11);
      a12 = _mm256_fmadd_ps(v2, xb, a12);
      a13 = _mm256_fmadd_ps(v3, xb, a13);
    }
  } else {
    for (; j + 8 <= n; j += 8) {
      const __m256 xa = _mm256_loadu_ps(x0 + j);
      a00 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xa, a00);
      a01 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xa, a01);
      a02 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xa, a02);
      a03 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xa, a03);
    }
  }
  float r0[4] = {hsum(a00), hsum(a01), hsum(a02), hsum(a03)};
  float r1[4] = {hsum(a10), hsum(a11), hsum(a12), hsum(a13)};
  for (; j < n; ++j) {
    for (int r = 0; r < 4; ++r) {
      r0[r] += w[static_cast<std::size_t>(r) * n + j] * x0[j];
      if (nb == 2) r1[r] += w[static_cast<std::size_t>(r) * n + j] * x1[j];
    }
  }
  for (int r = 0; r < 4; ++r) {
    o0[r] = r0[r];
    if (nb == 2) o1[r] = r1[r];
  }
}

void matmul(float* out, const float* x, const float* w, int n, int d, int batch, int row_begin, int row_end) {
  const auto N = static_cast<std::size_t>(n);
  const auto D = static_cast<std::size_t>(d);
  // Rows in blocks that stay in cache while every batch item passes over them.
  constexpr int kRowBlock = 16;
  for (int i0 = row_begin; i0 < row_end; i0 += kRowBlock) {
    const int i1 = std::min(i0 + kRowBlock, row_end);
    for (int b = 0; b < batch; b += 2) {
      const int nb = std::min(2, batch - b);
      const float* xa = x + static_cast<std::size_t>(b) * N;
      const float* xb = nb == 2 ? xa + N : xa;
      float* oa = out + static_cast<std::size_t>(b) * D;
      float* ob = nb == 2 ? oa + D : oa;
      int i = i0;
      for (; i + 4 <= i1; i += 4) matmul_4x2(oa + i, ob + i, xa, xb, w + static_cast<std::size_t>(i) * N, N, nb);
      for (; i < i1; ++i) {
        oa[i] = dot(w + static_cast<std::size_t>(i) * N, xa, n);
        if (nb == 2) ob[i] = dot(w + static_cast<std::size_t>(i) * N, xb, n);
      }
    }
  }
}

// Exact int32 dot of 32 int8 pairs: |w| as unsigned times x with w's sign, pairwise to
// int16 (|127*127*2| fits), then to int32.
inline __m256i dot32_i8(__m256i xq, __m256i wq) {
  const __m256i aw = _mm256_sign_epi8(wq, wq);
  const __m256i sx = _mm256_sign_epi8(xq, wq);
  const __m256i p16 = _mm256_maddubs_epi16(aw, sx);
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

void matmul_q8(float* out, const Q8Vector& x, const Q8Matrix& w, int n, int d, int batch, int row_begin,
               int row_end) {
  const int gs = w.group;
  if (gs % 32 != 0) {  // small groups (tests, tiny exports): the reference is fast enough
    scalar_table().matmul_q8(out, x, w, n, d, batch, row_begin, row_end);
    return;
  }
  const int groups = n / gs;
  const auto N = static_cast<std::size_t>(n);
  for (int b = 0; b < batch; ++b) {
    const std::int8_t* xq = x.q + static_cast<std::size_t>(b) * N;
    const float* xs = x.s + static_cast<std::size_t>(b) * static_cast<std::size_t>(groups);
    float* ob = out + static_cast<std::size_t>(b) * static_cast<std::size_t>(d);
    for (int i = row_begin; i < row_end; ++i) {
      const std::int8_t* wq = w.q + static_cast<std::size_t>(i) * N;
      const float* ws = w.s + static_cast<std::size_t>(i) * static_cast<std::size_t>(groups);
      float val = 0.0f;
      // Groups in order, each group's integer sum exact: the same result as the reference.
      for (int g = 0; g < groups; ++g) {
        __m256i acc = _mm256_setzero_si256();
        for (int k = 0; k < gs; k += 32) {
          const auto off = static_cast<std::size_t>(g * gs + k);
          acc = _mm256_add_epi32(acc, dot32_i8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + off)),
                                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + off))));
        }
        val += static_cast<float>(hsum_i32(acc)) * ws[g] * xs[g];
      }
      ob[i] = val;
    }
  }
}

void axpy(float* y, float a, const float* x, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] += a * x[j];
}

void rmsnorm(float* o, const float* x, const float* w, int n) {
  float ss = dot(x, x, n);
  ss /= static_cast<float>(n);
  ss += 1e-5f;
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
  static const KernelTable table{"avx2", matmul, matmul_q8, scalar_table().quantize_q8, dot, axpy, rmsnorm, softmax};
  return &table;
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
const KernelTable* avx2_table() { return nullptr; }
}  // namespace llamawire::kernels

#endif
