// Packed Q8_0 and Q4_0 products on the AMX tile unit (Intel AMX-INT8), for batches:
// prompts and many sessions decoding together. Built with the AVX-512 helpers of
// packed_simd.cpp; other types and small batches take matmul_packed_avx512.
//
// One tile instruction (tdpbssd) multiplies 16 activation rows (signed bytes, straight
// from the quantized activations) by 16 weight rows over one 32-value block, giving the
// 16x16 exact int32 block sums s that vpdpbusd builds one row at a time. The weights are
// the packed tile's chunks (four values of a row per 32-bit lane: the layout the
// instruction wants) made signed again: per group of 16 rows they are staged once (Q8_0's
// w + 128 back to w, Q4_0's nibbles widened and less 8) into 16 x n bytes that stay in L2
// and serve every 16-row slice of the batch, so no offset term is left. Each s goes
// through the very float operations of matmul_packed_ref, lane by lane (lanes are weight
// rows, one register per activation row), so the results are the reference's bits: the
// tile unit changes who adds the integers, not what they add up to.
//
// A batch whose size is not a multiple of 16 has its last rows copied into a zero-padded
// slice, so every tile has 16 rows and no read goes past the activations. Four sum tiles
// rotate over consecutive blocks, so the tile unit works ahead while the vector units
// convert.
#define LW_PACKED_AVX512 1
#define LW_PACKED_ISA_ONLY 1
#include "server/kernels/packed_simd.cpp"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && \
    defined(__AMX_TILE__) && defined(__AMX_INT8__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace llamawire::kernels {
namespace {

constexpr int kSlice = 16;  // activation rows per tile

// The tile configuration (palette 1): tmm0-3 hold int32 sums (16 x 16), tmm4/7 activation
// bytes (16 rows x `kbytes`), tmm5/6 weight bytes (`kbytes` / 4 rows x 64).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

TileConfig config_for(int kbytes) {
  TileConfig c;
  for (int t = 0; t < 4; ++t) {
    c.rows[t] = kSlice;
    c.colsb[t] = 64;
  }
  for (int t : {4, 7}) {
    c.rows[t] = kSlice;
    c.colsb[t] = static_cast<std::uint16_t>(kbytes);
  }
  for (int t : {5, 6}) {
    c.rows[t] = static_cast<std::uint8_t>(kbytes / 4);
    c.colsb[t] = 64;
  }
  return c;
}

// Block s's 16x16 sums into c, on sum tile s % 4 and operand tiles 4/5 or 7/6 by parity
// (the tile register numbers must be literals).
#define LW_AMX_STEP(C, A, B)                          \
  _tile_loadd(A, a, static_cast<long>(a_stride));     \
  _tile_loadd(B, b, 64);                              \
  _tile_zero(C);                                      \
  _tile_dpbssd(C, A, B);                              \
  _tile_stored(C, c, 64)
inline void step(int s, const std::int8_t* a, std::size_t a_stride, const std::uint8_t* b, std::int32_t* c) {
  switch (s & 3) {
    case 0: LW_AMX_STEP(0, 4, 5); break;
    case 1: LW_AMX_STEP(1, 7, 6); break;
    case 2: LW_AMX_STEP(2, 4, 5); break;
    default: LW_AMX_STEP(3, 7, 6); break;
  }
}
#undef LW_AMX_STEP

// Runs `steps` blocks: a_at(s) / b_at(s) give block s's activation and weight bytes;
// consume(s, sums) gets its 16x16 sums (row m: activation m, lane r: weight row r) in
// block order. Blocks s + 1 .. s + 3 are in the tile unit while block s is consumed (a sum
// tile is busy from its zeroing until its store has been read back).
constexpr int kDepth = 4;
template <typename AAt, typename BAt, typename Consume>
inline void pipeline(int steps, std::size_t a_stride, AAt&& a_at, BAt&& b_at, Consume&& consume) {
  alignas(64) std::int32_t sums[kDepth][kSlice * 16];
  for (int s = 0; s < std::min(steps, kDepth - 1); ++s) step(s, a_at(s), a_stride, b_at(s), sums[s]);
  for (int s = 0; s < steps; ++s) {
    const int ahead = s + kDepth - 1;
    if (ahead < steps) step(ahead, a_at(ahead), a_stride, b_at(ahead), sums[ahead % kDepth]);
    consume(s, sums[s % kDepth]);
  }
}

// Two groups against one slice: block s's sums of both groups into c0 / c1, on sum tiles
// 0/1 (even s) or 2/3 (odd s), one activation tile (4) and the groups' weight tiles (5, 6).
#define LW_AMX_PAIR(C0, C1)                       \
  _tile_loadd(4, a, static_cast<long>(a_stride)); \
  _tile_loadd(5, b0, 64);                         \
  _tile_loadd(6, b1, 64);                         \
  _tile_zero(C0);                                 \
  _tile_zero(C1);                                 \
  _tile_dpbssd(C0, 4, 5);                         \
  _tile_dpbssd(C1, 4, 6);                         \
  _tile_stored(C0, c0, 64);                       \
  _tile_stored(C1, c1, 64)
inline void pair_step(int s, const std::int8_t* a, std::size_t a_stride, const std::uint8_t* b0, const std::uint8_t* b1,
                      std::int32_t* c0, std::int32_t* c1) {
  if ((s & 1) == 0) {
    LW_AMX_PAIR(0, 1);
  } else {
    LW_AMX_PAIR(2, 3);
  }
}
#undef LW_AMX_PAIR

inline I row_sums(const std::int32_t* sums, int m) { return _mm512_load_si512(sums + 16 * m); }

// --- staging a group's values as signed bytes --------------------------------------

constexpr Half kWhole{0, 0, 0};  // AVX-512: a register holds all 16 rows

inline void put8(std::uint8_t* dst, const I* w) {
  for (int c = 0; c < 8; ++c) _mm512_storeu_si512(dst + 64 * c, w[c]);
}

// A group's values as signed bytes (Q8_0: w + 128 back to w; Q4_0: the nibble minus 8),
// 512-byte runs of 8 chunks (32 values) in block order: the tile product then is the
// block's sum s itself, with no offset term left for the vector units.
template <bool kQ8>
void stage_group(const std::uint8_t* g, int nb, std::uint8_t* dst) {
  const I flip = Isa::bytes(0x80), eight = Isa::bytes(8);
  for (int k = 0; k < nb; ++k) {
    I w[8];
    if constexpr (kQ8) {
      for (int c = 0; c < 8; ++c) w[c] = _mm512_xor_si512(Isa::load(g + 544 * static_cast<std::size_t>(k) + 32 + 64 * c), flip);
    } else {
      nibbles(g + 288 * static_cast<std::size_t>(k) + 32, kWhole, w);
      for (auto& v : w) v = _mm512_sub_epi8(v, eight);
    }
    put8(dst + 512 * static_cast<std::size_t>(k), w);
  }
}

// --- one group of 16 weight rows against one 16-row slice of activations ------------------

// Q8_0 / Q4_0, from the group's staged values.
template <bool kQ8>
void slice_32(const std::uint8_t* g, const std::uint8_t* b, int nb, const std::uint8_t* x, std::size_t row_bytes,
              std::size_t n, float* out, std::size_t out_stride, int rows_out) {
  constexpr std::size_t kTile = kQ8 ? 544 : 288;
  Act32View a[kSlice];
  for (int m = 0; m < kSlice; ++m) a[m] = act32(x + static_cast<std::size_t>(m) * row_bytes, n);
  F acc[kSlice];
  for (auto& v : acc) v = Isa::zerof();
  pipeline(
      nb, row_bytes, [&](int k) { return a[0].qs + 32 * k; }, [&](int k) { return b + 512 * static_cast<std::size_t>(k); },
      [&](int k, const std::int32_t* sums) {
        const F dw = Isa::half(g + kTile * static_cast<std::size_t>(k));
#pragma GCC unroll 16
        for (int m = 0; m < kSlice; ++m) {
          acc[m] = Isa::fma(Isa::cvt(row_sums(sums, m)), Isa::mul(dw, Isa::set1f(a[m].d[k])), acc[m]);
        }
      });
  for (int m = 0; m < rows_out; ++m) Isa::store(out + static_cast<std::size_t>(m) * out_stride, acc[m]);
}

// Two groups (staged at b0, b1; tiles at g0, g1) against one slice: each activation tile
// load serves both, and the tile unit gets two products per step.
template <bool kQ8>
void slice_32_pair(const std::uint8_t* g0, const std::uint8_t* g1, const std::uint8_t* b0, const std::uint8_t* b1,
                   int nb, const std::uint8_t* x, std::size_t row_bytes, std::size_t n, float* out,
                   std::size_t out_stride, int rows_out) {
  constexpr std::size_t kTile = kQ8 ? 544 : 288;
  Act32View a[kSlice];
  for (int m = 0; m < kSlice; ++m) a[m] = act32(x + static_cast<std::size_t>(m) * row_bytes, n);
  F acc0[kSlice], acc1[kSlice];
  for (int m = 0; m < kSlice; ++m) acc0[m] = acc1[m] = Isa::zerof();
  alignas(64) std::int32_t sums[2][2][kSlice * 16];
  auto issue = [&](int k) {
    const std::size_t off = 512 * static_cast<std::size_t>(k);
    pair_step(k, a[0].qs + 32 * k, row_bytes, b0 + off, b1 + off, sums[k & 1][0], sums[k & 1][1]);
  };
  issue(0);
  for (int k = 0; k < nb; ++k) {
    if (k + 1 < nb) issue(k + 1);
    const F dw0 = Isa::half(g0 + kTile * static_cast<std::size_t>(k));
    const F dw1 = Isa::half(g1 + kTile * static_cast<std::size_t>(k));
    const std::int32_t* s0 = sums[k & 1][0];
    const std::int32_t* s1 = sums[k & 1][1];
#pragma GCC unroll 16
    for (int m = 0; m < kSlice; ++m) {
      const F dx = Isa::set1f(a[m].d[k]);
      acc0[m] = Isa::fma(Isa::cvt(row_sums(s0, m)), Isa::mul(dw0, dx), acc0[m]);
      acc1[m] = Isa::fma(Isa::cvt(row_sums(s1, m)), Isa::mul(dw1, dx), acc1[m]);
    }
  }
  for (int m = 0; m < rows_out; ++m) {
    Isa::store(out + static_cast<std::size_t>(m) * out_stride, acc0[m]);
    Isa::store(out + static_cast<std::size_t>(m) * out_stride + kTileRows, acc1[m]);
  }
}

struct Scratch {
  std::vector<std::uint8_t> staged, tail;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

// Batches below this take the vector path (a tile always computes 16 activation rows).
constexpr int kAmxMinBatch = 8;
// The K types stay on the vector path: with the same tile steps (and 16-value steps for
// Q6_K), their per-sub-block float work made a 110M Q4_K_M prompt slower in the engine,
// although a lone product ran faster.

void matmul_packed_amx(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end) {
  if (batch < kAmxMinBatch || (w.type != TensorType::q8_0 && w.type != TensorType::q4_0)) {
    matmul_packed_avx512(out, x, w, batch, row_begin, row_end);
    return;
  }
  const int nb = w.n / 32;
  const auto N = static_cast<std::size_t>(w.n), D = static_cast<std::size_t>(w.d);
  Scratch& sc = scratch();
  // The last, partial slice of the batch, zero-padded to 16 rows.
  const int full = batch / kSlice * kSlice, tail = batch - full;
  if (tail > 0) {
    sc.tail.assign(kSlice * x.row_bytes, 0);
    std::memcpy(sc.tail.data(), x.data + static_cast<std::size_t>(full) * x.row_bytes,
                static_cast<std::size_t>(tail) * x.row_bytes);
  }
  const bool q8 = w.type == TensorType::q8_0;
  if (sc.staged.size() < 32 * N) sc.staged.resize(32 * N);
  const TileConfig cfg = config_for(32);
  _tile_loadconfig(&cfg);
  // While a group is computed, the next one is brought into L2 in as many pieces as there
  // are slices (memory latency, not bandwidth, is what a cold group costs: measured, a
  // matrix larger than L2 ran at half the speed without this).
  const std::size_t group_bytes = w.group_bytes();
  const int slices = (batch + kSlice - 1) / kSlice;
  const std::size_t piece = (group_bytes / 64 + static_cast<std::size_t>(slices)) / static_cast<std::size_t>(slices) * 64;
  const int g_end = row_end / kTileRows;
  std::uint8_t* st0 = sc.staged.data();
  std::uint8_t* st1 = st0 + 16 * N;
  auto stage = [&](const std::uint8_t* g, std::uint8_t* dst) {
    if (q8) {
      stage_group<true>(g, nb, dst);
    } else {
      stage_group<false>(g, nb, dst);
    }
  };
  for (int gi = row_begin / kTileRows; gi < g_end;) {
    const bool pair = gi + 1 < g_end;
    const std::uint8_t* g = w.data + static_cast<std::size_t>(gi) * group_bytes;
    const std::uint8_t* g1 = g + group_bytes;
    const std::size_t span = (pair ? 2 : 1) * group_bytes;
    stage(g, st0);
    if (pair) stage(g1, st1);
    for (int c0 = 0; c0 < batch; c0 += kSlice) {
      if (gi + (pair ? 2 : 1) < g_end) {
        const std::size_t from = piece * (pair ? 2 : 1) * static_cast<std::size_t>(c0 / kSlice);
        for (std::size_t off = from; off < std::min(from + piece * (pair ? 2 : 1), span); off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(g + span + off), _MM_HINT_T1);
        }
      }
      const bool last = c0 == full;
      const std::uint8_t* xs = last ? sc.tail.data() : x.data + static_cast<std::size_t>(c0) * x.row_bytes;
      const int rows_out = last ? tail : kSlice;
      float* o = out + static_cast<std::size_t>(c0) * D + static_cast<std::size_t>(gi) * kTileRows;
      if (pair) {
        if (q8) {
          slice_32_pair<true>(g, g1, st0, st1, nb, xs, x.row_bytes, N, o, D, rows_out);
        } else {
          slice_32_pair<false>(g, g1, st0, st1, nb, xs, x.row_bytes, N, o, D, rows_out);
        }
      } else if (q8) {
        slice_32<true>(g, st0, nb, xs, x.row_bytes, N, o, D, rows_out);
      } else {
        slice_32<false>(g, st0, nb, xs, x.row_bytes, N, o, D, rows_out);
      }
    }
    gi += pair ? 2 : 1;
  }
  _tile_release();
}

}  // namespace llamawire::kernels

#else

namespace llamawire::kernels {
void matmul_packed_amx(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end) {
  matmul_packed_avx512(out, x, w, batch, row_begin, row_end);
}
}  // namespace llamawire::kernels

#endif
