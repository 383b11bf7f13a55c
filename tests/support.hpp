// Test helpers: where shared/ and the binaries are, golden files, temp dirs, subprocesses.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace llamawire::test {

// ../shared next to the source tree (LLAMAWIRE_SHARED overrides); empty if absent.
std::filesystem::path shared_dir();
std::filesystem::path models_dir();
std::filesystem::path golden_dir();
// build/bin
std::filesystem::path bin_dir();

// Skips the current test case with a clear message when shared/ is absent.
#define LW_REQUIRE_SHARED()                                                     \
  do {                                                                          \
    if (::llamawire::test::shared_dir().empty()) {                              \
      WARN("../shared not found (set LLAMAWIRE_SHARED): skipping golden test"); \
      return;                                                                   \
    }                                                                           \
  } while (0)

std::vector<boost::json::object> read_jsonl(const std::filesystem::path& path);
std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path);
void write_bytes(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes);

// A fresh directory removed at scope exit.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv (no shell), feeding `input` to stdin, with a wall-clock limit in seconds.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = "",
                          int timeout_s = 120);

}  // namespace llamawire::test
