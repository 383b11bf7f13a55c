// Bounded little-endian reading and writing over byte buffers (Boost.Endian), used by
// every parser of untrusted bytes: frames, messages, tokenizer and checkpoint headers.
#pragma once

#include "common/error.hpp"

#include <boost/endian/conversion.hpp>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace llamawire {

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

  std::size_t remaining() const { return bytes_.size() - pos_; }
  std::size_t position() const { return pos_; }
  bool empty() const { return remaining() == 0; }

  // Each read returns nullopt (and consumes nothing) when too few bytes remain.
  template <class T>
  std::optional<T> read() {
    static_assert(std::is_arithmetic_v<T>);
    if (remaining() < sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    if constexpr (std::is_integral_v<T>) {
      boost::endian::little_to_native_inplace(v);
    } else {
      static_assert(boost::endian::order::native == boost::endian::order::little,
                    "float decoding assumes a little-endian host");
    }
    return v;
  }

  std::optional<std::span<const std::uint8_t>> bytes(std::size_t n) {
    if (remaining() < n) return std::nullopt;
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t pos_ = 0;
};

class ByteWriter {
 public:
  template <class T>
  void write(T v) {
    static_assert(std::is_arithmetic_v<T>);
    if constexpr (std::is_integral_v<T>) boost::endian::native_to_little_inplace(v);
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void bytes(std::string_view s) {
    out_.insert(out_.end(), reinterpret_cast<const std::uint8_t*>(s.data()),
                reinterpret_cast<const std::uint8_t*>(s.data()) + s.size());
  }
  std::vector<std::uint8_t>& buffer() { return out_; }
  std::vector<std::uint8_t> take() { return std::move(out_); }

 private:
  std::vector<std::uint8_t> out_;
};

// Reads a whole regular file of at most max_bytes (its size is checked before reading); a
// FIFO, device or folder is refused at once, never waited on. Errors name the file and the
// reason.
Result<std::vector<std::uint8_t>> read_file(const std::string& path, std::size_t max_bytes);
// The first n bytes (fewer if the file is shorter) of a regular file, refused as above.
// file_size, when given, receives the file's size.
Result<std::vector<std::uint8_t>> read_file_head(const std::string& path, std::size_t n,
                                                 std::uint64_t* file_size = nullptr);

}  // namespace llamawire
