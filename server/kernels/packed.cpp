// The packed layout (see packed.hpp): packing ggml blocks into tiles, reading a row back,
// and the scalar reference product that every SIMD version reproduces bit for bit.
#include "server/kernels/packed.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace llamawire::kernels {
namespace {

using T = TensorType;
constexpr int R = kTileRows;

// The kernels library stands alone (no common/): a broken precondition aborts.
void require(bool ok) {
  if (!ok) std::abort();
}

// Offsets inside a tile.
constexpr std::size_t kQ4KScales = 64, kQ4KMins = 192, kQ4KQs = 320, kQ5KBits = 2368;
constexpr std::size_t kQ6KScales = 32, kQ6KLow = 288, kQ6KHigh = 288 + 2048;

std::uint16_t load16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
float h2f(std::uint16_t h) { return half_to_float(h); }

// 32 values (0..15) of row r into 4 nibble lines: value 4t+i in the low nibble of byte
// 4r+i of line t, value 16+4t+i in its high nibble.
void put_nibbles(std::uint8_t* lines, int r, const std::uint8_t* v) {
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 4; ++i) {
      lines[64 * t + 4 * r + i] = static_cast<std::uint8_t>((v[4 * t + i] & 0x0F) | ((v[16 + 4 * t + i] & 0x0F) << 4));
    }
  }
}
int get_nibble(const std::uint8_t* lines, int r, int l) {
  const int t = (l % 16) / 4, i = l % 4;
  const std::uint8_t b = lines[64 * t + 4 * r + i];
  return l < 16 ? b & 0x0F : b >> 4;
}

// The values of one ggml super-block of row data, unsigned, with the block's scales.
struct Unpacked {
  std::uint8_t q[256];
  std::uint16_t d = 0, dmin = 0;
  std::uint8_t sc[8] = {}, mn[8] = {};
  std::int8_t sc6[16] = {};
};

void unpack_block(T t, const std::uint8_t* blk, Unpacked& u) {
  switch (t) {
    case T::q8_0: {
      const auto& b = *reinterpret_cast<const BlockQ8_0*>(blk);
      u.d = b.d;
      for (int j = 0; j < 32; ++j) u.q[j] = static_cast<std::uint8_t>(b.qs[j] + 128);
      return;
    }
    case T::q4_0: {
      const auto& b = *reinterpret_cast<const BlockQ4_0*>(blk);
      u.d = b.d;
      for (int j = 0; j < 16; ++j) {
        u.q[j] = b.qs[j] & 0x0F;
        u.q[j + 16] = b.qs[j] >> 4;
      }
      return;
    }
    case T::q4_k:
    case T::q5_k: {
      const bool five = t == T::q5_k;
      const auto& b4 = *reinterpret_cast<const BlockQ4K*>(blk);
      const auto& b5 = *reinterpret_cast<const BlockQ5K*>(blk);
      u.d = five ? b5.d : b4.d;
      u.dmin = five ? b5.dmin : b4.dmin;
      const std::uint8_t* scales = five ? b5.scales : b4.scales;
      const std::uint8_t* qs = five ? b5.qs : b4.qs;
      for (int s = 0; s < 8; ++s) {
        int sc = 0, mn = 0;
        k_scale_min(s, scales, sc, mn);
        u.sc[s] = static_cast<std::uint8_t>(sc);
        u.mn[s] = static_cast<std::uint8_t>(mn);
        for (int l = 0; l < 32; ++l) {
          const std::uint8_t byte = qs[32 * (s / 2) + l];
          int v = s % 2 == 0 ? byte & 0x0F : byte >> 4;
          if (five && (b5.qh[l] & (1u << s))) v += 16;
          u.q[32 * s + l] = static_cast<std::uint8_t>(v);
        }
      }
      return;
    }
    case T::q6_k: {
      const auto& b = *reinterpret_cast<const BlockQ6K*>(blk);
      u.d = b.d;
      for (int g = 0; g < 16; ++g) u.sc6[g] = b.scales[g];
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
        const std::uint8_t* ql = b.ql + 64 * h;
        const std::uint8_t* qh = b.qh + 32 * h;
        const int low = quarter == 0   ? ql[l] & 0x0F
                        : quarter == 1 ? ql[l + 32] & 0x0F
                        : quarter == 2 ? ql[l] >> 4
                                       : ql[l + 32] >> 4;
        u.q[i] = static_cast<std::uint8_t>(low | (((qh[l] >> (2 * quarter)) & 3) << 4));
      }
      return;
    }
    default: require(false);
  }
}

void put_row(T t, std::uint8_t* tile, int r, const Unpacked& u) {
  auto put_half = [&](std::size_t off, std::uint16_t h) { std::memcpy(tile + off + 2 * static_cast<std::size_t>(r), &h, 2); };
  switch (t) {
    case T::q8_0:
      put_half(0, u.d);
      for (int c = 0; c < 8; ++c) {
        for (int i = 0; i < 4; ++i) tile[32 + 64 * c + 4 * r + i] = u.q[4 * c + i];
      }
      return;
    case T::q4_0:
      put_half(0, u.d);
      put_nibbles(tile + 32, r, u.q);
      return;
    case T::q4_k:
    case T::q5_k:
      put_half(0, u.d);
      put_half(32, u.dmin);
      for (int j = 0; j < 8; ++j) {
        tile[kQ4KScales + 16 * j + r] = u.sc[j];
        tile[kQ4KMins + 32 * (j / 2) + 2 * r + j % 2] = u.mn[j];
        put_nibbles(tile + kQ4KQs + 256 * j, r, u.q + 32 * j);
        if (t != T::q5_k) continue;
        for (int c = 0; c < 8; ++c) {
          std::uint64_t mask = load64(tile + kQ5KBits + 64 * j + 8 * c);
          for (int i = 0; i < 4; ++i) {
            if (u.q[32 * j + 4 * c + i] & 0x10) mask |= std::uint64_t{1} << (4 * r + i);
          }
          std::memcpy(tile + kQ5KBits + 64 * j + 8 * c, &mask, 8);
        }
      }
      return;
    case T::q6_k:
      put_half(0, u.d);
      for (int g = 0; g < 16; ++g) tile[kQ6KScales + 16 * g + r] = static_cast<std::uint8_t>(u.sc6[g]);
      for (int s = 0; s < 8; ++s) {
        const std::uint8_t* v = u.q + 32 * s;
        put_nibbles(tile + kQ6KLow + 256 * s, r, v);
        for (int h = 0; h < 2; ++h) {
          for (int i = 0; i < 4; ++i) {
            int bits = 0;
            for (int t4 = 0; t4 < 4; ++t4) bits |= (v[4 * (4 * h + t4) + i] >> 4) << (2 * t4);
            tile[kQ6KHigh + 128 * s + 64 * h + 4 * r + i] = static_cast<std::uint8_t>(bits);
          }
        }
      }
      return;
    default: require(false);
  }
}

// Value l (0..block) of row r of a tile, unsigned as stored.
int tile_value(T t, const std::uint8_t* tile, int r, int l) {
  switch (t) {
    case T::q8_0: return tile[32 + 64 * (l / 4) + 4 * r + l % 4];
    case T::q4_0: return get_nibble(tile + 32, r, l);
    case T::q4_k:
    case T::q5_k: {
      const int j = l / 32, k = l % 32;
      int v = get_nibble(tile + kQ4KQs + 256 * j, r, k);
      if (t == T::q5_k && (load64(tile + kQ5KBits + 64 * j + 8 * (k / 4)) >> (4 * r + k % 4)) & 1) v += 16;
      return v;
    }
    case T::q6_k: {
      const int s = l / 32, k = l % 32, c = k / 4, i = k % 4;
      const int low = get_nibble(tile + kQ6KLow + 256 * s, r, k);
      const int high = (tile[kQ6KHigh + 128 * s + 64 * (c / 4) + 4 * r + i] >> (2 * (c % 4))) & 3;
      return low | (high << 4);
    }
    default: require(false);
  }
  return 0;
}

float tile_half(const std::uint8_t* tile, std::size_t off, int r) { return h2f(load16(tile + off + 2 * static_cast<std::size_t>(r))); }

}  // namespace

bool packable(TensorType t) {
  return t == T::q8_0 || t == T::q4_0 || t == T::q4_k || t == T::q5_k || t == T::q6_k;
}

int packed_block(TensorType t) { return t == T::q8_0 || t == T::q4_0 ? 32 : 256; }

std::size_t packed_tile_bytes(TensorType t) {
  switch (t) {
    case T::q8_0: return 544;
    case T::q4_0: return 288;
    case T::q4_k: return 2368;
    case T::q5_k: return 2880;
    case T::q6_k: return 3360;
    default: return 0;
  }
}

std::size_t PackedMatrix::group_bytes() const {
  return static_cast<std::size_t>(n / packed_block(type)) * packed_tile_bytes(type);
}

void pack_group(TensorType t, const std::uint8_t* src, std::size_t src_row_bytes, int n, std::uint8_t* dst) {
  require(packable(t) && n % packed_block(t) == 0);
  const int nb = n / packed_block(t);
  const std::size_t tb = packed_tile_bytes(t), bb = traits(t).bytes;
  std::memset(dst, 0, static_cast<std::size_t>(nb) * tb);
  Unpacked u;
  for (int r = 0; r < R; ++r) {
    const std::uint8_t* row = src + static_cast<std::size_t>(r) * src_row_bytes;
    for (int k = 0; k < nb; ++k) {
      unpack_block(t, row + static_cast<std::size_t>(k) * bb, u);
      put_row(t, dst + static_cast<std::size_t>(k) * tb, r, u);
    }
  }
}

void packed_row(const PackedMatrix& w, int i, float* out) {
  require(i >= 0 && i < w.d);
  const int blk = packed_block(w.type), nb = w.n / blk, r = i % R;
  const std::uint8_t* g = w.group(i / R);
  const std::size_t tb = packed_tile_bytes(w.type);
  for (int k = 0; k < nb; ++k) {
    const std::uint8_t* tile = g + static_cast<std::size_t>(k) * tb;
    float* y = out + static_cast<std::size_t>(k) * static_cast<std::size_t>(blk);
    const float d = tile_half(tile, 0, r);
    switch (w.type) {
      case T::q8_0:
      case T::q4_0: {
        const int off = w.type == T::q8_0 ? 128 : 8;
        for (int l = 0; l < 32; ++l) y[l] = static_cast<float>(tile_value(w.type, tile, r, l) - off) * d;
        break;
      }
      case T::q4_k:
      case T::q5_k: {
        const float dmin = tile_half(tile, 32, r);
        for (int j = 0; j < 8; ++j) {
          const float sc = d * static_cast<float>(tile[kQ4KScales + 16 * j + r]);
          const float mn = dmin * static_cast<float>(tile[kQ4KMins + 32 * (j / 2) + 2 * r + j % 2]);
          for (int l = 32 * j; l < 32 * j + 32; ++l) y[l] = sc * static_cast<float>(tile_value(w.type, tile, r, l)) - mn;
        }
        break;
      }
      case T::q6_k:
        for (int l = 0; l < 256; ++l) {
          const auto sc = static_cast<std::int8_t>(tile[kQ6KScales + 16 * (l / 16) + r]);
          y[l] = d * static_cast<float>(sc) * static_cast<float>(tile_value(w.type, tile, r, l) - 32);
        }
        break;
      default: require(false);
    }
  }
}

void matmul_packed_ref(float* out, const BlockAct& x, const PackedMatrix& w, int batch, int row_begin, int row_end) {
  require(row_begin % R == 0 && row_end % R == 0 && row_end <= w.d);
  const int blk = packed_block(w.type), nb = w.n / blk;
  const std::size_t tb = packed_tile_bytes(w.type);
  const auto N = static_cast<std::size_t>(w.n), D = static_cast<std::size_t>(w.d);
  for (int b = 0; b < batch; ++b) {
    const std::uint8_t* xrow = x.data + static_cast<std::size_t>(b) * x.row_bytes;
    for (int i = row_begin; i < row_end; ++i) {
      const std::uint8_t* g = w.group(i / R);
      const int r = i % R;
      float acc = 0.0f;
      for (int k = 0; k < nb; ++k) {
        const std::uint8_t* tile = g + static_cast<std::size_t>(k) * tb;
        const float d = tile_half(tile, 0, r);
        if (w.type == T::q8_0 || w.type == T::q4_0) {
          const Act32View a = Act32View::of(xrow, N);
          const int off = w.type == T::q8_0 ? 128 : 8;
          std::int32_t s = -off * a.sum[k];
          for (int l = 0; l < 32; ++l) s += tile_value(w.type, tile, r, l) * a.qs[32 * k + l];
          acc = std::fma(static_cast<float>(s), d * a.d[k], acc);
          continue;
        }
        const ActQ8K& a = reinterpret_cast<const ActQ8K*>(xrow)[k];
        float t = 0.0f;
        if (w.type == T::q6_k) {
          for (int j = 0; j < 16; ++j) {
            std::int32_t s = -32 * a.bsums[j];
            for (int l = 16 * j; l < 16 * j + 16; ++l) s += tile_value(w.type, tile, r, l) * a.qs[l];
            const auto sc = static_cast<std::int8_t>(tile[kQ6KScales + 16 * j + r]);
            t = std::fma(static_cast<float>(s), static_cast<float>(sc), t);
          }
          acc = std::fma(t, d * a.d, acc);
          continue;
        }
        std::int32_t m = 0;
        for (int j = 0; j < 8; ++j) {
          std::int32_t s = 0;
          for (int l = 32 * j; l < 32 * j + 32; ++l) s += tile_value(w.type, tile, r, l) * a.qs[l];
          t = std::fma(static_cast<float>(s), static_cast<float>(tile[kQ4KScales + 16 * j + r]), t);
          m += tile[kQ4KMins + 32 * (j / 2) + 2 * r + j % 2] * a.sums32[j];
        }
        acc = std::fma(t, d * a.d, acc);
        acc = std::fma(static_cast<float>(m), -(tile_half(tile, 32, r) * a.d), acc);
      }
      out[static_cast<std::size_t>(b) * D + static_cast<std::size_t>(i)] = acc;
    }
  }
}

}  // namespace llamawire::kernels
