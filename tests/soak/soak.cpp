// llamawire-soak: a bounded fault-injecting load against a running server. Clients connect,
// generate, cancel, disconnect mid-stream and send malformed frames at random; every
// completed generation must equal its reference (the same request run alone first), and
// every cancelled one must be a prefix of it. Prints a JSON summary; exit 1 on any
// mismatch or unexpected failure.
//   llamawire-soak -o PORT [--clients 64] [--duration 30] [--seed 1]
#include "client/connection.hpp"
#include "common/cli_support.hpp"
#include "common/messages.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <limits>
#include <random>

namespace lw = llamawire;
namespace po = boost::program_options;
namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

struct Template {
  lw::msg::Generate g;
  std::vector<std::uint32_t> reference;
};

struct Totals {
  std::uint64_t completed = 0, matched = 0, mismatched = 0, cancelled = 0, cancel_prefix_ok = 0,
                disconnects = 0, malformed = 0, malformed_answered = 0, hangups = 0, refused_busy = 0, unexpected = 0,
                tokens = 0;
  std::vector<std::string> samples;
  void fail(const std::string& what) {
    ++unexpected;
    if (samples.size() < 8) samples.push_back(what);
  }
};

std::vector<Template> make_templates(std::uint32_t vocab, int context) {
  std::vector<Template> t;
  std::mt19937 rng(1234);
  for (int i = 0; i < 8; ++i) {
    Template x;
    x.g.start_pos = 0;
    x.g.temperature = i % 3 == 0 ? 0.0f : 0.9f;
    x.g.topp = 0.9f;
    x.g.seed = 100 + static_cast<std::uint64_t>(i);
    x.g.tokens.push_back(1);
    const int n = 1 + i % 5;
    for (int k = 0; k < n; ++k) x.g.tokens.push_back(3 + rng() % (vocab - 3));
    x.g.limit_pos = static_cast<std::uint32_t>(std::min(context, 40 + 10 * i));
    t.push_back(std::move(x));
  }
  return t;
}

asio::awaitable<lw::Result<std::vector<std::uint32_t>>> run_alone(const std::string& host, std::uint16_t port,
                                                                 lw::msg::Generate g) {
  lw::Connection c(co_await asio::this_coro::executor);
  auto ok = co_await c.connect(host, port);
  if (!ok) co_return ok.error();
  auto h = co_await c.hello("", "soak-reference");
  if (!h) co_return h.error();
  std::vector<std::uint32_t> out;
  const std::function<bool(std::uint32_t)> on = [&](std::uint32_t t) {
    out.push_back(t);
    return true;
  };
  auto end = co_await c.generate(std::move(g), on);
  if (!end) co_return end.error();
  c.close();
  co_return out;
}

asio::awaitable<void> worker(const std::string& host, std::uint16_t port, const std::vector<Template>& templates,
                             clock_type::time_point deadline, std::uint64_t seed, Totals& tot) {
  std::mt19937_64 rng(seed);
  while (clock_type::now() < deadline) {
    lw::Connection c(co_await asio::this_coro::executor);
    auto ok = co_await c.connect(host, port);
    if (!ok) {
      tot.fail("connect: " + ok.error().message);
      continue;
    }
    const int action = static_cast<int>(rng() % 100);
    if (action < 5) {  // hang up before or in the middle of the handshake
      if (rng() % 2) {
        auto bytes = lw::encode_frame(lw::msg::Hello{}, 1);
        bytes.resize(5);
        co_await c.send_bytes(bytes);
      }
      c.close();
      ++tot.hangups;
      continue;
    }
    auto h = co_await c.hello("", "soak");
    if (!h) {
      if (h.error().code == lw::make_error_code(lw::errc::busy)) {
        // A clear refusal (all sessions in use) is a correct answer under this load: back off.
        ++tot.refused_busy;
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(20));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      } else {
        tot.fail("hello: " + h.error().message);
      }
      continue;
    }
    // A few requests per connection.
    const int requests = 1 + static_cast<int>(rng() % 3);
    for (int r = 0; r < requests && clock_type::now() < deadline; ++r) {
      const auto& t = templates[rng() % templates.size()];
      const int kind = static_cast<int>(rng() % 100);
      if (kind < 10) {  // malformed input: the server answers or closes, and survives
        std::vector<std::uint8_t> bad;
        switch (rng() % 4) {
          case 0: bad.assign(24, static_cast<std::uint8_t>(rng())); break;   // garbage magic
          case 1: {                                                          // oversized length
            bad = lw::encode_frame(lw::msg::Ping{1}, 7);
            bad[8] = bad[9] = bad[10] = bad[11] = 0xFF;
            break;
          }
          case 2: bad = lw::encode_frame(lw::msg::Forward{0, {1, 999999}}, 7); break;  // token out of range
          default: {                                                                  // unknown type
            bad = lw::encode_frame(lw::msg::Ping{1}, 7);
            bad[3] = 0x55;
          }
        }
        ++tot.malformed;
        auto sent = co_await c.send_bytes(bad);
        if (!sent) break;
        auto reply = co_await c.receive();
        if (!reply || std::holds_alternative<lw::msg::Error>(reply->second)) {
          ++tot.malformed_answered;
        } else {
          tot.fail("malformed frame got a non-error reply");
        }
        break;  // the connection may be closed now
      }
      lw::msg::Generate g = t.g;
      if (kind < 30) {  // disconnect mid-stream
        const std::size_t after = 1 + rng() % 5;
        auto sent = co_await c.send(g, 100);
        if (!sent) break;
        for (std::size_t i = 0; i < after; ++i) {
          auto f = co_await c.receive();
          if (!f || !std::holds_alternative<lw::msg::Token>(f->second)) break;
        }
        ++tot.disconnects;
        break;  // the Connection closes as it goes out of scope
      }
      std::vector<std::uint32_t> got;
      const std::size_t cancel_after = kind < 50 ? 1 + rng() % 8 : SIZE_MAX;
      const std::function<bool(std::uint32_t)> on = [&](std::uint32_t tk) {
        got.push_back(tk);
        return got.size() < cancel_after;
      };
      auto end = co_await c.generate(std::move(g), on);
      if (!end) {
        tot.fail("generate: " + end.error().message);
        break;
      }
      tot.tokens += got.size();
      const bool prefix = got.size() <= t.reference.size() && std::equal(got.begin(), got.end(), t.reference.begin());
      if (end->reason == lw::StopReason::cancelled) {
        ++tot.cancelled;
        if (prefix) {
          ++tot.cancel_prefix_ok;
        } else {
          tot.fail("cancelled generation is not a prefix of its reference");
        }
      } else {
        ++tot.completed;
        if (got == t.reference) {
          ++tot.matched;
        } else {
          ++tot.mismatched;
          tot.fail("completed generation differs from its reference");
        }
      }
    }
  }
}

// Learns the model's shape and records each template's reference output, run alone.
asio::awaitable<void> prepare(std::string host, std::uint16_t port, std::vector<Template>& templates) {
  lw::Connection probe(co_await asio::this_coro::executor);
  auto ok = co_await probe.connect(host, port);
  if (!ok) throw std::runtime_error(ok.error().message);
  auto h = co_await probe.hello("", "soak-probe");
  if (!h) throw std::runtime_error(h.error().message);
  probe.close();
  const lw::msg::HelloOk shape = *h;
  templates = make_templates(shape.vocab_size, static_cast<int>(std::min(shape.context, shape.seq_len)));
  for (auto& t : templates) {
    auto ref = co_await run_alone(host, port, t.g);
    if (!ref) throw std::runtime_error(ref.error().message);
    t.reference = std::move(*ref);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  std::string host = "127.0.0.1";
  int port = 0, clients = 64;
  double duration = 30;
  long long seed = 1;
  po::options_description opts("Usage: llamawire-soak -o PORT [options]");
  opts.add_options()("help,h", "show this help")("address,a", po::value(&host), "server address")
      ("port,o", po::value(&port), "server port")("clients", po::value(&clients), "concurrent clients")
      ("duration", po::value(&duration), "seconds of load")("seed", po::value(&seed), "random seed");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire-soak: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  llamawire::OptionChecks checks;
  checks.integer("--port", port, 1, 65535);
  checks.integer("--clients", clients, 1, 10000);
  checks.seconds("--duration", duration, 0.001, llamawire::kMaxOptionSeconds);
  checks.integer("--seed", seed, 0, std::numeric_limits<long long>::max());
  if (checks.error()) {
    std::cerr << "llamawire-soak: " << *checks.error() << "\n";
    return 2;
  }
  asio::io_context io;
  Totals tot;
  std::vector<Template> templates;
  int rc = 0;
  asio::co_spawn(
      io, prepare(host, static_cast<std::uint16_t>(port), templates),
      [&](std::exception_ptr e) {
        if (e) {
          rc = 1;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            std::cerr << "llamawire-soak: " << ex.what() << "\n";
          }
        }
      });
  io.run();
  if (rc != 0) return 1;
  io.restart();
  const auto t0 = clock_type::now();
  const auto deadline = t0 + std::chrono::milliseconds(static_cast<long long>(duration * 1000));
  for (int i = 0; i < clients; ++i) {
    asio::co_spawn(io, worker(host, static_cast<std::uint16_t>(port), templates, deadline, static_cast<std::uint64_t>(seed) * 1000 + static_cast<std::uint64_t>(i), tot),
                   [&](std::exception_ptr e) {
                     if (e) tot.fail("worker exception");
                   });
  }
  io.run();
  const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
  boost::json::object j{{"clients", clients},
                        {"duration_s", wall},
                        {"completed", tot.completed},
                        {"matched", tot.matched},
                        {"mismatched", tot.mismatched},
                        {"cancelled", tot.cancelled},
                        {"cancelled_prefix_ok", tot.cancel_prefix_ok},
                        {"disconnects_mid_stream", tot.disconnects},
                        {"malformed_sent", tot.malformed},
                        {"malformed_answered", tot.malformed_answered},
                        {"handshake_hangups", tot.hangups},
                        {"refused_busy", tot.refused_busy},
                        {"tokens", tot.tokens},
                        {"unexpected", tot.unexpected}};
  boost::json::array samples;
  for (const auto& s : tot.samples) samples.emplace_back(s);
  j["unexpected_samples"] = samples;
  std::cout << boost::json::serialize(j) << "\n";
  return tot.unexpected == 0 && tot.mismatched == 0 && tot.completed > 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "llamawire-soak: " << e.what() << "\n";
  return 2;
}
