#include "server/model/kv_cache.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <new>

namespace llamawire {

bool KvBudget::try_take(std::uint64_t bytes) {
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

void KvBudget::give_back(std::uint64_t bytes) { used_.fetch_sub(bytes); }

KvCache::KvCache(const ModelConfig& config, int ctx, KvBudget* budget)
    : n_layers_(config.n_layers),
      kv_dim_(config.kv_dim()),
      ctx_(std::clamp(ctx, 1, config.seq_len)),
      budget_(budget),
      block_bytes_(2ull * static_cast<std::uint64_t>(config.n_layers) * kBlockPositions *
                   static_cast<std::uint64_t>(config.kv_dim()) * sizeof(float)) {}

KvCache::~KvCache() { release_from(0); }

bool KvCache::reserve(int n_positions) {
  if (n_positions > ctx_) return false;
  while (reserved() < n_positions) {
    if (budget_ != nullptr && !budget_->try_take(block_bytes_)) return false;
    float* block = new (std::nothrow) float[block_bytes_ / sizeof(float)];
    if (block == nullptr) {
      if (budget_ != nullptr) budget_->give_back(block_bytes_);
      return false;
    }
    blocks_.emplace_back(block);
  }
  return true;
}

void KvCache::release_from(int n_positions) {
  const std::size_t keep = static_cast<std::size_t>((std::max(n_positions, 0) + kBlockPositions - 1) / kBlockPositions);
  while (blocks_.size() > keep) {
    blocks_.pop_back();
    if (budget_ != nullptr) budget_->give_back(block_bytes_);
  }
}

}  // namespace llamawire
