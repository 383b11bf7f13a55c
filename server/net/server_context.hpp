// What every session shares: read-only model and tokenizer, the scheduler, limits and
// timeouts, the KV budget, counters, and the registry used to stop sessions at shutdown.
#pragma once

#include "common/asio.hpp"

#include <boost/asio/ssl/context.hpp>
#include "common/chat_template.hpp"
#include "common/grammar.hpp"
#include "common/tokenizer.hpp"
#include "server/engine/admission.hpp"
#include "server/engine/generation.hpp"
#include "server/engine/scheduler.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/weight_store.hpp"
#include "server/net/metrics.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

namespace llamawire {

struct ServerOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  int max_sessions = 64;
  int max_connections = 1024;
  std::uint32_t max_frame_bytes = 1u << 20;
  std::uint64_t frame_memory_bytes = 64u << 20;  // all connections' frames still arriving
  int context_positions = 0;  // positions per session (--ctx); 0 = seq_len
  std::chrono::milliseconds idle_timeout{300'000};
  std::chrono::milliseconds handshake_timeout{10'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::chrono::milliseconds drain_timeout{30'000};
  std::chrono::milliseconds queue_timeout{10'000};  // wait for a session slot or KV memory before busy
  std::chrono::milliseconds request_timeout{30'000};  // an HTTP request's headers and body, once begun
  std::size_t max_outbox_bytes = 4u << 20;  // queued replies before a generation pauses
  // Keys a client may present (none: no key is required). Each key is a tenant: the
  // prefix cache keeps each tenant's blocks apart.
  std::vector<std::string> api_keys;
  std::string model_name;
  bool prefix_cache = true;                              // --prefix-cache on|off
  std::uint64_t prefix_cache_bytes = 512ull << 20;       // --prefix-cache-mb: unreferenced blocks at most
  ChatFormat chat_format = kDefaultChatFormat;  // the CLI's chat and /v1/chat/completions
};

struct ServerCounters {
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<int> connections_open{0};
  std::atomic<int> sessions_active{0};  // past HELLO
  std::atomic<int> generating{0};
  std::atomic<std::uint64_t> requests_total{0};
  std::atomic<std::uint64_t> prompt_tokens_total{0};
  std::atomic<std::uint64_t> generated_tokens_total{0};
  // Both protocols: prompt positions computed (history lost to an eviction included) and
  // attached from the prefix cache instead.
  std::atomic<std::uint64_t> prompt_tokens_computed_total{0};
  std::atomic<std::uint64_t> prompt_tokens_cached_total{0};
  std::atomic<std::uint64_t> protocol_errors_total{0};
  std::atomic<std::uint64_t> frame_refusals{0};  // frames skipped at the --frame-memory-mb limit
  // The HTTP API's own counts (the ones above are the binary protocol's).
  std::atomic<std::uint64_t> http_requests_total{0};
  std::atomic<std::uint64_t> http_errors_total{0};
  std::atomic<std::uint64_t> http_prompt_tokens_total{0};
  std::atomic<std::uint64_t> http_generated_tokens_total{0};
  std::atomic<int> http_active{0};
  // Latencies of generations on both protocols, in seconds.
  Histogram ttft_seconds{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  Histogram itl_seconds{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
};

class ServerContext {
 public:
  ServerContext(std::shared_ptr<const WeightStore> weights, std::shared_ptr<const Tokenizer> tokenizer,
                Scheduler& scheduler, ServerOptions opts, std::uint64_t kv_budget_bytes);

  const WeightStore& weights() const { return *weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ChatTemplate chat_template() const { return ChatTemplate(opts_.chat_format); }
  // BOS, EOS and the template's end of turn: what ends a generation.
  const SpecialTokens& special_tokens() const { return tokenizer_->special(); }
  Scheduler& scheduler() { return scheduler_; }
  const ServerOptions& options() const { return opts_; }
  KvBudget& kv_budget() { return kv_budget_; }
  // Session slots and KV memory for both protocols (see Admission).
  Admission& admission() { return admission_; }
  // What both protocols' generations run on.
  GenerationEnv generation_env() {
    return GenerationEnv{scheduler_, admission_, tokenizer_->special(), forced_, weights_->config().vocab_size,
                         prefix_cache_.get()};
  }
  // The prefix cache, or nullptr with --prefix-cache off.
  PrefixCache* prefix_cache() { return prefix_cache_.get(); }
  // The tenant a presented key belongs to: 0 when the server requires no key, else 1 + the
  // key's index; nullopt when the key is not one of them. Keys are compared in constant time.
  std::optional<std::uint32_t> tenant_of(std::string_view key) const;
  bool requires_key() const { return !opts_.api_keys.empty(); }
  // The compiled grammar for GBNF text that grammar::parse accepts, shared by the requests
  // with the same text (its state masks are computed once for all of them); the last 64
  // texts are kept. The vocabulary's trie is built at the first grammar.
  std::shared_ptr<grammar::CompiledGrammar> grammar_for(const std::string& gbnf);
  // A finished request's prompt accounting, into the counters.
  void count_prompt(const Generation::End& end) {
    counters_.prompt_tokens_computed_total += static_cast<std::uint64_t>(end.prompt_computed);
    counters_.prompt_tokens_cached_total += static_cast<std::uint64_t>(end.prompt_cached);
  }
  // A generated token's latency, into the TTFT or inter-token histogram.
  void observe_latency(const Generation::Token& t) {
    (t.first ? counters_.ttft_seconds : counters_.itl_seconds).observe(t.seconds);
  }
  // Memory all connections hold for frames still arriving (--frame-memory-mb).
  ByteBudget& frame_budget() { return frame_budget_; }
  std::uint64_t kv_warm_bytes() const;  // free KV blocks kept resident
  ServerCounters& counters() { return counters_; }
  int context() const { return context_; }
  // The TLS context for both listeners, or nullptr for plain TCP.
  asio::ssl::context* tls() const { return tls_.get(); }
  void set_tls(std::shared_ptr<asio::ssl::context> tls) { tls_ = std::move(tls); }

  // Shutdown: `draining` stops new work; `force` ends what still runs.
  bool draining() const { return draining_.load(); }
  bool forced() const { return forced_.load(); }

  // Sessions register a callback run (on their strand) when the server drains or forces.
  using StopFn = std::function<void()>;
  // `close_idle`, when given, closes the connection if it is still idle (an HTTP
  // connection waiting for its next request); see set_idle() and close_an_idle_connection().
  std::uint64_t register_session(asio::any_io_executor strand, StopFn on_stop, StopFn close_idle = {});
  void unregister_session(std::uint64_t id);
  // Marks a connection as idle (no request under way) or not.
  void set_idle(std::uint64_t id, bool idle);
  // At the connection limit: closes the connection idle the longest (kept-alive HTTP
  // connections, or new ones yet to send a request), so that a new client is not refused
  // while a slot only sits idle. False when none is idle.
  bool close_an_idle_connection();
  bool is_registered(std::uint64_t id) const;
  int open_sessions() const;
  void begin_drain();
  void force_stop();

  // Runs f() on the preparation thread (request parsing and tokenization: work that grows
  // with the input and must not hold up a network thread) and resumes the caller on its own
  // executor with f's result.
  template <class F>
  asio::awaitable<std::invoke_result_t<F&>> off_network(F f) {
    using R = std::invoke_result_t<F&>;
    co_return co_await asio::co_spawn(
        prep_.get_executor(), [fn = std::move(f)]() mutable -> asio::awaitable<R> { co_return fn(); },
        asio::use_awaitable);
  }

  // JSON counters for STATS.
  std::string stats_json() const;
  // Prometheus text format for GET /metrics.
  std::string metrics_text() const;

 private:
  void notify_all();

  std::shared_ptr<const WeightStore> weights_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::shared_ptr<asio::ssl::context> tls_;
  Scheduler& scheduler_;
  ServerOptions opts_;
  int context_;  // positions per session
  KvBudget kv_budget_;
  ByteBudget frame_budget_;
  std::unique_ptr<PrefixCache> prefix_cache_;  // after the budget it charges, before admission
  Admission admission_;
  ServerCounters counters_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> forced_{false};
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  struct Entry {
    asio::any_io_executor strand;
    StopFn on_stop;
    StopFn close_idle;
    bool idle = false;
    std::chrono::steady_clock::time_point idle_since{};
  };
  std::map<std::uint64_t, Entry> sessions_;
  std::mutex grammar_mutex_;
  std::shared_ptr<const grammar::TokenTrie> trie_;
  std::list<std::pair<std::string, std::shared_ptr<grammar::CompiledGrammar>>> grammars_;  // most recent first
  asio::thread_pool prep_{1};  // last: joined first, before what its jobs may use
};

}  // namespace llamawire
