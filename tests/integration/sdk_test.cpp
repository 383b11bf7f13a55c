// The real client libraries of the OpenAI API against the server (issue 22): the
// `openai` SDK, the Vercel AI SDK and LangChain, driven by tests/sdk/sdk_test.mjs with node.
// Their npm packages (pinned by tests/sdk/package-lock.json) are installed into build/sdk
// by scripts/sdk-deps.sh, which the README's test command runs.
#include "tests/server_process.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

namespace t = llamawire::test;
namespace fs = std::filesystem;

TEST_CASE("sdk: the openai, Vercel AI SDK and LangChain clients use the server's API as they use OpenAI's",
          "[net][http][sdk]") {
  LW_REQUIRE_SHARED();
  const fs::path sdk = fs::path(LW_BIN_DIR).parent_path() / "sdk";
  const bool node = t::run_process({"/usr/bin/env", "node", "--version"}, "", 30).exit_code == 0;
  const bool installed = fs::exists(sdk / "node_modules" / "openai") && fs::exists(sdk / "node_modules" / "ai") &&
                         fs::exists(sdk / "node_modules" / "@langchain" / "openai");
  if (!node || !installed) {
    const std::string why = !node ? "node is not installed" : "the npm packages are not in " + sdk.string() +
                                                                  " (scripts/sdk-deps.sh installs them)";
    if (t::in_ci()) FAIL("SDK test cannot run in CI: " + why);
    WARN("SDK test skipped: " + why);
    SUCCEED();
    return;
  }
  t::TempDir dir;
  // The 32000-token vocabulary, and a context that holds the tools' descriptions.
  const auto model = t::make_model(dir, "m.bin", {64, 192, 2, 4, 4, 32000, 1024});
  t::ServerProcess server({"-c", model, "-z", (t::models_dir() / "tokenizer.bin").string(), "--http-port", "0",
                           "--api-key", "sdk-test-key", "--max-sessions", "8"});
  const auto r = t::run_process({"/usr/bin/env", "node", (sdk / "sdk_test.mjs").string(), "--base",
                                 "http://127.0.0.1:" + std::to_string(server.http_port()) + "/v1", "--key",
                                 "sdk-test-key", "--dim", "64"},
                                "", 600);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("20 of 20 checks passed") != std::string::npos);
  CHECK(server.stop() == 0);
}
