#include "common/cli_support.hpp"

#include <filesystem>

namespace llamawire {

std::vector<std::string> default_tokenizer_paths(const std::string& checkpoint, int vocab_size) {
  const auto dir = std::filesystem::path(checkpoint).parent_path();
  std::vector<std::string> out;
  out.push_back((dir / "tokenizer.bin").string());
  out.push_back((dir / ("tok" + std::to_string(vocab_size) + ".bin")).string());
  return out;
}

}  // namespace llamawire
