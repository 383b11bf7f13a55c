#include "server/engine/admission.hpp"

#include <algorithm>

namespace llamawire {

namespace {
using clock = std::chrono::steady_clock;
constexpr auto kBackstop = std::chrono::milliseconds(100);
}  // namespace

Admission::Admission(int max_slots, KvBudget& budget, std::chrono::milliseconds queue_timeout, PrefixCache* prefix)
    : max_slots_(max_slots), budget_(budget), queue_timeout_(queue_timeout), prefix_(prefix) {
  budget_.on_give_back([this] { wake_all(); });
}

Admission::~Admission() { budget_.on_give_back({}); }

void Admission::wake_all() {
  std::lock_guard lock(sleepers_mutex_);
  for (const auto& [id, s] : sleepers_) {
    // The channel is touched only on its own executor (channels are not thread-safe).
    asio::post(s.ex, [ch = s.channel] { ch->try_send(boost::system::error_code{}); });
  }
}

std::uint64_t Admission::join(Line& line) {
  const auto t = line.next_ticket++;
  line.tickets.push_back(t);
  return t;
}

void Admission::leave(Line& line, std::uint64_t ticket) {
  const auto it = std::find(line.tickets.begin(), line.tickets.end(), ticket);
  if (it == line.tickets.end()) return;
  const bool was_front = it == line.tickets.begin();
  line.tickets.erase(it);
  if (was_front && !line.tickets.empty()) wake_all();  // the next one may try now
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

void Admission::give_slot(int count) {
  {
    std::lock_guard lock(mutex_);
    slots_ -= count;
  }
  wake_all();
}

int Admission::slots_in_use() const {
  std::lock_guard lock(mutex_);
  return slots_;
}

int Admission::slots_peak() const {
  std::lock_guard lock(mutex_);
  return slots_peak_;
}

// Both waits: join the line unless the thing is free for the taking now; then sleep until
// woken, and try again; give up at the deadline or when `stop` says so.
asio::awaitable<Admission::Status> Admission::wait_in_line(Line& line, std::uint64_t ticket, Attempt a,
                                                           const std::function<bool()>& stop) {
  const auto ex = co_await asio::this_coro::executor;
  auto channel = std::make_shared<Channel>(ex, 1);
  std::uint64_t sleeper = 0;
  {
    std::lock_guard lock(sleepers_mutex_);
    sleeper = next_sleeper_++;
    sleepers_.emplace(sleeper, Sleeper{ex, channel});
  }
  // The deadline wakes it too (the timer's handler runs on the same executor).
  asio::steady_timer deadline(ex, queue_timeout_);
  asio::steady_timer backstop(ex);
  deadline.async_wait([channel](boost::system::error_code ec) {
    if (!ec) channel->try_send(boost::system::error_code{});
  });
  struct Unregister {
    Admission& self;
    std::uint64_t id;
    asio::steady_timer& timer;
    asio::steady_timer& backstop;
    ~Unregister() {
      timer.cancel();
      backstop.cancel();
      std::lock_guard lock(self.sleepers_mutex_);
      self.sleepers_.erase(id);
    }
  } unregister{*this, sleeper, deadline, backstop};
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      // At the front: try, and try again for as long as `failed` made room.
      while (at_front(line, ticket)) {
        if (a.attempt()) {
          leave(line, ticket);
          co_return Status::admitted;
        }
        if (!a.failed()) break;
      }
      const bool stopped = stop();
      if (stopped || deadline.expiry() <= clock::now()) {
        leave(line, ticket);
        co_return stopped ? Status::stopped : Status::timed_out;
      }
    }
    // A backstop against a lost wake-up: a re-check at least every kBackstop. (Under load,
    // a waiter at the front once slept through the release it waited for; the cause is
    // not found yet. See the README's design notes.)
    backstop.expires_after(kBackstop);
    backstop.async_wait([channel](boost::system::error_code ec) {
      if (!ec) channel->try_send(boost::system::error_code{});
    });
    boost::system::error_code ec;
    co_await channel->async_receive(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<Admission::Status> Admission::take_slot(std::function<bool()> stop, int count) {
  if (count > max_slots_) co_return Status::never_fits;
  auto take = [this, count] {
    if (slots_ + count > max_slots_) return false;
    slots_ += count;
    slots_peak_ = std::max(slots_peak_, slots_);
    return true;
  };
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(mutex_);
    if (slot_line_.tickets.empty() && take()) co_return Status::admitted;
    ticket = join(slot_line_);
  }
  Attempt attempt{take, [] { return false; }};  // a named local: see admit()
  co_return co_await wait_in_line(slot_line_, ticket, std::move(attempt), stop);
}

asio::awaitable<Admission::Status> Admission::admit(KvCache& kv, int positions, std::function<bool()> stop,
                                                    std::uint64_t holder) {
  if (budget_.limit() != 0 && KvCache::blocks_for(positions) * kv.block_bytes() > budget_.limit()) {
    std::lock_guard lock(mutex_);
    ++refusals_;
    co_return Status::never_fits;
  }
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(mutex_);
    if (kv_line_.tickets.empty() && try_reserve(kv, positions)) co_return Status::admitted;
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
  // Running requests all complete; idle caches are what can go, evicted at the front until
  // the request fits or no cache is left to evict.
  // A named local, not a temporary in the co_await expression (g++ 12 can destroy those
  // twice across a suspension).
  Attempt attempt{[&] { return try_reserve(kv, positions); }, [&] { return evict_one(holder); }};
  const auto st = co_await wait_in_line(kv_line_, ticket, std::move(attempt), stop);
  if (st == Status::timed_out) {
    std::lock_guard lock(mutex_);
    ++refusals_;
  }
  co_return st;
}

bool Admission::try_reserve(KvCache& kv, int positions) {
  if (kv.reserve_budget(positions)) return true;
  if (prefix_ == nullptr || budget_.limit() == 0) return false;
  const std::uint64_t need = kv.budget_needed(positions);
  const std::uint64_t used = budget_.used();
  const std::uint64_t room = used < budget_.limit() ? budget_.limit() - used : 0;
  if (need <= room || prefix_->evict(need - room) == 0) return false;
  return kv.reserve_budget(positions);
}

std::uint64_t Admission::add_holder(std::function<void()> evict) {
  std::lock_guard lock(mutex_);
  const auto id = next_holder_++;
  holders_.emplace(id, Holder{std::move(evict)});
  return id;
}

void Admission::remove_holder(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  holders_.erase(id);
}

void Admission::set_idle(std::uint64_t id, bool idle) {
  {
    std::lock_guard lock(mutex_);
    mark_idle(id, idle);
  }
  if (idle) wake_all();  // a cache that may now be evicted for the front waiter
}

void Admission::mark_idle(std::uint64_t id, bool idle) {
  const auto it = holders_.find(id);
  if (it == holders_.end()) return;
  it->second.idle = idle;
  if (idle) it->second.idle_since = clock::now();
}

bool Admission::evict_one(std::uint64_t except) {
  auto victim = holders_.end();
  for (auto it = holders_.begin(); it != holders_.end(); ++it) {
    if (!it->second.idle || it->first == except) continue;
    if (victim == holders_.end() || it->second.idle_since < victim->second.idle_since) victim = it;
  }
  if (victim == holders_.end()) return false;
  victim->second.idle = false;  // not chosen again until it is idle again
  ++evictions_;
  victim->second.evict();
  return true;
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
