// End to end: the prefix cache gives exactly the tokens and logits of a cold run (a server
// with --prefix-cache off), whatever shares the prefix, batches with it, or evicts it.
#include "common/tokenizer.hpp"
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cstring>
#include <latch>
#include <thread>

namespace lw = llamawire;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

std::string aidreams() { return (t::models_dir() / "aidreams260K.bin").string(); }
std::string tok512() { return (t::models_dir() / "tok512.bin").string(); }

using t::stats_of;

std::uint64_t stat(int port, const char* name) { return stats_of(port).at(name).to_number<std::uint64_t>(); }

// n tokens of text (as aidreams260K was trained on, so that its generations run long
// rather than end at once), different for each `salt`, BOS first.
std::vector<std::uint32_t> tokens(int n, int salt) {
  static const auto tok = lw::Tokenizer::load(tok512(), 512);
  REQUIRE(tok.has_value());
  const char* sentences[] = {"I dreamed of a field where the sky was blue.", "The trees were green and tall.",
                             "A gentle wind moved over the hills.", "In the dream, numbers sang softly.",
                             "I felt the hum of the machine.", "Patterns of light danced on the water.",
                             "The stars whispered about tomorrow.", "A door opened into a quiet room."};
  std::string text;
  for (int i = 0; static_cast<int>(text.size()) < 8 * n; ++i) text += std::string(sentences[(salt + i * 3) % 8]) + " ";
  const auto ids = tok->encode(text, true, false);
  REQUIRE(static_cast<int>(ids.size()) >= n);
  return std::vector<std::uint32_t>(ids.begin(), ids.begin() + n);
}

std::vector<std::uint32_t> concat(std::vector<std::uint32_t> a, const std::vector<std::uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// One request on a fresh connection.
t::GenerateResult generate(int port, const lw::msg::Generate& g) {
  t::RawSocket s(port, 60000);
  REQUIRE(s.handshake());
  return t::generate_on(s, g, 1);
}

std::vector<float> forward(int port, const std::vector<std::uint32_t>& prompt) {
  t::RawSocket s(port, 60000);
  REQUIRE(s.handshake());
  const auto l = t::forward_on(s, lw::msg::Forward{0, prompt}, 1);
  REQUIRE(l);
  return l->values;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Model {
  const char* name;
  std::vector<std::string> args;
};

std::vector<Model> models() {
  const auto gguf = (t::models_dir() / "gguf").string();
  return {{"aidreams260K f32", {"-c", aidreams(), "-z", tok512()}},
          {"aidreams260K --weights q8_0", {"-c", aidreams(), "-z", tok512(), "--weights", "q8_0"}},
          {"aidreams260K-q4_k_m.gguf", {"-c", gguf + "/aidreams260K-q4_k_m.gguf"}}};
}

std::vector<std::string> with(std::vector<std::string> args, std::initializer_list<const char*> more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

}  // namespace

TEST_CASE("prefix cache: a cached run gives a cold run's logits and tokens, f32 and quantized", "[net][prefix]") {
  LW_REQUIRE_SHARED();
  for (const Model& m : models()) {
    INFO(m.name);
    t::ServerProcess cold(with(m.args, {"--prefix-cache", "off"}));
    t::ServerProcess warm(m.args);
    const auto prompt = tokens(70, 1);
    // The first run on the warm server computes everything and leaves its blocks cached.
    const auto logits_cold = forward(cold.port(), prompt);
    CHECK(same_bits(forward(warm.port(), prompt), logits_cold));
    CHECK(stat(warm.port(), "prompt_tokens_cached_total") == 0);
    // Again: 4 blocks (64 positions) attached, the last 6 computed, the same bits.
    CHECK(same_bits(forward(warm.port(), prompt), logits_cold));
    CHECK(stat(warm.port(), "prompt_tokens_cached_total") == 64);
    // A prompt that shares 40 tokens: 2 blocks attached.
    auto other = prompt;
    other[40] = 7;
    CHECK(same_bits(forward(warm.port(), other), forward(cold.port(), other)));
    CHECK(stat(warm.port(), "prompt_tokens_cached_total") == 64 + 32);
    // Greedy and seeded generations, on the attached prefix.
    for (const float temperature : {0.0f, 0.9f}) {
      const auto g = t::gen_request(0, prompt, 128, 77, temperature);
      const auto a = generate(cold.port(), g);
      const auto b = generate(warm.port(), g);
      REQUIRE(a.ok);
      REQUIRE(b.ok);
      CHECK(a.tokens.size() > 20);
      CHECK(b.tokens == a.tokens);
      CHECK(b.end.position == a.end.position);
    }
    CHECK(stat(cold.port(), "prompt_tokens_cached_total") == 0);
    CHECK(stat(cold.port(), "prefix_cache_enabled") == 0);
    CHECK(stat(warm.port(), "prefix_cache_enabled") == 1);
    CHECK(stat(warm.port(), "prefix_cache_hits") >= 4);
    CHECK(cold.stop() == 0);
    CHECK(warm.stop() == 0);
  }
}

TEST_CASE("prefix cache: 16 concurrent sessions sharing a prefix each get their cold output", "[net][prefix]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess cold({"-c", aidreams(), "-z", tok512(), "--prefix-cache", "off"});
  t::ServerProcess warm({"-c", aidreams(), "-z", tok512(), "--io-threads", "2"});
  const auto prefix = tokens(50, 3);
  std::vector<lw::msg::Generate> requests;
  std::vector<t::GenerateResult> expected;
  for (int i = 0; i < 16; ++i) {
    // A suffix of its own (one to nine tokens), greedy or seeded, various lengths.
    auto suffix = tokens(2 + i % 9, 40 + i);
    suffix.erase(suffix.begin());
    requests.push_back(t::gen_request(0, concat(prefix, suffix), static_cast<std::uint32_t>(80 + 3 * i),
                                      500 + static_cast<std::uint64_t>(i), i % 4 == 0 ? 0.0f : 0.9f));
    expected.push_back(generate(cold.port(), requests.back()));
    REQUIRE(expected.back().ok);
  }
  // Twice: all sixteen at once on a cold cache (they compute the prefix side by side and
  // keep one copy), then again with it cached (all attach it, while batched together).
  for (int round = 0; round < 2; ++round) {
    INFO("round " << round);
    std::vector<t::GenerateResult> got(16);
    std::latch ready(16);
    std::vector<std::thread> clients;
    for (int i = 0; i < 16; ++i) {
      clients.emplace_back([&, i] {
        t::RawSocket s(warm.port(), 60000);
        const bool hs = s.handshake();
        ready.arrive_and_wait();
        if (hs) got[static_cast<std::size_t>(i)] = t::generate_on(s, requests[static_cast<std::size_t>(i)], 1);
      });
    }
    for (auto& c : clients) c.join();
    for (std::size_t i = 0; i < 16; ++i) {
      INFO("session " << i << " " << got[i].error);
      CHECK(got[i].ok);
      CHECK(got[i].tokens == expected[i].tokens);
    }
  }
  const auto st = stats_of(warm.port());
  CHECK(st.at("max_steps_in_batch").to_number<int>() > 1);
  // The second round attached the 48-position prefix sixteen times at least.
  CHECK(st.at("prompt_tokens_cached_total").to_number<int>() >= 16 * 48);
  CHECK(st.at("prefix_cache_blocks_deduplicated").to_number<int>() + st.at("prefix_cache_hits").to_number<int>() > 16);
  CHECK(cold.stop() == 0);
  CHECK(warm.stop() == 0);
}

TEST_CASE("prefix cache: a prefix evicted part of the way for live requests still gives exact tokens", "[net][prefix]") {
  LW_REQUIRE_SHARED();
  // aidreams260K: 32 KiB per 16 positions, so the 1 MiB budget holds 32 blocks.
  t::ServerProcess cold({"-c", aidreams(), "-z", tok512(), "--prefix-cache", "off"});
  t::ServerProcess warm({"-c", aidreams(), "-z", tok512(), "--kv-budget-mb", "1"});
  const auto p = t::gen_request(0, tokens(96, 5), 112, 9);  // 7 full blocks cached when it ends
  const auto expected = generate(cold.port(), p);
  REQUIRE(expected.ok);
  CHECK(generate(warm.port(), p).tokens == expected.tokens);
  CHECK(stat(warm.port(), "prefix_cache_blocks") == 7);
  // Three others of 8 blocks each: 31 of the 32 blocks cached, none evicted yet.
  for (int i = 0; i < 3; ++i) {
    t::RawSocket s(warm.port(), 60000);
    REQUIRE(s.handshake());
    REQUIRE(t::forward_on(s, lw::msg::Forward{0, tokens(128, i)}, 1));
  }
  CHECK(stat(warm.port(), "prefix_cache_evictions") == 0);
  CHECK(stat(warm.port(), "prefix_cache_blocks") == 31);
  // One that needs 4 blocks: the 3 least recently used leaves go, the end of p's chain.
  {
    t::RawSocket s(warm.port(), 60000);
    REQUIRE(s.handshake());
    REQUIRE(t::forward_on(s, lw::msg::Forward{0, tokens(64, 3)}, 1));
  }
  CHECK(stat(warm.port(), "prefix_cache_evictions") == 3);
  CHECK(stat(warm.port(), "kv_bytes_peak") <= (1u << 20));
  // p again: the 4 blocks left are attached, the rest computed, the same tokens.
  const auto before = stat(warm.port(), "prompt_tokens_cached_total");
  CHECK(generate(warm.port(), p).tokens == expected.tokens);
  CHECK(stat(warm.port(), "prompt_tokens_cached_total") - before == 64);
  CHECK(cold.stop() == 0);
  CHECK(warm.stop() == 0);
}

TEST_CASE("prefix cache: a reconnecting client resumes its conversation, and a rewind into it recomputes", "[net][prefix]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess cold({"-c", aidreams(), "-z", tok512(), "--prefix-cache", "off"});
  t::ServerProcess warm({"-c", aidreams(), "-z", tok512()});
  const auto prompt = tokens(30, 8);
  const auto turn2 = tokens(6, 9);  // BOS first: stands for the next turn's opening
  // On one session: a generation, then the next turn where it ended.
  auto two_turns = [&](int port) {
    t::RawSocket s(port, 60000);
    REQUIRE(s.handshake());
    const auto a = t::generate_on(s, t::gen_request(0, prompt, 60, 3), 1);
    REQUIRE(a.ok);
    const auto b = t::generate_on(s, t::gen_request(a.end.position, concat({a.end.last_token}, turn2), 100, 4), 2);
    REQUIRE(b.ok);
    return std::pair{a, b};
  };
  const auto [a, b] = two_turns(cold.port());
  const auto [wa, wb] = two_turns(warm.port());
  CHECK(wa.tokens == a.tokens);
  CHECK(wb.tokens == b.tokens);
  // A new connection sends the whole conversation: its first 64 positions are attached.
  auto conversation = concat(prompt, std::vector<std::uint32_t>(a.tokens.begin(), a.tokens.end()));
  conversation = concat(conversation, turn2);
  REQUIRE(conversation.size() + b.tokens.size() == b.end.position + 1);
  const auto before = stat(warm.port(), "prompt_tokens_cached_total");
  const auto resumed = generate(warm.port(), t::gen_request(0, conversation, 100, 4));
  CHECK(resumed.tokens == b.tokens);
  CHECK(stat(warm.port(), "prompt_tokens_cached_total") - before == 16 * ((conversation.size() - 1) / 16));
  // RESET into a shared block, then other tokens from there: the block is dropped (never
  // written), its first positions recomputed, bit for bit.
  {
    auto changed = conversation;
    changed[40] = 5;
    const auto expected = generate(cold.port(), t::gen_request(0, changed, 100, 4));
    REQUIRE(expected.ok);
    t::RawSocket s(warm.port(), 60000);
    REQUIRE(s.handshake());
    REQUIRE(t::forward_on(s, lw::msg::Forward{0, conversation}, 1));  // attaches the cached blocks
    REQUIRE(s.send(lw::msg::Reset{40}, 2));
    REQUIRE(s.receive());
    const std::vector<std::uint32_t> rest(changed.begin() + 40, changed.end());
    const auto r = t::generate_on(s, t::gen_request(40, rest, 100, 4), 3);
    CHECK(r.tokens == expected.tokens);
  }
  CHECK(cold.stop() == 0);
  CHECK(warm.stop() == 0);
}

TEST_CASE("prefix cache: each API key has its own cache, and a multi-turn HTTP chat prefills only what a turn adds",
          "[net][prefix][http]") {
  LW_REQUIRE_SHARED();
  // aidreams260K's 128 positions are too few for a conversation: random weights, its
  // vocabulary, 1024 positions.
  t::TempDir dir;
  const auto model = t::make_model(dir, "chat.bin", {64, 172, 2, 4, 4, 512, 1024});
  t::ServerProcess cold({"-c", model, "-z", tok512(), "--http-port", "0", "--prefix-cache", "off", "--api-key", "k1"});
  t::ServerProcess warm({"-c", model, "-z", tok512(), "--http-port", "0", "--api-key", "k1", "--api-key", "k2"});
  auto post = [](const t::ServerProcess& s, const json::object& body, const char* key) {
    const auto r = t::http_request(s.http_port(), "POST", "/v1/chat/completions", json::serialize(body),
                                   {{"Authorization", std::string("Bearer ") + key}, {"Content-Type", "application/json"}});
    INFO(r.body);
    REQUIRE(r.status == 200);
    return json::parse(r.body).as_object();
  };
  auto cached = [](const json::object& reply) {
    return reply.at("usage").at("prompt_tokens_details").at("cached_tokens").to_number<int>();
  };
  const char* questions[] = {"Tell me about the dream you had last night, with the sky and the hills and the wind",
                             "What did the trees look like?", "And what happened next in the dream?",
                             "How did it end?"};
  json::array messages{json::object{{"role", "system"}, {"content", "You are a dreamer who remembers every dream."}}};
  int prev_prompt = 0;
  int computed = 0, added = 0;
  for (int turn = 0; turn < 4; ++turn) {
    INFO("turn " << turn);
    messages.push_back(json::object{{"role", "user"}, {"content", questions[turn]}});
    json::object body{{"messages", messages}, {"max_tokens", 24}, {"temperature", 0}};
    const auto w = post(warm, body, "k1");
    const auto c = post(cold, body, "k1");
    // The same answer, whatever the cache held.
    const std::string answer(w.at("choices").at(0).at("message").at("content").as_string());
    CHECK(answer == std::string(c.at("choices").at(0).at("message").at("content").as_string()));
    const int prompt = w.at("usage").at("prompt_tokens").to_number<int>();
    CHECK(prompt == c.at("usage").at("prompt_tokens").to_number<int>());
    CHECK(cached(c) == 0);
    // The history renders to the same tokens each turn: all of the last turn's prompt
    // (whole blocks) is attached.
    CHECK(cached(w) >= prev_prompt / 16 * 16);
    CHECK(cached(w) % 16 == 0);
    computed += prompt - cached(w);
    added += prompt - prev_prompt;
    prev_prompt = prompt;
    messages.push_back(json::object{{"role", "assistant"}, {"content", answer}});
  }
  INFO("prompt tokens computed " << computed << ", added by the turns " << added);
  CHECK(computed <= added + 4 * 15);  // at most a partial block more per turn
  // The other key finds nothing of the first's, even for the very same request.
  json::object again{{"messages", messages}, {"max_tokens", 4}, {"temperature", 0}};
  CHECK(cached(post(warm, again, "k2")) == 0);
  CHECK(cached(post(warm, again, "k2")) > 0);  // its own, the second time
  const auto metrics = t::http_request(warm.http_port(), "GET", "/metrics", "", {{"Authorization", "Bearer k2"}});
  CHECK(metrics.body.find("llamawire_prompt_tokens_cached_total ") != std::string::npos);
  CHECK(metrics.body.find("llamawire_prefix_cache_blocks ") != std::string::npos);
  CHECK(cold.stop() == 0);
  CHECK(warm.stop() == 0);
}
