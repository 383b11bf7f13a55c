// llamawire bench: the load tester. N concurrent connections share R requests; each request
// is a GENERATE (or, with --client-sampling, FORWARD steps) from position 0. Bounded in
// count (--requests) and time (--duration, then a hard stop).
#include "client/bench_stats.hpp"
#include "client/cli.hpp"
#include "client/connection.hpp"
#include "client/exit_codes.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"

#include "common/cli_support.hpp"

#include <boost/json.hpp>

#include <boost/program_options.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llamawire {
namespace {

namespace po = boost::program_options;
using clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  int clients = 1;
  int requests = 1;
  int tokens = 64;  // generated tokens per request
  std::string prompt;
  int prompt_tokens = 0;
  int suffix_tokens = 0;  // per request, after the shared prompt: its own
  double duration_s = 300;
  bool client_sampling = false;
  bool json = false;
  float temperature = 1.0f;
  float topp = 0.9f;
  std::uint64_t seed = 1;
  std::string api_key;
  asio::ssl::context* tls = nullptr;
};

struct RequestStats {
  double ttft_ms = 0;
  double e2e_ms = 0;
  std::vector<double> itl_ms;
  int tokens = 0;
  DecodeSpan span;  // first and last token, seconds since the run started
};

struct Shared {
  BenchOptions o;
  int next_request = 0;
  int completed = 0;
  int errors = 0;
  std::uint64_t generated = 0;
  std::vector<RequestStats> stats;
  std::vector<std::string> error_samples;
  clock::time_point start;
  clock::time_point deadline;
  std::vector<int> prompt;  // token ids (BOS first)
  int vocab = 0;
  int context = 0;
  bool prompt_ready = false;
};

void record_error(Shared& s, const std::string& what) {
  ++s.errors;
  if (s.error_samples.size() < 5) s.error_samples.push_back(what);
}

std::vector<int> synthetic_prompt(int k, int vocab) {
  std::vector<int> p{kBosToken};
  std::uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (int i = 1; i < k; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p.push_back(3 + static_cast<int>(x % static_cast<std::uint64_t>(vocab - 3)));  // never BOS/EOS
  }
  return p;
}

// The shared prompt, then --suffix-tokens of the request's own (a question after a system
// prompt that all requests share).
std::vector<std::uint32_t> request_prompt(const Shared& s, int req) {
  std::vector<std::uint32_t> p(s.prompt.begin(), s.prompt.end());
  std::uint64_t x = 0x2545F4914F6CDD1DULL ^ (static_cast<std::uint64_t>(req) + 1) * 0x9E3779B97F4A7C15ULL;
  for (int i = 0; i < s.o.suffix_tokens; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p.push_back(static_cast<std::uint32_t>(3 + x % static_cast<std::uint64_t>(s.vocab - 3)));  // never BOS/EOS
  }
  return p;
}

asio::awaitable<void> worker(Shared& s, int id) {
  Connection conn(co_await asio::this_coro::executor);
  if (s.o.tls != nullptr) conn.use_tls(*s.o.tls);
  auto c = co_await conn.connect(s.o.host, s.o.port);
  if (!c) {
    record_error(s, c.error().message);
    co_return;
  }
  auto hello = co_await conn.hello(s.o.api_key, "llamawire-bench");
  if (!hello) {
    record_error(s, hello.error().message);
    co_return;
  }
  s.vocab = static_cast<int>(hello->vocab_size);
  s.context = static_cast<int>(std::min(hello->context, hello->seq_len));
  if (!s.prompt_ready) {
    if (!s.o.prompt.empty()) {
      auto model = co_await fetch_vocab(conn, *hello, "");
      if (!model) {
        record_error(s, model.error().message);
        co_return;
      }
      const Tokenizer& tok = model->tok;
      if (!s.prompt_ready) s.prompt = tok.encode(s.o.prompt, tok.add_bos(), false, tok.kind() != VocabKind::llama2c);
    } else {
      s.prompt = synthetic_prompt(std::max(1, s.o.prompt_tokens), s.vocab);
    }
    s.prompt_ready = true;
  }
  const int n_prompt = static_cast<int>(s.prompt.size()) + s.o.suffix_tokens;
  const int limit = std::min(s.context, n_prompt + s.o.tokens - 1);
  while (s.next_request < s.o.requests && clock::now() < s.deadline) {
    const int req = s.next_request++;
    const std::uint64_t seed = s.o.seed + static_cast<std::uint64_t>(req);
    RequestStats st;
    const auto t0 = clock::now();
    auto last = t0;
    auto on_token = [&] {
      const auto now = clock::now();
      const double since_start = std::chrono::duration<double>(now - s.start).count();
      if (st.tokens == 0) {
        st.ttft_ms = std::chrono::duration<double, std::milli>(now - t0).count();
        st.span.first_s = since_start;
      } else {
        st.itl_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
      }
      st.span.last_s = since_start;
      last = now;
      ++st.tokens;
      st.span.tokens = st.tokens;
    };
    bool ok = true;
    bool retry = false;  // the error leaves the connection usable
    if (!s.o.client_sampling) {
      msg::Generate g;
      g.start_pos = 0;
      g.limit_pos = static_cast<std::uint32_t>(limit);
      g.temperature = s.o.temperature;
      g.topp = s.o.topp;
      g.seed = seed;
      g.tokens = request_prompt(s, req);
      const std::function<bool(std::uint32_t)> on_stream = [&](std::uint32_t) {
        on_token();
        return clock::now() < s.deadline + std::chrono::seconds(30);  // hard stop: cancel
      };
      auto end = co_await conn.generate(std::move(g), on_stream);
      if (!end) {
        ok = false;
        retry = end.error().code == make_error_code(errc::busy);
        record_error(s, end.error().message);
      }
    } else {
      Sampler sampler(s.vocab, {s.o.temperature, s.o.topp, seed});
      std::vector<std::uint32_t> feed = request_prompt(s, req);
      int pos = 0;
      for (;;) {
        auto logits = co_await conn.forward(static_cast<std::uint32_t>(pos), feed);
        if (!logits) {
          ok = false;
          retry = logits.error().code == make_error_code(errc::busy);
          record_error(s, logits.error().message);
          break;
        }
        pos += static_cast<int>(feed.size());
        const int next = sampler.sample(logits->values);
        if (next == kBosToken) break;
        on_token();
        if (pos >= limit || clock::now() > s.deadline + std::chrono::seconds(30)) break;
        feed.assign(1, static_cast<std::uint32_t>(next));
      }
    }
    if (!ok) {
      // A busy server (KV memory, a full queue) may take the next request; any other error
      // (the server stopping, the connection lost) ends this client: the others go on.
      if (retry && conn.socket().is_open()) continue;
      break;
    }
    st.e2e_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    s.generated += static_cast<std::uint64_t>(st.tokens);
    ++s.completed;
    s.stats.push_back(std::move(st));
  }
  (void)id;
  conn.close();
}

asio::awaitable<void> progress(Shared& s, bool& done) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (!done) {
    t.expires_after(std::chrono::milliseconds(500));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    const double el = std::chrono::duration<double>(clock::now() - s.start).count();
    std::fprintf(stderr, "\r[bench] %5.1fs  completed %d/%d  errors %d  tokens %llu  %.1f tok/s   ", el, s.completed,
                 s.o.requests, s.errors, static_cast<unsigned long long>(s.generated),
                 el > 0 ? static_cast<double>(s.generated) / el : 0.0);
  }
  std::fprintf(stderr, "\n");
}

}  // namespace

int bench_main(int argc, char** argv) try {
  BenchOptions o;
  std::string tls_ca;
  int port = 8080;
  long long seed = 1;
  po::options_description opts(
      "Usage: llamawire bench [options]: load-test a llamawire-server with concurrent sessions");
  opts.add_options()("help,h", "show this help")
      ("address,a", po::value(&o.host)->default_value("127.0.0.1"), "server address")
      ("port,o", po::value(&port)->default_value(8080), "server port")
      ("clients", po::value(&o.clients)->default_value(1), "concurrent connections")
      ("requests", po::value(&o.requests)->default_value(0), "total requests, spread over the clients (default: clients)")
      ("steps,n", po::value(&o.tokens)->default_value(64), "tokens to generate per request")
      ("prompt", po::value(&o.prompt), "prompt text (tokenized with the server's tokenizer)")
      ("prompt-tokens", po::value(&o.prompt_tokens)->default_value(0), "synthetic prompt of K tokens instead of text")
      ("suffix-tokens", po::value(&o.suffix_tokens)->default_value(0), "K more synthetic tokens per request, its own, after the shared prompt")
      ("duration", po::value(&o.duration_s)->default_value(300), "start no request after S seconds; cancel at S+30")
      ("temperature,t", po::value(&o.temperature)->default_value(1.0f, "1.0"), "sampling temperature")
      ("p_value,p", po::value(&o.topp)->default_value(0.9f, "0.9"), "top-p")
      ("seed,s", po::value(&seed)->default_value(1), "seed of the first request (request i uses seed+i)")
      ("client-sampling", "FORWARD requests and local sampling instead of GENERATE")
      ("json", "print the results as one JSON object")
      ("api-key", po::value(&o.api_key), "API key (default: $LLAMAWIRE_API_KEY)")
      ("tls", "connect with TLS")
      ("tls-ca", po::value(&tls_ca), "trust this CA certificate (PEM); implies --tls");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire bench: " << e.what() << "\n" << opts;
    return kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return kExitOk;
  }
  if (o.requests == 0) o.requests = o.clients;
  OptionChecks checks;
  checks.integer("--port", port, 1, 65535);
  checks.integer("--clients", o.clients, 1, 10000);
  checks.integer("--requests", o.requests, 1, 100'000'000);
  checks.integer("--steps", o.tokens, 1, 1 << 24);
  checks.integer("--prompt-tokens", o.prompt_tokens, 0, 1 << 24);
  checks.integer("--suffix-tokens", o.suffix_tokens, 0, 1 << 24);
  checks.seconds("--duration", o.duration_s, 0.001, kMaxOptionSeconds);
  checks.real("--temperature", o.temperature, 0, 1e6);
  checks.real("--p_value", o.topp, -1e6, 1e6);
  checks.integer("--seed", seed, 1, std::numeric_limits<long long>::max() / 2);
  if (checks.error()) {
    std::cerr << "llamawire bench: " << *checks.error() << "\n" << opts;
    return kExitUsage;
  }
  o.port = static_cast<std::uint16_t>(port);
  o.seed = static_cast<std::uint64_t>(seed);
  o.client_sampling = vm.count("client-sampling") > 0;
  o.json = vm.count("json") > 0;
  if (o.api_key.empty()) {
    if (const char* k = std::getenv("LLAMAWIRE_API_KEY")) o.api_key = k;
  }

  std::unique_ptr<asio::ssl::context> tls;
  if (vm.count("tls") || !tls_ca.empty()) {
    tls = make_client_tls(tls_ca);
    if (!tls) return kExitError;
    o.tls = tls.get();
  }
  asio::io_context io;
  Shared s;
  s.o = o;
  s.start = clock::now();
  s.deadline = s.start + std::chrono::milliseconds(static_cast<long long>(o.duration_s * 1000));
  bool done = false;
  int running = o.clients;
  const bool tty = ::isatty(2) != 0;
  if (tty) asio::co_spawn(io, progress(s, done), asio::detached);
  for (int i = 0; i < o.clients; ++i) {
    asio::co_spawn(io, worker(s, i), [&](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          record_error(s, ex.what());
        }
      }
      if (--running == 0) done = true;
    });
  }
  io.run();
  const double wall = std::chrono::duration<double>(clock::now() - s.start).count();

  std::vector<double> ttft, itl, e2e;
  std::vector<DecodeSpan> spans;
  for (const auto& r : s.stats) {
    if (r.tokens > 0) ttft.push_back(r.ttft_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    e2e.push_back(r.e2e_ms);
    spans.push_back(r.span);
  }
  const double agg = wall > 0 ? static_cast<double>(s.generated) / wall : 0.0;
  const double decode = decode_tokens_per_second(spans);
  if (o.json) {
    boost::json::object j{{"clients", o.clients},
                          {"requests", o.requests},
                          {"completed", s.completed},
                          {"errors", s.errors},
                          {"generated_tokens", s.generated},
                          {"prompt_tokens", s.prompt.size() + static_cast<std::size_t>(o.suffix_tokens)},
                          {"wall_s", wall},
                          {"aggregate_tok_s", agg},
                          {"decode_tok_s", decode},
                          {"ttft_ms", {{"p50", percentile(ttft, 50)}, {"p90", percentile(ttft, 90)}, {"p99", percentile(ttft, 99)}}},
                          {"itl_ms", {{"p50", percentile(itl, 50)}, {"p99", percentile(itl, 99)}}},
                          {"e2e_ms", {{"p50", percentile(e2e, 50)}, {"p99", percentile(e2e, 99)}}}};
    std::cout << boost::json::serialize(j) << "\n";
  } else {
    std::printf("clients                 %d\n", o.clients);
    std::printf("requests completed      %d of %d\n", s.completed, o.requests);
    std::printf("requests failed         %d\n", s.errors);
    std::printf("prompt tokens/request   %zu\n", s.prompt.size() + static_cast<std::size_t>(o.suffix_tokens));
    std::printf("generated tokens        %llu\n", static_cast<unsigned long long>(s.generated));
    std::printf("wall time               %.2f s\n", wall);
    std::printf("aggregate tokens/s      %.1f\n", agg);
    std::printf("decode tokens/s         %.1f\n", decode);
    std::printf("time to first token ms  p50 %.1f  p90 %.1f  p99 %.1f\n", percentile(ttft, 50), percentile(ttft, 90),
                percentile(ttft, 99));
    std::printf("inter-token latency ms  p50 %.2f  p99 %.2f\n", percentile(itl, 50), percentile(itl, 99));
    std::printf("end-to-end latency ms   p50 %.1f  p99 %.1f\n", percentile(e2e, 50), percentile(e2e, 99));
  }
  for (const auto& e : s.error_samples) std::fprintf(stderr, "llamawire bench: error: %s\n", e.c_str());
  return s.errors > 0 ? kExitConnection : kExitOk;
} catch (const std::exception& e) {
  std::cerr << "llamawire bench: fatal: " << e.what() << "\n";
  return kExitError;
}

}  // namespace llamawire
