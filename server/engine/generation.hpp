// A request's life on the server, one object for both protocols. A Generation takes the KV
// memory all its request may grow to (Admission: waiting in line if it must), runs the
// prompt through the scheduler, and then (GENERATE) draws tokens until one of its stop rules
// ends it, the scheduler carrying it on by itself from token to token. It reports what
// happens as events, read in order with next(): the binary session and the HTTP connection
// only translate those events to their wire.
//
// The stop rules, in the order they are asked after each drawn token:
//   1. BOS ends it (reason bos), EOS or the end of turn with stop_on_eos (eos); neither is
//      emitted;
//   2. the token is emitted; then a grammar that is complete ends it (grammar), cancel()
//      (the reason given), a forced shutdown (shutdown);
//   3. the position reached limit_pos: steps, or context when the limit is the context's.
// The last token emitted is never run: the sequence ends at the position before it.
#pragma once

#include "common/asio.hpp"
#include "common/grammar.hpp"
#include "common/sampler.hpp"
#include "common/vocab.hpp"
#include "server/engine/admission.hpp"
#include "server/engine/scheduler.hpp"
#include "server/engine/strand_signal.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/prefix_cache.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <variant>
#include <vector>

namespace llamawire {

// Positions and their KV cache: what a binary session keeps from request to request, what
// an HTTP generation has for its one request.
struct Sequence {
  Sequence(const ModelConfig& config, int capacity, KvBudget* budget) : kv(config, capacity, budget) {}

  KvCache kv;
  std::vector<int> tokens;  // the token at each position [0, position())
  int cached = 0;           // of those, positions [0, cached) are in kv (fewer after an eviction)

  int position() const { return static_cast<int>(tokens.size()); }
  // Forgets positions [p, position()) (and, when position p falls inside a shared prefix
  // block, the cache of that block's first positions, which are recomputed when needed).
  void rewind(int p);
  // Drops the cache, keeps the tokens: what is lost is recomputed at the next request
  // (the forward pass is batch-invariant, so bit for bit the same).
  void evict();
};

// What every generation shares.
struct GenerationEnv {
  Scheduler& scheduler;
  Admission& admission;
  const SpecialTokens& stops;
  const std::atomic<bool>& forced;  // a forced shutdown: stop at the next token
  int vocab_size;
  PrefixCache* prefix = nullptr;  // shared prefix blocks (nullptr: --prefix-cache off)
};

class Generation {
 public:
  enum class Reason { steps, context, bos, eos, cancelled, shutdown, closed /* the peer is gone */,
                      grammar /* the output is complete in its grammar */ };

  struct Params {
    std::vector<int> prompt;  // run at positions [start, start + size)
    int start = 0;
    // GENERATE: tokens drawn with these; FORWARD (none): the last position's logits only.
    std::optional<SamplingParams> sampling;
    // With no sampling: an embedding instead of logits. The Logits event then carries the
    // mean of the final hidden states (after the final norm) over every position of a new
    // sequence, L2-normalized. The prefix cache is not attached: every position is computed.
    bool embed = false;
    // GENERATE: the output's language (nullptr: free).
    std::shared_ptr<grammar::CompiledGrammar> grammar;
    // GENERATE: each token's log-probability and this many alternatives (-1: none).
    int logprobs = -1;
    int limit_pos = 0;  // GENERATE: the last position run is limit_pos - 1
    bool limit_is_context = false;  // reaching limit_pos ends with context, not steps
    bool stop_on_eos = false;
    std::uint64_t holder = 0;  // the session's idle-holder id in Admission (0: none)
    std::uint32_t tenant = 0;  // whose prefix-cache chains it may attach and extend (the API key)
    // Events produced and not yet read before the generation pauses (the scheduler stops
    // carrying it on) until the reader catches up.
    std::size_t max_unread = 64;
    // When the request arrived: the first token's latency counts from here (unset: start()).
    std::chrono::steady_clock::time_point received{};
  };

  struct Token {
    int id;
    double seconds;  // since the previous token, or since start() for the first
    bool first;
    // With Params::logprobs. (A pointer: g++ 12 warns of an uninitialized vector when an
    // optional one sits in the coroutine's event variant.)
    std::shared_ptr<const TokenLogprobs> logprobs;
  };
  struct Logits {  // FORWARD's result (or the embedding); values valid until the next next()
    int position;
    std::span<const float> values;
  };
  struct End {
    Reason reason = Reason::steps;
    int prompt_tokens = 0;  // run by this request (0 when it stopped before running any)
    // Of the positions up to the prompt's end that the cache did not hold: those attached
    // from the prefix cache, and those computed (the rest of the prompt, and history the
    // cache had lost).
    int prompt_cached = 0;
    int prompt_computed = 0;
    int generated = 0;
    int position = 0;       // the sequence's position afterwards
    int last_token = 0;     // the last token drawn (a stop token included)
  };
  struct Failure {
    enum class Kind { never_fits, timed_out, no_memory, shutting_down } kind;
    int need = 0;  // positions the request may grow to (never_fits, timed_out)
  };
  using Event = std::variant<Token, Logits, End, Failure>;

  // `seq` must outlive the generation; nothing else may change it until the last event.
  Generation(GenerationEnv env, Sequence& seq, Params params);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Starts it on the caller's executor (a strand; next() and cancel() are called there).
  // The caller then reads events until End or Failure, the last one, before it destroys
  // the generation.
  void start(asio::any_io_executor ex);
  asio::awaitable<Event> next();
  // Ends it at its next token (or its wait for memory); the first reason given counts.
  void cancel(Reason why);
  bool finished() const { return finished_; }
  // Events produced and not yet read: next() returns at once (a reader may batch its writes).
  bool has_unread() const { return !unread_.empty(); }

 private:
  asio::awaitable<Event> run();
  asio::awaitable<std::optional<Event>> admit();
  // Attaches what the prefix cache holds of the sequence this request runs.
  void attach_prefix();
  // Offers the sequence's full blocks to the prefix cache.
  void publish_prefix();
  asio::awaitable<Event> run_forward();
  asio::awaitable<Event> run_generate();
  // Runs `tokens` at `start` (recomputing first what the cache lost of the tokens before
  // it); none when it ran, else the failure.
  asio::awaitable<std::optional<Failure>> step(std::span<const int> tokens, int start, bool more);
  // A GENERATE step that the scheduler may carry on: afterwards the sequence holds what it
  // carried on past, up to where the generation stopped.
  asio::awaitable<std::optional<Failure>> advance(std::span<const int> tokens, int from);
  // A drawn token out to the reader; false when the generation ends after it (end_.reason
  // set).
  bool emit(int token);
  void push(Event e);

  GenerationEnv env_;
  Sequence& seq_;
  Params p_;
  std::optional<Sampler> sampler_;
  std::vector<float> logits_;  // FORWARD's logits, or (embed) the hidden states' sum
  std::vector<int> input_;  // the positions a step runs (they stay alive while it runs)
  int held_before_ = 0;     // positions the sequence held when the request began
  bool ran_prompt_ = false;
  int sampled_ = 0;
  End end_;
  std::optional<Reason> cancel_;
  bool admitting_ = false;
  bool finished_ = false;   // the last event has been pushed
  std::atomic<bool> hold_{false};  // the scheduler stops carrying it on at its next token
  std::chrono::steady_clock::time_point last_token_at_{};

  // The step under way: what the scheduler carries on past arrives in order, before the
  // step completes; once one of them ends the generation, the rest are dropped.
  int base_ = 0;                     // positions cached when the step's own input is done
  std::vector<int> carried_;         // tokens carried on past: the inputs at base_, base_ + 1, ...
  std::optional<int> halt_;          // positions kept when it stopped mid-step
  Scheduler::Continuation carry_;

  std::optional<asio::any_io_executor> ex_;
  std::deque<Event> unread_;
  std::optional<StrandSignal> produced_;
  std::optional<StrandSignal> read_;
};

}  // namespace llamawire
