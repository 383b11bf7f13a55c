// GGUF (llama.cpp's model file format), versions 2 and 3, little-endian: the header, every
// metadata value type (arrays, nested ones included), the tensor infos and the data
// section's alignment. Parsing validates every count, length, size and offset against the
// file's length, with checked arithmetic, before anything is used: a bad file gives one
// error naming the file and the key or tensor at fault. The parsed file holds views into
// the bytes it was given, which must outlive it.
#pragma once

#include "common/error.hpp"
#include "server/kernels/tensor_types.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llamawire {

inline constexpr std::uint32_t kGgufMagic = 0x46554747;  // "GGUF"

enum class GgufType : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
std::string_view gguf_type_name(GgufType t);

// One metadata value. Scalars are decoded; an array keeps its element type, its count and
// a view of its bytes (strings of a string array are also listed as views).
struct GgufValue {
  GgufType type = GgufType::u8;
  std::uint64_t u = 0;  // unsigned integers and bool
  std::int64_t i = 0;   // signed integers
  double f = 0.0;       // f32 / f64
  std::string_view s;   // string
  GgufType elem = GgufType::u8;          // array element type
  std::uint64_t count = 0;               // array element count
  std::span<const std::uint8_t> raw;     // array of fixed-size elements or of arrays: their bytes
  std::vector<std::string_view> strings; // array of strings

  bool is_integer() const;
  bool is_float() const { return type == GgufType::f32 || type == GgufType::f64; }
  // Integer value as signed 128-bit-safe pair: ok when it fits in int64.
  std::optional<std::int64_t> as_int() const;
  // Element k of a numeric array, widened.
  std::optional<double> number_at(std::uint64_t k) const;
  std::optional<std::int64_t> int_at(std::uint64_t k) const;
};

struct GgufKv {
  std::string_view key;
  GgufValue value;
};

struct GgufTensor {
  std::string_view name;
  std::uint32_t n_dims = 0;
  std::uint64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the fastest (row length)
  kernels::TensorType type = kernels::TensorType::f32;
  std::uint64_t offset = 0;  // from the start of the data section
  std::uint64_t bytes = 0;
  std::uint64_t rows() const { return ne[1] * ne[2] * ne[3]; }
};

class GgufFile {
 public:
  // `bytes` is the whole file; `name` goes into every message.
  static Result<GgufFile> parse(std::span<const std::uint8_t> bytes, const std::string& name);

  std::uint32_t version() const { return version_; }
  std::uint32_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }
  const std::vector<GgufKv>& kvs() const { return kvs_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const std::string& name() const { return name_; }

  const GgufValue* find(std::string_view key) const;
  const GgufTensor* tensor(std::string_view name) const;
  // The tensor's bytes within the file the parse saw.
  std::span<const std::uint8_t> tensor_bytes(const GgufTensor& t) const;

  // Typed lookups with messages that name the file and the key ("FILE: key K: ...").
  // Missing keys give `fallback` when one is passed, else an error.
  Result<std::int64_t> get_int(std::string_view key, std::int64_t lo, std::int64_t hi,
                               std::optional<std::int64_t> fallback = std::nullopt) const;
  Result<double> get_float(std::string_view key, std::optional<double> fallback = std::nullopt) const;
  Result<std::string_view> get_string(std::string_view key, std::optional<std::string_view> fallback = std::nullopt) const;
  Result<bool> get_bool(std::string_view key, bool fallback) const;
  Error error(std::string_view what) const;

 private:
  std::string name_;
  std::span<const std::uint8_t> bytes_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::vector<GgufTensor> tensors_;
};

// True when the bytes start with the GGUF magic.
bool is_gguf(std::span<const std::uint8_t> head);

}  // namespace llamawire
