#include "server/net/server_context.hpp"

#include "common/auth.hpp"

#include <sstream>

namespace llamawire {

ServerContext::ServerContext(std::shared_ptr<const WeightStore> weights, std::shared_ptr<const Tokenizer> tokenizer,
                             Scheduler& scheduler, ServerOptions opts, std::uint64_t kv_budget_bytes)
    : weights_(std::move(weights)),
      tokenizer_(std::move(tokenizer)),
      scheduler_(scheduler),
      opts_(std::move(opts)),
      context_(opts_.context_positions > 0 ? std::min(opts_.context_positions, weights_->config().seq_len)
                                           : weights_->config().seq_len),
      kv_budget_(kv_budget_bytes),
      frame_budget_(opts_.frame_memory_bytes),
      prefix_cache_(opts_.prefix_cache ? std::make_unique<PrefixCache>(weights_->config(), opts_.model_name,
                                                                       opts_.prefix_cache_bytes, &kv_budget_)
                                       : nullptr),
      admission_(opts_.max_sessions, kv_budget_, opts_.queue_timeout, prefix_cache_.get()) {}

std::shared_ptr<grammar::CompiledGrammar> ServerContext::grammar_for(const std::string& gbnf) {
  std::lock_guard lock(grammar_mutex_);
  for (auto it = grammars_.begin(); it != grammars_.end(); ++it) {
    if (it->first == gbnf) {
      grammars_.splice(grammars_.begin(), grammars_, it);
      return it->second;
    }
  }
  auto rules = grammar::parse(gbnf);
  if (!rules) return nullptr;
  if (!trie_) trie_ = std::make_shared<const grammar::TokenTrie>(*tokenizer_);
  auto g = std::make_shared<grammar::CompiledGrammar>(std::move(*rules), trie_);
  grammars_.emplace_front(gbnf, g);
  if (grammars_.size() > 64) grammars_.pop_back();
  return g;
}

std::optional<std::uint32_t> ServerContext::tenant_of(std::string_view key) const {
  if (opts_.api_keys.empty()) return 0u;
  std::optional<std::uint32_t> tenant;
  // Every key is compared, whichever matches, so the time does not tell which one did.
  for (std::size_t i = 0; i < opts_.api_keys.size(); ++i) {
    if (constant_time_equal(opts_.api_keys[i], key) && !tenant) tenant = static_cast<std::uint32_t>(i + 1);
  }
  return tenant;
}

std::uint64_t ServerContext::register_session(asio::any_io_executor strand, StopFn on_stop, StopFn close_idle) {
  std::lock_guard lock(mutex_);
  const auto id = next_id_++;
  sessions_.emplace(id, Entry{std::move(strand), std::move(on_stop), std::move(close_idle)});
  return id;
}

void ServerContext::set_idle(std::uint64_t id, bool idle) {
  std::lock_guard lock(mutex_);
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  it->second.idle = idle && it->second.close_idle != nullptr;
  if (idle) it->second.idle_since = std::chrono::steady_clock::now();
}

bool ServerContext::close_an_idle_connection() {
  std::lock_guard lock(mutex_);
  auto victim = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second.idle && (victim == sessions_.end() || it->second.idle_since < victim->second.idle_since)) victim = it;
  }
  if (victim == sessions_.end()) return false;
  victim->second.idle = false;
  // On its strand, where it also unregisters: registered there means alive.
  asio::post(victim->second.strand, [this, sid = victim->first, fn = victim->second.close_idle] {
    if (is_registered(sid)) fn();
  });
  return true;
}

void ServerContext::unregister_session(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
}

bool ServerContext::is_registered(std::uint64_t id) const {
  std::lock_guard lock(mutex_);
  return sessions_.count(id) != 0;
}

int ServerContext::open_sessions() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(sessions_.size());
}

void ServerContext::notify_all() {
  std::lock_guard lock(mutex_);
  for (auto& [id, e] : sessions_) {
    // Runs on the session's strand; the registry check there guarantees the session is
    // alive (it unregisters on that same strand before it is destroyed).
    asio::post(e.strand, [this, sid = id, fn = e.on_stop] {
      if (is_registered(sid)) fn();
    });
  }
}

void ServerContext::begin_drain() {
  draining_ = true;
  notify_all();
  admission_.interrupt();  // waiters ask their stop conditions again
}

void ServerContext::force_stop() {
  draining_ = true;
  forced_ = true;
  notify_all();
  admission_.interrupt();
}

std::uint64_t ServerContext::kv_warm_bytes() const {
  return KvBlockPool::for_block_bytes(KvCache::block_bytes_for(weights_->config())).warm_bytes();
}

std::string ServerContext::stats_json() const {
  const auto s = scheduler_.stats();
  std::ostringstream os;
  os << "{\"connections_open\":" << counters_.connections_open.load()
     << ",\"connections_total\":" << counters_.connections_total.load()
     << ",\"connections_refused\":" << counters_.connections_refused.load()
     << ",\"sessions_active\":" << counters_.sessions_active.load()
     << ",\"generating\":" << counters_.generating.load()
     << ",\"requests_total\":" << counters_.requests_total.load()
     << ",\"prompt_tokens_total\":" << counters_.prompt_tokens_total.load()
     << ",\"generated_tokens_total\":" << counters_.generated_tokens_total.load()
     << ",\"protocol_errors_total\":" << counters_.protocol_errors_total.load()
     << ",\"sessions_in_use\":" << admission_.slots_in_use() << ",\"sessions_peak\":" << admission_.slots_peak()
     << ",\"kv_waits\":" << admission_.waits() << ",\"kv_refusals\":" << admission_.refusals()
     << ",\"kv_evictions\":" << admission_.evictions()
     << ",\"kv_bytes_used\":" << kv_budget_.used() << ",\"kv_bytes_peak\":" << kv_budget_.peak()
     << ",\"frame_bytes_buffered\":" << frame_budget_.used() << ",\"frame_refusals\":" << counters_.frame_refusals.load()
     << ",\"kv_bytes_budget\":" << kv_budget_.limit() << ",\"kv_bytes_warm\":" << kv_warm_bytes()
     << ",\"prompt_tokens_computed_total\":" << counters_.prompt_tokens_computed_total.load()
     << ",\"prompt_tokens_cached_total\":" << counters_.prompt_tokens_cached_total.load();
  const PrefixCache::Stats pc = prefix_cache_ ? prefix_cache_->stats() : PrefixCache::Stats{};
  os << ",\"prefix_cache_enabled\":" << (prefix_cache_ ? 1 : 0) << ",\"prefix_cache_blocks\":" << pc.blocks
     << ",\"prefix_cache_bytes\":" << pc.bytes << ",\"prefix_cache_unreferenced_bytes\":" << pc.unreferenced_bytes
     << ",\"prefix_cache_lookups\":" << pc.lookups << ",\"prefix_cache_hits\":" << pc.hits
     << ",\"prefix_cache_blocks_attached\":" << pc.blocks_attached
     << ",\"prefix_cache_blocks_published\":" << pc.blocks_published
     << ",\"prefix_cache_blocks_deduplicated\":" << pc.blocks_deduplicated
     << ",\"prefix_cache_evictions\":" << pc.evictions << ",\"prefix_cache_collisions\":" << pc.collisions
     << ",\"batches\":" << s.batches << ",\"batch_rows\":" << s.rows << ",\"decode_rows\":" << s.decode_rows
     << ",\"prefill_rows\":" << s.prefill_rows << ",\"max_rows_in_batch\":" << s.max_rows_in_batch
     << ",\"max_steps_in_batch\":" << s.max_steps_in_batch << ",\"mean_steps_per_batch\":"
     << (s.batches ? static_cast<double>(s.steps_completed) / static_cast<double>(s.batches) : 0.0)
     << ",\"steps_per_batch_histogram\":{";
  for (std::size_t i = 0; i < s.steps_histogram.size(); ++i) {
    os << (i ? "," : "") << "\"" << Scheduler::histogram_label(static_cast<int>(i)) << "\":" << s.steps_histogram[i];
  }
  os << "},\"compute_busy_seconds\":" << s.busy_seconds << "}";
  return os.str();
}

}  // namespace llamawire

namespace llamawire {

std::string ServerContext::metrics_text() const {
  const auto s = scheduler_.stats();
  const auto& c = counters_;
  std::ostringstream os;
  auto metric = [&](const char* name, const char* type, const char* help) {
    os << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("llamawire_requests_total", "counter", "Generation and forward requests by protocol.");
  os << "llamawire_requests_total{protocol=\"binary\"} " << c.requests_total.load() << "\n";
  os << "llamawire_requests_total{protocol=\"http\"} " << c.http_requests_total.load() << "\n";
  metric("llamawire_request_errors_total", "counter", "Requests answered with an error, by protocol.");
  os << "llamawire_request_errors_total{protocol=\"binary\"} " << c.protocol_errors_total.load() << "\n";
  os << "llamawire_request_errors_total{protocol=\"http\"} " << c.http_errors_total.load() << "\n";
  metric("llamawire_tokens_total", "counter", "Tokens processed, by protocol and kind.");
  os << "llamawire_tokens_total{protocol=\"binary\",kind=\"prompt\"} " << c.prompt_tokens_total.load() << "\n";
  os << "llamawire_tokens_total{protocol=\"binary\",kind=\"generated\"} " << c.generated_tokens_total.load() << "\n";
  os << "llamawire_tokens_total{protocol=\"http\",kind=\"prompt\"} " << c.http_prompt_tokens_total.load() << "\n";
  os << "llamawire_tokens_total{protocol=\"http\",kind=\"generated\"} " << c.http_generated_tokens_total.load()
     << "\n";
  metric("llamawire_active_sessions", "gauge", "Sessions past the handshake (binary) and HTTP requests in flight.");
  os << "llamawire_active_sessions{protocol=\"binary\"} " << c.sessions_active.load() << "\n";
  os << "llamawire_active_sessions{protocol=\"http\"} " << c.http_active.load() << "\n";
  metric("llamawire_open_connections", "gauge", "Open connections, both protocols.");
  os << "llamawire_open_connections " << c.connections_open.load() << "\n";
  metric("llamawire_batch_size", "histogram", "Steps (sessions) served by one batched forward pass.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < s.steps_histogram.size(); ++i) {
    cumulative += s.steps_histogram[i];
    os << "llamawire_batch_size_bucket{le=\"" << Scheduler::histogram_label(static_cast<int>(i)) << "\"} "
       << cumulative << "\n";
  }
  os << "llamawire_batch_size_sum " << s.steps_completed << "\nllamawire_batch_size_count " << s.batches << "\n";
  metric("llamawire_batch_rows_total", "counter", "Token positions computed in batched forward passes.");
  os << "llamawire_batch_rows_total " << s.rows << "\n";
  metric("llamawire_time_to_first_token_seconds", "histogram", "From request to first generated token.");
  c.ttft_seconds.write(os, "llamawire_time_to_first_token_seconds");
  metric("llamawire_inter_token_latency_seconds", "histogram", "Between consecutive generated tokens.");
  c.itl_seconds.write(os, "llamawire_inter_token_latency_seconds");
  metric("llamawire_kv_bytes_used", "gauge", "KV cache memory held by all sessions and the prefix cache.");
  os << "llamawire_kv_bytes_used " << kv_budget_.used() << "\n";
  metric("llamawire_kv_bytes_budget", "gauge", "KV cache memory budget (0: unlimited).");
  os << "llamawire_kv_bytes_budget " << kv_budget_.limit() << "\n";
  metric("llamawire_kv_bytes_warm", "gauge", "Free KV cache memory kept resident for new sessions (--kv-warm-mb).");
  os << "llamawire_kv_bytes_warm " << kv_warm_bytes() << "\n";
  metric("llamawire_prompt_tokens_computed_total", "counter",
         "Prompt positions computed, both protocols (history recomputed after an eviction included).");
  os << "llamawire_prompt_tokens_computed_total " << c.prompt_tokens_computed_total.load() << "\n";
  metric("llamawire_prompt_tokens_cached_total", "counter",
         "Prompt positions attached from the prefix cache instead of computed, both protocols.");
  os << "llamawire_prompt_tokens_cached_total " << c.prompt_tokens_cached_total.load() << "\n";
  const PrefixCache::Stats pc = prefix_cache_ ? prefix_cache_->stats() : PrefixCache::Stats{};
  metric("llamawire_prefix_cache_blocks", "gauge", "KV blocks held by the prefix cache (16 positions each).");
  os << "llamawire_prefix_cache_blocks " << pc.blocks << "\n";
  metric("llamawire_prefix_cache_bytes", "gauge", "Memory of the prefix cache's blocks, by whether a session holds them.");
  os << "llamawire_prefix_cache_bytes{state=\"referenced\"} " << pc.bytes - pc.unreferenced_bytes << "\n";
  os << "llamawire_prefix_cache_bytes{state=\"unreferenced\"} " << pc.unreferenced_bytes << "\n";
  metric("llamawire_prefix_cache_lookups_total", "counter", "Prompts looked up in the prefix cache.");
  os << "llamawire_prefix_cache_lookups_total " << pc.lookups << "\n";
  metric("llamawire_prefix_cache_hits_total", "counter", "Lookups that attached at least one cached block.");
  os << "llamawire_prefix_cache_hits_total " << pc.hits << "\n";
  metric("llamawire_prefix_cache_blocks_attached_total", "counter", "Cached blocks attached to sessions.");
  os << "llamawire_prefix_cache_blocks_attached_total " << pc.blocks_attached << "\n";
  metric("llamawire_prefix_cache_blocks_published_total", "counter", "Computed blocks that became cache entries.");
  os << "llamawire_prefix_cache_blocks_published_total " << pc.blocks_published << "\n";
  metric("llamawire_prefix_cache_evictions_total", "counter", "Unreferenced cache blocks evicted.");
  os << "llamawire_prefix_cache_evictions_total " << pc.evictions << "\n";
  metric("llamawire_frame_bytes_buffered", "gauge", "Memory held for frames still arriving, all connections.");
  os << "llamawire_frame_bytes_buffered " << frame_budget_.used() << "\n";
  metric("llamawire_compute_busy_seconds_total", "counter", "Time the compute threads spent in forward passes.");
  os << "llamawire_compute_busy_seconds_total " << s.busy_seconds << "\n";
  return os.str();
}

}  // namespace llamawire
