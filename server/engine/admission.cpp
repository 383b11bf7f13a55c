#include "server/engine/admission.hpp"

#include <algorithm>

namespace llamawire {

namespace {
using clock = std::chrono::steady_clock;
constexpr auto kPoll = std::chrono::milliseconds(2);
}  // namespace

Admission::Admission(int max_slots, KvBudget& budget, std::chrono::milliseconds queue_timeout)
    : max_slots_(max_slots), budget_(budget), queue_timeout_(queue_timeout) {}

std::uint64_t Admission::join(Line& line) {
  const auto t = line.next_ticket++;
  line.tickets.push_back(t);
  return t;
}

void Admission::leave(Line& line, std::uint64_t ticket) {
  const auto it = std::find(line.tickets.begin(), line.tickets.end(), ticket);
  if (it != line.tickets.end()) line.tickets.erase(it);
}

bool Admission::at_front(const Line& line, std::uint64_t ticket) const {
  return !line.tickets.empty() && line.tickets.front() == ticket;
}

bool Admission::try_take_slot() {
  std::lock_guard lock(mutex_);
  if (slots_ >= max_slots_ || !slot_line_.tickets.empty()) return false;
  slots_peak_ = std::max(slots_peak_, ++slots_);
  return true;
}

void Admission::give_slot() {
  std::lock_guard lock(mutex_);
  --slots_;
}

int Admission::slots_in_use() const {
  std::lock_guard lock(mutex_);
  return slots_;
}

int Admission::slots_peak() const {
  std::lock_guard lock(mutex_);
  return slots_peak_;
}

// Both waits: join the line unless the thing is free for the taking now; then, polled, the
// front of the line tries; it gives up at the deadline or when `stop` says so.
asio::awaitable<Admission::Status> Admission::take_slot(std::function<bool()> stop) {
  auto take = [this] {
    if (slots_ >= max_slots_) return false;
    slots_peak_ = std::max(slots_peak_, ++slots_);
    return true;
  };
  const auto deadline = clock::now() + queue_timeout_;
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(mutex_);
    if (slot_line_.tickets.empty() && take()) co_return Status::admitted;
    ticket = join(slot_line_);
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (at_front(slot_line_, ticket) && take()) {
        leave(slot_line_, ticket);
        co_return Status::admitted;
      }
      if (stop() || clock::now() >= deadline) {
        leave(slot_line_, ticket);
        co_return stop() ? Status::stopped : Status::timed_out;
      }
    }
    timer.expires_after(kPoll);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<Admission::Status> Admission::admit(KvCache& kv, int positions, std::function<bool()> stop,
                                                    std::uint64_t holder) {
  if (budget_.limit() != 0 && KvCache::blocks_for(positions) * kv.block_bytes() > budget_.limit()) {
    std::lock_guard lock(mutex_);
    ++refusals_;
    co_return Status::never_fits;
  }
  const auto deadline = clock::now() + queue_timeout_;
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(mutex_);
    if (kv_line_.tickets.empty() && kv.reserve_budget(positions)) co_return Status::admitted;
    ticket = join(kv_line_);
    ++waits_;
    // While it waits, nothing runs on its cache: another waiter at the front may evict it
    // (else waiters that each hold part of the budget would wait on each other).
    mark_idle(holder, true);
  }
  struct Busy {  // however the wait ends, the holder is no longer evictable
    Admission& a;
    std::uint64_t holder;
    ~Busy() {
      std::lock_guard lock(a.mutex_);
      a.mark_idle(holder, false);
    }
  } busy{*this, holder};
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (at_front(kv_line_, ticket)) {
        if (kv.reserve_budget(positions)) {
          leave(kv_line_, ticket);
          co_return Status::admitted;
        }
        evict_one(holder);  // running requests all complete; idle caches are what can go
      }
      const bool stopped = stop();
      if (stopped || clock::now() >= deadline) {
        leave(kv_line_, ticket);
        if (!stopped) ++refusals_;
        co_return stopped ? Status::stopped : Status::timed_out;
      }
    }
    timer.expires_after(kPoll);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

std::uint64_t Admission::add_holder(asio::any_io_executor strand, std::function<void()> evict) {
  std::lock_guard lock(mutex_);
  const auto id = next_holder_++;
  holders_.emplace(id, Holder{std::move(strand), std::move(evict)});
  return id;
}

void Admission::remove_holder(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  holders_.erase(id);
}

void Admission::set_idle(std::uint64_t id, bool idle) {
  std::lock_guard lock(mutex_);
  mark_idle(id, idle);
}

void Admission::mark_idle(std::uint64_t id, bool idle) {
  const auto it = holders_.find(id);
  if (it == holders_.end()) return;
  it->second.idle = idle;
  if (idle) it->second.idle_since = clock::now();
}

void Admission::evict_one(std::uint64_t except) {
  if (eviction_pending_) return;
  auto victim = holders_.end();
  for (auto it = holders_.begin(); it != holders_.end(); ++it) {
    if (!it->second.idle || it->first == except) continue;
    if (victim == holders_.end() || it->second.idle_since < victim->second.idle_since) victim = it;
  }
  if (victim == holders_.end()) return;
  victim->second.idle = false;  // not chosen again until it is idle again
  eviction_pending_ = true;
  ++evictions_;
  // On the holder's strand, where it also unregisters: registered there means alive.
  asio::post(victim->second.strand, [this, id = victim->first, fn = victim->second.evict] {
    bool alive = false;
    {
      std::lock_guard lock(mutex_);
      alive = holders_.count(id) != 0;
    }
    if (alive) fn();
    eviction_done();
  });
}

void Admission::eviction_done() {
  std::lock_guard lock(mutex_);
  eviction_pending_ = false;
}

std::uint64_t Admission::evictions() const {
  std::lock_guard lock(mutex_);
  return evictions_;
}

std::uint64_t Admission::waits() const {
  std::lock_guard lock(mutex_);
  return waits_;
}

std::uint64_t Admission::refusals() const {
  std::lock_guard lock(mutex_);
  return refusals_;
}

}  // namespace llamawire
