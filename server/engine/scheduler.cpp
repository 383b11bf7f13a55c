#include "server/engine/scheduler.hpp"

#include "common/log.hpp"
#include "common/tokenizer.hpp"

#include <algorithm>
#include <chrono>

namespace llamawire {

int Scheduler::histogram_bucket(int steps) {
  int b = 0;
  int upper = 1;
  while (steps > upper && b < 8) {
    upper *= 2;
    ++b;
  }
  return b;
}

std::string Scheduler::histogram_label(int bucket) {
  if (bucket >= 8) return "+Inf";
  return std::to_string(1 << bucket);
}

Scheduler::Scheduler(std::shared_ptr<const WeightStore> weights, Options opts)
    : weights_(std::move(weights)),
      opts_(opts),
      parallel_(std::max(1, opts.threads)),
      forward_(*weights_, std::max(1, opts.max_batch_tokens), std::max(1, opts.threads),
               std::max(1, std::min(opts.max_batch_sessions, opts.max_batch_tokens))),
      thread_([this] { loop(); }) {}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stop_) return;
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Scheduler::Stats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

int Scheduler::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(incoming_.size());
}

void Scheduler::submit(KvCache& kv, std::span<const int> tokens, int start_pos, Output out, bool expect_more,
                       std::function<void(boost::system::error_code)> complete_fn) {
  if (const auto* to = std::get_if<TokenOut>(&out)) {
    LW_ASSERT(to->sampler != nullptr && to->token != nullptr && (to->carry == nullptr || to->carry->hold != nullptr));
  } else if (const auto* lo = std::get_if<LogitsOut>(&out)) {
    LW_ASSERT(lo->logits != nullptr);
  } else {
    LW_ASSERT(std::get<HiddenOut>(out).sum != nullptr &&
              std::get<HiddenOut>(out).sum->size() == static_cast<std::size_t>(weights_->config().dim));
  }
  auto job = std::make_unique<PendingStep>(PendingStep{&kv, tokens, start_pos, 0, out, expect_more, std::move(complete_fn)});
  {
    std::lock_guard lock(mutex_);
    if (!stop_) {
      incoming_.push_back(std::move(job));
      wake_.notify_one();
      return;
    }
  }
  complete(std::move(job), make_error_code(errc::shutting_down));
}

void Scheduler::complete(std::unique_ptr<PendingStep> job, boost::system::error_code ec) {
  auto fn = std::move(job->complete);
  job.reset();
  fn(ec);
}

void Scheduler::hand_off(std::vector<std::function<void()>>& results) {
  if (results.empty()) return;
  if (handoff_) {
    asio::post(*handoff_, [batch = std::move(results)] {
      for (const auto& f : batch) f();
    });
  } else {
    for (const auto& f : results) f();
  }
  results.clear();
}

bool Scheduler::gather(std::vector<std::unique_ptr<PendingStep>>& active, std::vector<const KvCache*>& expected) {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [&] { return stop_ || !incoming_.empty() || !active.empty(); });
  if (stop_) return false;
  // Continuous batching works when the decoders of the last batch share the next one:
  // give them a moment to sample and resubmit (they run on the network threads).
  if (!expected.empty()) {
    auto all_back = [&] {
      for (const KvCache* kv : expected) {
        const bool back = std::any_of(incoming_.begin(), incoming_.end(), [&](const auto& j) { return j->kv == kv; });
        if (!back) return false;
      }
      return true;
    };
    wake_.wait_for(lock, opts_.gather_window, [&] { return stop_ || all_back(); });
    if (stop_) return false;
    expected.clear();
  }
  while (!incoming_.empty()) {
    active.push_back(std::move(incoming_.front()));
    incoming_.pop_front();
  }
  return true;
}

std::vector<PlannedSlice> Scheduler::plan(const std::vector<std::unique_ptr<PendingStep>>& active) const {
  std::vector<WaitingStep> waiting;
  waiting.reserve(active.size());
  for (const auto& j : active) waiting.push_back({static_cast<int>(j->tokens.size()) - j->done, j->waited});
  const BatchBudget budget{opts_.max_batch_tokens, std::min(opts_.max_batch_sessions, opts_.max_batch_tokens),
                           opts_.prefill_chunk, BatchBudget{}.max_wait};
  return plan_batch(waiting, budget);
}

void Scheduler::draw(std::vector<Draw>& draws, std::vector<std::function<void()>>& results) {
  // Server-side sampling right here, a row per task: each session's sampler is its own
  // and only this step of it is in flight.
  parallel_.for_each(static_cast<int>(draws.size()), [&](int i, int) {
    const Draw& d = draws[static_cast<std::size_t>(i)];
    const auto& to = std::get<TokenOut>(d.job->out);
    *to.token = to.sampler->sample(d.logits);
  });
  // Generations carried on here: the drawn token is the job's next step, so it stays in
  // the next batch with no wait. Its KV cache is ours until the job completes.
  for (const Draw& d : draws) {
    PendingStep& j = *d.job;
    const auto& to = std::get<TokenOut>(j.out);
    const Continuation* c = to.carry;
    if (c == nullptr) continue;
    const int t = *to.token;
    const int pos = j.start_pos + j.done;  // the next step's position
    if (c->stops.stop_for(t, c->stop_on_eos) != SpecialTokens::Stop::none || pos >= c->limit_pos || to.sampler->finished() ||
        c->hold->load(std::memory_order_acquire) || !j.kv->reserve(pos + 1)) {
      continue;
    }
    results.push_back([c, t] { c->deliver(t); });
    j.carried_token = t;
    j.tokens = std::span<const int>(&j.carried_token, 1);
    j.start_pos = pos;
    j.done = 0;
  }
}

void Scheduler::loop() {
  const int V = weights_->config().vocab_size;
  std::vector<std::unique_ptr<PendingStep>> active;  // in arrival order
  std::vector<BatchRow> rows;
  std::vector<const KvCache*> expected;  // sessions of the last batch that said they would be back
  std::vector<Draw> draws;
  std::vector<std::function<void()>> results;  // tokens handed over, steps completed
  std::vector<char> planned;
  while (gather(active, expected)) {
    const std::vector<PlannedSlice> slices = plan(active);
    rows.clear();
    planned.assign(active.size(), 0);
    int decode_rows = 0;
    for (const PlannedSlice& s : slices) {
      const PendingStep& j = *active[static_cast<std::size_t>(s.step)];
      planned[static_cast<std::size_t>(s.step)] = 1;
      if (static_cast<int>(j.tokens.size()) - j.done == 1) ++decode_rows;
      const auto* hidden = std::get_if<HiddenOut>(&j.out);
      for (int i = 0; i < s.rows; ++i) {
        rows.push_back(BatchRow{j.tokens[static_cast<std::size_t>(j.done + i)], j.start_pos + j.done + i, j.kv,
                                hidden == nullptr && s.last && i == s.rows - 1,
                                hidden != nullptr ? hidden->sum->data() : nullptr});
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto logits = forward_.run(rows, parallel_);

    int logit_index = 0;
    int hidden_steps = 0;
    draws.clear();
    for (const PlannedSlice& s : slices) {
      PendingStep& j = *active[static_cast<std::size_t>(s.step)];
      j.done += s.rows;
      if (!s.last) continue;
      if (std::holds_alternative<HiddenOut>(j.out)) {
        ++hidden_steps;
        continue;
      }
      const auto row = logits.subspan(static_cast<std::size_t>(logit_index++) * static_cast<std::size_t>(V),
                                      static_cast<std::size_t>(V));
      if (std::holds_alternative<TokenOut>(j.out)) {
        draws.push_back({&j, row});
      } else {
        std::get<LogitsOut>(j.out).logits->assign(row.begin(), row.end());
      }
    }
    draw(draws, results);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    {
      std::lock_guard lock(mutex_);
      ++stats_.batches;
      stats_.rows += rows.size();
      stats_.decode_rows += static_cast<std::uint64_t>(decode_rows);
      stats_.prefill_rows += rows.size() - static_cast<std::size_t>(decode_rows);
      stats_.max_rows_in_batch = std::max(stats_.max_rows_in_batch, static_cast<int>(rows.size()));
      stats_.max_steps_in_batch = std::max(stats_.max_steps_in_batch, static_cast<int>(slices.size()));
      ++stats_.steps_histogram[static_cast<std::size_t>(histogram_bucket(static_cast<int>(slices.size())))];
      stats_.steps_completed += static_cast<std::uint64_t>(logit_index + hidden_steps);
      stats_.busy_seconds += secs;
    }
    // Finished jobs resume their sessions; the rest stay for the next batch, counting the
    // batches they were passed over in (the plan's starvation guard).
    std::vector<std::unique_ptr<PendingStep>> still;
    for (std::size_t i = 0; i < active.size(); ++i) {
      auto& j = active[i];
      if (j->done == static_cast<int>(j->tokens.size())) {
        // A carried-on generation that stops here is not coming straight back.
        const auto* to = std::get_if<TokenOut>(&j->out);
        if (j->expect_more && (to == nullptr || to->carry == nullptr)) expected.push_back(j->kv);
        auto fn = std::move(j->complete);
        j.reset();
        results.push_back([fn = std::move(fn)] { fn({}); });
      } else {
        j->waited = planned[i] ? 0 : j->waited + 1;
        still.push_back(std::move(j));
      }
    }
    active = std::move(still);
    hand_off(results);
  }
  // Stopping: everything pending ends with shutting_down.
  std::lock_guard lock(mutex_);
  for (auto& j : active) complete(std::move(j), make_error_code(errc::shutting_down));
  for (auto& j : incoming_) complete(std::move(j), make_error_code(errc::shutting_down));
  incoming_.clear();
}

}  // namespace llamawire
