// Scalar reference for the block formats: plain loops, readable over fast. Dequantization
// rounds as ggml's reference does (the same float operations in the same order), so its
// output is bit for bit ggml's; the products sum integers per block and floats across
// blocks in block order.
#include "server/kernels/tensor_types.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace llamawire::kernels {
namespace {

using T = TensorType;

constexpr std::array<std::pair<T, TypeTraits>, 13> kTraits{{
    {T::f32, {"f32", 1, 4, T::f32, true}},
    {T::f16, {"f16", 1, 2, T::f32, true}},
    {T::q4_0, {"q4_0", 32, sizeof(BlockQ4_0), T::q8_0, true}},
    {T::q4_1, {"q4_1", 32, sizeof(BlockQ4_1), T::q8_1, true}},
    {T::q5_0, {"q5_0", 32, sizeof(BlockQ5_0), T::q8_0, true}},
    {T::q5_1, {"q5_1", 32, sizeof(BlockQ5_1), T::q8_1, true}},
    {T::q8_0, {"q8_0", 32, sizeof(BlockQ8_0), T::q8_0, true}},
    {T::q8_1, {"q8_1", 32, 36, T::q8_1, false}},  // ggml's block size (ours: see Act32View)
    {T::q4_k, {"q4_K", 256, sizeof(BlockQ4K), T::q8_k, true}},
    {T::q5_k, {"q5_K", 256, sizeof(BlockQ5K), T::q8_k, true}},
    {T::q6_k, {"q6_K", 256, sizeof(BlockQ6K), T::q8_k, true}},
    {T::q8_k, {"q8_K", 256, 292, T::q8_k, false}},  // ggml's block size (ours: ActQ8K)
    {T::bf16, {"bf16", 1, 2, T::f32, true}},
}};

float h2f(std::uint16_t h) { return half_to_float(h); }
float fp16_round(float f) { return half_to_float(float_to_half(f)); }

std::size_t blocks(std::size_t n, int block) { return n / static_cast<std::size_t>(block); }

// Rounding to nearest, ties away from zero (roundf), as an int.
int round_away(float x) { return static_cast<int>(std::round(x)); }
// Rounding to nearest, ties to even.
int round_even(float x) { return static_cast<int>(std::nearbyint(x)); }

// --- dequantization ------------------------------------------------------------------

void deq_q4_0(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(src);
  for (std::size_t i = 0; i < blocks(n, 32); ++i, y += 32) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((b[i].qs[j] & 0x0F) - 8) * d;
      y[j + 16] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void deq_q4_1(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_1*>(src);
  for (std::size_t i = 0; i < blocks(n, 32); ++i, y += 32) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(b[i].qs[j] & 0x0F) * d + m;
      y[j + 16] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void deq_q5_0(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ5_0*>(src);
  for (std::size_t i = 0; i < blocks(n, 32); ++i, y += 32) {
    const float d = h2f(b[i].d);
    const std::uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>(((b[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + 16] = static_cast<float>(((b[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void deq_q5_1(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ5_1*>(src);
  for (std::size_t i = 0; i < blocks(n, 32); ++i, y += 32) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    const std::uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>((b[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + 16] = static_cast<float>((b[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void deq_q8_0(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(src);
  for (std::size_t i = 0; i < blocks(n, 32); ++i, y += 32) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

void deq_q4_k(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ4K*>(src);
  for (std::size_t i = 0; i < blocks(n, 256); ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const std::uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      int sc = 0, mn = 0;
      k_scale_min(2 * c, b[i].scales, sc, mn);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
      k_scale_min(2 * c + 1, b[i].scales, sc, mn);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void deq_q5_k(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ5K*>(src);
  for (std::size_t i = 0; i < blocks(n, 256); ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const std::uint8_t* ql = b[i].qs;
    for (int c = 0; c < 4; ++c, ql += 32) {
      int sc = 0, mn = 0;
      k_scale_min(2 * c, b[i].scales, sc, mn);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
      k_scale_min(2 * c + 1, b[i].scales, sc, mn);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
      const unsigned u1 = 1u << (2 * c), u2 = 2u << (2 * c);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0x0F) + ((b[i].qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((b[i].qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

// The value at index i (0..255) of a Q6_K block, in [-32, 31].
int q6_value(const BlockQ6K& b, int i) {
  const int h = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
  const std::uint8_t* ql = b.ql + 64 * h;
  const std::uint8_t* qh = b.qh + 32 * h;
  const int low = quarter == 0 ? ql[l] & 0x0F : quarter == 1 ? ql[l + 32] & 0x0F : quarter == 2 ? ql[l] >> 4 : ql[l + 32] >> 4;
  const int high = (qh[l] >> (2 * quarter)) & 3;
  return (low | (high << 4)) - 32;
}

void deq_q6_k(const std::uint8_t* src, float* y, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ6K*>(src);
  for (std::size_t i = 0; i < blocks(n, 256); ++i, y += 256) {
    const float d = h2f(b[i].d);
    for (int k = 0; k < 256; ++k) y[k] = d * static_cast<float>(b[i].scales[k / 16]) * static_cast<float>(q6_value(b[i], k));
  }
}

// --- weight quantization (for the converter; any valid encoding will do) ----------------

// Symmetric 32-value blocks with `levels` levels around `zero`: the value of largest
// magnitude maps to -zero (as ggml's reference does, so the sign of the extreme is exact).
template <typename Block, int kZero, int kMax>
void quant_sym(const float* x, Block& b, std::uint8_t* qs_out) {
  float amax = 0.0f, vmax = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  const float d = vmax / static_cast<float>(-kZero);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = float_to_half(d);
  for (int j = 0; j < 32; ++j) {
    const int q = std::clamp(static_cast<int>(std::floor(x[j] * id + static_cast<float>(kZero) + 0.5f)), 0, kMax);
    qs_out[j] = static_cast<std::uint8_t>(q);
  }
}

template <typename Block, int kMax>
void quant_affine(const float* x, Block& b, std::uint8_t* qs_out) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float d = (hi - lo) / static_cast<float>(kMax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = float_to_half(d);
  b.m = float_to_half(lo);
  for (int j = 0; j < 32; ++j) {
    qs_out[j] = static_cast<std::uint8_t>(std::clamp(round_away((x[j] - lo) * id), 0, kMax));
  }
}

void pack_nibbles(const std::uint8_t* q, std::uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<std::uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
}

void pack_high_bits(const std::uint8_t* q, std::uint8_t* qh) {
  std::uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<std::uint32_t>((q[j] >> 4) & 1) << j;
  std::memcpy(qh, &h, 4);
}

// Q4_K / Q5_K: per sub-block of 32 an affine fit (scale, min >= 0 subtracted), then the 8
// scales and 8 mins quantized to six bits against the block's d and dmin.
template <int kMax>
void quant_k_affine(const float* x, std::uint16_t& d_out, std::uint16_t& dmin_out, std::uint8_t* scales,
                    std::uint8_t* q /* 256 values */) {
  float sc[8], mn[8];
  float max_sc = 0.0f, max_mn = 0.0f;
  for (int s = 0; s < 8; ++s) {
    const float* v = x + 32 * s;
    float lo = v[0], hi = v[0];
    for (int j = 1; j < 32; ++j) {
      lo = std::min(lo, v[j]);
      hi = std::max(hi, v[j]);
    }
    lo = std::min(lo, 0.0f);
    sc[s] = (hi - lo) / static_cast<float>(kMax);
    mn[s] = -lo;
    max_sc = std::max(max_sc, sc[s]);
    max_mn = std::max(max_mn, mn[s]);
  }
  const float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
  d_out = float_to_half(d);
  dmin_out = float_to_half(dmin);
  const float dq = half_to_float(d_out), dminq = half_to_float(dmin_out);
  int ls[8], lm[8];
  for (int s = 0; s < 8; ++s) {
    ls[s] = dq > 0.0f ? std::clamp(round_away(sc[s] / dq), 0, 63) : 0;
    lm[s] = dminq > 0.0f ? std::clamp(round_away(mn[s] / dminq), 0, 63) : 0;
  }
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<std::uint8_t>((ls[j] & 63) | ((ls[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<std::uint8_t>((lm[j] & 63) | ((lm[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<std::uint8_t>((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
  }
  for (int s = 0; s < 8; ++s) {
    const float step = dq * static_cast<float>(ls[s]);
    const float off = dminq * static_cast<float>(lm[s]);
    for (int j = 0; j < 32; ++j) {
      const float v = x[32 * s + j] + off;
      q[32 * s + j] = static_cast<std::uint8_t>(step > 0.0f ? std::clamp(round_away(v / step), 0, kMax) : 0);
    }
  }
}

void quant_q4_k(const float* x, BlockQ4K& b) {
  std::uint8_t q[256];
  quant_k_affine<15>(x, b.d, b.dmin, b.scales, q);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<std::uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
}

void quant_q5_k(const float* x, BlockQ5K& b) {
  std::uint8_t q[256];
  quant_k_affine<31>(x, b.d, b.dmin, b.scales, q);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b.qs[32 * c + l] = static_cast<std::uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      b.qh[l] = static_cast<std::uint8_t>(b.qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
}

void quant_q6_k(const float* x, BlockQ6K& b) {
  float sc[16];
  float amax_sc = 0.0f, vmax_sc = 0.0f;
  for (int g = 0; g < 16; ++g) {
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < 16; ++j) {
      if (std::fabs(x[16 * g + j]) > amax) {
        amax = std::fabs(x[16 * g + j]);
        vmax = x[16 * g + j];
      }
    }
    sc[g] = vmax / -32.0f;
    if (std::fabs(sc[g]) > amax_sc) {
      amax_sc = std::fabs(sc[g]);
      vmax_sc = sc[g];
    }
  }
  const float d = vmax_sc / -128.0f;
  b.d = float_to_half(d);
  const float dq = half_to_float(b.d);
  std::uint8_t q[256];
  for (int g = 0; g < 16; ++g) {
    const int s = dq != 0.0f ? std::clamp(round_away(sc[g] / dq), -128, 127) : 0;
    b.scales[g] = static_cast<std::int8_t>(s);
    const float step = dq * static_cast<float>(s);
    for (int j = 0; j < 16; ++j) {
      const int v = step != 0.0f ? round_away(x[16 * g + j] / step) : 0;
      q[16 * g + j] = static_cast<std::uint8_t>(std::clamp(v, -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    std::uint8_t* ql = b.ql + 64 * h;
    std::uint8_t* qh = b.qh + 32 * h;
    const std::uint8_t* v = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<std::uint8_t>((v[l] & 0x0F) | ((v[l + 64] & 0x0F) << 4));
      ql[l + 32] = static_cast<std::uint8_t>((v[l + 32] & 0x0F) | ((v[l + 96] & 0x0F) << 4));
      qh[l] = static_cast<std::uint8_t>((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                                        ((v[l + 96] >> 4) << 6));
    }
  }
}

// --- activations ----------------------------------------------------------------------

// One 32-value block: q as roundf(x / d), d = max|x| / 127 rounded through binary16 (as
// ggml's q8_0 / q8_1), s = d * sum(q) (exact in float: an 11-bit d times a 12-bit sum).
void act_q8_32(const float* x, float& d_out, float& s_out, std::int32_t& sum_out, std::int8_t* q) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = static_cast<std::int8_t>(round_away(x[j] * id));
    sum += q[j];
  }
  d_out = fp16_round(d);
  s_out = d_out * static_cast<float>(sum);
  sum_out = sum;
}

void act_q8_k(const float* x, ActQ8K& a) {
  float amax = 0.0f, vmax = 0.0f;
  for (int j = 0; j < 256; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  if (amax == 0.0f) {
    a.d = 0.0f;
    std::memset(a.qs, 0, sizeof a.qs);
    std::memset(a.bsums, 0, sizeof a.bsums);
    std::memset(a.sums32, 0, sizeof a.sums32);
    return;
  }
  const float iscale = -127.0f / vmax;
  for (int j = 0; j < 256; ++j) a.qs[j] = static_cast<std::int8_t>(std::min(127, round_even(iscale * x[j])));
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int j = 0; j < 16; ++j) s += a.qs[16 * g + j];
    a.bsums[g] = static_cast<std::int16_t>(s);
  }
  for (int g = 0; g < 8; ++g) a.sums32[g] = static_cast<std::int16_t>(a.bsums[2 * g] + a.bsums[2 * g + 1]);
  a.d = 1.0f / iscale;
}

// --- products -------------------------------------------------------------------------

template <typename Block, typename ValueFn>
float dot_32(const std::uint8_t* w, const std::uint8_t* x, std::size_t n, ValueFn value) {
  const auto* b = reinterpret_cast<const Block*>(w);
  const Act32View a = Act32View::of(x, n);
  float sum = 0.0f;
  for (std::size_t i = 0; i < blocks(n, 32); ++i) {
    int isum = 0;
    for (int j = 0; j < 32; ++j) isum += value(b[i], j) * a.qs[32 * i + static_cast<std::size_t>(j)];
    if constexpr (requires { b[i].m; }) {
      sum += h2f(b[i].d) * a.d[i] * static_cast<float>(isum) + h2f(b[i].m) * a.s[i];
    } else {
      sum += h2f(b[i].d) * a.d[i] * static_cast<float>(isum);
    }
  }
  return sum;
}

int nibble(const std::uint8_t* qs, int j) { return j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4; }
int fifth_bit(const std::uint8_t* qh, int j) { return static_cast<int>((load_u32(qh) >> j) & 1u) << 4; }

template <typename Block>
float dot_k_affine(const std::uint8_t* w, const std::uint8_t* x, std::size_t n) {
  const auto* b = reinterpret_cast<const Block*>(w);
  const auto* a = reinterpret_cast<const ActQ8K*>(x);
  float sum = 0.0f;
  for (std::size_t i = 0; i < blocks(n, 256); ++i) {
    int sumi = 0, summ = 0;
    for (int s = 0; s < 8; ++s) {
      int sc = 0, mn = 0;
      k_scale_min(s, b[i].scales, sc, mn);
      const int c = s / 2;
      int dot = 0;
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t byte = b[i].qs[32 * c + l];
        int v = s % 2 == 0 ? byte & 0x0F : byte >> 4;
        if constexpr (std::is_same_v<Block, BlockQ5K>) {
          if (b[i].qh[l] & (1u << s)) v += 16;
        }
        dot += v * a[i].qs[32 * s + l];
      }
      sumi += sc * dot;
      summ += mn * (a[i].bsums[2 * s] + a[i].bsums[2 * s + 1]);
    }
    sum += h2f(b[i].d) * a[i].d * static_cast<float>(sumi) - h2f(b[i].dmin) * a[i].d * static_cast<float>(summ);
  }
  return sum;
}

float dot_q6_k(const std::uint8_t* w, const std::uint8_t* x, std::size_t n) {
  const auto* b = reinterpret_cast<const BlockQ6K*>(w);
  const auto* a = reinterpret_cast<const ActQ8K*>(x);
  float sum = 0.0f;
  for (std::size_t i = 0; i < blocks(n, 256); ++i) {
    int sumi = 0;
    for (int g = 0; g < 16; ++g) {
      int dot = 0;
      for (int j = 0; j < 16; ++j) dot += q6_value(b[i], 16 * g + j) * a[i].qs[16 * g + j];
      sumi += b[i].scales[g] * dot;
    }
    sum += h2f(b[i].d) * a[i].d * static_cast<float>(sumi);
  }
  return sum;
}

template <typename Load>
float dot_float(const std::uint8_t* w, const std::uint8_t* x, std::size_t n, Load load) {
  const auto* xf = reinterpret_cast<const float*>(x);
  float sum = 0.0f;
  for (std::size_t j = 0; j < n; ++j) sum += load(w, j) * xf[j];
  return sum;
}

std::uint16_t load_u16(const std::uint8_t* p, std::size_t j) {
  std::uint16_t v;
  std::memcpy(&v, p + 2 * j, 2);
  return v;
}

}  // namespace

std::optional<TypeTraits> type_traits(std::uint32_t id) {
  for (const auto& [t, tr] : kTraits) {
    if (static_cast<std::uint32_t>(t) == id) return tr;
  }
  return std::nullopt;
}

const TypeTraits& traits(TensorType t) {
  for (const auto& [k, tr] : kTraits) {
    if (k == t) return tr;
  }
  return kTraits[0].second;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits = 0;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant != 0) {
    // Subnormal: normalize.
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  } else {
    bits = sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);  // NaN
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): value / 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
    const std::uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14 + (113 - exp)
    const std::uint32_t q = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<std::uint16_t>(sign | r);
  }
  const std::uint32_t e = (abs >> 23) - 112;
  std::uint32_t m = abs & 0x7FFFFFu;
  std::uint32_t h = (e << 10) | (m >> 13);
  const std::uint32_t rem = m & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

std::uint16_t float_to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

void dequantize_row(TensorType t, const std::uint8_t* src, float* dst, std::size_t n) {
  switch (t) {
    case T::f32: std::memcpy(dst, src, n * 4); return;
    case T::f16:
      for (std::size_t j = 0; j < n; ++j) dst[j] = half_to_float(load_u16(src, j));
      return;
    case T::bf16:
      for (std::size_t j = 0; j < n; ++j) dst[j] = bf16_to_float(load_u16(src, j));
      return;
    case T::q4_0: deq_q4_0(src, dst, n); return;
    case T::q4_1: deq_q4_1(src, dst, n); return;
    case T::q5_0: deq_q5_0(src, dst, n); return;
    case T::q5_1: deq_q5_1(src, dst, n); return;
    case T::q8_0: deq_q8_0(src, dst, n); return;
    case T::q4_k: deq_q4_k(src, dst, n); return;
    case T::q5_k: deq_q5_k(src, dst, n); return;
    case T::q6_k: deq_q6_k(src, dst, n); return;
    case T::q8_1:
    case T::q8_k: break;
  }
  std::fill_n(dst, n, 0.0f);
}

void quantize_row(TensorType t, const float* x, std::uint8_t* dst, std::size_t n) {
  std::uint8_t q[32];
  switch (t) {
    case T::f32: std::memcpy(dst, x, n * 4); return;
    case T::f16:
      for (std::size_t j = 0; j < n; ++j) {
        const std::uint16_t h = float_to_half(x[j]);
        std::memcpy(dst + 2 * j, &h, 2);
      }
      return;
    case T::bf16:
      for (std::size_t j = 0; j < n; ++j) {
        const std::uint16_t h = float_to_bf16(x[j]);
        std::memcpy(dst + 2 * j, &h, 2);
      }
      return;
    case T::q8_0: {
      auto* b = reinterpret_cast<BlockQ8_0*>(dst);
      for (std::size_t i = 0; i < blocks(n, 32); ++i) {
        float d = 0.0f, sum = 0.0f;
        std::int32_t isum = 0;
        act_q8_32(x + 32 * i, d, sum, isum, b[i].qs);  // d is already rounded through binary16
        b[i].d = float_to_half(d);
      }
      return;
    }
    case T::q4_0: {
      auto* b = reinterpret_cast<BlockQ4_0*>(dst);
      for (std::size_t i = 0; i < blocks(n, 32); ++i) {
        quant_sym<BlockQ4_0, 8, 15>(x + 32 * i, b[i], q);
        pack_nibbles(q, b[i].qs);
      }
      return;
    }
    case T::q5_0: {
      auto* b = reinterpret_cast<BlockQ5_0*>(dst);
      for (std::size_t i = 0; i < blocks(n, 32); ++i) {
        quant_sym<BlockQ5_0, 16, 31>(x + 32 * i, b[i], q);
        pack_nibbles(q, b[i].qs);
        pack_high_bits(q, b[i].qh);
      }
      return;
    }
    case T::q4_1: {
      auto* b = reinterpret_cast<BlockQ4_1*>(dst);
      for (std::size_t i = 0; i < blocks(n, 32); ++i) {
        quant_affine<BlockQ4_1, 15>(x + 32 * i, b[i], q);
        pack_nibbles(q, b[i].qs);
      }
      return;
    }
    case T::q5_1: {
      auto* b = reinterpret_cast<BlockQ5_1*>(dst);
      for (std::size_t i = 0; i < blocks(n, 32); ++i) {
        quant_affine<BlockQ5_1, 31>(x + 32 * i, b[i], q);
        pack_nibbles(q, b[i].qs);
        pack_high_bits(q, b[i].qh);
      }
      return;
    }
    case T::q4_k: {
      auto* b = reinterpret_cast<BlockQ4K*>(dst);
      for (std::size_t i = 0; i < blocks(n, 256); ++i) quant_q4_k(x + 256 * i, b[i]);
      return;
    }
    case T::q5_k: {
      auto* b = reinterpret_cast<BlockQ5K*>(dst);
      for (std::size_t i = 0; i < blocks(n, 256); ++i) quant_q5_k(x + 256 * i, b[i]);
      return;
    }
    case T::q6_k: {
      auto* b = reinterpret_cast<BlockQ6K*>(dst);
      for (std::size_t i = 0; i < blocks(n, 256); ++i) quant_q6_k(x + 256 * i, b[i]);
      return;
    }
    case T::q8_1:
    case T::q8_k: quantize_act_row(t, x, dst, n); return;
  }
}

std::size_t act_row_bytes(TensorType act, std::size_t n) {
  switch (act) {
    case T::q8_0:
    case T::q8_1: return blocks(n, 32) * 12 + n;
    case T::q8_k: return blocks(n, 256) * sizeof(ActQ8K);
    default: return n * 4;
  }
}

void quantize_act_row(TensorType act, const float* x, std::uint8_t* dst, std::size_t n) {
  quantize_act_range(act, x, dst, n, 0, n);
}

void quantize_act_range(TensorType act, const float* x, std::uint8_t* dst, std::size_t n, std::size_t begin,
                        std::size_t end) {
  switch (act) {
    case T::q8_0:
    case T::q8_1: {
      auto* d = reinterpret_cast<float*>(dst);
      float* s = d + blocks(n, 32);
      auto* sum = reinterpret_cast<std::int32_t*>(s + blocks(n, 32));
      auto* q = reinterpret_cast<std::int8_t*>(sum + blocks(n, 32));
      for (std::size_t i = begin / 32; i < end / 32; ++i) act_q8_32(x + 32 * i, d[i], s[i], sum[i], q + 32 * i);
      return;
    }
    case T::q8_k: {
      auto* a = reinterpret_cast<ActQ8K*>(dst);
      for (std::size_t i = begin / 256; i < end / 256; ++i) act_q8_k(x + 256 * i, a[i]);
      return;
    }
    default: std::memcpy(dst + 4 * begin, x + begin, (end - begin) * 4); return;
  }
}

float dot_row(TensorType t, const std::uint8_t* w, const std::uint8_t* x, std::size_t n) {
  switch (t) {
    case T::f32:
      return dot_float(w, x, n, [](const std::uint8_t* p, std::size_t j) {
        float v;
        std::memcpy(&v, p + 4 * j, 4);
        return v;
      });
    case T::f16: return dot_float(w, x, n, [](const std::uint8_t* p, std::size_t j) { return half_to_float(load_u16(p, j)); });
    case T::bf16: return dot_float(w, x, n, [](const std::uint8_t* p, std::size_t j) { return bf16_to_float(load_u16(p, j)); });
    case T::q4_0:
      return dot_32<BlockQ4_0>(w, x, n, [](const BlockQ4_0& b, int j) { return nibble(b.qs, j) - 8; });
    case T::q4_1:
      return dot_32<BlockQ4_1>(w, x, n, [](const BlockQ4_1& b, int j) { return nibble(b.qs, j); });
    case T::q5_0:
      return dot_32<BlockQ5_0>(
          w, x, n, [](const BlockQ5_0& b, int j) { return (nibble(b.qs, j) | fifth_bit(b.qh, j)) - 16; });
    case T::q5_1:
      return dot_32<BlockQ5_1>(w, x, n,
                                        [](const BlockQ5_1& b, int j) { return nibble(b.qs, j) | fifth_bit(b.qh, j); });
    case T::q8_0: return dot_32<BlockQ8_0>(w, x, n, [](const BlockQ8_0& b, int j) { return int{b.qs[j]}; });
    case T::q4_k: return dot_k_affine<BlockQ4K>(w, x, n);
    case T::q5_k: return dot_k_affine<BlockQ5K>(w, x, n);
    case T::q6_k: return dot_q6_k(w, x, n);
    case T::q8_1:
    case T::q8_k: break;
  }
  return 0.0f;
}

}  // namespace llamawire::kernels
