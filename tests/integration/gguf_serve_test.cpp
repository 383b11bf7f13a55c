// Serving GGUF files end to end: every file of shared/models/gguf through the CLI (both
// sampling modes), the load tester and the HTTP API, with llama.cpp's greedy ids; chat
// templates; 1.0 clients; a bad file at startup.
#include "common/chat_template.hpp"
#include "common/messages.hpp"
#include "common/tokenizer.hpp"
#include "common/utf8.hpp"
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <future>
#include <map>
#include <set>

namespace lw = llamawire;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

std::string gguf(const std::string& name) { return (t::models_dir() / "gguf" / name).string(); }

// A tokenizer for the shared files' two vocabularies, from the server itself (VOCAB), so
// this test decodes as any 1.2 client would.
lw::Tokenizer vocab_of(const t::ServerProcess& s) {
  return lw::Tokenizer::from_vocab(t::fetch_vocab_message(s).vocab, "server").value();
}

std::vector<int> ints(const json::value& v) {
  std::vector<int> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int>(x.to_number<int>()));
  return out;
}

// The single-|d| bound of golden/gguf/README.md for the tie rule (2x it is a near-tie).
double single_bound(const std::string& type, bool trained) {
  static const std::map<std::string, std::pair<double, double>> b = {
      {"F32", {1e-4, 1e-4}},     {"F16", {1.1e-2, 1.1e-2}}, {"Q8_0", {2.9e-1, 4.4e-2}}, {"Q6_K", {5.8e-2, 5.8e-2}},
      {"Q5_K_M", {4e-2, 4e-2}},  {"Q5_1", {4.4e-2, 4.4e-2}}, {"Q5_0", {4.1e-2, 4.1e-2}}, {"Q4_K_M", {2.4e-1, 4.5e-2}},
      {"Q4_1", {3.8e-2, 3.8e-2}}, {"Q4_0", {2.2e-1, 4.3e-2}}};
  const auto& p = b.at(type);
  return trained ? p.first : p.second;
}

}  // namespace

TEST_CASE("every shared GGUF file serves the CLI in both modes, the load tester and the HTTP API", "[net][gguf][slow]") {
  LW_REQUIRE_SHARED();
  const auto greedy = t::read_jsonl(t::golden_dir() / "gguf" / "greedy.jsonl");
  std::set<std::string> files;
  for (const auto& r : greedy) files.insert(std::string(r.at("file").as_string()));
  REQUIRE(files.size() == 18);
  int http_compared = 0;
  for (const auto& file : files) {
    INFO(file);
    t::ServerProcess server({"-c", gguf(file), "--http-port", "0", "--threads", "2"});
    const std::string prompt = file.rfind("vocab32k", 0) == 0 ? "Once upon a time" : "I dreamed";
    // CLI, server-side and client-side sampling: the same text, greedy and sampled; the load tester.
    t::check_cli_both_modes(server, prompt, 28);
    t::check_load_tester(server, prompt);
    // The HTTP API, greedy, against llama.cpp's ids (as far as they are not a near-tie,
    // and before any BOS/EOS, where the server stops and llama.cpp goes on).
    const lw::Tokenizer tok = vocab_of(server);
    for (const auto& r : greedy) {
      if (r.at("file").as_string() != file) continue;
      const std::string type(r.at("type").as_string());
      const auto ids = ints(r.at("ids"));
      const auto& margins = r.at("top2_margin").as_array();
      const double tie = 2 * single_bound(type, r.at("model").as_string() == "aidreams260K");
      std::size_t n = 0;
      while (n < 16 && n < ids.size() && ids[n] != 1 && ids[n] != 2 && margins[n].to_number<double>() >= tie) ++n;
      if (n == 0) continue;
      const auto prompt_ids = ints(r.at("prompt_ids"));
      std::string want;
      for (std::size_t i = 0; i < n; ++i) want += tok.decode(i == 0 ? prompt_ids.back() : ids[i - 1], ids[i]);
      json::object req{{"prompt", r.at("prompt")}, {"max_tokens", n}, {"temperature", 0}};
      const auto res = t::http_request(server.http_port(), "POST", "/v1/completions", json::serialize(req));
      REQUIRE(res.status == 200);
      const auto body = json::parse(res.body).as_object();
      INFO("'" << r.at("prompt").as_string() << "', " << n << " tokens");
      CHECK(body.at("choices").as_array()[0].as_object().at("text").as_string() == lw::utf8::sanitize(want));
      CHECK(body.at("usage").as_object().at("prompt_tokens").to_number<int>() == static_cast<int>(prompt_ids.size()));
      ++http_compared;
    }
    CHECK(server.stop() == 0);
  }
  CHECK(http_compared >= 30);  // 37 of the 54 records have comparable leading tokens
}

TEST_CASE("chat templates: --chat-template, the CLI's chat and HTTP chat give the same tokens", "[net][gguf]") {
  LW_REQUIRE_SHARED();
  for (const char* name : {"llama2", "mistral", "zephyr", "chatml", "vicuna"}) {
    INFO(name);
    t::ServerProcess server({"-c", gguf("vocab32k-q8_0.gguf"), "--http-port", "0", "--chat-template", name});
    CHECK(server.log().find(std::string("chat template ") + name + " (--chat-template)") != std::string::npos);
    // HTTP: the prompt is the rendering of the messages, token for token.
    const lw::Tokenizer tok = vocab_of(server);
    const lw::ChatTemplate tmpl(*lw::chat_format_by_name(name));
    const std::vector<lw::ChatMessage> msgs{{"system", "Be brief."}, {"user", "Hello there"}};
    const auto want = lw::encode_segments(tok, tmpl.render(msgs, tok.add_bos()));
    json::array messages{json::object{{"role", "system"}, {"content", "Be brief."}},
                         json::object{{"role", "user"}, {"content", "Hello there"}}};
    json::object req{{"messages", messages}, {"max_tokens", 4}, {"temperature", 0}};
    const auto res = t::http_request(server.http_port(), "POST", "/v1/chat/completions", json::serialize(req));
    REQUIRE(res.status == 200);
    CHECK(json::parse(res.body).at("usage").at("prompt_tokens").to_number<int>() == static_cast<int>(want.size()));
    // The CLI's chat, both modes, two turns.
    const std::string input = "Hello there\nand again\n";
    const auto a = t::run_client(server, {"-m", "chat", "-y", "Be brief.", "-t", "0", "-n", "0"}, input);
    const auto b = t::run_client(server, {"-m", "chat", "-y", "Be brief.", "-t", "0", "-n", "0", "--client-sampling"}, input);
    INFO(a.err);
    CHECK((a.exit_code == 0 || a.exit_code == 5));
    CHECK(a.out == b.out);
    CHECK(server.stop() == 0);
  }
  // A model that names no template gets the default, said in the log.
  t::ServerProcess plain({"-c", gguf("aidreams260K-q8_0.gguf")});
  CHECK(plain.log().find("chat template llama2 (the model names none: the default)") != std::string::npos);
  CHECK(plain.stop() == 0);
}

TEST_CASE("a 1.0 client gets a tokenizer.bin for a GGUF model, and a bad GGUF file stops the server with one line",
          "[net][gguf]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", gguf("vocab32k-q8_0.gguf")});
  t::RawSocket sock(server.port());
  REQUIRE(sock.send(lw::msg::Hello{1, 0, "", "old-client"}, 1));
  auto ok = sock.receive();
  REQUIRE(ok.has_value());
  const auto* hello = std::get_if<lw::msg::HelloOk>(&ok->second);
  REQUIRE(hello != nullptr);
  CHECK(hello->weights == 2);
  REQUIRE(sock.send(lw::msg::GetTokenizer{}, 2));
  auto tk = sock.receive();
  REQUIRE(tk.has_value());
  const auto* bytes = std::get_if<lw::msg::Tokenizer>(&tk->second);
  REQUIRE(bytes != nullptr);
  CHECK(bytes->bytes.size() == hello->tokenizer_bytes);
  const auto old = lw::Tokenizer::parse(bytes->bytes, "tokenizer.bin", 32000).value();
  // With llama2.c's algorithm on those bytes, an old client tokenizes as the model does.
  CHECK(old.encode("Once upon a time", true, false) == std::vector<int>{1, 9038, 2501, 263, 931});
  CHECK(server.stop() == 0);

  // Startup refusals: exit 1, one line naming the file.
  t::TempDir dir;
  auto good = t::read_bytes(gguf("aidreams260K-q4_0.gguf"));
  good.resize(good.size() / 2);
  const auto cut = (dir / "cut.gguf").string();
  t::write_bytes(cut, good);
  for (const auto& args : std::vector<std::vector<std::string>>{{"-c", cut},
                                                               {"-c", gguf("aidreams260K-q4_0.gguf"), "-z", (t::models_dir() / "tok512.bin").string()},
                                                               {"-c", gguf("aidreams260K-q4_0.gguf"), "--weights", "q8_0"},
                                                               {"-c", gguf("aidreams260K-q4_0.gguf"), "--chat-template", "jinja"}}) {
    const auto r = t::run_process([&] {
      std::vector<std::string> v{(t::bin_dir() / "llamawire-server").string(), "-o", "0"};
      v.insert(v.end(), args.begin(), args.end());
      return v;
    }(), "", 30);
    INFO(r.err);
    CHECK((r.exit_code == 1 || r.exit_code == 2));  // 2: a usage error, with the usage
    if (r.exit_code == 1) CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(!r.err.empty());
  }
}

TEST_CASE("a mapped GGUF file serves 16 clients at weights + KV in use + a small constant", "[net][gguf]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  // The stories42M shape with grouped-query attention (2 KV heads), as Q4_K_M.
  const auto bin = t::make_model(dir, "s42.bin", {512, 1376, 8, 8, 2, 32000, 1024});
  const auto file = (dir / "s42-q4_k_m.gguf").string();
  const auto conv = t::run_process({(t::bin_dir() / "llamawire-convert").string(), bin, file, "-z",
                                    (t::models_dir() / "tokenizer.bin").string(), "--type", "q4_k_m"},
                                   "", 300);
  REQUIRE(conv.exit_code == 0);
  std::filesystem::remove(bin);
  const auto weights = std::filesystem::file_size(file);
  const std::uint64_t ctx = 128;
  const std::uint64_t kv_per_session = 2 * 8 * ctx * 128 * 4;  // K and V, layers, positions, kv_dim, float
  // No warm KV reserve (--kv-warm-mb, 64 MiB by default): the KV counted is what is in use.
  t::ServerProcess server({"-c", file, "--ctx", std::to_string(ctx), "--kv-warm-mb", "0"});
  CHECK(server.log().find("(gguf)") != std::string::npos);
  std::vector<std::future<t::ProcessResult>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::async(std::launch::async, [&server, i] {
      return t::run_client(server, {"-n", "0", "-s", std::to_string(i + 1), "-i", "Once upon a time"});
    }));
  }
  for (auto& c : clients) {
    const auto r = c.get();
    INFO(r.err);
    CHECK(r.exit_code == 0);
  }
  const auto peak = server.peak_rss_bytes();
  INFO("peak RSS " << peak / 1048576.0 << " MiB; file " << weights / 1048576.0 << " MiB; 16 KV caches "
                   << 16 * kv_per_session / 1048576.0 << " MiB");
  CHECK(peak > weights / 2);  // the mapped weights are resident (every step reads them)
#ifndef LW_SANITIZED
  CHECK(peak <= weights + 16 * kv_per_session + (64ull << 20));
#endif
  CHECK(server.stop() == 0);
}

TEST_CASE("a GGUF session's tokens do not depend on what else the server runs", "[net][gguf]") {
  LW_REQUIRE_SHARED();
  for (const char* file : {"k256-q4_k_m.gguf", "aidreams260K-q4_0.gguf", "aidreams260K-f16.gguf"}) {
    INFO(file);
    t::ServerProcess server({"-c", gguf(file)});
    const std::vector<std::string> args{"-n", "60", "-t", "0.9", "-s", "42", "-i", "I dreamed"};
    const auto solo = t::run_client(server, args);
    REQUIRE(solo.exit_code == 0);
    // The same request while six others with other seeds share its batches, both modes.
    std::vector<std::future<t::ProcessResult>> others;
    for (int i = 0; i < 6; ++i) {
      others.push_back(std::async(std::launch::async, [&server, i] {
        return t::run_client(server, {"-n", "60", "-t", "0.9", "-s", std::to_string(100 + i), "-i", "Once upon a time"});
      }));
    }
    auto with_client = args;
    with_client.push_back("--client-sampling");
    const auto busy = t::run_client(server, args);
    const auto busy_client = t::run_client(server, with_client);
    for (auto& o : others) CHECK(o.get().exit_code == 0);
    CHECK(busy.out == solo.out);
    CHECK(busy_client.out == solo.out);
    CHECK(server.stop() == 0);
  }
}
