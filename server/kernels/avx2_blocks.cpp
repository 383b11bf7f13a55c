// AVX2 products of block-format weights (GGUF types) with their activation rows. This file
// is compiled with -mavx2 -mfma -mf16c; dispatch picks it only on CPUs that have them.
//
// Batch invariance: a weight row meets NB activation rows at once (each block is unpacked
// once for all of them), and every (row, activation) pair accumulates in exactly the same
// order whatever NB is: one float vector per pair, added to block by block, summed across
// lanes at the end. So a row's result never depends on the rest of its batch.
//
// avx2_blocks_vnni.cpp compiles this file again with -mavxvnni: the 32-value products then
// use vpdpbusd (one instruction for maddubs + madd), and the entry point is
// matmul_blocks_avxvnni. avx512_blocks_vnni.cpp does the same with AVX-512 VNNI (the EVEX
// form of vpdpbusd on 8 lanes, for CPUs such as AMD Zen 4 that have it without AVX-VNNI):
// matmul_blocks_avx512vnni. The integer sums are exact, so all three give the same bits.
#include "server/kernels/kernels.hpp"
#include "server/kernels/tensor_types.hpp"

#ifndef LW_BLOCKS_ENTRY
#define LW_BLOCKS_ENTRY matmul_blocks_avx2
#endif

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

// Sum of 32 products of unsigned weight bytes (0..127) and signed activation bytes, as 8
// int32 lanes (each the sum of 4 adjacent products).
#if defined(__AVXVNNI__)
inline __m256i dot_u8(__m256i w, __m256i x) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, x); }
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
inline __m256i dot_u8(__m256i w, __m256i x) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x); }
#else
inline __m256i dot_u8(__m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}
#endif
// The same with signed weight bytes: |w| times x with w's sign.
inline __m256i dot_i8(__m256i w, __m256i x) { return dot_u8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)); }

// 32 nibbles of a 32-value block: value j in byte j (low nibbles of qs, then high ones).
// The 16 bytes go to both halves (a load, no shuffle); the upper half shifts right by 4
// within each dword, so after the mask each of its bytes holds its own high nibble.
inline __m256i unpack_nibbles(const std::uint8_t* qs) {
  const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
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

// The symmetric types are dotted unsigned, their offset taken back with the activation
// block sums: sum((q - k) * y) * dw * dy = sum(q * y) * dw * dy - k * dw * s, s = dy * sum(y).
// kOffset is that k; kMin: an affine type whose m * s is added.
struct Q4_0K {
  using W = BlockQ4_0;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = false;
  static constexpr float kOffset = 8.0f;
  static __m256i unpack(const W& b) { return unpack_nibbles(b.qs); }
};
struct Q5_0K {
  using W = BlockQ5_0;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = false;
  static constexpr float kOffset = 16.0f;
  static __m256i unpack(const W& b) { return _mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh)); }
};
struct Q8_0K {
  using W = BlockQ8_0;
  static constexpr bool kSigned = true;
  static constexpr bool kMin = false;
  static constexpr float kOffset = 0.0f;
  static __m256i unpack(const W& b) { return load32(b.qs); }
};
struct Q4_1K {
  using W = BlockQ4_1;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = true;
  static constexpr float kOffset = 0.0f;
  static __m256i unpack(const W& b) { return unpack_nibbles(b.qs); }
};
struct Q5_1K {
  using W = BlockQ5_1;
  static constexpr bool kSigned = false;
  static constexpr bool kMin = true;
  static constexpr float kOffset = 0.0f;
  static __m256i unpack(const W& b) { return _mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh)); }
};

// Eight consecutive blocks' binary16 field (d or m) as floats.
template <typename W, std::uint16_t W::*Field>
inline __m256 eight_halves(const W* b) {
  const __m128i h = _mm_setr_epi16(static_cast<short>(b[0].*Field), static_cast<short>(b[1].*Field),
                                   static_cast<short>(b[2].*Field), static_cast<short>(b[3].*Field),
                                   static_cast<short>(b[4].*Field), static_cast<short>(b[5].*Field),
                                   static_cast<short>(b[6].*Field), static_cast<short>(b[7].*Field));
  return _mm256_cvtph_ps(h);
}

// Eight blocks at a time: their scales c[b][k] = d_w * d_x[b] (one conversion and one
// multiply for all eight, the same products whatever NB is), the affine and offset terms,
// then the eight blocks, each unpacked once and dotted with NB activation rows. Working
// through the row once (not a pass for the scales and another for the values) lets the
// loads of the next blocks overlap this one's arithmetic. Two accumulators per pair (even
// and odd blocks) keep consecutive FMAs independent; they are summed in a fixed order.
template <typename K, int NB>
void rows_32(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks, float* out,
             std::size_t out_stride) {
  using W = typename K::W;
  const auto* wb = reinterpret_cast<const W*>(w);
  const std::size_t n = n_blocks * 32;
  Act32View a[NB];
  for (int b = 0; b < NB; ++b) a[b] = Act32View::of(x + static_cast<std::size_t>(b) * x_stride, n);
  __m256 acc0[NB], acc1[NB], vmins[NB];
  float mins[NB];
  for (int b = 0; b < NB; ++b) {
    acc0[b] = acc1[b] = vmins[b] = _mm256_setzero_ps();
    mins[b] = 0.0f;
  }
  alignas(32) float c[NB][8];
  auto step = [&](std::size_t blk, int k, __m256* acc) {
    const __m256i q = K::unpack(wb[blk]);
    for (int b = 0; b < NB; ++b) {
      const __m256i y = load32(a[b].qs + 32 * blk);
      const __m256i s = K::kSigned ? dot_i8(q, y) : dot_u8(q, y);
      acc[b] = _mm256_fmadd_ps(_mm256_broadcast_ss(&c[b][k]), _mm256_cvtepi32_ps(s), acc[b]);
    }
  };
  std::size_t i = 0;
  for (; i + 8 <= n_blocks; i += 8) {
    const __m256 dw = eight_halves<W, &W::d>(wb + i);
    for (int b = 0; b < NB; ++b) _mm256_store_ps(c[b], _mm256_mul_ps(dw, _mm256_loadu_ps(a[b].d + i)));
    if constexpr (K::kMin) {
      const __m256 mw = eight_halves<W, &W::m>(wb + i);
      for (int b = 0; b < NB; ++b) vmins[b] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a[b].s + i), vmins[b]);
    }
    if constexpr (K::kOffset != 0.0f) {
      const __m256 mw = _mm256_mul_ps(dw, _mm256_set1_ps(-K::kOffset));
      for (int b = 0; b < NB; ++b) vmins[b] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a[b].s + i), vmins[b]);
    }
    for (int k = 0; k < 8; k += 2) {
      step(i + k, k, acc0);
      step(i + k + 1, k + 1, acc1);
    }
  }
  for (; i < n_blocks; ++i) {
    const float dw = h2f(wb[i].d);
    for (int b = 0; b < NB; ++b) {
      c[b][0] = dw * a[b].d[i];
      if constexpr (K::kMin) mins[b] += h2f(wb[i].m) * a[b].s[i];
      if constexpr (K::kOffset != 0.0f) mins[b] += dw * -K::kOffset * a[b].s[i];
    }
    step(i, 0, acc0);
  }
  for (int b = 0; b < NB; ++b) {
    float r = hsum(_mm256_add_ps(acc0[b], acc1[b]));
    if constexpr (K::kMin || K::kOffset != 0.0f) r += hsum(vmins[b]) + mins[b];
    out[static_cast<std::size_t>(b) * out_stride] = r;
  }
}

// --- K-quants (256-value blocks, ActQ8K activations) -----------------------------------

// Bit `shift` of every byte of v, as 0x10.
inline __m256i bit_as_16(__m256i v, int shift) {
  const __m256i b = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift));
  return _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi8(1)), 4);
}

// The 8 six-bit scales and 8 mins of a Q4_K / Q5_K block, as bytes, from its 12 packed
// bytes taken as three words (see k_scale_min): sub-blocks 0-3 hold their low six bits in
// words 0 (scales) and 1 (mins), sub-blocks 4-7 their low four bits in word 2 and their top
// two in the top bits of words 0 and 1.
inline void k_scales(const std::uint8_t* p, std::uint8_t sc[8], std::uint8_t mn[8]) {
  std::uint32_t w[3];
  std::memcpy(w, p, 12);
  const std::uint32_t s_lo = w[0] & 0x3F3F3F3Fu, m_lo = w[1] & 0x3F3F3F3Fu;
  const std::uint32_t s_hi = (w[2] & 0x0F0F0F0Fu) | (((w[0] >> 6) & 0x03030303u) << 4);
  const std::uint32_t m_hi = ((w[2] >> 4) & 0x0F0F0F0Fu) | (((w[1] >> 6) & 0x03030303u) << 4);
  std::memcpy(sc, &s_lo, 4);
  std::memcpy(sc + 4, &s_hi, 4);
  std::memcpy(mn, &m_lo, 4);
  std::memcpy(mn + 4, &m_hi, 4);
}

// Byte masks that broadcast int16 lane k of a 128-bit vector to all eight lanes.
inline __m256i lane_broadcast_mask(int k) {
  const int lo = 2 * k, hi = 2 * k + 1;
  return _mm256_setr_epi8(lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo,
                          hi, lo, hi, lo, hi, lo, hi);
}

// Per block: the scales decoded once and spread to the int16 lanes each sub-block's
// products meet; the mins' term from the activation block sums, in integers, per lane.
template <bool kFive, int NB>
void rows_k_affine(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks,
                   float* out, std::size_t out_stride) {
  using W = std::conditional_t<kFive, BlockQ5K, BlockQ4K>;
  const auto* wb = reinterpret_cast<const W*>(w);
  __m256 acc[NB], macc[NB];
  for (int b = 0; b < NB; ++b) acc[b] = macc[b] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const W& blk = wb[i];
    alignas(16) std::uint8_t sc[16] = {}, mn[16] = {};
    k_scales(blk.scales, sc, mn);
    // Scales as int16 in both 128-bit halves; mins doubled (one per pair of bsums).
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    const __m128i mnv = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
    const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mnv, mnv));
    __m256i q[8], scale[8];
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
    for (int k = 0; k < 8; ++k) scale[k] = _mm256_shuffle_epi8(sc16, lane_broadcast_mask(k));
    const float d = h2f(blk.d), dmin = h2f(blk.dmin);
    for (int b = 0; b < NB; ++b) {
      const auto& a = reinterpret_cast<const ActQ8K*>(x + static_cast<std::size_t>(b) * x_stride)[i];
      __m256i isum = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], load32(a.qs + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale[k]));
      }
      const __m256i msum = _mm256_madd_epi16(load32(a.bsums), mn16);
      acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum), acc[b]);
      macc[b] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * a.d), _mm256_cvtepi32_ps(msum), macc[b]);
    }
  }
  for (int b = 0; b < NB; ++b) out[static_cast<std::size_t>(b) * out_stride] = hsum(acc[b]) - hsum(macc[b]);
}

template <int NB>
void rows_q6_k(const std::uint8_t* w, const std::uint8_t* x, std::size_t x_stride, std::size_t n_blocks, float* out,
               std::size_t out_stride) {
  const auto* wb = reinterpret_cast<const BlockQ6K*>(w);
  __m256 acc[NB], oacc[NB];
  for (int b = 0; b < NB; ++b) acc[b] = oacc[b] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const BlockQ6K& blk = wb[i];
    // q[k]: values 32k .. 32k+31, unsigned (true value + 32), scales 2k and 2k+1.
    __m256i q[8];
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load32(blk.ql + 64 * h), l1 = load32(blk.ql + 64 * h + 32);
      const __m256i hb = load32(blk.qh + 32 * h);
      // Two high bits j..j+1 of each byte, moved to bits 4-5 (0x30) with one shift.
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
    }
    // The 16 scales as int16; for q[k], scale 2k in the low half and 2k+1 in the high one.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales)));
    __m256i scale[8];
    const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                                          2, 3, 2, 3);
    for (int k = 0; k < 8; ++k) {
      scale[k] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(k)), pick);
    }
    const float d = h2f(blk.d);
    for (int b = 0; b < NB; ++b) {
      const auto& a = reinterpret_cast<const ActQ8K*>(x + static_cast<std::size_t>(b) * x_stride)[i];
      __m256i isum = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], load32(a.qs + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale[k]));
      }
      // The +32 of every value, back out: 32 * sum over groups of scale * bsum.
      const __m256i off = _mm256_madd_epi16(load32(a.bsums), sc16);
      const float da = d * a.d;
      acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(da), _mm256_cvtepi32_ps(isum), acc[b]);
      oacc[b] = _mm256_fmadd_ps(_mm256_set1_ps(32.0f * da), _mm256_cvtepi32_ps(off), oacc[b]);
    }
  }
  for (int b = 0; b < NB; ++b) out[static_cast<std::size_t>(b) * out_stride] = hsum(acc[b]) - hsum(oacc[b]);
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
void LW_BLOCKS_ENTRY(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
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
        // Decoding streams the weights from memory: ask for the row two ahead while this
        // one computes (the hardware prefetcher alone falls behind on short rows).
        if (b == 0 && i + 2 < row_end) {
          const std::uint8_t* ahead = w.data + static_cast<std::size_t>(i + 2) * w.row_bytes;
          for (std::size_t off = 0; off < w.row_bytes; off += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
        }
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
void LW_BLOCKS_ENTRY(float* out, const BlockAct& x, const BlockMatrix& w, int n, int d, int batch, int row_begin,
                     int row_end) {
  scalar_table().matmul_blocks(out, x, w, n, d, batch, row_begin, row_end);
}
}  // namespace llamawire::kernels

#endif
