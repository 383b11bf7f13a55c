#include "server/model/kv_cache.hpp"

#include "common/error.hpp"
#include "server/model/prefix_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>

namespace llamawire {

bool ByteBudget::try_take(std::uint64_t bytes) {
  std::uint64_t cur = used_.load();
  for (;;) {
    if (limit_ != 0 && cur + bytes > limit_) return false;
    if (used_.compare_exchange_weak(cur, cur + bytes)) {
      std::uint64_t p = peak_.load();
      while (cur + bytes > p && !peak_.compare_exchange_weak(p, cur + bytes)) {
      }
      return true;
    }
  }
}

void ByteBudget::give_back(std::uint64_t bytes) {
  if (bytes == 0) return;
  used_.fetch_sub(bytes);
  if (on_give_back_) on_give_back_();
}

namespace {

constexpr std::uint64_t kHugePage = 2u << 20;
constexpr std::uint64_t kMappingTarget = 8u << 20;  // about four 2 MiB pages per mapping
constexpr int kMaxBlocksPerMapping = 64;

std::uint64_t page_size() {
  static const auto size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }

}  // namespace

KvBlockPool& KvBlockPool::for_block_bytes(std::uint64_t block_bytes) {
  static std::mutex mutex;
  // Never destroyed: caches may outlive any static that would own the pools.
  static auto* pools = new std::map<std::uint64_t, std::unique_ptr<KvBlockPool>>();
  std::lock_guard lock(mutex);
  auto& pool = (*pools)[block_bytes];
  if (!pool) pool = std::make_unique<KvBlockPool>(block_bytes);
  return *pool;
}

KvBlockPool::KvBlockPool(std::uint64_t block_bytes)
    : block_bytes_(block_bytes),
      per_mapping_(static_cast<int>(std::clamp<std::uint64_t>(kMappingTarget / std::max<std::uint64_t>(block_bytes, 1), 1,
                                                              kMaxBlocksPerMapping))),
      mapping_bytes_(round_up(block_bytes * static_cast<std::uint64_t>(per_mapping_), page_size())) {
  LW_ASSERT(block_bytes > 0 && block_bytes % sizeof(float) == 0);
}

KvBlockPool::~KvBlockPool() {
  for (auto& [base, m] : mappings_) ::munmap(base, mapping_bytes_);
}

KvBlockPool::MapIt KvBlockPool::new_mapping() {
  // A new mapping starting on a 2 MiB boundary: map more, then trim both ends.
  const std::uint64_t span = mapping_bytes_ + kHugePage;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return mappings_.end();
  auto* start = static_cast<char*>(raw);
  auto* base = reinterpret_cast<char*>(round_up(reinterpret_cast<std::uintptr_t>(start), kHugePage));
  if (base > start) ::munmap(start, static_cast<std::size_t>(base - start));
  char* end = base + mapping_bytes_;
  if (start + span > end) ::munmap(end, static_cast<std::size_t>(start + span - end));
  ::madvise(base, mapping_bytes_, MADV_HUGEPAGE);
  Mapping m;
  for (int slot = per_mapping_ - 1; slot >= 0; --slot) m.free_slots.push_back(slot);
  return mappings_.emplace(base, std::move(m)).first;
}

float* KvBlockPool::take_cold() {
  // The fullest mapping with a free slot, so that the emptier ones can drain and go.
  auto best = mappings_.end();
  for (auto it = mappings_.begin(); it != mappings_.end(); ++it) {
    if (!it->second.free_slots.empty() && (best == mappings_.end() || it->second.in_use > best->second.in_use)) best = it;
  }
  if (best == mappings_.end()) best = new_mapping();
  if (best == mappings_.end()) return nullptr;
  Mapping& m = best->second;
  const int slot = m.free_slots.back();
  m.free_slots.pop_back();
  ++m.in_use;
  if (m.free_slots.empty() && !m.huge) {
    // No hole left, so the kernel may assemble 2 MiB pages here once more.
    ::madvise(best->first, mapping_bytes_, MADV_HUGEPAGE);
    m.huge = true;
  }
  return address(best, slot);
}

float* KvBlockPool::take() {
  std::lock_guard lock(mutex_);
  // A warm block first, from the fullest mapping that has one.
  auto best = mappings_.end();
  for (auto it = mappings_.begin(); it != mappings_.end(); ++it) {
    if (!it->second.warm_slots.empty() && (best == mappings_.end() || it->second.in_use > best->second.in_use)) best = it;
  }
  if (best == mappings_.end()) return take_cold();
  Mapping& m = best->second;
  const int slot = m.warm_slots.back();
  m.warm_slots.pop_back();
  ++m.in_use;
  warm_ -= block_bytes_;
  return address(best, slot);
}

void KvBlockPool::drop(MapIt it, int slot) {
  Mapping& m = it->second;
  if (m.in_use == 0 && m.warm_slots.empty()) {
    ::munmap(it->first, mapping_bytes_);
    mappings_.erase(it);
    return;
  }
  m.free_slots.push_back(slot);
  if (m.huge) {
    // With a hole in it, the mapping stays on small pages, or the kernel could fill the
    // hole back in when it assembles a 2 MiB page.
    ::madvise(it->first, mapping_bytes_, MADV_NOHUGEPAGE);
    m.huge = false;
  }
  // Drop the block's whole pages (a 2 MiB page around it is split).
  const auto p = reinterpret_cast<std::uintptr_t>(address(it, slot));
  const auto first = round_up(p, page_size());
  const auto last = (p + block_bytes_) / page_size() * page_size();
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void KvBlockPool::give(float* block) {
  std::lock_guard lock(mutex_);
  auto* p = reinterpret_cast<char*>(block);
  auto it = mappings_.upper_bound(p);
  LW_ASSERT(it != mappings_.begin());
  --it;
  Mapping& m = it->second;
  const auto offset = static_cast<std::uint64_t>(p - it->first);
  LW_ASSERT(offset < block_bytes_ * static_cast<std::uint64_t>(per_mapping_) && offset % block_bytes_ == 0);
  const int slot = static_cast<int>(offset / block_bytes_);
  --m.in_use;
  if (warm_ + block_bytes_ <= warm_limit_) {
    m.warm_slots.push_back(slot);
    warm_ += block_bytes_;
    return;
  }
  drop(it, slot);
}

void KvBlockPool::keep_warm(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  warm_limit_ = bytes;
  while (warm_ + block_bytes_ <= warm_limit_) {
    float* block = take_cold();
    if (block == nullptr) break;
    std::memset(block, 0, block_bytes_);  // fault it in
    auto it = std::prev(mappings_.upper_bound(reinterpret_cast<char*>(block)));
    --it->second.in_use;
    it->second.warm_slots.push_back(static_cast<int>((reinterpret_cast<char*>(block) - it->first) / block_bytes_));
    warm_ += block_bytes_;
  }
  while (warm_ > warm_limit_) {
    auto it = std::find_if(mappings_.begin(), mappings_.end(), [](const auto& e) { return !e.second.warm_slots.empty(); });
    const int slot = it->second.warm_slots.back();
    it->second.warm_slots.pop_back();
    warm_ -= block_bytes_;
    drop(it, slot);
  }
}

std::uint64_t KvBlockPool::warm_bytes() const {
  std::lock_guard lock(mutex_);
  return warm_;
}

std::uint64_t KvBlockPool::mapped_bytes() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::uint64_t>(mappings_.size()) * mapping_bytes_;
}

int KvBlockPool::blocks_in_use() const {
  std::lock_guard lock(mutex_);
  int n = 0;
  for (const auto& [base, m] : mappings_) n += m.in_use;
  return n;
}

KvCache::KvCache(const ModelConfig& config, int capacity, KvBudget* budget)
    : n_layers_(config.n_layers),
      kv_dim_(config.kv_dim()),
      capacity_(std::clamp(capacity, 1, config.seq_len)),
      budget_(budget),
      block_bytes_(block_bytes_for(config)),
      pool_(&KvBlockPool::for_block_bytes(block_bytes_)) {}

KvCache::~KvCache() { release_from(0); }

std::uint64_t KvCache::block_bytes_for(const ModelConfig& config) {
  return 2ull * static_cast<std::uint64_t>(config.n_layers) * kBlockPositions *
         static_cast<std::uint64_t>(config.kv_dim()) * sizeof(float);
}

bool KvCache::reserve(int n_positions) {
  if (n_positions > capacity_) return false;
  while (reserved() < n_positions) {
    const bool charge = private_blocks() >= charged_blocks_;  // not charged ahead
    if (charge && budget_ != nullptr && !budget_->try_take(block_bytes_)) return false;
    float* block = pool_->take();
    if (block == nullptr) {
      if (charge && budget_ != nullptr) budget_->give_back(block_bytes_);
      return false;
    }
    blocks_.push_back(block);
    if (charge) ++charged_blocks_;
  }
  return true;
}

std::uint64_t KvCache::budget_needed(int n_positions) const {
  const std::size_t blocks = blocks_for(n_positions);
  std::size_t shared = 0;
  for (std::size_t i = 0; i < std::min(blocks, shared_.size()); ++i) shared += shared_[i] != nullptr ? 1 : 0;
  const std::size_t need = blocks - shared;  // private blocks positions [0, n) take
  return need <= charged_blocks_ ? 0 : static_cast<std::uint64_t>(need - charged_blocks_) * block_bytes_;
}

bool KvCache::reserve_budget(int n_positions) {
  if (n_positions > capacity_) return false;
  const std::uint64_t bytes = budget_needed(n_positions);
  if (bytes == 0) return true;
  if (budget_ != nullptr && !budget_->try_take(bytes)) return false;
  charged_blocks_ += static_cast<std::size_t>(bytes / block_bytes_);
  return true;
}

void KvCache::trim_budget() {
  if (charged_blocks_ > private_blocks() && budget_ != nullptr) {
    budget_->give_back(static_cast<std::uint64_t>(charged_blocks_ - private_blocks()) * block_bytes_);
  }
  charged_blocks_ = private_blocks();
}

void KvCache::pop_block() {
  const std::size_t i = blocks_.size() - 1;
  if (is_shared(i)) {
    PrefixBlock* b = shared_[i];
    shared_[i] = nullptr;
    --n_shared_;
    prefix_->release(b);
  } else {
    pool_->give(blocks_[i]);
  }
  blocks_.pop_back();
  if (shared_.size() > blocks_.size()) shared_.resize(blocks_.size());
}

int KvCache::release_from(int n_positions) {
  std::size_t keep = blocks_for(n_positions);
  int valid = std::min(n_positions, reserved());
  // A shared block is never written: one that the next positions would go into goes too.
  if (keep > 0 && keep <= blocks_.size() && n_positions % kBlockPositions != 0 && is_shared(keep - 1)) {
    --keep;
    valid = static_cast<int>(keep) * kBlockPositions;
  }
  while (blocks_.size() > keep) pop_block();
  trim_budget();
  return valid;
}

int KvCache::writable_from() const {
  for (std::size_t i = shared_.size(); i > 0; --i) {
    if (shared_[i - 1] != nullptr) return static_cast<int>(i) * kBlockPositions;
  }
  return 0;
}

}  // namespace llamawire
