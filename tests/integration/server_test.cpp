// End-to-end: the real llamawire-server on an ephemeral loopback port, the real client
// binary (or raw sockets for malformed input).
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cstring>
#include <future>
#include <thread>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::vector<std::string> case_args(const boost::json::object& o) {
  return {"-t", num(o.at("temperature").to_number<double>()), "-p", num(o.at("topp").to_number<double>()), "-s",
          std::to_string(o.at("seed").to_number<long long>()), "-n", std::to_string(o.at("steps").to_number<int>()),
          "-i", std::string(o.at("prompt").as_string())};
}

std::string aidreams() { return (t::models_dir() / "aidreams260K.bin").string(); }
std::string tok512() { return (t::models_dir() / "tok512.bin").string(); }

using t::stats_of;

lw::msg::Error expect_error(t::RawSocket& s) {
  for (;;) {
    const auto r = s.receive();
    REQUIRE(r);
    if (const auto* e = std::get_if<lw::msg::Error>(&r->second)) return *e;
  }
}

}  // namespace

TEST_CASE("client reproduces golden/generate_text.jsonl in both sampling modes", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  int n = 0;
  for (const auto& o : t::read_jsonl(t::golden_dir() / "generate_text.jsonl")) {
    const std::string expected(o.at("stdout").as_string());
    for (bool client_sampling : {false, true}) {
      auto args = case_args(o);
      if (client_sampling) args.push_back("--client-sampling");
      const auto r = t::run_client(server, args);
      INFO("prompt \"" << std::string(o.at("prompt").as_string()) << "\" seed " << o.at("seed")
                       << (client_sampling ? " client-sampling" : " server-sampling") << "\nstderr: " << r.err);
      CHECK(r.exit_code == 0);
      CHECK(r.out == expected);
      // stderr: traffic per token, then the rate last
      CHECK(r.err.find("bytes/token") != std::string::npos);
      const auto last = r.err.rfind("achieved tok/s: ");
      REQUIRE(last != std::string::npos);
      CHECK(r.err.find('\n', last) == r.err.size() - 1);
      ++n;
    }
  }
  CHECK(n == 12);
  // A local tokenizer (-z) gives the same text as the downloaded one.
  const auto first = t::read_jsonl(t::golden_dir() / "generate_text.jsonl").front();
  auto args = case_args(first);
  args.insert(args.end(), {"-z", tok512()});
  CHECK(t::run_client(server, args).out == std::string(first.at("stdout").as_string()));
  CHECK(server.stop() == 0);
}

TEST_CASE("16 concurrent clients each get exactly their solo output", "[net]") {
  LW_REQUIRE_SHARED();
  // Three network threads (the default is one): the scheduler's hand-off of each batch's
  // tokens must keep every session's tokens in order across threads too.
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--io-threads", "3"});
  struct Job {
    std::vector<std::string> args;
    std::string solo;
  };
  std::vector<Job> jobs;
  const char* prompts[] = {"I dreamed", "In the dream", "", "Edges"};
  for (int i = 0; i < 16; ++i) {
    std::vector<std::string> args{"-t", i % 4 == 0 ? "0" : "0.9", "-p", "0.9", "-s", std::to_string(100 + i),
                                  "-n", std::to_string(60 + 4 * i), "-i", prompts[i % 4]};
    if (i % 3 == 0) args.push_back("--client-sampling");
    // The reference: the same request alone on an idle server.
    const auto solo = t::run_client(server, args);
    REQUIRE(solo.exit_code == 0);
    jobs.push_back({args, solo.out});
  }
  std::vector<std::future<t::ProcessResult>> futures;
  for (const auto& j : jobs) {
    futures.push_back(std::async(std::launch::async, [&server, &j] { return t::run_client(server, j.args); }));
  }
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto r = futures[i].get();
    INFO("client " << i << " stderr: " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == jobs[i].solo);
  }
  const auto stats = stats_of(server.port());
  // Sessions really were batched together at least once.
  CHECK(stats.at("max_steps_in_batch").to_number<int>() > 1);
  CHECK(server.stop() == 0);
}

TEST_CASE("the server answers malformed frames with errors and keeps serving", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--max-frame-bytes", "4096"});
  // A well-behaved neighbour stays connected through all of it.
  t::RawSocket neighbour(server.port());
  REQUIRE(neighbour.handshake());

  SECTION("garbage bytes: bad_frame, then close") {
    t::RawSocket s(server.port());
    REQUIRE(s.send(std::vector<std::uint8_t>{'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1'}));
    const auto e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::bad_frame);
    CHECK(e.fatal == 1);
    CHECK(s.closed_by_peer());
    CHECK(server.log().find("bad_frame") != std::string::npos);  // and logged it
  }
  SECTION("oversized length: frame_too_large before any allocation, then close") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    std::vector<std::uint8_t> h(lw::kFrameHeaderBytes);
    lw::encode_header(std::span<std::uint8_t, lw::kFrameHeaderBytes>(h.data(), lw::kFrameHeaderBytes),
                      {0x03, 5, 0xFFFFFFF0u});
    REQUIRE(s.send(h));
    const auto r = s.receive();
    REQUIRE(r);
    const auto* e = std::get_if<lw::msg::Error>(&r->second);
    REQUIRE(e != nullptr);
    CHECK(lw::from_wire(e->code) == lw::errc::frame_too_large);
    CHECK(r->first.request_id == 5);  // the header was read, so its request id comes back (1.4)
    CHECK(s.closed_by_peer());
  }
  SECTION("truncated frame then disconnect") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    auto frame = lw::encode_frame(lw::msg::Forward{0, {1, 2, 3, 4, 5}}, 3);
    frame.resize(frame.size() - 7);
    REQUIRE(s.send(frame));
    s.close();
  }
  SECTION("unknown type: error, session goes on") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    std::vector<std::uint8_t> f(lw::kFrameHeaderBytes + 2, 0xAB);
    lw::encode_header(std::span<std::uint8_t, lw::kFrameHeaderBytes>(f.data(), lw::kFrameHeaderBytes), {0x42, 7, 2});
    REQUIRE(s.send(f));
    const auto e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::unknown_message);
    CHECK(e.fatal == 0);
    REQUIRE(s.send(lw::msg::Ping{77}, 8));
    const auto r = s.receive();
    REQUIRE(r);
    CHECK(std::get<lw::msg::Pong>(r->second).nonce == 77);
  }
  SECTION("token id out of range, position past the session, context overflow") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    REQUIRE(s.send(lw::msg::Forward{0, {1, 512}}, 4));
    auto e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::token_out_of_range);
    REQUIRE(s.send(lw::msg::Forward{5, {1}}, 5));
    e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::position_out_of_range);
    REQUIRE(s.send(lw::msg::Forward{0, std::vector<std::uint32_t>(129, 5)}, 6));
    e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::context_full);
    REQUIRE(s.send(lw::msg::Reset{3}, 7));
    e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::position_out_of_range);
    // still usable
    REQUIRE(s.send(lw::msg::Forward{0, {1, 303}}, 8));
    const auto r = s.receive();
    REQUIRE(r);
    CHECK(std::get<lw::msg::Logits>(r->second).values.size() == 512);
    CHECK(std::get<lw::msg::Logits>(r->second).pos == 1);
  }
  SECTION("bad payload for a known type: bad_message, not fatal") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    std::vector<std::uint8_t> f(lw::kFrameHeaderBytes + 3, 0);
    lw::encode_header(std::span<std::uint8_t, lw::kFrameHeaderBytes>(f.data(), lw::kFrameHeaderBytes), {0x07, 2, 3});
    REQUIRE(s.send(f));
    CHECK(lw::from_wire(expect_error(s).code) == lw::errc::bad_message);
    REQUIRE(s.send(lw::msg::Ping{1}, 3));
    CHECK(s.receive().has_value());
  }
  SECTION("request before the handshake: not_ready, then close") {
    t::RawSocket s(server.port());
    REQUIRE(s.send(lw::msg::Forward{0, {1}}, 1));
    const auto e = expect_error(s);
    CHECK(lw::from_wire(e.code) == lw::errc::not_ready);
    CHECK(s.closed_by_peer());
  }
  SECTION("wrong protocol major in the header or in HELLO: version_mismatch") {
    t::RawSocket s(server.port());
    auto f = lw::encode_frame(lw::msg::Hello{}, 1);
    f[2] = 9;
    REQUIRE(s.send(f));
    CHECK(lw::from_wire(expect_error(s).code) == lw::errc::version_mismatch);
    t::RawSocket s2(server.port());
    REQUIRE(s2.send(lw::msg::Hello{2, 0, "", "future"}, 1));
    CHECK(lw::from_wire(expect_error(s2).code) == lw::errc::version_mismatch);
    CHECK(s2.closed_by_peer());
  }
  SECTION("a second request while generating: busy; ping is served meanwhile") {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    lw::msg::Generate g;
    g.limit_pos = 128;
    g.temperature = 0.0f;
    g.seed = 1;
    g.tokens = {1, 303};
    REQUIRE(s.send(g, 10));
    REQUIRE(s.send(lw::msg::Forward{0, {1}}, 11));
    REQUIRE(s.send(lw::msg::Ping{5}, 12));
    bool busy = false, pong = false, end = false;
    while (!end) {
      const auto r = s.receive();
      REQUIRE(r);
      if (const auto* e = std::get_if<lw::msg::Error>(&r->second)) {
        busy = lw::from_wire(e->code) == lw::errc::busy && r->first.request_id == 11;
      }
      if (std::holds_alternative<lw::msg::Pong>(r->second)) pong = true;
      if (const auto* en = std::get_if<lw::msg::End>(&r->second)) {
        end = true;
        CHECK(en->reason == lw::StopReason::steps);
        CHECK(en->position == 128);
        CHECK(en->generated_tokens == 127);
      }
    }
    CHECK(busy);
    CHECK(pong);
  }
  // After all of it: the neighbour is fine and a real client still gets the golden text.
  REQUIRE(neighbour.send(lw::msg::Ping{42}, 2));
  const auto pong = neighbour.receive();
  REQUIRE(pong);
  CHECK(std::get<lw::msg::Pong>(pong->second).nonce == 42);
  const auto o = t::read_jsonl(t::golden_dir() / "generate_text.jsonl").front();
  CHECK(t::run_client(server, case_args(o)).out == std::string(o.at("stdout").as_string()));
  CHECK(server.alive());
  CHECK(server.stop() == 0);
}

TEST_CASE("cancel and disconnect mid-generation free the session", "[net]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  // A model big enough that a generation is still running when we act.
  const auto model = t::make_model(dir, "m.bin", {256, 512, 4, 8, 4, 512, 1024});
  t::ServerProcess server({"-c", model, "-z", tok512()});
  {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    lw::msg::Generate g;
    g.limit_pos = 1024;
    g.seed = 3;
    g.tokens = {1, 300};  // a random model after BOS would predict BOS and stop at once
    REQUIRE(s.send(g, 1));
    REQUIRE(s.receive().has_value());  // first token
    REQUIRE(s.send(lw::msg::Cancel{}, 2));
    for (;;) {
      const auto r = s.receive();
      INFO(server.log());
      REQUIRE(r);
      if (const auto* e = std::get_if<lw::msg::End>(&r->second)) {
        CHECK(e->reason == lw::StopReason::cancelled);
        CHECK(e->position < 1000);
        break;
      }
    }
  }
  {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    lw::msg::Generate g;
    g.limit_pos = 1024;
    g.seed = 3;
    g.tokens = {1, 300};  // a random model after BOS would predict BOS and stop at once
    REQUIRE(s.send(g, 1));
    REQUIRE(s.receive().has_value());
    s.close();  // gone mid-generation
  }
  // The server notices and frees the session and its KV blocks.
  boost::json::object st;
  for (int i = 0; i < 200; ++i) {
    st = stats_of(server.port());
    if (st.at("sessions_active").to_number<int>() == 1 && st.at("generating").to_number<int>() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  CHECK(st.at("sessions_active").to_number<int>() == 1);  // the stats connection itself
  CHECK(st.at("generating").to_number<int>() == 0);
  // What KV memory is still used is the prefix cache's, held by no session.
  CHECK(st.at("kv_bytes_used").to_number<std::uint64_t>() ==
        st.at("prefix_cache_unreferenced_bytes").to_number<std::uint64_t>());
  CHECK(st.at("prefix_cache_bytes") == st.at("prefix_cache_unreferenced_bytes"));
  CHECK(st.at("generated_tokens_total").to_number<std::uint64_t>() < 2000);
  CHECK(server.stop() == 0);
}

TEST_CASE("client errors: unreachable, refused, context full, bad options", "[net]") {
  LW_REQUIRE_SHARED();
  // Unreachable: a port nobody listens on.
  int free_port = 0;
  {
    t::ServerProcess probe({"-c", aidreams(), "-z", tok512()});
    free_port = probe.port();
  }
  auto r = t::run_process({(t::bin_dir() / "llamawire").string(), "-o", std::to_string(free_port), "-i", "x"});
  CHECK(r.exit_code == 3);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("not reachable") != std::string::npos);

  {
    t::ServerProcess one({"-c", aidreams(), "-z", tok512(), "--max-sessions", "1"});
    t::RawSocket holder(one.port());
    REQUIRE(holder.handshake());
    r = t::run_client(one, {"-i", "x"});
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("busy") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--ctx", "40"});
  // Context full: chat turns until the 40-position context cannot take another.
  r = t::run_client(server, {"-m", "chat", "-y", "", "-t", "0", "-n", "0"}, "hi\nhello there\nand more\nmore\n");
  CHECK(r.exit_code == 5);
  CHECK(r.err.find("context full") != std::string::npos);
  CHECK(r.out.find("Assistant: ") != std::string::npos);
  // Bad options: usage on stderr, exit 2.
  r = t::run_client(server, {"--temperature", "hot"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("Usage") != std::string::npos);
  r = t::run_client(server, {"-m", "poem"});
  CHECK(r.exit_code == 2);
  CHECK(server.stop() == 0);
}

TEST_CASE("chat keeps the conversation in the session and matches in both modes", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  const std::string input = "I dreamed of\nwhat next\n";
  const auto a = t::run_client(server, {"-m", "chat", "-y", "You dream.", "-t", "0.7", "-s", "11", "-n", "0"}, input);
  const auto b = t::run_client(
      server, {"-m", "chat", "-y", "You dream.", "-t", "0.7", "-s", "11", "-n", "0", "--client-sampling"}, input);
  INFO(a.err << b.err);
  CHECK(a.out == b.out);
  // Two assistant turns, ended by EOF (exit 0) or by the 128-position context (exit 5).
  CHECK((a.exit_code == 0 || a.exit_code == 5));
  CHECK(a.exit_code == b.exit_code);
  CHECK(a.out.find("Assistant: ") != std::string::npos);
  // The second turn only sends its own tokens: two GENERATE/FORWARD streams, not a replay.
  CHECK(server.stop() == 0);
}

TEST_CASE("SIGTERM the moment the port file appears still drains and exits 0", "[net]") {
  // The signal handler is in place before the port is announced (a regression: a SIGTERM
  // in between used to kill the server with the default action, exit 143).
  LW_REQUIRE_SHARED();
  for (int i = 0; i < 10; ++i) {
    t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
    CHECK(server.stop() == 0);
  }
}

TEST_CASE("SIGTERM with idle clients exits 0 and tells them", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  t::RawSocket s(server.port());
  REQUIRE(s.handshake());
  CHECK(server.stop() == 0);
  const auto e = expect_error(s);
  CHECK(lw::from_wire(e.code) == lw::errc::shutting_down);
}

TEST_CASE("16 sessions on the stories42M shape cost their KV caches and a small constant", "[net][slow]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  const auto model = t::make_model(dir, "s42.bin", {512, 1376, 8, 8, 8, 32000, 1024});
  const auto weights = std::filesystem::file_size(model);
  const std::uint64_t ctx = 128;
  const std::uint64_t kv_per_session = 2 * 8 * ctx * 512 * 4;  // K and V, layers, positions, kv_dim, float
  t::ServerProcess server({"-c", model, "-z", (t::models_dir() / "tokenizer.bin").string(), "--ctx",
                           std::to_string(ctx)});
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
  [[maybe_unused]] const std::uint64_t constant = 64ull << 20;
  INFO("peak RSS " << peak / 1048576.0 << " MiB; weights " << weights / 1048576.0 << " MiB; 16 KV caches "
                   << 16 * kv_per_session / 1048576.0 << " MiB");
  CHECK(peak > weights);  // the weights are really resident (read every step)
#ifndef LW_SANITIZED  // shadow memory and quarantine make RSS meaningless under ASan
  CHECK(peak <= weights + 16 * kv_per_session + constant);
#endif
  CHECK(server.stop() == 0);
}

TEST_CASE("the KV budget is never exceeded: clients past it wait or get busy", "[net]") {
  LW_REQUIRE_SHARED();
  // aidreams260K: one 16-position block is 2 x 4 layers x 16 x 64 floats = 32 KiB, so 1 MiB
  // holds 32 blocks: four full 128-position sessions. With the prefix cache on, its blocks
  // count in the budget too (and give way to requests).
  const bool prefix_cache = GENERATE(false, true);
  INFO("--prefix-cache " << (prefix_cache ? "on" : "off"));
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--kv-budget-mb", "1", "--queue-timeout", "0.3",
                           "--prefix-cache", prefix_cache ? "on" : "off"});
  std::vector<std::vector<std::string>> args;
  std::vector<std::string> solo;
  for (int i = 0; i < 8; ++i) {
    args.push_back({"-t", "0.9", "-s", std::to_string(7 + i), "-n", "0", "-i", "I dreamed"});
    const auto r = t::run_client(server, args.back());
    REQUIRE(r.exit_code == 0);
    solo.push_back(r.out);
  }
  std::vector<std::future<t::ProcessResult>> futures;
  for (const auto& a : args) {
    futures.push_back(std::async(std::launch::async, [&server, &a] { return t::run_client(server, a); }));
  }
  int ok = 0, busy = 0;
  for (std::size_t i = 0; i < futures.size(); ++i) {
    const auto r = futures[i].get();
    INFO(r.err);
    if (r.exit_code == 0) {
      ++ok;
      CHECK(r.out == solo[i]);
    } else {
      ++busy;
      CHECK(r.exit_code == 4);
      CHECK(r.err.find("KV cache memory budget exhausted") != std::string::npos);
    }
  }
  CHECK(ok >= 1);
  CHECK(ok + busy == 8);
  const auto st = stats_of(server.port());
  CHECK(st.at("kv_bytes_peak").to_number<std::uint64_t>() <= (1u << 20));
  CHECK(st.at("kv_bytes_budget").to_number<std::uint64_t>() == (1u << 20));
  // The warm reserve (--kv-warm-mb, 64 by default) is capped at the budget, and blocks in
  // use plus warm ones never pass it: a session takes warm blocks before new ones. (With
  // the prefix cache, its blocks may hold the whole budget, leaving none warm.)
  if (!prefix_cache) CHECK(st.at("kv_bytes_warm").to_number<std::uint64_t>() > 0);
  CHECK(st.at("kv_bytes_used").to_number<std::uint64_t>() + st.at("kv_bytes_warm").to_number<std::uint64_t>() <=
        (1u << 20));
  CHECK(server.alive());
  CHECK(server.stop() == 0);
}

TEST_CASE("llamawire bench drives concurrent sessions and reports the figures", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  auto r = t::run_client(server, {"bench", "--clients", "4", "--requests", "10", "-n", "12", "--prompt-tokens", "8",
                                  "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = boost::json::parse(r.out).as_object();
  for (const char* key : {"clients", "requests", "completed", "errors", "generated_tokens", "wall_s",
                          "aggregate_tok_s", "decode_tok_s", "ttft_ms", "itl_ms", "e2e_ms"}) {
    CHECK(j.contains(key));
  }
  CHECK(j.at("clients").to_number<int>() == 4);
  CHECK(j.at("completed").to_number<int>() == 10);
  CHECK(j.at("errors").to_number<int>() == 0);
  CHECK(j.at("generated_tokens").to_number<int>() > 0);
  CHECK(j.at("decode_tok_s").to_number<double>() > 0);
  CHECK(j.at("ttft_ms").as_object().contains("p90"));
  CHECK(j.at("e2e_ms").at("p99").to_number<double>() >= j.at("e2e_ms").at("p50").to_number<double>());
  // Text prompt, client-side sampling, table output, and a duration bound.
  r = t::run_client(server, {"bench", "--clients", "2", "--requests", "1000", "-n", "20", "--prompt", "I dreamed",
                             "--client-sampling", "--duration", "1"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("aggregate tokens/s") != std::string::npos);
  CHECK(r.out.find("decode tokens/s") != std::string::npos);
  CHECK(r.out.find("time to first token ms") != std::string::npos);
  // Bad options: usage, exit 2.
  CHECK(t::run_client(server, {"bench", "--clients", "0"}).exit_code == 2);
  CHECK(server.stop() == 0);
}

TEST_CASE("during a generation STATS, GET_VOCAB and PING are answered and RESET gets busy, by request id", "[net]") {
  // PROTOCOL.md 1.4, "Connection states": replies are matched by request_id; read-only
  // requests are answered between the TOKEN frames, RESET is refused while a request runs.
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  t::RawSocket s(server.port());
  REQUIRE(s.handshake());
  lw::msg::Generate g;
  g.limit_pos = 400;
  g.temperature = 0.0f;
  g.seed = 7;
  g.tokens = {1};
  // All in one write: the server reads the rest while the generation runs.
  std::vector<std::uint8_t> burst = lw::encode_frame(g, 10);
  for (const auto& f : {lw::encode_frame(lw::msg::Stats{}, 11), lw::encode_frame(lw::msg::GetVocab{}, 12),
                        lw::encode_frame(lw::msg::Ping{42}, 13), lw::encode_frame(lw::msg::Reset{0}, 14)}) {
    burst.insert(burst.end(), f.begin(), f.end());
  }
  REQUIRE(s.send(burst));
  bool ended = false, stats = false, vocab = false, pong = false, reset_answered = false;
  int tokens = 0;
  while (!(ended && stats && vocab && pong && reset_answered)) {
    const auto r = s.receive();
    REQUIRE(r);
    const std::uint32_t rid = r->first.request_id;
    if (std::holds_alternative<lw::msg::Token>(r->second)) {
      CHECK(rid == 10);
      ++tokens;
    } else if (const auto* e = std::get_if<lw::msg::End>(&r->second)) {
      CHECK(rid == 10);
      CHECK(e->generated_tokens == static_cast<std::uint32_t>(tokens));
      ended = true;
    } else if (std::holds_alternative<lw::msg::StatsReply>(r->second)) {
      CHECK(rid == 11);
      stats = true;
    } else if (std::holds_alternative<lw::msg::Vocab>(r->second)) {
      CHECK(rid == 12);
      vocab = true;
    } else if (const auto* p = std::get_if<lw::msg::Pong>(&r->second)) {
      CHECK(rid == 13);
      CHECK(p->nonce == 42);
      pong = true;
    } else if (const auto* err = std::get_if<lw::msg::Error>(&r->second)) {
      // busy while the generation runs; only a generation already over would take it
      CHECK(rid == 14);
      CHECK(lw::from_wire(err->code) == lw::errc::busy);
      CHECK(err->fatal == 0);
      CHECK_FALSE(ended);
      reset_answered = true;
    } else if (std::holds_alternative<lw::msg::Ok>(r->second)) {
      CHECK(rid == 14);
      CHECK(ended);  // the generation had finished before the RESET was read
      reset_answered = true;
    } else {
      FAIL("unexpected reply type " << lw::message_name(lw::message_type(r->second)));
    }
  }
  CHECK(tokens > 0);
  CHECK(server.stop() == 0);
}

TEST_CASE("a HELLO with fields from a later minor version is accepted (1.4)", "[net]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  t::RawSocket s(server.port());
  auto hello = lw::encode_frame(lw::msg::Hello{lw::kProtocolMajor, 9, "", "future-client"}, 3);
  const std::vector<std::uint8_t> extra{0xEF, 0xBE, 0xAD, 0xDE};
  hello.insert(hello.end(), extra.begin(), extra.end());
  const std::uint32_t length = static_cast<std::uint32_t>(hello.size() - lw::kFrameHeaderBytes);
  std::memcpy(hello.data() + 8, &length, 4);  // the header's length field (little-endian)
  REQUIRE(s.send(hello));
  const auto r = s.receive();
  REQUIRE(r);
  const auto* ok = std::get_if<lw::msg::HelloOk>(&r->second);
  REQUIRE(ok != nullptr);
  CHECK(r->first.request_id == 3);
  CHECK(ok->minor == lw::kProtocolMinor);
  // and the session works
  REQUIRE(s.send(lw::msg::Ping{5}, 4));
  const auto p = s.receive();
  REQUIRE(p);
  CHECK(std::holds_alternative<lw::msg::Pong>(p->second));
  CHECK(server.stop() == 0);
}
