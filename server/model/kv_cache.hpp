// Per-session key/value buffers, allocated in blocks of kBlockPositions as the context grows
// and returned when the session ends or rewinds. An optional KvBudget caps the bytes that
// all caches together may hold.
#pragma once

#include "server/model/model_config.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace llamawire {

// A shared byte budget (0 = unlimited): KV blocks, and frames still arriving. Thread-safe.
class ByteBudget {
 public:
  explicit ByteBudget(std::uint64_t limit_bytes) : limit_(limit_bytes) {}
  bool try_take(std::uint64_t bytes);
  void give_back(std::uint64_t bytes);
  // Called after every give_back (on the thread that gave back), so that a waiter can try
  // again. Set before the budget is shared.
  void on_give_back(std::function<void()> fn) { on_give_back_ = std::move(fn); }
  std::uint64_t used() const { return used_.load(); }
  std::uint64_t peak() const { return peak_.load(); }
  std::uint64_t limit() const { return limit_; }

 private:
  std::uint64_t limit_;
  std::atomic<std::uint64_t> used_{0};
  std::atomic<std::uint64_t> peak_{0};
  std::function<void()> on_give_back_;
};
using KvBudget = ByteBudget;

// Where KV blocks come from. Attention reads every cached position on every step, at
// memory speed, so blocks are carved from mappings the kernel may back with 2 MiB pages: with
// 4 KiB pages part of that time goes to page walks (16 sessions at positions 300-400 ran
// 2-8% faster on 2 MiB pages, 0-3% at positions 16-96). Resident memory follows the blocks
// in use, plus at most a "warm" amount (keep_warm) of free blocks kept faulted in: a block
// given back past that has its pages dropped at once; a mapping with such a hole gets no
// huge pages until it is full again (so the kernel cannot fill the hole back in); a mapping
// with nothing in use and nothing warm is unmapped. New blocks come from the warm ones
// first, then from the fullest mapping, so holes are refilled and emptier mappings drain.
// One pool per block size, shared by all caches of that size; thread-safe.
class KvBlockPool {
 public:
  static KvBlockPool& for_block_bytes(std::uint64_t block_bytes);

  explicit KvBlockPool(std::uint64_t block_bytes);
  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  // A block of block_bytes (contents undefined), or nullptr if the system has no memory.
  float* take();
  void give(float* block);

  // Keeps up to `bytes` of free blocks resident (rounded down to whole blocks), and faults
  // that many in now, so that sessions starting later find their first blocks without page
  // faults. (A fresh page can cost far more than its zeroing: on a VM whose balloon reports
  // free memory to the host, the host must back it again.) Lowering it drops the excess.
  void keep_warm(std::uint64_t bytes);
  std::uint64_t warm_bytes() const;  // free blocks resident now

  int blocks_per_mapping() const { return per_mapping_; }
  std::uint64_t mapped_bytes() const;  // address space held, in whole mappings
  int blocks_in_use() const;

 private:
  struct Mapping {
    std::vector<int> free_slots;  // not resident (never touched, or dropped)
    std::vector<int> warm_slots;  // free but resident
    int in_use = 0;
    bool huge = true;  // still advised for 2 MiB pages
  };
  using MapIt = std::map<char*, Mapping>::iterator;

  MapIt new_mapping();  // mappings_.end() when the system has no memory
  float* address(MapIt it, int slot) const {
    return reinterpret_cast<float*>(it->first + static_cast<std::uint64_t>(slot) * block_bytes_);
  }
  // Takes a free (not resident) slot from the fullest mapping that has one, or a new mapping.
  float* take_cold();
  // Frees a slot for good: its pages go, and so does its mapping when nothing else holds it.
  void drop(MapIt it, int slot);

  std::uint64_t block_bytes_;
  int per_mapping_;
  std::uint64_t mapping_bytes_;
  mutable std::mutex mutex_;
  std::map<char*, Mapping> mappings_;  // by base address
  std::uint64_t warm_limit_ = 0;
  std::uint64_t warm_ = 0;  // bytes in warm_slots, all mappings
};

class PrefixCache;
struct PrefixBlock;

// A sequence's keys and values, block by block. Most blocks are the cache's own (private:
// charged to the budget here, written by the forward pass); blocks attached from a
// PrefixCache are shared read-only with other caches, charged once by the PrefixCache, and
// never written: positions are only ever computed past them.
class KvCache {
 public:
  static constexpr int kBlockPositions = 16;

  // `capacity`: the most positions this cache may ever hold (<= seq_len).
  KvCache(const ModelConfig& config, int capacity, KvBudget* budget = nullptr);
  // The bytes of one block for this model (all layers' keys and values of kBlockPositions).
  static std::uint64_t block_bytes_for(const ModelConfig& config);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  int capacity() const { return capacity_; }
  // Positions for which blocks are allocated.
  int reserved() const { return static_cast<int>(blocks_.size()) * kBlockPositions; }
  // Makes positions [0, n) writable; false if n > capacity or the budget is exhausted.
  // Blocks charged ahead by reserve_budget() are taken without asking the budget again.
  bool reserve(int n_positions);
  // Charges the budget now for every block positions [0, n) need (admission by what a
  // request may grow to; the blocks themselves are still allocated as positions are
  // used). All or nothing: false, with nothing charged, when the budget cannot take it.
  bool reserve_budget(int n_positions);
  // Gives back what was charged ahead and not used (the end of a request).
  void trim_budget();
  // The bytes reserve_budget(n) would charge now.
  std::uint64_t budget_needed(int n_positions) const;
  // Returns the blocks past position n (a rewind or reset), with their charge and any
  // charged ahead. A shared block that position n falls inside goes too (it must not be
  // written), so the keys and values kept are those of positions [0, returned value):
  // n, or n rounded down to a block when that block was shared.
  int release_from(int n_positions);
  std::uint64_t bytes_held() const { return static_cast<std::uint64_t>(blocks_.size()) * block_bytes_; }
  std::uint64_t bytes_charged() const { return static_cast<std::uint64_t>(charged_blocks_) * block_bytes_; }
  // Blocks attached from a PrefixCache (shared, read-only), and positions [0, n) they begin.
  int shared_blocks() const { return n_shared_; }
  bool is_shared(std::size_t block) const { return block < shared_.size() && shared_[block] != nullptr; }
  // The first position the forward pass may write: past every shared block.
  int writable_from() const;
  // Blocks positions [0, n) take.
  static std::size_t blocks_for(int n_positions) {
    return static_cast<std::size_t>((std::max(n_positions, 0) + kBlockPositions - 1) / kBlockPositions);
  }
  std::uint64_t block_bytes() const { return block_bytes_; }

  // [kv_dim] rows for (layer, pos); pos must be < reserved().
  float* key(int layer, int pos) { return row(layer, pos, 0); }
  float* value(int layer, int pos) { return row(layer, pos, 1); }
  const float* key(int layer, int pos) const { return const_cast<KvCache*>(this)->row(layer, pos, 0); }
  const float* value(int layer, int pos) const { return const_cast<KvCache*>(this)->row(layer, pos, 1); }

 private:
  float* row(int layer, int pos, int kv) {
    float* block = blocks_[static_cast<std::size_t>(pos / kBlockPositions)];
    // block layout: [kv: 2][layer][kBlockPositions][kv_dim]
    const std::size_t idx =
        ((static_cast<std::size_t>(kv) * static_cast<std::size_t>(n_layers_) + static_cast<std::size_t>(layer)) *
             kBlockPositions +
         static_cast<std::size_t>(pos % kBlockPositions)) *
        static_cast<std::size_t>(kv_dim_);
    return block + idx;
  }

  friend class PrefixCache;
  std::size_t private_blocks() const { return blocks_.size() - static_cast<std::size_t>(n_shared_); }
  // Drops the last block, private (to the pool; its charge stays in charged_blocks_ until
  // trim_budget) or shared (a reference given back to its PrefixCache).
  void pop_block();

  int n_layers_;
  int kv_dim_;
  int capacity_;
  KvBudget* budget_;
  std::uint64_t block_bytes_;
  KvBlockPool* pool_;
  std::vector<float*> blocks_;  // from pool_, or shared_[i]->data
  std::vector<PrefixBlock*> shared_;  // per block (as long as blocks_ or shorter): its PrefixCache entry, or nullptr
  int n_shared_ = 0;
  PrefixCache* prefix_ = nullptr;  // the cache the shared blocks belong to
  std::size_t charged_blocks_ = 0;  // charged to budget_: the private blocks plus those charged ahead
};

}  // namespace llamawire
