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
//  - Requests that wait are served in arrival order, up to --queue-timeout. While the first
//    one waits, the caches of idle binary sessions (a session between requests still holds
//    its positions) are evicted, least recently used first. Such a session keeps its tokens
//    and recomputes what it lost at its next request: the forward pass is batch-invariant,
//    so the recomputed keys and values, and every later token, are bit for bit the same.
//  - A request that needs more than the whole budget is refused at once.
#pragma once

#include "common/asio.hpp"
#include "server/model/kv_cache.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>

namespace llamawire {

class Admission {
 public:
  enum class Status { admitted, never_fits, timed_out, stopped };

  Admission(int max_slots, KvBudget& budget, std::chrono::milliseconds queue_timeout);

  // Session slots.
  bool try_take_slot();  // a free slot and nobody waiting for one
  // Waits in line for a slot; `stop` is polled (a closed peer, shutdown).
  asio::awaitable<Status> take_slot(std::function<bool()> stop);
  void give_slot();
  int slots_in_use() const;
  int slots_peak() const;
  int max_slots() const { return max_slots_; }

  // Charges kv for `positions` (see KvCache::reserve_budget), waiting in line while the
  // budget cannot take it. `holder` (0 for none) is the caller's own idle-holder id, never
  // evicted for itself.
  asio::awaitable<Status> admit(KvCache& kv, int positions, std::function<bool()> stop, std::uint64_t holder = 0);

  // Binary sessions whose caches may be evicted while nothing runs on them: idle between
  // requests, or waiting in admit(). `evict` is posted to `strand` (the session's) and runs
  // only if the holder is still registered there; it must drop the cache unless a request
  // of the session has been admitted meanwhile.
  std::uint64_t add_holder(asio::any_io_executor strand, std::function<void()> evict);
  void remove_holder(std::uint64_t id);  // on the holder's strand
  void set_idle(std::uint64_t id, bool idle);
  std::uint64_t evictions() const;
  std::uint64_t waits() const;     // requests that had to wait for KV memory
  std::uint64_t refusals() const;  // requests refused for KV memory (timed out or never fits)

 private:
  struct Holder {
    asio::any_io_executor strand;
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
  // Asks the least recently idle holder (not `except`) to drop its cache, unless an eviction
  // is already on its way.
  void evict_one(std::uint64_t except);
  void mark_idle(std::uint64_t id, bool idle);  // with mutex_ held
  void eviction_done();

  const int max_slots_;
  KvBudget& budget_;
  const std::chrono::milliseconds queue_timeout_;
  mutable std::mutex mutex_;
  int slots_ = 0;
  int slots_peak_ = 0;
  Line slot_line_;
  Line kv_line_;
  std::uint64_t next_holder_ = 1;
  std::map<std::uint64_t, Holder> holders_;
  bool eviction_pending_ = false;
  std::uint64_t evictions_ = 0;
  std::uint64_t waits_ = 0;
  std::uint64_t refusals_ = 0;
};

}  // namespace llamawire
