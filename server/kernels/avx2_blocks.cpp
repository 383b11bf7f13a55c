// AVX2 products of block-format weights (GGUF types) with their activation rows. This file
// is compiled with -mavx2 -mfma -mf16c; dispatch picks it only on CPUs that have them.
//
// Batch invariance: a weight row meets NB activation rows at once (each block is unpacked
// once for all of them), and every (row, activation) pair accumulates in exactly the same
// order whatever NB is: one float vector per pair, added to block by block, summed across
// lanes at the end. So a row's result never depends on the rest of its batch.
#include "server/kernels/kernels.hpp"
#include "server/kernels/tensor_types.hpp"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace llamawire::kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  lo = _mm_add_ps(lo, _mm256_extractf128_ps(v, 1));
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

inline float h2f(std::uint16_t h) { return _cvtsh_ss(h); }

// Sum of 32 products of signed bytes, as 8 int32 lanes.
inline __m256i dot_i8(__m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
// The same with unsigned weight bytes (0..127).
inline __m256i dot_u8(__m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

// 32 nibbles of a 32-value block: value j in byte j (low nibbles of qs, then high ones).
inline __m256i unpack_nibbles(const std::uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

// Bit j of 32 bits as 0x10 in byte j.
inline __m256i fifth_bits(const std::uint8_t* qh) {
  std::uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i sel = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// --- 32-value block types -------------------------------------------------------------
// Each `Kernel` unpacks one weight block (`unpack`) and dots it with an activation block.

struct Q4_0K {
  using W = BlockQ4_0;
  using A = ActQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static __m256i unpack(const W& b) { return _mm256_sub_epi8(unpack_nibbles(b.qs), _mm256_set1_epi8(8)); }
};
struct Q5_0K {
  using W = BlockQ5_0;
  using A = ActQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static __m256i unpack(const W& b) {
    return _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh)), _mm256_set1_epi8(16));
  }
};
struct Q8_0K {
  using W = BlockQ8_0;
  using A = ActQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static __m256i unpack(const W& b) { return load32(b.qs); }
};
struct Q4_1K {
  using W = BlockQ4_1;
  using A = ActQ8_1;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = true;
  static __m256i unpack(const W& b) { return unpack_nibbles(b.qs); }
};
struct Q5_1K {
  using W = BlockQ5_1;
  using A = ActQ8_1;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = true;
  static __m256i unpack(const W& b) { return _mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh)); }
};

template <typename K, int NB>
void rows_32(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks, float* out,
             std::size_t out_stride) {
  const auto* wb = reinterpret_cast<const typename K::W*>(w);
  __m256 acc[NB];
  float mins[NB];
  for (int b = 0; b < NB; ++b) {
    acc[b] = _mm256_setzero_ps();
    mins[b] = 0.0f;
  }
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const __m256i q = K::unpack(wb[i]);
    const float dw = h2f(wb[i].d);
    for (int b = 0; b < NB; ++b) {
      const auto& a = reinterpret_cast<const typename K::A*>(x + static_cast<std::size_t>(b) * x_stride)[i];
      const __m256i y = load32(a.qs);
      const __m256i s = K::kSigned ? dot_i8(q, y) : dot_u8(q, y);
      acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), _mm256_cvtepi32_ps(s), acc[b]);
      if constexpr (K::kMin) mins[b] += h2f(wb[i].m) * a.s;
    }
  }
  for (int b = 0; b < NB; ++b) out[static_cast<std::size_t>(b) * out_stride] = hsum(acc[b]) + mins[b];
}

// --- K-quants (256-value blocks, ActQ8K activations) -----------------------------------

inline __m256i scale_pair(int lo, int hi) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(hi)), _mm_set1_epi16(static_cast<short>(lo)));
}

// Bit `shift` of every byte of v, as 0x10.
inline __m256i bit_as_16(__m256i v, int shift) {
  const __m256i b = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift));
  return _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi8(1)), 4);
}

template <bool kFive, int NB>
void rows_k_affine(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks,
                   float* out, std::size_t out_stride) {
  using W = std::conditional_t<kFive, BlockQ5K, BlockQ4K>;
  const auto* wb = reinterpret_cast<const W*>(w);
  __m256 acc[NB];
  float mins[NB];
  for (int b = 0; b < NB; ++b) {
    acc[b] = _mm256_setzero_ps();
    mins[b] = 0.0f;
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const W& blk = wb[i];
    int sc[8], mn[8];
    for (int s = 0; s < 8; ++s) k_scale_min(s, blk.scales, sc[s], mn[s]);
    __m256i q[8];
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFive) qh = load32(blk.qh);
    for (int c = 0; c < 4; ++c) {
      const __m256i raw = load32(blk.qs + 32 * c);
      q[2 * c] = _mm256_and_si256(raw, m4);
      q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
      if constexpr (kFive) {
        q[2 * c] = _mm256_or_si256(q[2 * c], bit_as_16(qh, 2 * c));
        q[2 * c + 1] = _mm256_or_si256(q[2 * c + 1], bit_as_16(qh, 2 * c + 1));
      }
    }
    const float d = h2f(blk.d), dmin = h2f(blk.dmin);
    for (int b = 0; b < NB; ++b) {
      const auto& a = reinterpret_cast<const ActQ8K*>(x + static_cast<std::size_t>(b) * x_stride)[i];
      __m256i isum = _mm256_setzero_si256();
      int summ = 0;
      for (int s = 0; s < 8; ++s) {
        const __m256i p = _mm256_maddubs_epi16(q[s], load32(a.qs + 32 * s));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_set1_epi16(static_cast<short>(sc[s]))));
        summ += mn[s] * (a.bsums[2 * s] + a.bsums[2 * s + 1]);
      }
      acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum), acc[b]);
      mins[b] += dmin * a.d * static_cast<float>(summ);
    }
  }
  for (int b = 0; b < NB; ++b) out[static_cast<std::size_t>(b) * out_stride] = hsum(acc[b]) - mins[b];
}

template <int NB>
void rows_q6_k(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks, float* out,
               std::size_t out_stride) {
  const auto* wb = reinterpret_cast<const BlockQ6K*>(w);
  __m256 acc[NB];
  float offs[NB];
  for (int b = 0; b < NB; ++b) {
    acc[b] = _mm256_setzero_ps();
    offs[b] = 0.0f;
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const BlockQ6K& blk = wb[i];
    // q[k]: values 32k .. 32k+31, unsigned (true value - 32), scales 2k and 2k+1.
    __m256i q[8];
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load32(blk.ql + 64 * h), l1 = load32(blk.ql + 64 * h + 32);
      const __m256i hb = load32(blk.qh + 32 * h);
      auto high = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(shift)), m2), 4);
      };
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), high(0));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), high(2));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), high(4));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), high(6));
    }
    __m256i scales[8];
    for (int k = 0; k < 8; ++k) scales[k] = scale_pair(blk.scales[2 * k], blk.scales[2 * k + 1]);
    const float d = h2f(blk.d);
    for (int b = 0; b < NB; ++b) {
      const auto& a = reinterpret_cast<const ActQ8K*>(x + static_cast<std::size_t>(b) * x_stride)[i];
      __m256i isum = _mm256_setzero_si256();
      int off = 0;
      for (int k = 0; k < 8; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], load32(a.qs + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scales[k]));
      }
      for (int g = 0; g < 16; ++g) off += blk.scales[g] * a.bsums[g];
      acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum), acc[b]);
      offs[b] += d * a.d * static_cast<float>(32 * off);
    }
  }
  for (int b = 0; b < NB; ++b) out[static_cast<std::size_t>(b) * out_stride] = hsum(acc[b]) - offs[b];
}

// --- 16-bit float weights against float activations ------------------------------------

template <bool kBf16>
inline __m256 load8_half(const std::uint8_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  return _mm256_cvtph_ps(raw);
}

template <bool kBf16, int NB>
void rows_half(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n, float* out,
               std::size_t out_stride) {
  __m256 acc[NB][2];
  for (int b = 0; b < NB; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 w0 = load8_half<kBf16>(w + 2 * j), w1 = load8_half<kBf16>(w + 2 * j + 16);
    for (int b = 0; b < NB; ++b) {
      const float* xb = reinterpret_cast<const float*>(x + static_cast<std::size_t>(b) * x_stride);
      acc[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + j), acc[b][0]);
      acc[b][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + j + 8), acc[b][1]);
    }
  }
  for (int b = 0; b < NB; ++b) {
    const float* xb = reinterpret_cast<const float*>(x + static_cast<std::size_t>(b) * x_stride);
    float r = hsum(_mm256_add_ps(acc[b][0], acc[b][1]));
    for (std::size_t t = j; t < n; ++t) {
      std::uint16_t h;
      std::memcpy(&h, w + 2 * t, 2);
      r += (kBf16 ? bf16_to_float(h) : h2f(h)) * xb[t];
    }
    out[static_cast<std::size_t>(b) * out_stride] = r;
  }
}

// --- the driver -----------------------------------------------------------------------

using RowsFn = void (*)(const std::uint8_t*, const std::uint8_t*, std::size_t, std::size_t, float*, std::size_t);

struct RowsSet {
  RowsFn one, two, four;
  bool per_value;  // the count passed is values (f16/bf16), else blocks
};

template <template <int> typename F>
constexpr RowsSet rows_set(bool per_value) {
  return RowsSet{F<1>::fn, F<2>::fn, F<4>::fn, per_value};
}

template <typename K>
struct Rows32 {
  template <int NB>
  struct At {
    static constexpr RowsFn fn = rows_32<K, NB>;
  };
};
template <bool kFive>
struct RowsK {
  template <int NB>
  struct At {
    static constexpr RowsFn fn = rows_k_affine<kFive, NB>;
  };
};
template <int NB>
struct RowsQ6 {
  static constexpr RowsFn fn = rows_q6_k<NB>;
};
template <bool kBf16>
struct RowsHalf {
  template <int NB>
  struct At {
    static constexpr RowsFn fn = rows_half<kBf16, NB>;
  };
};

const RowsSet* rows_for(TensorType t) {
  static const RowsSet q4_0 = rows_set<Rows32<Q4_0K>::At>(false);
  static const RowsSet q4_1 = rows_set<Rows32<Q4_1K>::At>(false);
  static const RowsSet q5_0 = rows_set<Rows32<Q5_0K>::At>(false);
  static const RowsSet q5_1 = rows_set<Rows32<Q5_1K>::At>(false);
  static const RowsSet q8_0 = rows_set<Rows32<Q8_0K>::At>(false);
  static const RowsSet q4_k = rows_set<RowsK<false>::At>(false);
  static const RowsSet q5_k = rows_set<RowsK<true>::At>(false);
  static const RowsSet q6_k = rows_set<RowsQ6>(false);
  static const RowsSet f16 = rows_set<RowsHalf<false>::At>(true);
  static const RowsSet bf16 = rows_set<RowsHalf<true>::At>(true);
  switch (t) {
    case TensorType::q4_0: return &q4_0;
    case TensorType::q4_1: return &q4_1;
    case TensorType::q5_0: return &q5_0;
    case TensorType::q5_1: return &q5_1;
    case TensorType::q8_0: return &q8_0;
    case TensorType::q4_k: return &q4_k;
    case TensorType::q5_k: return &q5_k;
    case TensorType::q6_k: return &q6_k;
    case TensorType::f16: return &f16;
    case TensorType::bf16: return &bf16;
    default: return nullptr;
  }
}

}  // namespace

// out[b][i] for rows [row_begin, row_end): a block of rows stays in cache while the batch
// passes over it, four activation rows at a time.
void matmul_blocks_avx2(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                        int row_end) {
  const RowsSet* rs = rows_for(w.type);
  if (rs == nullptr) {
    scalar_table().matmul_blocks(out, x, w, n, d, batch, row_begin, row_end);
    return;
  }
  const std::size_t count = rs->per_value ? static_cast<std::size_t>(n)
                                          : static_cast<std::size_t>(n) / static_cast<std::size_t>(traits(w.type).block);
  const auto D = static_cast<std::size_t>(d);
  constexpr int kRowBlock = 8;
  for (int i0 = row_begin; i0 < row_end; i0 += kRowBlock) {
    const int i1 = std::min(i0 + kRowBlock, row_end);
    for (int b = 0; b < batch;) {
      const int left = batch - b;
      const int nb = left >= 4 ? 4 : left >= 2 ? 2 : 1;
      const RowsFn fn = nb == 4 ? rs->four : nb == 2 ? rs->two : rs->one;
      const std::uint8_t* xb = x.data + static_cast<std::size_t>(b) * x.row_bytes;
      for (int i = i0; i < i1; ++i) {
        fn(w.data + static_cast<std::size_t>(i) * w.row_bytes, xb, x.row_bytes, count,
           out + static_cast<std::size_t>(b) * D + static_cast<std::size_t>(i), D);
      }
      b += nb;
    }
  }
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
void matmul_blocks_avx2(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                        int row_end) {
  scalar_table().matmul_blocks(out, x, w, n, d, batch, row_begin, row_end);
}
}  // namespace llamawire::kernels

#endif
