// Continuous batching: sessions submit steps (a prompt to prefill or one token to decode);
// the scheduler thread gathers the pending steps of all sessions into one batched forward
// (the policy, plan_batch in batch_plan.hpp: decodes first, then bounded prefill chunks,
// and no step passed over more than a few batches), runs it on the compute threads, and
// resumes each session on its own executor with its logits. Sessions join and leave
// between batches. The network threads never compute; the compute threads never touch a
// socket.
#pragma once

#include "common/vocab.hpp"

#include "common/asio.hpp"
#include "common/error.hpp"
#include "common/sampler.hpp"
#include "server/engine/batch_plan.hpp"
#include "server/model/forward.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/parallel.hpp"
#include "server/model/weight_store.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace llamawire {

class Scheduler {
 public:
  struct Options {
    int threads = 1;            // compute threads (the scheduler thread is one of them)
    int max_batch_tokens = 256; // rows per batched forward
    int max_batch_sessions = 128;  // distinct steps per batch (logits rows)
    int prefill_chunk = 64;     // most prompt rows one session gets per batch when others wait
    // After a batch, how long to wait for the sessions that said they would be back (they
    // sample and resubmit) so that they share the next pass over the weights.
    std::chrono::microseconds gather_window{3000};
  };

  struct Stats {
    std::uint64_t batches = 0;
    std::uint64_t rows = 0;            // token positions computed
    std::uint64_t decode_rows = 0;
    std::uint64_t prefill_rows = 0;
    std::uint64_t steps_completed = 0;
    int max_rows_in_batch = 0;
    int max_steps_in_batch = 0;
    // batch size histogram: steps (sessions) per batch, buckets 1, 2, 3-4, 5-8, ..., 65-128, >128
    std::array<std::uint64_t, 9> steps_histogram{};
    double busy_seconds = 0;
  };
  static int histogram_bucket(int steps);
  static std::string histogram_label(int bucket);

  Scheduler(std::shared_ptr<const WeightStore> weights, Options opts);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // A generation the scheduler carries on by itself. After each step it feeds the token it
  // drew straight back in as the next step (no round trip through the session, so the
  // session never makes the next batch wait), as long as: the token is not BOS (nor EOS
  // with stop_on_eos), the next position is below limit_pos, `hold` is clear and the KV
  // cache takes one more position. Each token it carries on past goes to `deliver`; the
  // step completes with the last token in *token.
  struct Continuation {
    int limit_pos = 0;
    bool stop_on_eos = false;
    SpecialTokens stops;  // BOS always stops; EOS / end of turn with stop_on_eos
    const std::atomic<bool>* hold = nullptr;  // set by the session: stop at the next token
    // Must not block: it dispatches to the session. Called in order, before the step
    // completes, on the scheduler thread or in the set_handoff() handler.
    std::function<void(int token)> deliver;
  };

  // Where a step's result goes: the last position's logits copied into `*logits`, or the
  // token `sampler` draws from them (on the compute threads, in parallel across the batch,
  // with no copy) in `*token`, optionally carried on by `carry` (which must outlive the
  // step), or the sum of the hidden states (HiddenOut).
  struct LogitsOut {
    std::vector<float>* logits;
  };
  struct TokenOut {
    Sampler* sampler;
    int* token;
    const Continuation* carry = nullptr;
  };
  // Every position's final hidden state (after the final norm) added into `*sum` (dim
  // floats, zeroed by the caller); no logits.
  struct HiddenOut {
    std::vector<float>* sum;
  };
  using Output = std::variant<LogitsOut, TokenOut, HiddenOut>;

  // Runs `tokens` at positions [start_pos, start_pos + n) of `kv` (reserved by the caller)
  // and delivers the last position's result to `out`. Completes on the handler's executor
  // with an error_code (shutting_down when the scheduler stops). `kv`, `tokens` and what
  // `out` points to must stay alive until completion. `expect_more`: the session will most
  // likely submit its next step right after this one (a generation that goes on).
  template <class CompletionToken>
  auto async_step(KvCache& kv, std::span<const int> tokens, int start_pos, Output out, bool expect_more,
                  CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [this, &kv, tokens, start_pos, out, expect_more](auto handler) {
          // Resume on the handler's own executor (the session's strand), never on ours.
          auto ex = asio::get_associated_executor(handler);
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          submit(kv, tokens, start_pos, out, expect_more, [ex, h](boost::system::error_code ec) {
            asio::dispatch(ex, [h, ec]() mutable { std::move(*h)(ec); });
          });
        },
        token);
  }
  template <class CompletionToken>
  auto async_step(KvCache& kv, std::span<const int> tokens, int start_pos, std::vector<float>& logits,
                  bool expect_more, CompletionToken&& token) {
    return async_step(kv, tokens, start_pos, Output{LogitsOut{&logits}}, expect_more,
                      std::forward<CompletionToken>(token));
  }

  // Where a batch's results go out: the tokens handed over and the steps completed by one
  // batch run in order in one handler posted here (a strand, so batches stay in order),
  // which resumes each session inline where its strand is free. One wake-up of a network
  // thread per batch instead of one per session: on a machine with no spare core every
  // wake-up preempts a compute thread and stalls the other at the next barrier. Unset,
  // each result is posted to its session by itself. Set it before the first step, and
  // unset it after stop() and before its io_context goes.
  void set_handoff(std::optional<asio::any_io_executor> ex) { handoff_ = std::move(ex); }

  // Stops the thread; pending steps complete with shutting_down.
  void stop();
  Stats stats() const;
  int queued() const;
  const WeightStore& weights() const { return *weights_; }
  int threads() const { return opts_.threads; }

 private:
  struct PendingStep {
    KvCache* kv;
    std::span<const int> tokens;
    int start_pos;
    int done = 0;  // rows already computed
    Output out;
    bool expect_more;
    std::function<void(boost::system::error_code)> complete;  // posts to the session
    int carried_token = 0;  // the input of a step the scheduler carried on (tokens points here)
    int waited = 0;         // batches run since it last got rows
  };
  // A step's logits row, for its sampler.
  struct Draw {
    PendingStep* job;
    std::span<float> logits;
  };

  void submit(KvCache& kv, std::span<const int> tokens, int start_pos, Output out, bool expect_more,
              std::function<void(boost::system::error_code)> complete);
  // The executor: waits for steps and moves them to `active` (false: stopping), plans a
  // batch with plan_batch (the policy), runs it, samples and carries on.
  void loop();
  bool gather(std::vector<std::unique_ptr<PendingStep>>& active, std::vector<const KvCache*>& expected);
  std::vector<PlannedSlice> plan(const std::vector<std::unique_ptr<PendingStep>>& active) const;
  void draw(std::vector<Draw>& draws, std::vector<std::function<void()>>& results);
  static void complete(std::unique_ptr<PendingStep> job, boost::system::error_code ec);
  // Runs a batch's results in order: in one handler on handoff_, or here.
  void hand_off(std::vector<std::function<void()>>& results);

  std::shared_ptr<const WeightStore> weights_;
  Options opts_;
  std::optional<asio::any_io_executor> handoff_;
  ThreadParallel parallel_;
  ForwardPass forward_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<PendingStep>> incoming_;
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace llamawire
