// Writes GGUF version 3 files (little-endian): metadata in the order added, then the tensor
// infos, then each tensor's data at the alignment, produced one tensor at a time so a file
// of many gigabytes needs the memory of its largest tensor only. Used by llamawire-convert
// and by tests that need files of a given shape or with a given defect.
#pragma once

#include "common/error.hpp"
#include "server/kernels/tensor_types.hpp"
#include "server/model/gguf.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llamawire {

class GgufWriter {
 public:
  // Fills `out` (already sized to the tensor's bytes) with the tensor's data.
  using Producer = std::function<void(std::vector<std::uint8_t>& out)>;

  void add_u32(const std::string& key, std::uint32_t v);
  void add_i32(const std::string& key, std::int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);
  void add_i32s(const std::string& key, const std::vector<std::int32_t>& v);
  // A value as another file holds it (copied byte for byte, nested arrays included).
  void add_value(const std::string& key, const GgufValue& v);
  // Raw bytes of one key-value pair's value part (type then payload), for tests that write
  // malformed files.
  void add_raw(const std::string& key, std::uint32_t type, const std::vector<std::uint8_t>& payload);
  bool has(const std::string& key) const;

  // ne[0] is the row length. The producer runs during write().
  void add_tensor(const std::string& name, kernels::TensorType type, std::vector<std::uint64_t> ne, Producer produce);

  void set_alignment(std::uint32_t a) { alignment_ = a; }
  void set_version(std::uint32_t v) { version_ = v; }

  // The whole file in memory (small files, tests) or written to `path` (via a temporary
  // beside it, renamed at the end).
  std::vector<std::uint8_t> bytes() const;
  Result<void> write(const std::string& path) const;

 private:
  struct Kv {
    std::string key;
    std::uint32_t type;
    std::vector<std::uint8_t> payload;
  };
  struct Tensor {
    std::string name;
    kernels::TensorType type;
    std::vector<std::uint64_t> ne;
    std::uint64_t bytes;
    Producer produce;
  };
  std::vector<std::uint8_t> header() const;  // up to and including the padding before the data
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  std::uint32_t alignment_ = 32;
  std::uint32_t version_ = 3;
};

}  // namespace llamawire
