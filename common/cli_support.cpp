#include "common/cli_support.hpp"

#include <cmath>
#include <filesystem>
#include <sstream>

namespace llamawire {

std::vector<std::string> default_tokenizer_paths(const std::string& checkpoint, int vocab_size) {
  const auto dir = std::filesystem::path(checkpoint).parent_path();
  std::vector<std::string> out;
  out.push_back((dir / "tokenizer.bin").string());
  out.push_back((dir / ("tok" + std::to_string(vocab_size) + ".bin")).string());
  return out;
}

void OptionChecks::integer(std::string_view option, long long value, long long lo, long long hi) {
  if (error_ || (value >= lo && value <= hi)) return;
  error_ = std::string(option) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
           "] (got " + std::to_string(value) + ")";
}

void OptionChecks::real(std::string_view option, double value, double lo, double hi, std::string_view what) {
  if (error_ || (std::isfinite(value) && value >= lo && value <= hi)) return;
  std::ostringstream os;
  os << option << " must be " << what << " in [" << lo << ", " << hi << "] (got " << value << ")";
  error_ = os.str();
}

}  // namespace llamawire
