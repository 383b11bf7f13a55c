// AVX2 quantization of activation rows into the q8_0 / q8_1 / q8_K formats: the same bits
// as quantize_act_range (tensor_types.cpp), which follows ggml's reference rounding (half
// away from zero for the 32-value blocks, half to even for q8_K). Compiled with -mavx2
// -mfma -mf16c; used by every SIMD table.
#include "server/kernels/kernels.hpp"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

namespace llamawire::kernels {
namespace {

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// roundf: to nearest, ties away from zero (v - trunc(v) is exact).
inline __m256i round_away(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
  const __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                  _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f))));
  return _mm256_cvttps_epi32(_mm256_add_ps(t, up));
}

// 32 int32 (four vectors) to 32 int8 in order.
inline void store_bytes(std::int8_t* q, const __m256i* v) {
  const __m256i a = _mm256_packs_epi32(v[0], v[1]), b = _mm256_packs_epi32(v[2], v[3]);
  const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p);
}

void block_32(const float* x, float& d_out, float& s_out, std::int32_t& sum_out, std::int8_t* q) {
  __m256 v[4];
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    m = _mm256_max_ps(m, abs_ps(v[i]));
  }
  const float amax = hmax(m);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  __m256i r[4];
  __m256i sum = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    r[i] = round_away(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
    sum = _mm256_add_epi32(sum, r[i]);
  }
  store_bytes(q, r);
  const int s = hsum_i32(sum);
  d_out = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT)));
  s_out = d_out * static_cast<float>(s);
  sum_out = s;
}

void block_k(const float* x, ActQ8K& a) {
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < 32; ++i) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + 8 * i)));
  const float amax = hmax(m);
  if (amax == 0.0f) {
    a.d = 0.0f;
    std::memset(a.qs, 0, sizeof a.qs);
    std::memset(a.bsums, 0, sizeof a.bsums);
    std::memset(a.sums32, 0, sizeof a.sums32);
    return;
  }
  // The first value of largest magnitude, as the reference's strict > scan picks it.
  float vmax = 0.0f;
  for (int j = 0; j < 256; ++j) {
    if (x[j] == amax || x[j] == -amax) {
      vmax = x[j];
      break;
    }
  }
  const float iscale = -127.0f / vmax;
  const __m256 vs = _mm256_set1_ps(iscale);
  for (int g = 0; g < 8; ++g) {
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      // nearbyint under the default mode: to nearest, ties to even
      r[i] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 32 * g + 8 * i))),
                              _mm256_set1_epi32(127));
    }
    store_bytes(a.qs + 32 * g, r);
    const int lo = hsum_i32(_mm256_add_epi32(r[0], r[1])), hi = hsum_i32(_mm256_add_epi32(r[2], r[3]));
    a.bsums[2 * g] = static_cast<std::int16_t>(lo);
    a.bsums[2 * g + 1] = static_cast<std::int16_t>(hi);
    a.sums32[g] = static_cast<std::int16_t>(lo + hi);
  }
  a.d = 1.0f / iscale;
}

}  // namespace

void quantize_act_avx2(TensorType act, const float* x, std::uint8_t* dst, std::size_t n, std::size_t begin,
                       std::size_t end) {
  switch (act) {
    case TensorType::q8_0:
    case TensorType::q8_1: {
      auto* d = reinterpret_cast<float*>(dst);
      float* s = d + n / 32;
      auto* sum = reinterpret_cast<std::int32_t*>(s + n / 32);
      auto* q = reinterpret_cast<std::int8_t*>(sum + n / 32);
      for (std::size_t i = begin / 32; i < end / 32; ++i) block_32(x + 32 * i, d[i], s[i], sum[i], q + 32 * i);
      return;
    }
    case TensorType::q8_k: {
      auto* a = reinterpret_cast<ActQ8K*>(dst);
      for (std::size_t i = begin / 256; i < end / 256; ++i) block_k(x + 256 * i, a[i]);
      return;
    }
    default: quantize_act_range(act, x, dst, n, begin, end); return;
  }
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
void quantize_act_avx2(TensorType act, const float* x, std::uint8_t* dst, std::size_t n, std::size_t begin,
                       std::size_t end) {
  quantize_act_range(act, x, dst, n, begin, end);
}
}  // namespace llamawire::kernels

#endif
