// Who may compute, and with how much KV memory: one rule for both protocols.
//
//  - Session slots (--max-sessions): a binary session holds one from HELLO to its end, an
//    HTTP generation holds one while it runs. A binary HELLO takes a free one or is refused;
//    an HTTP request waits in line for one (up to --queue-timeout).
//  - KV memory (--kv-budget-mb): a request is admitted only once the budget can hold all it
//    may grow to (its prompt and every position it may generate), charged ahead to its
//    KvCache (the blocks themselves are still allocated as positions are used). An admitted
//    request therefore never waits for memory again and always completes; requests never
//    wait on each other's growth, which is what deadlocked sessions that each held part of
//    the budget.
//  - A live request's needs win over the prefix cache: when the budget cannot take a
//    request, unreferenced prefix-cache blocks are evicted first (least recently used,
//    leaves first), as many as the request lacks.
//  - Requests that wait are served in arrival order, up to --queue-timeout. While the first
//    one waits, the caches of idle binary sessions (a session between requests still holds
//    its positions) are evicted, least recently used first. Such a session keeps its tokens
//    and recomputes what it lost at its next request: the forward pass is batch-invariant,
//    so the recomputed keys and values, and every later token, are bit for bit the same.
//  - A request that needs more than the whole budget is refused at once.
//  - Nothing polls: a waiter sleeps until something it waits for may have changed (a slot
//    or KV memory given back, the line moving, its deadline, or interrupt(): a cancel, a
//    closed peer, a shutdown), then tries again.
#pragma once

#include "common/asio.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/prefix_cache.hpp"

#include <boost/asio/experimental/channel.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace llamawire {

class Admission {
 public:
  enum class Status { admitted, never_fits, timed_out, stopped };

  // Registers itself to hear of `budget`'s releases (see ByteBudget::on_give_back).
  // `prefix`: the prefix cache whose unreferenced blocks make room first (nullptr: none).
  Admission(int max_slots, KvBudget& budget, std::chrono::milliseconds queue_timeout, PrefixCache* prefix = nullptr);
  ~Admission();
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Session slots.
  bool try_take_slot();  // a free slot and nobody waiting for one
  // Waits in line for a slot. `stop` (a closed peer, shutdown) is asked each time the
  // waiter wakes: whoever makes it true must call interrupt().
  // `count` slots at once (an HTTP request's choices): never_fits when more than there are.
  asio::awaitable<Status> take_slot(std::function<bool()> stop, int count = 1);
  void give_slot(int count = 1);
  int slots_in_use() const;
  int slots_peak() const;
  int max_slots() const { return max_slots_; }

  // Charges kv for `positions` (see KvCache::reserve_budget), waiting in line while the
  // budget cannot take it. `holder` (0 for none) is the caller's own idle-holder id, never
  // evicted for itself. `stop` as for take_slot.
  asio::awaitable<Status> admit(KvCache& kv, int positions, std::function<bool()> stop, std::uint64_t holder = 0);
  // Wakes every waiter to ask its `stop` again (thread-safe).
  void interrupt() { wake_all(); }

  // Binary sessions whose caches may be evicted while nothing runs on them: idle between
  // requests, or waiting in admit(). `evict` drops the cache; it runs on the evicting
  // waiter's thread, with this object's lock held, and only while the holder is marked idle.
  // So a holder marks itself busy (set_idle false) before it touches its cache, and idle
  // only once it has done with it.
  std::uint64_t add_holder(std::function<void()> evict);
  void remove_holder(std::uint64_t id);
  void set_idle(std::uint64_t id, bool idle);
  std::uint64_t evictions() const;
  std::uint64_t waits() const;     // requests that had to wait for KV memory
  std::uint64_t refusals() const;  // requests refused for KV memory (timed out or never fits)

 private:
  struct Holder {
    std::function<void()> evict;
    bool idle = false;
    std::chrono::steady_clock::time_point idle_since{};
  };
  // A FIFO line: tickets in arrival order; the front one may try.
  struct Line {
    std::uint64_t next_ticket = 1;
    std::deque<std::uint64_t> tickets;
  };
  std::uint64_t join(Line& line);
  void leave(Line& line, std::uint64_t ticket);
  bool at_front(const Line& line, std::uint64_t ticket) const;
  // The wait both lines share. With mutex_ held: `attempt` takes the thing (true: done),
  // tried when the ticket is at the front; `failed` runs at the front when it could not,
  // and returns true when it made room (then it is tried again at once).
  struct Attempt {
    std::function<bool()> attempt;
    std::function<bool()> failed;
  };
  asio::awaitable<Status> wait_in_line(Line& line, std::uint64_t ticket, Attempt a, const std::function<bool()>& stop);
  // Waiters asleep, each on a one-slot channel on its own executor.
  using Channel = asio::experimental::channel<void(boost::system::error_code)>;
  struct Sleeper {
    asio::any_io_executor ex;
    std::shared_ptr<Channel> channel;
  };
  void wake_all();
  // Drops the cache of the least recently idle holder (not `except`); with mutex_ held.
  // False when no holder is idle.
  bool evict_one(std::uint64_t except);
  void mark_idle(std::uint64_t id, bool idle);  // with mutex_ held
  // Charges kv for `positions`, evicting unreferenced prefix-cache blocks for what the
  // budget lacks; with mutex_ held.
  bool try_reserve(KvCache& kv, int positions);

  const int max_slots_;
  KvBudget& budget_;
  const std::chrono::milliseconds queue_timeout_;
  PrefixCache* prefix_;
  mutable std::mutex mutex_;
  int slots_ = 0;
  int slots_peak_ = 0;
  Line slot_line_;
  Line kv_line_;
  std::uint64_t next_holder_ = 1;
  std::map<std::uint64_t, Holder> holders_;
  std::uint64_t evictions_ = 0;
  std::uint64_t waits_ = 0;
  std::uint64_t refusals_ = 0;
  std::mutex sleepers_mutex_;  // alone: wake_all() may run with mutex_ held
  std::uint64_t next_sleeper_ = 1;
  std::map<std::uint64_t, Sleeper> sleepers_;
};

}  // namespace llamawire
