// SIMD products of packed matrices (layout and arithmetic: packed.hpp). This file is built
// three times: for AVX2 (16 rows as two 8-lane halves, vpmaddubsw + vpmaddwd), for AVX2
// with AVX-VNNI (vpdpbusd on 8 lanes), and for AVX-512 with VNNI (LW_PACKED_AVX512: one
// 16-lane vector per tile). Every row is one lane, so each (row, activation) pair performs
// exactly the float operations of matmul_packed_ref in its order: the results are the
// reference's bits, whatever the batch, the row range or the instruction set.
//
// A tile of 16 rows (or a half of it) meets NC activation rows at once: its values are
// unpacked once per super-block into registers and dotted with every activation (register
// blocking), and a group's weights, at most tens of KB, stay in L1/L2 while the whole
// batch passes over them (cache blocking); activations stream from L2.
#include "server/kernels/packed.hpp"

#if defined(LW_PACKED_AVX512)
#define LW_PACKED_ENTRY matmul_packed_avx512
#elif defined(__AVXVNNI__)
#define LW_PACKED_ENTRY matmul_packed_avxvnni
#else
#define LW_PACKED_ENTRY matmul_packed_avx2
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && \
    (!defined(LW_PACKED_AVX512) || (defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)))
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace llamawire::kernels {
namespace {

// Header inline functions are not called here: this file is compiled with -m flags, and
// an out-of-line copy of such a function could be the one the linker keeps for everyone.
inline Act32View act32(const std::uint8_t* row, std::size_t n) {
  const auto* d = reinterpret_cast<const float*>(row);
  const auto* sum = reinterpret_cast<const std::int32_t*>(d + 2 * (n / 32));
  return {d, d + n / 32, sum, reinterpret_cast<const std::int8_t*>(sum + n / 32)};
}

inline std::int32_t load_i32(const void* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(LW_PACKED_AVX512)
struct Isa {
  static constexpr int L = 16;
  static constexpr int kMaxCols32 = 8, kMaxColsK = 6;
  static constexpr bool kUnsignedQ8 = true;  // vpdpbusd takes bytes up to 255 without saturating
  using I = __m512i;
  using F = __m512;
  static I load(const std::uint8_t* p) { return _mm512_loadu_si512(p); }
  static I zero() { return _mm512_setzero_si512(); }
  static I set1(std::int32_t v) { return _mm512_set1_epi32(v); }
  static I bytes(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I srli16(I a, int n) { return _mm512_srli_epi16(a, static_cast<unsigned>(n)); }
  static I slli16(I a, int n) { return _mm512_slli_epi16(a, static_cast<unsigned>(n)); }
  // acc + sum of 4 products per lane: unsigned bytes of w times the 4 signed bytes at x.
  static I dot4(I acc, I w, const std::int8_t* x) { return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(load_i32(x))); }
  static I dot4_q8(I acc, I w, const std::int8_t* x) { return dot4(acc, w, x); }
  // acc + per lane the two int16 products of a with the int16 pair `pair`.
  static I dot2(I acc, I a, std::int32_t pair) { return _mm512_dpwssd_epi32(acc, a, _mm512_set1_epi32(pair)); }
  // 0x10 in every byte whose bit is set in the L*4 bits at p.
  static I fifth(const std::uint8_t* p) {
    std::uint64_t m;
    std::memcpy(&m, p, 8);
    return _mm512_maskz_mov_epi8(_cvtu64_mask64(m), bytes(0x10));
  }
  // L int16 pairs from 2L bytes.
  static I u8_pairs(const std::uint8_t* p) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  static F zerof() { return _mm512_setzero_ps(); }
  static F set1f(float v) { return _mm512_set1_ps(v); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F half(const std::uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F u8f(const std::uint8_t* p) {
    return cvt(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static F s8f(const std::uint8_t* p) {
    return cvt(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
};
#else
struct Isa {
  static constexpr int L = 8;
  static constexpr int kMaxCols32 = 4, kMaxColsK = 3;
#if defined(__AVXVNNI__)
  static constexpr bool kUnsignedQ8 = true;
#else
  static constexpr bool kUnsignedQ8 = false;  // vpmaddubsw would saturate on w + 128
#endif
  using I = __m256i;
  using F = __m256;
  static I load(const std::uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static I zero() { return _mm256_setzero_si256(); }
  static I set1(std::int32_t v) { return _mm256_set1_epi32(v); }
  static I bytes(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
  static I add(I a, I b) { return _mm256_add_epi32(a, b); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I srli16(I a, int n) { return _mm256_srli_epi16(a, n); }
  static I slli16(I a, int n) { return _mm256_slli_epi16(a, n); }
#if defined(__AVXVNNI__)
  static I dot4(I acc, I w, const std::int8_t* x) { return _mm256_dpbusd_avx_epi32(acc, w, _mm256_set1_epi32(load_i32(x))); }
  static I dot4_q8(I acc, I w, const std::int8_t* x) { return dot4(acc, w, x); }
  static I dot2(I acc, I a, std::int32_t pair) { return _mm256_dpwssd_avx_epi32(acc, a, _mm256_set1_epi32(pair)); }
#else
  // Weights here are at most 63, so the pairs of vpmaddubsw stay below 2^15.
  static I dot4(I acc, I w, const std::int8_t* x) {
    const I p = _mm256_maddubs_epi16(w, _mm256_set1_epi32(load_i32(x)));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
  // Q8_0's w + 128: back to signed, then |w| times x with w's sign (at most 2 * 128 * 127).
  static I dot4_q8(I acc, I w, const std::int8_t* x) {
    const I ws = _mm256_xor_si256(w, bytes(0x80));
    const I p = _mm256_maddubs_epi16(_mm256_abs_epi8(ws), _mm256_sign_epi8(_mm256_set1_epi32(load_i32(x)), ws));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
  static I dot2(I acc, I a, std::int32_t pair) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, _mm256_set1_epi32(pair))); }
#endif
  static I fifth(const std::uint8_t* p) {
    std::uint32_t bits;
    std::memcpy(&bits, p, 4);
    const I spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(bits)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    const I sel = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel), bytes(0x10));
  }
  static I u8_pairs(const std::uint8_t* p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static F zerof() { return _mm256_setzero_ps(); }
  static F set1f(float v) { return _mm256_set1_ps(v); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F half(const std::uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static F u8f(const std::uint8_t* p) {
    return cvt(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static F s8f(const std::uint8_t* p) {
    return cvt(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
};
#endif

using I = Isa::I;
using F = Isa::F;
constexpr int L = Isa::L;

// Where a lane group starts: per-row fields of h-th half (L rows) and its bytes of a chunk.
struct Half {
  std::size_t row;   // L * h: index into a per-row field
  std::size_t line;  // 4 * L * h: offset inside each 64-byte chunk
  std::size_t mask;  // 4 * h bytes into a chunk's u64 fifth-bit mask (AVX2), 0 for AVX-512
};

// Sum of 8 chunks' products (32 values) of one activation row, into a lane per row.
// `init` carries the block's integer offset term. Small NC splits the chain in two so
// consecutive vpdpbusd do not wait on each other (integer sums: the order is free).
template <int NC, bool kQ8>
inline I dot32(const I* w, const std::int8_t* x, I init) {
  auto step = [](I acc, I wv, const std::int8_t* p) { return kQ8 ? Isa::dot4_q8(acc, wv, p) : Isa::dot4(acc, wv, p); };
  if constexpr (NC <= 2) {
    I a = init, b = Isa::zero();
    for (int j = 0; j < 4; ++j) {
      a = step(a, w[j], x + 4 * j);
      b = step(b, w[j + 4], x + 16 + 4 * j);
    }
    return Isa::add(a, b);
  } else {
    I a = init;
    for (int j = 0; j < 8; ++j) a = step(a, w[j], x + 4 * j);
    return a;
  }
}

// 4 nibble lines at p into 8 chunks (low nibbles: chunks 0-3, high: 4-7).
inline void nibbles(const std::uint8_t* p, const Half& h, I* w) {
  const I m4 = Isa::bytes(0x0F);
  for (int t = 0; t < 4; ++t) {
    const I z = Isa::load(p + 64 * t + h.line);
    w[t] = Isa::and_(z, m4);
    w[t + 4] = Isa::and_(Isa::srli16(z, 4), m4);
  }
}

// Decoding streams the weights: a single activation row asks for the bytes this far ahead.
// (measured on a 75 MB Q4_0 matrix: +25% at 4 KiB ahead, less at 0.5 or 8 KiB)
constexpr std::size_t kPrefetch = 4096;
inline void prefetch_ahead(const std::uint8_t* t, std::size_t bytes) {
  for (std::size_t off = 0; off < bytes; off += 64) _mm_prefetch(reinterpret_cast<const char*>(t + kPrefetch + off), _MM_HINT_T0);
}

// --- Q8_0 and Q4_0 ----------------------------------------------------------------------

template <bool kQ8, int NC>
void tile_32(const std::uint8_t* g, int nb, const Act32View* a, const Half& h, float* out, std::size_t out_stride) {
  constexpr std::size_t kTile = kQ8 ? 544 : 288;
  constexpr int kOff = kQ8 ? (Isa::kUnsignedQ8 ? 128 : 0) : 8;
  F acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = Isa::zerof();
  for (int k = 0; k < nb; ++k) {
    const std::uint8_t* t = g + static_cast<std::size_t>(k) * kTile;
    if constexpr (NC == 1) prefetch_ahead(t, kTile);
    const F dw = Isa::half(t + 2 * h.row);
    I w[8];
    if constexpr (kQ8) {
      for (int c = 0; c < 8; ++c) w[c] = Isa::load(t + 32 + 64 * c + h.line);
    } else {
      nibbles(t + 32, h, w);
    }
    for (int c = 0; c < NC; ++c) {
      const I s = dot32<NC, kQ8>(w, a[c].qs + 32 * k, Isa::set1(-kOff * a[c].sum[k]));
      acc[c] = Isa::fma(Isa::cvt(s), Isa::mul(dw, Isa::set1f(a[c].d[k])), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) Isa::store(out + static_cast<std::size_t>(c) * out_stride, acc[c]);
}

// --- Q4_K and Q5_K ----------------------------------------------------------------------

template <bool kFive, int NC>
void tile_k_affine(const std::uint8_t* g, int nb, const ActQ8K* const* a, const Half& h, float* out,
                   std::size_t out_stride) {
  constexpr std::size_t kTile = kFive ? 2880 : 2368;
  F acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = Isa::zerof();
  for (int k = 0; k < nb; ++k) {
    const std::uint8_t* t = g + static_cast<std::size_t>(k) * kTile;
    if constexpr (NC == 1) prefetch_ahead(t, kTile);
    F ts[NC];
    I ms[NC];
    for (int c = 0; c < NC; ++c) {
      ts[c] = Isa::zerof();
      ms[c] = Isa::zero();
    }
    for (int j = 0; j < 8; ++j) {
      I w[8];
      nibbles(t + 320 + 256 * j, h, w);
      if constexpr (kFive) {
        for (int c = 0; c < 8; ++c) w[c] = Isa::or_(w[c], Isa::fifth(t + 2368 + 64 * j + 8 * c + h.mask));
      }
      const F sc = Isa::u8f(t + 64 + 16 * j + h.row);
      for (int c = 0; c < NC; ++c) {
        const I s = dot32<NC, false>(w, a[c][k].qs + 32 * j, Isa::zero());
        ts[c] = Isa::fma(Isa::cvt(s), sc, ts[c]);
      }
    }
    for (int p = 0; p < 4; ++p) {
      const I m16 = Isa::u8_pairs(t + 192 + 32 * p + 2 * h.row);
      for (int c = 0; c < NC; ++c) ms[c] = Isa::dot2(ms[c], m16, load_i32(&a[c][k].sums32[2 * p]));
    }
    const F d = Isa::half(t + 2 * h.row), dmin = Isa::half(t + 32 + 2 * h.row);
    for (int c = 0; c < NC; ++c) {
      const F dx = Isa::set1f(a[c][k].d);
      acc[c] = Isa::fma(ts[c], Isa::mul(d, dx), acc[c]);
      acc[c] = Isa::fnma(Isa::cvt(ms[c]), Isa::mul(dmin, dx), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) Isa::store(out + static_cast<std::size_t>(c) * out_stride, acc[c]);
}

// --- Q6_K -------------------------------------------------------------------------------

template <int NC>
void tile_q6_k(const std::uint8_t* g, int nb, const ActQ8K* const* a, const Half& h, float* out,
               std::size_t out_stride) {
  constexpr std::size_t kTile = 3360;
  const I m4 = Isa::bytes(0x0F), m30 = Isa::bytes(0x30);
  // The two high bits of chunk t (of a line of four), moved to bits 4-5.
  auto high = [&](I v, int t) {
    const I s = t == 0 ? Isa::slli16(v, 4) : t == 1 ? Isa::slli16(v, 2) : t == 2 ? v : Isa::srli16(v, 2);
    return Isa::and_(s, m30);
  };
  F acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = Isa::zerof();
  for (int k = 0; k < nb; ++k) {
    const std::uint8_t* t = g + static_cast<std::size_t>(k) * kTile;
    if constexpr (NC == 1) prefetch_ahead(t, kTile);
    F ts[NC];
    for (int c = 0; c < NC; ++c) ts[c] = Isa::zerof();
    for (int s = 0; s < 8; ++s) {
      const I ha = Isa::load(t + 2336 + 128 * s + h.line), hb = Isa::load(t + 2336 + 128 * s + 64 + h.line);
      I w[8];
      for (int q = 0; q < 4; ++q) {
        const I z = Isa::load(t + 288 + 256 * s + 64 * q + h.line);
        w[q] = Isa::or_(Isa::and_(z, m4), high(ha, q));
        w[q + 4] = Isa::or_(Isa::and_(Isa::srli16(z, 4), m4), high(hb, q));
      }
      const F sc0 = Isa::s8f(t + 32 + 16 * (2 * s) + h.row), sc1 = Isa::s8f(t + 32 + 16 * (2 * s + 1) + h.row);
      for (int c = 0; c < NC; ++c) {
        const std::int8_t* x = a[c][k].qs + 32 * s;
        I s0 = Isa::set1(-32 * a[c][k].bsums[2 * s]), s1 = Isa::set1(-32 * a[c][k].bsums[2 * s + 1]);
        for (int j = 0; j < 4; ++j) {
          s0 = Isa::dot4(s0, w[j], x + 4 * j);
          s1 = Isa::dot4(s1, w[j + 4], x + 16 + 4 * j);
        }
        ts[c] = Isa::fma(Isa::cvt(s0), sc0, ts[c]);
        ts[c] = Isa::fma(Isa::cvt(s1), sc1, ts[c]);
      }
    }
    const F d = Isa::half(t + 2 * h.row);
    for (int c = 0; c < NC; ++c) acc[c] = Isa::fma(ts[c], Isa::mul(d, Isa::set1f(a[c][k].d)), acc[c]);
  }
  for (int c = 0; c < NC; ++c) Isa::store(out + static_cast<std::size_t>(c) * out_stride, acc[c]);
}

// --- the driver -------------------------------------------------------------------------

// Runs `tile<NC>` over the batch in column groups of at most kMax (then 4, 2, 1).
template <int kMax, typename Tile>
void over_batch(int batch, Tile&& tile) {
  int c0 = 0;
  auto run = [&](auto nc) {
    constexpr int NC = decltype(nc)::value;
    while (batch - c0 >= NC) {
      tile(std::integral_constant<int, NC>{}, c0);
      c0 += NC;
    }
  };
  run(std::integral_constant<int, kMax>{});
  if constexpr (kMax > 4) run(std::integral_constant<int, 4>{});
  if constexpr (kMax > 2) run(std::integral_constant<int, 2>{});
  run(std::integral_constant<int, 1>{});
}

}  // namespace

#if !defined(LW_PACKED_ISA_ONLY)  // packed_amx.cpp takes only the helpers above
void LW_PACKED_ENTRY(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end) {
  const int blk = packed_block(w.type), nb = w.n / blk;
  const auto N = static_cast<std::size_t>(w.n), D = static_cast<std::size_t>(w.d);
  const std::size_t group_bytes = w.group_bytes();
  const bool k_type = blk == 256;
  for (int gi = row_begin / kTileRows; gi < row_end / kTileRows; ++gi) {
    const std::uint8_t* g = w.data + static_cast<std::size_t>(gi) * group_bytes;
    for (int hh = 0; hh < kTileRows / L; ++hh) {
      const Half h{static_cast<std::size_t>(L * hh), static_cast<std::size_t>(4 * L * hh),
                   L == 16 ? 0 : static_cast<std::size_t>(4 * hh)};
      float* o = out + static_cast<std::size_t>(gi) * kTileRows + h.row;
      if (!k_type) {
        over_batch<Isa::kMaxCols32>(batch, [&](auto nc, int c0) {
          constexpr int NC = decltype(nc)::value;
          Act32View a[NC];
          for (int c = 0; c < NC; ++c) a[c] = act32(x.data + static_cast<std::size_t>(c0 + c) * x.row_bytes, N);
          float* oc = o + static_cast<std::size_t>(c0) * D;
          if (w.type == TensorType::q8_0) {
            tile_32<true, NC>(g, nb, a, h, oc, D);
          } else {
            tile_32<false, NC>(g, nb, a, h, oc, D);
          }
        });
        continue;
      }
      over_batch<Isa::kMaxColsK>(batch, [&](auto nc, int c0) {
        constexpr int NC = decltype(nc)::value;
        const ActQ8K* a[NC];
        for (int c = 0; c < NC; ++c) {
          a[c] = reinterpret_cast<const ActQ8K*>(x.data + static_cast<std::size_t>(c0 + c) * x.row_bytes);
        }
        float* oc = o + static_cast<std::size_t>(c0) * D;
        switch (w.type) {
          case TensorType::q4_k: tile_k_affine<false, NC>(g, nb, a, h, oc, D); break;
          case TensorType::q5_k: tile_k_affine<true, NC>(g, nb, a, h, oc, D); break;
          default: tile_q6_k<NC>(g, nb, a, h, oc, D); break;
        }
      });
    }
  }
}
#endif

}  // namespace llamawire::kernels

#elif !defined(LW_PACKED_ISA_ONLY)

namespace llamawire::kernels {
void LW_PACKED_ENTRY(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end) {
  matmul_packed_ref(out, x, w, batch, row_begin, row_end);
}
}  // namespace llamawire::kernels

#endif
