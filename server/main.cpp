// llamawire-server: load the weights once, serve sessions over the framed protocol.
#include "common/asio.hpp"
#include "common/chat_template.hpp"
#include "common/cli_support.hpp"
#include "common/log.hpp"
#include "common/tokenizer.hpp"
#include "server/engine/scheduler.hpp"
#include "server/kernels/kernels.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/weight_store.hpp"
#include "server/net/http_api.hpp"
#include "server/net/listener.hpp"
#include "server/net/server_context.hpp"
#include "server/net/session.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/program_options.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <fstream>
#include <iostream>
#include <limits>
#include <system_error>
#include <thread>

namespace po = boost::program_options;
namespace lw = llamawire;
using lw::asio::awaitable;

namespace {

constexpr long long kHttpOff = std::numeric_limits<long long>::min();  // --http-port absent

struct Flags {
  std::string checkpoint, tokenizer, weights = "f32", kernels, port_file, log_format = "text", log_file, load, chat_template,
      prefix_cache = "on", api_key_file;
  // Integer options are signed 64-bit here, so that a negative value is refused, not wrapped.
  long long port = 8080, http_port = kHttpOff, threads = 0, io_threads = 1, max_batch = 256, max_sessions = 64,
            max_connections = 1024, max_frame_bytes = 1 << 20, frame_memory_mb = 64, context_positions = 0, kv_budget_mb = 0,
            kv_warm_mb = 64, http_max_body = 1 << 20, prefix_cache_mb = 512;
  double idle_timeout_s = 300, handshake_timeout_s = 10, write_timeout_s = 30, drain_timeout_s = 30,
         queue_timeout_s = 10, request_timeout_s = 30;
  std::string tls_cert, tls_key;
  std::vector<std::string> cors_origins;
  lw::ServerOptions server;
};

// The documented ranges (README, option table); each failure names the option.
constexpr long long kMaxThreads = 256;
constexpr long long kMaxIoThreads = 64;
constexpr long long kMaxBatch = 4096;
constexpr long long kMaxMiB = 1ll << 24;  // 16 TiB

std::optional<std::string> check_ranges(const Flags& f) {
  lw::OptionChecks c;
  const double big = lw::kMaxOptionSeconds;
  c.integer("--port", f.port, 0, 65535);
  if (f.http_port != kHttpOff) c.integer("--http-port", f.http_port, 0, 65535);
  c.integer("--threads", f.threads, 0, kMaxThreads);
  c.integer("--io-threads", f.io_threads, 1, kMaxIoThreads);
  c.integer("--max-sessions", f.max_sessions, 1, 65536);
  c.integer("--max-connections", f.max_connections, 1, 1 << 20);
  c.integer("--max-frame-bytes", f.max_frame_bytes, 64, 256ll << 20);
  c.integer("--frame-memory-mb", f.frame_memory_mb, 1, kMaxMiB);
  c.integer("--ctx", f.context_positions, 0, 1ll << 30);
  c.integer("--kv-budget-mb", f.kv_budget_mb, 0, kMaxMiB);
  c.integer("--kv-warm-mb", f.kv_warm_mb, 0, kMaxMiB);
  c.integer("--prefix-cache-mb", f.prefix_cache_mb, 0, kMaxMiB);
  c.integer("--max-batch", f.max_batch, 1, kMaxBatch);
  c.integer("--http-max-body", f.http_max_body, 64, 1ll << 30);
  c.seconds("--idle-timeout", f.idle_timeout_s, 0.001, big);
  c.seconds("--handshake-timeout", f.handshake_timeout_s, 0.001, big);
  c.seconds("--write-timeout", f.write_timeout_s, 0.001, big);
  c.seconds("--request-timeout", f.request_timeout_s, 0.001, big);
  c.seconds("--drain-timeout", f.drain_timeout_s, 0, big);
  c.seconds("--queue-timeout", f.queue_timeout_s, 0, big);
  return c.error();
}

// After a stop signal: once every session has ended (both acceptors are closed by then),
// cancel what keeps io.run() going, and then stop the io_context outright, so that no
// leftover operation can keep the process alive (an exit that hung for 30 s was seen once
// in a loaded test run; its cause was not found).
awaitable<void> wait_for_sessions(lw::ServerContext& ctx, lw::asio::steady_timer& drain_timer,
                                  lw::asio::signal_set& signals, lw::asio::io_context& io) {
  lw::asio::steady_timer t(co_await lw::asio::this_coro::executor);
  while (ctx.open_sessions() > 0) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(lw::asio::use_awaitable);
  }
  drain_timer.cancel();
  signals.cancel();
  // A moment for the last sessions' final writes and closes to run, then stop.
  t.expires_after(std::chrono::milliseconds(50));
  co_await t.async_wait(lw::asio::use_awaitable);
  io.stop();
}

int usage_error(const std::string& what, const po::options_description& opts) {
  std::cerr << "llamawire-server: " << what << "\n" << opts;
  return 2;
}

// Reads and checks the command line into f; an exit code when the program must stop here.
std::optional<int> parse_flags(int argc, char** argv, Flags& f) {
  po::options_description opts("Usage: llamawire-server -c CHECKPOINT [options]");
  opts.add_options()("help,h", "show this help")
      ("checkpoint,c", po::value(&f.checkpoint), "model: a GGUF file (llama architecture) or a llama2.c checkpoint (legacy, export v1 or v2/Q8_0) [required]")
      ("tokenizer,z", po::value(&f.tokenizer), "llama2.c checkpoints only: tokenizer file (default: tokenizer.bin, else tok<vocab>.bin, beside the checkpoint)")
      ("address,a", po::value(&f.server.address)->default_value("127.0.0.1"), "address to listen on")
      ("port,o", po::value(&f.port)->default_value(8080), "TCP port, 0-65535 (0: any free port)")
      ("http-port", po::value(&f.http_port), "also serve the OpenAI-compatible HTTP API on this port, 0-65535 (0: any free port; off when absent)")
      ("tls-cert", po::value(&f.tls_cert), "PEM certificate chain: serve both protocols over TLS")
      ("tls-key", po::value(&f.tls_key), "PEM private key for --tls-cert")
      ("http-max-body", po::value(&f.http_max_body)->default_value(1 << 20), "largest HTTP request body, bytes (64 to 2^30)")
      ("cors-origin", po::value(&f.cors_origins)->composing(), "let browser pages from this origin call the HTTP API (repeatable; * for any)")
      ("request-timeout", po::value(&f.request_timeout_s)->default_value(30), "seconds for an HTTP request's headers and body to arrive, once it has begun")
      ("threads", po::value(&f.threads), "compute threads, 1-256 (default or 0: all cores)")
      ("io-threads", po::value(&f.io_threads)->default_value(1), "network threads, 1-64 (more only help many TLS or HTTP clients on cores the compute threads do not use)")
      ("max-sessions", po::value(&f.max_sessions)->default_value(64), "most sessions at once, 1-65536: binary sessions past the handshake plus HTTP generations")
      ("max-connections", po::value(&f.max_connections)->default_value(1024), "most open connections (idle ones included), 1-1048576")
      ("max-frame-bytes", po::value(&f.max_frame_bytes)->default_value(1 << 20), "largest frame accepted from a client after HELLO, 64 to 2^28 bytes")
      ("frame-memory-mb", po::value(&f.frame_memory_mb)->default_value(64), "memory all connections together may hold for frames still arriving, MiB")
      ("ctx", po::value(&f.context_positions)->default_value(0), "positions per session (0: the model's seq_len; more is clamped to it)")
      ("kv-budget-mb", po::value(&f.kv_budget_mb)->default_value(0), "KV cache memory for all sessions, MiB (0: unlimited)")
      ("kv-warm-mb", po::value(&f.kv_warm_mb)->default_value(64), "KV memory faulted in at startup and kept resident as sessions end, MiB (at most --kv-budget-mb)")
      ("queue-timeout", po::value(&f.queue_timeout_s)->default_value(10), "seconds a request waits for a session slot or KV memory before busy (0: at once)")
      ("max-batch", po::value(&f.max_batch)->default_value(256), "most token positions in one batched forward, 1-4096")
      ("idle-timeout", po::value(&f.idle_timeout_s)->default_value(300), "seconds a session (or a kept-alive HTTP connection) may stay silent")
      ("handshake-timeout", po::value(&f.handshake_timeout_s)->default_value(10), "seconds to receive HELLO (binary) or the first request (HTTP)")
      ("write-timeout", po::value(&f.write_timeout_s)->default_value(30), "seconds one frame write may take")
      ("drain-timeout", po::value(&f.drain_timeout_s)->default_value(30), "seconds running requests may finish after SIGTERM")
      ("weights", po::value(&f.weights)->default_value("f32"), lw::kWeightsHelp)
      ("load", po::value(&f.load), "read (private copy, immune to file changes; f32 in panels, GGUF blocks packed) | mmap (no copy, row-major); default: read")
      ("chat-template", po::value(&f.chat_template), "chat template for the CLI's chat mode and /v1/chat/completions: llama2 | mistral | zephyr | chatml | vicuna (default: the one the model's tokenizer.chat_template writes, else llama2)")
      ("kernels", po::value(&f.kernels), "force a kernel table: scalar | avx2 | avx2-vnni | avx512-vnni | amx")
      ("api-key", po::value(&f.server.api_keys)->composing(), "require a key in HELLO and on HTTP: this one (repeat the option for several keys, one tenant each; default: $LLAMAWIRE_API_KEY)")
      ("api-key-file", po::value(&f.api_key_file), "more keys, one per line (blank lines and lines starting with # are skipped)")
      ("prefix-cache", po::value(&f.prefix_cache)->default_value("on"), "on | off: share the KV blocks of prompts' common beginnings between requests")
      ("prefix-cache-mb", po::value(&f.prefix_cache_mb)->default_value(512), "most memory for prefix-cache blocks no request holds, MiB (within --kv-budget-mb)")
      ("port-file", po::value(&f.port_file), "write the listening port to this file")
      ("log-format", po::value(&f.log_format)->default_value("text"), "text | json")
      ("log-file", po::value(&f.log_file), "append the log here instead of stderr (SIGHUP reopens it)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage_error(e.what(), opts);
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (f.checkpoint.empty()) return usage_error("--checkpoint is required", opts);
  if (auto e = check_ranges(f)) return usage_error(*e, opts);
  if (f.tls_cert.empty() != f.tls_key.empty()) return usage_error("--tls-cert and --tls-key go together", opts);
  if (!lw::parse_weights_option(f.weights)) return usage_error("--weights must be f32, q8_0, q4_0 or q4_k", opts);
  if (!f.load.empty() && f.load != "read" && f.load != "mmap") return usage_error("--load must be read or mmap", opts);
  if (!f.chat_template.empty() && !lw::chat_format_by_name(f.chat_template)) {
    return usage_error("--chat-template must be one of " + lw::chat_format_list(), opts);
  }
  if (f.log_format != "text" && f.log_format != "json") return usage_error("--log-format must be text or json", opts);
  if (!f.kernels.empty() && !lw::kernels::select(f.kernels)) {
    return usage_error("kernel table '" + f.kernels + "' is not available here", opts);
  }
  if (f.prefix_cache != "on" && f.prefix_cache != "off") return usage_error("--prefix-cache must be on or off", opts);
  if (!f.api_key_file.empty()) {
    std::ifstream in(f.api_key_file);
    if (!in) {
      std::cerr << "llamawire-server: --api-key-file " << f.api_key_file << ": cannot be read\n";
      return 1;
    }
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
      if (!line.empty() && line[0] != '#') f.server.api_keys.push_back(line);
    }
  }
  if (f.server.api_keys.empty()) {
    if (const char* k = std::getenv("LLAMAWIRE_API_KEY")) f.server.api_keys.emplace_back(k);
  }
  std::erase_if(f.server.api_keys, [](const std::string& k) { return k.empty(); });
  f.server.prefix_cache = f.prefix_cache == "on";
  f.server.prefix_cache_bytes = static_cast<std::uint64_t>(f.prefix_cache_mb) << 20;
  if (f.threads == 0) f.threads = std::min<long long>(kMaxThreads, std::max(1u, std::thread::hardware_concurrency()));
  auto secs = [](double s) { return std::chrono::milliseconds(static_cast<long long>(s * 1000)); };
  auto& o = f.server;
  o.port = static_cast<std::uint16_t>(f.port);
  o.max_sessions = static_cast<int>(f.max_sessions);
  o.max_connections = static_cast<int>(f.max_connections);
  o.max_frame_bytes = static_cast<std::uint32_t>(f.max_frame_bytes);
  o.frame_memory_bytes = static_cast<std::uint64_t>(f.frame_memory_mb) << 20;
  o.context_positions = static_cast<int>(f.context_positions);
  o.idle_timeout = secs(f.idle_timeout_s);
  o.handshake_timeout = secs(f.handshake_timeout_s);
  o.write_timeout = secs(f.write_timeout_s);
  o.drain_timeout = secs(f.drain_timeout_s);
  o.queue_timeout = secs(f.queue_timeout_s);
  o.request_timeout = secs(f.request_timeout_s);
  lw::log::set_format(f.log_format == "json" ? lw::log::Format::json : lw::log::Format::text);
  if (std::string why; !f.log_file.empty() && !lw::log::set_file(f.log_file, &why)) {
    std::cerr << "llamawire-server: --log-file " << why << "\n";
    return 1;
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) try {
  Flags f;
  if (auto rc = parse_flags(argc, argv, f)) return *rc;
  const std::uint64_t kv_budget_bytes = static_cast<std::uint64_t>(f.kv_budget_mb) << 20;

  lw::WeightStore::Options wopts;
  wopts.weights = *lw::parse_weights_option(f.weights);
  wopts.load = f.load == "mmap"   ? lw::WeightStore::Load::mmap
               : f.load == "read" ? lw::WeightStore::Load::read
                                  : lw::WeightStore::Load::automatic;
  auto store = lw::WeightStore::load(f.checkpoint, wopts);
  if (!store) {
    std::cerr << "llamawire-server: " << store.error().message << "\n";
    return 1;
  }
  const auto& cfg = (*store)->config();
  auto tok = lw::load_model_tokenizer(**store, f.tokenizer);
  if (!tok) {
    std::cerr << "llamawire-server: " << tok.error().message << "\n";
    return 1;
  }
  {
    const lw::ChatChoice chat = lw::choose_chat_format(tok->vocab(), f.chat_template);
    f.server.chat_format = chat.format;
    tok->set_eot(lw::end_of_turn_id(*tok, lw::ChatTemplate(chat.format)));
    if (chat.warn) {
      lw::log::warn(chat.note);
    } else {
      lw::log::info(chat.note);
    }
  }
  f.server.model_name = std::filesystem::path(f.checkpoint).filename().string();
  lw::log::info("model ", f.server.model_name, ": dim=", cfg.dim, " hidden=", cfg.hidden_dim, " layers=", cfg.n_layers,
                " heads=", cfg.n_heads, " kv_heads=", cfg.n_kv_heads, " vocab=", cfg.vocab_size, " seq_len=", cfg.seq_len,
                " weights=", (*store)->type_summary(), (*store)->gguf() ? " (gguf)" : "",
                " kernels=", lw::kernels::active().name, " threads=", f.threads);

  // Warm KV blocks: the first sessions find them faulted in, and ended sessions' blocks stay
  // resident for the next ones (see KvBlockPool::keep_warm). Never more than the budget, nor
  // than every session at full context could use.
  const std::uint64_t block_bytes = lw::KvCache::block_bytes_for(cfg);
  const int ctx_positions = f.server.context_positions > 0 ? std::min(f.server.context_positions, cfg.seq_len) : cfg.seq_len;
  const std::uint64_t blocks_per_session =
      static_cast<std::uint64_t>((ctx_positions + lw::KvCache::kBlockPositions - 1) / lw::KvCache::kBlockPositions);
  std::uint64_t warm = std::min(static_cast<std::uint64_t>(f.kv_warm_mb) << 20,
                                static_cast<std::uint64_t>(std::max(f.server.max_sessions, 1)) * blocks_per_session * block_bytes);
  if (kv_budget_bytes != 0) warm = std::min(warm, kv_budget_bytes);
  lw::KvBlockPool::for_block_bytes(block_bytes).keep_warm(warm);

  lw::Scheduler::Options sopts;
  sopts.threads = static_cast<int>(f.threads);
  sopts.max_batch_tokens = static_cast<int>(f.max_batch);
  sopts.max_batch_sessions = static_cast<int>(std::min(f.max_batch, f.max_sessions));
  lw::Scheduler scheduler(*store, sopts);
  lw::ServerContext ctx(*store, std::make_shared<const lw::Tokenizer>(std::move(*tok)), scheduler, f.server,
                        kv_budget_bytes);
  if (f.server.prefix_cache) {
    lw::log::info("prefix cache on: up to ", f.prefix_cache_mb, " MiB of blocks no request holds",
                  f.server.api_keys.size() > 1 ? ", one partition per API key" : "");
  } else {
    lw::log::info("prefix cache off");
  }

  if (!f.tls_cert.empty()) {
    auto tls = std::make_shared<lw::asio::ssl::context>(lw::asio::ssl::context::tls_server);
    tls->set_options(lw::asio::ssl::context::default_workarounds | lw::asio::ssl::context::no_sslv2 |
                     lw::asio::ssl::context::no_sslv3 | lw::asio::ssl::context::no_tlsv1 |
                     lw::asio::ssl::context::no_tlsv1_1 | lw::asio::ssl::context::single_dh_use);
    boost::system::error_code tec;
    tls->use_certificate_chain_file(f.tls_cert, tec);
    if (tec) {
      std::cerr << "llamawire-server: " << f.tls_cert << ": cannot use as a TLS certificate: " << tec.message() << "\n";
      return 1;
    }
    tls->use_private_key_file(f.tls_key, lw::asio::ssl::context::pem, tec);
    if (tec) {
      std::cerr << "llamawire-server: " << f.tls_key << ": cannot use as a TLS key: " << tec.message() << "\n";
      return 1;
    }
    ctx.set_tls(std::move(tls));
    lw::log::info("TLS on (certificate ", f.tls_cert, ")");
  }

  lw::asio::io_context io(static_cast<int>(f.io_threads));
  scheduler.set_handoff(lw::asio::make_strand(io));
  // The scheduler's strand must not outlive `io`: on every way out (this is destroyed
  // before io), the scheduler stops and drops it.
  struct HandoffGuard {
    lw::Scheduler& s;
    ~HandoffGuard() {
      s.stop();
      s.set_handoff(std::nullopt);
    }
  } handoff_guard{scheduler};
  // The signals are caught from here on, before the port file says the server is up: a
  // SIGTERM that follows it at once is queued for the handler below, never the default
  // action. The control objects live on one strand: handlers run on any io thread, never
  // two at once.
  auto control = lw::asio::make_strand(io);
  lw::asio::signal_set signals(control, SIGINT, SIGTERM, SIGHUP);
  lw::tcp::acceptor acceptor(io);
  if (auto r = lw::open_acceptor(acceptor, f.server.address, f.server.port); !r) {
    std::cerr << "llamawire-server: " << r.error().message << "\n";
    return 1;
  }
  const auto bound = acceptor.local_endpoint();
  lw::log::info("listening on ", bound.address().to_string(), ":", bound.port());
  if (!f.port_file.empty()) {
    const auto tmp = f.port_file + ".tmp";
    std::ofstream(tmp) << bound.port() << "\n";
    std::filesystem::rename(tmp, f.port_file);
  }

  lw::asio::co_spawn(
      io, lw::accept_loop(acceptor, ctx, [&ctx](lw::tcp::socket s) { return lw::serve_session(std::move(s), ctx); }, true),
      lw::log_session_end);

  lw::tcp::acceptor http_acceptor(io);
  if (f.http_port != kHttpOff) {
    if (auto r = lw::open_acceptor(http_acceptor, f.server.address, static_cast<std::uint16_t>(f.http_port)); !r) {
      std::cerr << "llamawire-server: HTTP: " << r.error().message << "\n";
      return 1;
    }
    const auto hep = http_acceptor.local_endpoint();
    lw::log::info("HTTP API listening on ", hep.address().to_string(), ":", hep.port());
    if (!f.port_file.empty()) {
      const auto tmp = f.port_file + ".http.tmp";
      std::ofstream(tmp) << hep.port() << "\n";
      std::filesystem::rename(tmp, f.port_file + ".http");
    }
    lw::HttpOptions hopts;
    hopts.max_body_bytes = static_cast<std::size_t>(f.http_max_body);
    hopts.cors_origins = f.cors_origins;
    lw::asio::co_spawn(io,
                       lw::accept_loop(
                           http_acceptor, ctx,
                           [&ctx, hopts](lw::tcp::socket s) { return lw::serve_http_connection(std::move(s), ctx, hopts); },
                           false),
                       lw::log_session_end);
  }

  // Signals: SIGINT/SIGTERM drain (a second one forces), SIGHUP reopens the log.
  lw::asio::steady_timer drain_timer(control);
  bool stopping = false;
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                             int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      if (std::string why; lw::log::reopen(&why)) {
        lw::log::info("SIGHUP: log reopened");
      } else {
        lw::log::error("SIGHUP: ", why);
      }
      signals.async_wait(on_signal);
      return;
    }
    if (stopping) {
      lw::log::info("second signal: stopping running requests now");
      ctx.force_stop();
      signals.async_wait(on_signal);
      return;
    }
    stopping = true;
    lw::log::info("signal ", sig, ": draining (", f.drain_timeout_s, " s for running requests)");
    boost::system::error_code ignore;
    acceptor.close(ignore);
    http_acceptor.close(ignore);
    ctx.begin_drain();
    drain_timer.expires_after(f.server.drain_timeout);
    drain_timer.async_wait([&](const boost::system::error_code& e) {
      if (!e && ctx.open_sessions() > 0) {
        lw::log::warn("drain timeout: stopping ", ctx.open_sessions(), " sessions");
        ctx.force_stop();
      }
    });
    signals.async_wait(on_signal);
    lw::asio::co_spawn(control, wait_for_sessions(ctx, drain_timer, signals, io), lw::log_session_end);
  };
  signals.async_wait(on_signal);

  std::vector<std::thread> io_threads;
  try {
    for (int i = 1; i < f.io_threads; ++i) io_threads.emplace_back([&io] { io.run(); });
  } catch (const std::system_error& e) {
    io.stop();
    for (auto& t : io_threads) t.join();
    std::cerr << "llamawire-server: cannot start " << f.io_threads << " network threads: " << e.what() << "\n";
    return 1;
  }
  io.run();
  for (auto& t : io_threads) t.join();
  // From here on a late SIGTERM/SIGINT must not kill the exit path: stop catching them and
  // ignore them (dropping the signal_set would restore the default action).
  boost::system::error_code sig_ec;
  signals.clear(sig_ec);
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGINT, SIG_IGN);
  scheduler.stop();
  lw::log::info("stopped");
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-server: fatal: " << e.what() << "\n";
  return 1;
}
