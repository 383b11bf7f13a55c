// The tensor types of GGUF files (ggml's block formats), as they lie in a file: the block
// layouts, their sizes, and the activation format each one's products use. Scalar
// reference routines (dequantize a row, quantize a row, dot a weight row with an
// activation row) live in tensor_types.cpp; the SIMD products are in the kernel tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace llamawire::kernels {

// GGUF's type ids (ggml_type). Only the ones listed are supported; others are named in
// error messages by their id.
enum class TensorType : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,  // activations only
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,  // activations only
  bf16 = 30,
};

struct TypeTraits {
  std::string_view name;   // as llama.cpp prints it ("q4_K", "f16" ...)
  int block = 0;           // values per block
  std::size_t bytes = 0;   // bytes per block
  TensorType act = TensorType::f32;  // the activation format its products take
  bool weights = false;    // may hold weights (q8_1 and q8_K are activation formats)
};

// nullopt for an id that is not one of the types above.
std::optional<TypeTraits> type_traits(std::uint32_t id);
const TypeTraits& traits(TensorType t);
// Bytes of a row of `n` values (n % block == 0).
inline std::size_t row_bytes(TensorType t, std::size_t n) {
  const TypeTraits& tr = traits(t);
  return n / static_cast<std::size_t>(tr.block) * tr.bytes;
}

// IEEE binary16 and bfloat16 <-> float, round to nearest even (NaN kept NaN).
float half_to_float(std::uint16_t h);
std::uint16_t float_to_half(float f);
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
std::uint16_t float_to_bf16(float f);

// The block layouts, byte for byte as in a GGUF file (d and m are binary16).
struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[16];  // value j in the low nibble of qs[j], value j+16 in the high one
};
struct BlockQ4_1 {
  std::uint16_t d, m;
  std::uint8_t qs[16];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];  // bit j: the fifth bit of value j
  std::uint8_t qs[16];
};
struct BlockQ5_1 {
  std::uint16_t d, m;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
// K-quants: 256 values in 8 sub-blocks of 32 (Q4_K, Q5_K) or 16 of 16 (Q6_K).
struct BlockQ4K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];  // 8 six-bit scales and 8 six-bit mins, packed
  std::uint8_t qs[128];     // per 64 values: 32 bytes, low nibbles first sub-block, high the next
};
struct BlockQ5K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[32];  // bit 2j / 2j+1 of qh[l]: fifth bit of value l of sub-block 2j / 2j+1
  std::uint8_t qs[128];
};
struct BlockQ6K {
  std::uint8_t ql[128];   // low four bits
  std::uint8_t qh[64];    // high two bits
  std::int8_t scales[16];
  std::uint16_t d;
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4K) == 144 && sizeof(BlockQ5K) == 176 && sizeof(BlockQ6K) == 210);

// Activations (ours, in memory only): int8 values with float scales, as ggml's q8_0 / q8_1
// / q8_K compute them (d rounded through binary16 for q8_0 and q8_1, as there).
// A q8_0 or q8_1 row of n values is laid out as float d[n/32], float s[n/32], int32
// sum[n/32], int8 qs[n]: the scales apart from the values, so a kernel reads eight blocks'
// scales in one load.
struct Act32View {
  const float* d;   // per block
  const float* s;   // d * sum(qs), exact
  const std::int32_t* sum;  // sum(qs)
  const std::int8_t* qs;
  static Act32View of(const std::uint8_t* row, std::size_t n) {
    const auto* d = reinterpret_cast<const float*>(row);
    const auto* sum = reinterpret_cast<const std::int32_t*>(d + 2 * (n / 32));
    return {d, d + n / 32, sum, reinterpret_cast<const std::int8_t*>(sum + n / 32)};
  }
};
struct ActQ8K {
  float d;
  std::int16_t bsums[16];   // sums of each 16 values
  std::int16_t sums32[8];   // sums of each 32 values (bsums in pairs)
  std::int8_t qs[256];
};
static_assert(sizeof(ActQ8K) == 308);

// Six-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block.
inline void k_scale_min(int j, const std::uint8_t* q, int& sc, int& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// A weight matrix in a block format: `rows` rows of `row_bytes` bytes each.
struct BlockMatrix {
  TensorType type = TensorType::f32;
  const std::uint8_t* data = nullptr;
  std::size_t row_bytes = 0;
};

// Activations in the format traits(weight type).act names: f32 rows, or rows of Act* blocks.
struct BlockAct {
  TensorType type = TensorType::f32;
  const std::uint8_t* data = nullptr;
  std::size_t row_bytes = 0;
};

// Scalar reference: row `src` (n values of type t) to floats.
void dequantize_row(TensorType t, const std::uint8_t* src, float* dst, std::size_t n);
// Scalar reference: n floats to a row of type t (weights: f32, f16, bf16, q8_0, q4_0,
// q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; activations: q8_0, q8_1, q8_k as the Act* blocks).
// `act` selects the activation layout for q8_0 (ActQ8_0 instead of BlockQ8_0).
void quantize_row(TensorType t, const float* src, std::uint8_t* dst, std::size_t n);
void quantize_act_row(TensorType act, const float* src, std::uint8_t* dst, std::size_t n);
// The blocks of values [begin, end) of that row (both multiples of the format's block), so
// threads can share one row; the result is the same as quantize_act_row's.
void quantize_act_range(TensorType act, const float* src, std::uint8_t* dst, std::size_t n, std::size_t begin,
                        std::size_t end);
// Bytes of an activation row of n values in format `act`.
std::size_t act_row_bytes(TensorType act, std::size_t n);
// Scalar reference product of one weight row (type t, n values) with one activation row
// (format traits(t).act): integer sums per block, float across blocks, in block order.
float dot_row(TensorType t, const std::uint8_t* w, const std::uint8_t* x, std::size_t n);

}  // namespace llamawire::kernels
