// End-to-end tests of the OpenAI-compatible HTTP API, auth on both protocols and /metrics.
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <boost/asio.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace t = llamawire::test;
namespace json = boost::json;

namespace {

std::string aidreams() { return (t::models_dir() / "aidreams260K.bin").string(); }
std::string tok512() { return (t::models_dir() / "tok512.bin").string(); }


// Concatenates the text of an SSE stream; checks it ends with [DONE].
std::string sse_text(const std::string& body, bool chat, std::string* finish = nullptr) {
  std::string text;
  std::size_t pos = 0;
  bool done = false;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const auto end = body.find("\n\n", pos);
    const auto payload = body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") {
      done = true;
      continue;
    }
    const auto o = json::parse(payload).as_object();
    const auto& c = o.at("choices").as_array()[0].as_object();
    if (chat) {
      const auto& d = c.at("delta").as_object();
      if (d.contains("content")) text += std::string(d.at("content").as_string());
    } else {
      text += std::string(c.at("text").as_string());
    }
    if (finish && !c.at("finish_reason").is_null()) *finish = std::string(c.at("finish_reason").as_string());
  }
  CHECK(done);
  return text;
}

}  // namespace

TEST_CASE("HTTP completions equal the CLI's text, plain and streamed", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const int hp = server.http_port();
  REQUIRE(hp > 0);
  auto r = t::http_request(hp, "GET", "/health");
  CHECK(r.status == 200);
  r = t::http_request(hp, "GET", "/v1/models");
  REQUIRE(r.status == 200);
  CHECK(json::parse(r.body).at("data").as_array()[0].at("id").as_string() == "aidreams260K.bin");

  // The golden greedy case: 100 positions, a 7-token prompt -> 94 new tokens.
  for (const auto& o : t::read_jsonl(t::golden_dir() / "generate_text.jsonl")) {
    if (o.at("temperature").to_number<double>() != 0.0) continue;
    const std::string prompt(o.at("prompt").as_string());
    std::string expected(o.at("stdout").as_string());
    expected = expected.substr(prompt.size(), expected.size() - prompt.size() - 1);  // after the prompt, no newline
    const int steps = o.at("steps").to_number<int>();
    const auto ids = t::run_process({(t::bin_dir() / "llamawire-tokenize").string(), "-z", tok512(), prompt});
    const int n_prompt = static_cast<int>(std::count(ids.out.begin(), ids.out.end(), ' ')) + 1;
    const int max_tokens = steps - n_prompt + 1;
    json::object req{{"model", "aidreams260K.bin"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    r = t::http_request(hp, "POST", "/v1/completions", json::serialize(req));
    REQUIRE(r.status == 200);
    const auto body = json::parse(r.body).as_object();
    CHECK(body.at("object").as_string() == "text_completion");
    CHECK(std::string(body.at("choices").as_array()[0].at("text").as_string()) == expected);
    CHECK(body.at("usage").at("prompt_tokens").to_number<int>() == n_prompt);
    CHECK(body.at("usage").at("completion_tokens").to_number<int>() <= max_tokens);
    CHECK(body.at("usage").at("total_tokens").to_number<int>() ==
          n_prompt + body.at("usage").at("completion_tokens").to_number<int>());
    req["stream"] = true;
    r = t::http_request(hp, "POST", "/v1/completions", json::serialize(req));
    REQUIRE(r.status == 200);
    CHECK(r.headers.at("Content-Type") == "text/event-stream");
    std::string finish;
    CHECK(sse_text(r.body, false, &finish) == expected);
    CHECK(!finish.empty());
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("HTTP chat completions, stop strings, seeds", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const int hp = server.http_port();
  json::object req{{"messages", json::array{json::object{{"role", "system"}, {"content", "You dream."}},
                                           json::object{{"role", "user"}, {"content", "I dreamed of"}}}},
                   {"max_tokens", 30},
                   {"temperature", 0.8},
                   {"seed", 42}};
  auto r = t::http_request(hp, "POST", "/v1/chat/completions", json::serialize(req));
  REQUIRE(r.status == 200);
  const auto body = json::parse(r.body).as_object();
  CHECK(body.at("object").as_string() == "chat.completion");
  const auto& msg = body.at("choices").as_array()[0].at("message").as_object();
  CHECK(msg.at("role").as_string() == "assistant");
  const std::string text(msg.at("content").as_string());
  // Same seed, same text; streamed, the same text in pieces.
  r = t::http_request(hp, "POST", "/v1/chat/completions", json::serialize(req));
  CHECK(std::string(json::parse(r.body).at("choices").as_array()[0].at("message").at("content").as_string()) == text);
  req["stream"] = true;
  r = t::http_request(hp, "POST", "/v1/chat/completions", json::serialize(req));
  REQUIRE(r.status == 200);
  CHECK(r.body.find("\"role\":\"assistant\"") != std::string::npos);
  CHECK(sse_text(r.body, true) == text);

  // A stop string cuts the text before it; finish_reason "stop".
  json::object comp{{"prompt", "I dreamed"}, {"max_tokens", 60}, {"temperature", 0}};
  r = t::http_request(hp, "POST", "/v1/completions", json::serialize(comp));
  const std::string full(json::parse(r.body).at("choices").as_array()[0].at("text").as_string());
  REQUIRE(full.find(" the") != std::string::npos);
  comp["stop"] = json::array{" the", "zzz"};
  r = t::http_request(hp, "POST", "/v1/completions", json::serialize(comp));
  const auto parsed = json::parse(r.body);
  const auto& c = parsed.at("choices").as_array()[0].as_object();
  CHECK(std::string(c.at("text").as_string()) == full.substr(0, full.find(" the")));
  CHECK(c.at("finish_reason").as_string() == "stop");
  comp["stream"] = true;
  r = t::http_request(hp, "POST", "/v1/completions", json::serialize(comp));
  std::string finish;
  CHECK(sse_text(r.body, false, &finish) == full.substr(0, full.find(" the")));
  CHECK(finish == "stop");
  CHECK(server.stop() == 0);
}

TEST_CASE("HTTP errors are 4xx with an OpenAI error object", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0", "--http-max-body", "2000"});
  const int hp = server.http_port();
  struct Case {
    const char* method;
    const char* target;
    std::string body;
    int status;
  };
  const Case cases[] = {
      {"POST", "/v1/completions", "{not json", 400},
      {"POST", "/v1/completions", "[1,2]", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","max_tokens":"ten"})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","max_tokens":0})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","temperature":"hot"})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","top_p":2})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","stream":"yes"})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","stop":[1]})", 400},
      {"POST", "/v1/completions", R"({"prompt":"x","n":0})", 400},
      {"POST", "/v1/completions", R"({"prompt":{"a":1}})", 400},
      {"POST", "/v1/chat/completions", R"({"messages":[]})", 400},
      {"POST", "/v1/chat/completions", R"({"messages":[{"role":"wizard","content":"x"}]})", 400},
      {"POST", "/v1/chat/completions", R"({"messages":[{"role":"user","content":5}]})", 400},
      {"POST", "/v1/completions", std::string(R"({"prompt":")") + std::string(3000, 'a') + "\"}", 413},
      {"GET", "/v1/nothing", "", 404},
      {"GET", "/v1/completions", "", 405},
  };
  for (const auto& c : cases) {
    INFO(c.method << " " << c.target << " " << c.body.substr(0, 80));
    const auto r = t::http_request(hp, c.method, c.target, c.body);
    CHECK(r.status == c.status);
    const auto e = json::parse(r.body).as_object();
    CHECK(e.at("error").as_object().contains("message"));
    CHECK(e.at("error").as_object().contains("type"));
  }
  // A prompt longer than the context: 400 context_length_exceeded.
  std::string words;
  for (int i = 0; i < 60; ++i) words += "I dreamed ";
  const auto r = t::http_request(hp, "POST", "/v1/completions", json::serialize(json::object{{"prompt", words}}));
  CHECK(r.status == 400);
  CHECK(json::parse(r.body).at("error").at("code").as_string() == "context_length_exceeded");
  CHECK(t::http_request(hp, "GET", "/health").status == 200);  // still serving
  CHECK(server.stop() == 0);
}

TEST_CASE("API key: 401 on HTTP without it, refusal on the binary protocol", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0", "--api-key", "s3cret-key"});
  const int hp = server.http_port();
  CHECK(t::http_request(hp, "GET", "/health").status == 200);  // exempt
  CHECK(t::http_request(hp, "GET", "/v1/models").status == 401);
  CHECK(t::http_request(hp, "GET", "/metrics").status == 401);
  CHECK(t::http_request(hp, "GET", "/v1/models", "", {{"Authorization", "Bearer wrong"}}).status == 401);
  CHECK(t::http_request(hp, "POST", "/v1/completions", R"({"prompt":"x"})", {{"Authorization", "Bearer wrong"}}).status ==
        401);
  CHECK(t::http_request(hp, "GET", "/v1/models", "", {{"Authorization", "Bearer s3cret-key"}}).status == 200);
  CHECK(t::http_request(hp, "POST", "/v1/completions", R"({"prompt":"I","max_tokens":3})",
                        {{"Authorization", "Bearer s3cret-key"}})
            .status == 200);
  // Binary protocol: no key or a wrong key is refused (exit 4); the right one works.
  auto r = t::run_client(server, {"-n", "10", "-i", "I"});
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("API key") != std::string::npos);
  r = t::run_client(server, {"-n", "10", "-i", "I", "--api-key", "nope"});
  CHECK(r.exit_code == 4);
  r = t::run_client(server, {"-n", "10", "-i", "I", "--api-key", "s3cret-key"});
  CHECK(r.exit_code == 0);
  // The key never reaches the log.
  CHECK(server.log().find("s3cret-key") == std::string::npos);
  CHECK(server.log().find("nope") == std::string::npos);
  CHECK(server.stop() == 0);
}

TEST_CASE("/metrics is Prometheus text with the promised series", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0", "--kv-budget-mb", "64"});
  const int hp = server.http_port();
  t::http_request(hp, "POST", "/v1/completions", R"({"prompt":"I dreamed","max_tokens":10})");
  REQUIRE(t::run_client(server, {"-n", "30", "-i", "I dreamed"}).exit_code == 0);
  const auto r = t::http_request(hp, "GET", "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.headers.at("Content-Type").rfind("text/plain", 0) == 0);
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$)");
  const std::regex help(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  std::set<std::string> typed;
  std::istringstream in(r.body);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    INFO(line);
    if (line.rfind("#", 0) == 0) {
      CHECK(std::regex_match(line, help));
      if (line.rfind("# TYPE ", 0) == 0) typed.insert(line.substr(7, line.find(' ', 7) - 7));
      continue;
    }
    CHECK(std::regex_match(line, sample));
    ++samples;
  }
  CHECK(samples > 20);
  for (const char* m : {"llamawire_requests_total", "llamawire_tokens_total", "llamawire_active_sessions",
                        "llamawire_batch_size", "llamawire_time_to_first_token_seconds",
                        "llamawire_inter_token_latency_seconds", "llamawire_kv_bytes_used", "llamawire_kv_bytes_budget",
                        "llamawire_kv_bytes_warm"}) {
    CHECK(typed.count(m) == 1);
  }
  CHECK(r.body.find("llamawire_requests_total{protocol=\"http\"} 1") != std::string::npos);
  CHECK(r.body.find("llamawire_requests_total{protocol=\"binary\"} 1") != std::string::npos);
  CHECK(r.body.find("llamawire_kv_bytes_budget 67108864") != std::string::npos);
  CHECK(r.body.find("llamawire_time_to_first_token_seconds_count 2") != std::string::npos);
  CHECK(server.stop() == 0);
}

TEST_CASE("two replicas behind HAProxy with docker/haproxy.cfg: affinity, bounded load, conversations stay put",
          "[net][haproxy]") {
  LW_REQUIRE_SHARED();
  const std::string haproxy = std::filesystem::exists("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : "";
  REQUIRE_FALSE(haproxy.empty());  // scripts/deps.sh installs Debian's haproxy
  t::ServerProcess r1({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  t::ServerProcess r2({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  // Free ports for HAProxy's two frontends: bind, read, release.
  auto free_port = [] {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return static_cast<int>(a.local_endpoint().port());
  };
  const int lb_binary = free_port(), lb_http = free_port();
  t::TempDir dir;
  const auto cfg = (std::filesystem::path(LW_SOURCE_DIR) / "docker" / "haproxy.cfg").string();
  const std::string env_cmd =
      "LW_BIND=127.0.0.1 LW_BINARY_PORT=" + std::to_string(lb_binary) + " LW_HTTP_PORT=" + std::to_string(lb_http) +
      " LW_REPLICA1_BINARY=127.0.0.1:" + r1.port_str() + " LW_REPLICA2_BINARY=127.0.0.1:" + r2.port_str() +
      " LW_REPLICA1_HTTP=127.0.0.1:" + std::to_string(r1.http_port()) +
      " LW_REPLICA2_HTTP=127.0.0.1:" + std::to_string(r2.http_port());
  // Config check first, then run it in the foreground under the test's control.
  const auto check = t::run_process({"/bin/sh", "-c", env_cmd + " " + haproxy + " -c -f " + cfg});
  INFO(check.out << check.err);
  REQUIRE(check.exit_code == 0);
  const auto pid_file = (dir / "haproxy.pid").string();
  REQUIRE(std::system((env_cmd + " " + haproxy + " -D -p " + pid_file + " -f " + cfg).c_str()) == 0);
  struct Stop {
    std::string pid_file;
    ~Stop() { std::system(("kill $(cat " + pid_file + ") 2>/dev/null").c_str()); }
  } stop{pid_file};
  // Wait until HAProxy answers on the binary frontend.
  for (int i = 0; i < 100; ++i) {
    try {
      boost::asio::io_context io;
      boost::asio::ip::tcp::socket s(io);
      s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(lb_binary)});
      break;
    } catch (...) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  const auto golden = t::read_jsonl(t::golden_dir() / "generate_text.jsonl");
  for (int i = 0; i < 8; ++i) {
    const auto& o = golden[static_cast<std::size_t>(i) % golden.size()];
    std::ostringstream temp, topp;
    temp << o.at("temperature").to_number<double>();
    topp << o.at("topp").to_number<double>();
    const auto r = t::run_process({(t::bin_dir() / "llamawire").string(), "-o", std::to_string(lb_binary), "-t",
                                   temp.str(), "-p", topp.str(), "-s", std::to_string(o.at("seed").to_number<long long>()),
                                   "-n", std::to_string(o.at("steps").to_number<int>()), "-i",
                                   std::string(o.at("prompt").as_string())});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == std::string(o.at("stdout").as_string()));
  }
  // HTTP through the balancer too (health checks must have marked both up).
  for (int i = 0; i < 100; ++i) {
    if (t::http_request(lb_http, "GET", "/health").status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int i = 0; i < 4; ++i) {
    const auto h = t::http_request(lb_http, "POST", "/v1/completions", R"({"prompt":"I dreamed","max_tokens":5,"temperature":0})");
    CHECK(h.status == 200);
  }
  // The binary sessions, one after the other from one address, all went to one replica
  // (a reconnecting client finds its prefix cache again).
  auto sessions = [](const t::ServerProcess& s) {
    const auto log = s.log();
    int n = 0;
    for (std::size_t p = 0; (p = log.find("hello client=\"llamawire-cli\"", p)) != std::string::npos; ++p) ++n;
    return n;
  };
  CHECK(sessions(r1) + sessions(r2) == 8);
  CHECK((sessions(r1) == 8 || sessions(r2) == 8));
  // Bounded load: many connections at once from that one address still spread.
  {
    std::vector<std::unique_ptr<t::RawSocket>> open;
    for (int i = 0; i < 8; ++i) {
      open.push_back(std::make_unique<t::RawSocket>(lb_binary));
      REQUIRE(open.back()->handshake());
    }
    const int a = t::stats_of(r1.port()).at("sessions_active").to_number<int>() - 1;  // less the probe's own
    const int b = t::stats_of(r2.port()).at("sessions_active").to_number<int>() - 1;
    INFO("replica 1 holds " << a << " sessions, replica 2 " << b);
    CHECK(a + b == 8);
    CHECK(a >= 2);
    CHECK(b >= 2);
  }
  // HTTP: each conversation (X-Session-Id) stays on one replica, turn after turn, and its
  // history comes from that replica's prefix cache.
  auto http_requests = [](const t::ServerProcess& s) {
    const auto m = t::http_request(s.http_port(), "GET", "/metrics").body;
    return t::prometheus_value(m, "llamawire_requests_total{protocol=\"http\"}");
  };
  auto cached_total = [](const t::ServerProcess& s) {
    return t::prometheus_value(t::http_request(s.http_port(), "GET", "/metrics").body, "llamawire_prompt_tokens_cached_total");
  };
  for (const std::string conversation : {"conversation-a", "conversation-b", "conversation-c"}) {
    INFO(conversation);
    std::string history = "I dreamed of a field where the sky was blue and the trees were green.";
    int home = 0;  // the replica of its first turn
    double cached_before = 0;
    for (int turn = 0; turn < 3; ++turn) {
      const double before1 = http_requests(r1), before2 = http_requests(r2);
      const double c1 = cached_total(r1), c2 = cached_total(r2);
      json::object body{{"prompt", history}, {"max_tokens", 8}, {"temperature", 0}};
      const auto h = t::http_request(lb_http, "POST", "/v1/completions", json::serialize(body),
                                     {{"X-Session-Id", conversation}, {"Content-Type", "application/json"}});
      REQUIRE(h.status == 200);
      const int served = http_requests(r1) > before1 ? 1 : http_requests(r2) > before2 ? 2 : 0;
      REQUIRE(served != 0);
      if (turn == 0) home = served;
      CHECK(served == home);
      const double cached = served == 1 ? cached_total(r1) - c1 : cached_total(r2) - c2;
      const auto reply = json::parse(h.body).as_object();
      CHECK(reply.at("usage").at("prompt_tokens_details").at("cached_tokens").to_number<double>() == cached);
      if (turn > 0) CHECK(cached > cached_before);  // the history, from this replica's cache
      cached_before = cached;
      history += std::string(reply.at("choices").at(0).at("text").as_string()) + " And then the wind came.";
    }
  }
}
