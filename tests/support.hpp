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

// Whether the tests run in CI (the CI variable set, as CI services and .ci/run set it).
bool in_ci();

// When shared/ is absent: in CI the test fails (a reference that is missing there is a
// broken checkout, not a reason to pass); elsewhere it ends as an explicit skip, said in
// the output (WARN) and counted as one passing check, so that Catch2's -w NoAssertions
// still catches tests that assert nothing.
#define LW_REQUIRE_SHARED()                                                                    \
  do {                                                                                         \
    if (::llamawire::test::shared_dir().empty()) {                                             \
      if (::llamawire::test::in_ci()) FAIL("../shared not found (set LLAMAWIRE_SHARED) in CI"); \
      WARN("../shared not found (set LLAMAWIRE_SHARED): skipping golden test");                \
      SUCCEED("skipped");                                                                      \
      return;                                                                                  \
    }                                                                                          \
  } while (0)

// The Llama-3 test data: vocab.json (unpacked at configure time from tests/data/llama3) and
// the source directory's cases.jsonl.
std::filesystem::path llama3_vocab_json();
std::filesystem::path llama3_cases();
// A vocabulary-only GGUF file of the Llama-3 vocabulary, written once per process by
// llamawire-convert --vocab (in the build's testdata directory).
std::filesystem::path llama3_vocab_gguf();
// A small Llama-3-shaped model (the real vocabulary, 500000 RoPE base, Llama-3.1 frequency
// factors, tied embeddings, GQA 32/8), `type` q8_0, q4_k_m, f32 ..., written once per
// process and type (llamawire-mkmodel, then llamawire-convert).
std::filesystem::path llama3_model(const std::string& type);

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
