#include "server/engine/generation.hpp"

#include <cmath>

#include <algorithm>

namespace llamawire {

namespace {
using clock = std::chrono::steady_clock;
}  // namespace

void Sequence::rewind(int p) {
  tokens.resize(static_cast<std::size_t>(p));
  cached = std::min(cached, kv.release_from(p));
}

void Sequence::evict() {
  kv.release_from(0);
  cached = 0;
}

Generation::Generation(GenerationEnv env, Sequence& seq, Params params)
    : env_(env), seq_(seq), p_(std::move(params)) {
  if (p_.sampling) {
    sampler_.emplace(env_.vocab_size, *p_.sampling);
    if (p_.logprobs >= 0) sampler_->want_logprobs(p_.logprobs);
    if (p_.grammar) {
      // The end tokens may close a complete text where the generation stops at them.
      std::vector<int> ends;
      if (p_.stop_on_eos) {
        for (const int t : {env_.stops.eos, env_.stops.eot}) {
          if (t >= 0) ends.push_back(t);
        }
        ends.insert(ends.end(), env_.stops.also_end.begin(), env_.stops.also_end.end());
      }
      sampler_->set_grammar(p_.grammar, std::move(ends));
    }
  }
  carry_.limit_pos = p_.limit_pos;
  carry_.stop_on_eos = p_.stop_on_eos;
  carry_.stops = env_.stops;
  carry_.hold = &hold_;
  // On the scheduler's side: each token it carries on past comes back to this strand, in
  // order, before the step completes.
  carry_.deliver = [this](int next) {
    asio::dispatch(*ex_, [this, next] {
      const int kept = base_ + static_cast<int>(carried_.size());  // positions before its own run
      carried_.push_back(next);
      if (halt_) return;
      end_.last_token = next;
      if (!emit(next)) {
        halt_ = kept;
        hold_ = true;
      }
    });
  };
}

Generation::~Generation() = default;

void Generation::start(asio::any_io_executor ex) {
  ex_ = ex;
  produced_.emplace(ex);
  read_.emplace(ex);
  if (p_.received == clock::time_point{}) p_.received = clock::now();
  last_token_at_ = p_.received;
  asio::co_spawn(ex, run(), [this](std::exception_ptr e, Event last) {
    if (e) last = Failure{Failure::Kind::no_memory};  // an allocation failed: nothing else throws
    finished_ = true;
    push(std::move(last));  // the reader may destroy this as soon as it has it
  });
}

void Generation::push(Event e) {
  unread_.push_back(std::move(e));
  produced_->notify();
}

asio::awaitable<Generation::Event> Generation::next() {
  while (unread_.empty()) co_await produced_->wait();
  Event e = std::move(unread_.front());
  unread_.pop_front();
  read_->notify();
  co_return e;
}

void Generation::cancel(Reason why) {
  if (!cancel_) cancel_ = why;
  hold_ = true;
  if (admitting_) env_.admission.interrupt();
  if (read_) read_->notify();
}

bool Generation::emit(int token) {
  const auto now = clock::now();
  std::shared_ptr<const TokenLogprobs> lp;
  if (sampler_ && p_.logprobs >= 0) {
    if (auto r = sampler_->take_logprobs()) lp = std::make_shared<const TokenLogprobs>(std::move(*r));
  }
  push(Token{token, std::chrono::duration<double>(now - last_token_at_).count(), end_.generated == 0, std::move(lp)});
  last_token_at_ = now;
  ++end_.generated;
  // (The sampler may have drawn further on the compute threads: which token finished it.)
  if (sampler_ && sampler_->finished_at() == end_.generated) {
    end_.reason = Reason::grammar;
    return false;
  }
  if (cancel_) {
    end_.reason = *cancel_;
    return false;
  }
  if (env_.forced.load()) {
    end_.reason = Reason::shutdown;
    return false;
  }
  if (unread_.size() >= p_.max_unread) hold_ = true;  // the reader is behind: pause
  return true;
}

asio::awaitable<Generation::Event> Generation::run() {
  if (auto refused = co_await admit()) co_return *refused;
  Event last = p_.sampling ? co_await run_generate() : co_await run_forward();
  publish_prefix();
  seq_.kv.trim_budget();  // what was charged ahead and not used goes back at once
  co_return last;
}

asio::awaitable<std::optional<Generation::Event>> Generation::admit() {
  const int start = p_.start;
  const int n = static_cast<int>(p_.prompt.size());
  // Positions past start are rewritten by this request: their blocks go now.
  seq_.cached = std::min(seq_.cached, seq_.kv.release_from(start));
  held_before_ = seq_.cached;
  // What the prefix cache holds is attached before the admission, which then charges
  // only the blocks this request computes.
  attach_prefix();
  // All it may grow to: the prompt, then every position up to the limit.
  const int need = p_.sampling ? std::max(start + n, p_.limit_pos) : start + n;
  admitting_ = true;
  const auto st = co_await env_.admission.admit(
      seq_.kv, need, [this] { return cancel_.has_value() || env_.forced.load(); }, p_.holder);
  admitting_ = false;
  switch (st) {
    case Admission::Status::admitted:
      co_return std::nullopt;
    case Admission::Status::never_fits:
      co_return Failure{Failure::Kind::never_fits, need};
    case Admission::Status::timed_out:
      co_return Failure{Failure::Kind::timed_out, need};
    case Admission::Status::stopped:
      break;
  }
  // Cancelled (or a forced shutdown) while it waited: nothing ran, the position is unchanged.
  End end;
  end.reason = cancel_.value_or(Reason::shutdown);
  end.position = seq_.position();
  co_return end;
}

void Generation::attach_prefix() {
  if (env_.prefix == nullptr || p_.embed) return;
  constexpr int kBlk = KvCache::kBlockPositions;
  const int end = p_.start + static_cast<int>(p_.prompt.size());
  // The last position is always computed: its logits are the request's result.
  const int max_blocks = (end - 1) / kBlk;
  const int have = seq_.cached / kBlk;
  if (max_blocks <= have) return;
  std::vector<int> all(seq_.tokens.begin(), seq_.tokens.begin() + p_.start);
  all.insert(all.end(), p_.prompt.begin(), p_.prompt.end());
  const int got = env_.prefix->attach(seq_.kv, p_.tenant, all, have, max_blocks);
  seq_.cached = std::max(seq_.cached, got * kBlk);
}

void Generation::publish_prefix() {
  if (env_.prefix != nullptr) env_.prefix->publish(seq_.kv, p_.tenant, seq_.tokens, seq_.cached);
}

asio::awaitable<std::optional<Generation::Failure>> Generation::step(std::span<const int> tokens, int start,
                                                                     bool more) {
  // The sequence this step leaves: the positions before start, then its tokens. It runs
  // from the first position the cache does not hold: what the cache has lost before start
  // (an eviction, a rewind into a block) is recomputed in the same batch, and what the
  // prefix cache supplied is skipped; either way the same keys and values, bit for bit.
  seq_.tokens.resize(static_cast<std::size_t>(start));
  seq_.tokens.insert(seq_.tokens.end(), tokens.begin(), tokens.end());
  const int from = seq_.cached;
  LW_ASSERT(from < seq_.position());
  input_.assign(seq_.tokens.begin() + from, seq_.tokens.end());
  const std::span<const int> run = input_;
  // Charged at admission: only the system itself can refuse these blocks now.
  if (!seq_.kv.reserve(seq_.position())) co_return Failure{Failure::Kind::no_memory};
  if (!ran_prompt_) {
    ran_prompt_ = true;
    end_.prompt_computed = static_cast<int>(run.size());
    end_.prompt_cached = std::max(0, seq_.position() - held_before_ - end_.prompt_computed);
  }
  // Built before the co_await (g++ 12 and temporaries in co_await expressions).
  const Scheduler::Output out = sampler_  ? Scheduler::Output{Scheduler::TokenOut{&*sampler_, &sampled_, &carry_}}
                                 : p_.embed ? Scheduler::Output{Scheduler::HiddenOut{&logits_}}
                                            : Scheduler::Output{Scheduler::LogitsOut{&logits_}};
  hold_ = cancel_.has_value();
  boost::system::error_code ec;
  co_await env_.scheduler.async_step(seq_.kv, run, from, out, more, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Failure{Failure::Kind::shutting_down};
  seq_.cached = seq_.position();
  co_return std::nullopt;
}

asio::awaitable<Generation::Event> Generation::run_forward() {
  if (p_.embed) {
    LW_ASSERT(p_.start == 0 && seq_.cached == 0 && !p_.prompt.empty());
    logits_.assign(static_cast<std::size_t>(env_.scheduler.weights().config().dim), 0.0f);
  }
  if (auto f = co_await step(p_.prompt, p_.start, false)) co_return *f;
  if (p_.embed) {
    // Mean-pooled, then L2-normalized (the mean's scale then drops out: only the norm is
    // taken, in double).
    double norm = 0;
    for (const float v : logits_) norm += static_cast<double>(v) * v;
    norm = std::sqrt(norm);
    for (float& v : logits_) v = norm > 0 ? static_cast<float>(v / norm) : 0.0f;
  }
  push(Logits{seq_.position() - 1, logits_});
  end_.prompt_tokens = static_cast<int>(p_.prompt.size());
  end_.position = seq_.position();
  co_return end_;
}

asio::awaitable<std::optional<Generation::Failure>> Generation::advance(std::span<const int> tokens, int from) {
  base_ = from + static_cast<int>(tokens.size());
  carried_.clear();
  if (auto f = co_await step(tokens, from, base_ < p_.limit_pos)) co_return f;
  seq_.tokens.insert(seq_.tokens.end(), carried_.begin(), carried_.end());
  const int pos = halt_ ? *halt_ : base_ + static_cast<int>(carried_.size());
  seq_.tokens.resize(static_cast<std::size_t>(pos));
  // What was computed past the stop goes.
  seq_.cached = halt_ ? std::min(pos, seq_.kv.release_from(pos)) : pos;
  co_return std::nullopt;
}

asio::awaitable<Generation::Event> Generation::run_generate() {
  // The penalties' window starts with the sequence's own tokens.
  sampler_->remember(std::span<const int>(seq_.tokens).first(static_cast<std::size_t>(std::min(p_.start, seq_.position()))));
  sampler_->remember(p_.prompt);
  if (auto f = co_await advance(p_.prompt, p_.start)) co_return *f;
  publish_prefix();  // others with the same prompt may attach it while this one generates
  end_.prompt_tokens = static_cast<int>(p_.prompt.size());
  std::vector<int> one(1);
  while (!halt_) {
    const int next = sampled_;  // drawn with the step's logits
    end_.last_token = next;
    if (const auto stop = env_.stops.stop_for(next, p_.stop_on_eos); stop != SpecialTokens::Stop::none) {
      end_.reason = stop == SpecialTokens::Stop::bos ? Reason::bos : Reason::eos;
      break;
    }
    if (!emit(next)) break;
    if (seq_.position() >= p_.limit_pos) {
      end_.reason = p_.limit_is_context ? Reason::context : Reason::steps;
      break;
    }
    while (unread_.size() >= p_.max_unread && !cancel_) co_await read_->wait();
    if (cancel_ == Reason::closed) {
      end_.reason = Reason::closed;  // nobody to run the next token for
      break;
    }
    one[0] = next;
    if (auto f = co_await advance(one, seq_.position())) co_return *f;
  }
  end_.position = seq_.position();
  co_return end_;
}

}  // namespace llamawire
