#include "server/model/prefix_cache.hpp"

#include "common/error.hpp"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

namespace llamawire {

namespace {

constexpr int kBlk = KvCache::kBlockPositions;

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

BlockDigest sha256(const std::vector<std::uint8_t>& bytes) {
  BlockDigest d{};
  SHA256(bytes.data(), bytes.size(), d.data());
  return d;
}

}  // namespace

std::size_t PrefixCache::DigestHash::operator()(const BlockDigest& d) const {
  std::size_t h = 0;
  std::memcpy(&h, d.data(), sizeof(h));  // already uniform: a keyed SHA-256
  return h;
}

PrefixCache::PrefixCache(const ModelConfig& config, std::string_view model_id, std::uint64_t max_unreferenced_bytes,
                         KvBudget* budget, int digest_bytes)
    : block_bytes_(KvCache::block_bytes_for(config)),
      max_unreferenced_bytes_(max_unreferenced_bytes),
      budget_(budget),
      digest_bytes_(std::clamp(digest_bytes, 1, 32)),
      pool_(&KvBlockPool::for_block_bytes(block_bytes_)) {
  if (RAND_bytes(secret_.data(), static_cast<int>(secret_.size())) != 1) {
    std::random_device rd;  // the kernel's generator too, when OpenSSL's cannot be seeded
    for (auto& b : secret_) b = static_cast<std::uint8_t>(rd());
  }
  std::vector<std::uint8_t> root(secret_.begin(), secret_.end());
  root.insert(root.end(), model_id.begin(), model_id.end());
  for (int v : {config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.n_kv_heads, config.vocab_size,
                config.seq_len}) {
    put_u32(root, static_cast<std::uint32_t>(v));
  }
  model_root_ = sha256(root);
}

PrefixCache::~PrefixCache() {
  for (auto& [d, b] : entries_) {
    LW_ASSERT(b->refs == 0);
    pool_->give(b->data);
    if (budget_ != nullptr) budget_->give_back(block_bytes_);
    delete b;
  }
}

BlockDigest PrefixCache::digest(std::uint32_t tenant, const PrefixBlock* parent, int index,
                                std::span<const int> tokens) const {
  std::vector<std::uint8_t> in;
  in.reserve(32 + 32 + 8 + tokens.size() * 4);
  in.insert(in.end(), secret_.begin(), secret_.end());
  const BlockDigest& prev = parent != nullptr ? parent->digest : model_root_;
  in.insert(in.end(), prev.begin(), prev.end());
  put_u32(in, tenant);
  put_u32(in, static_cast<std::uint32_t>(index));
  for (int t : tokens) put_u32(in, static_cast<std::uint32_t>(t));
  BlockDigest d = sha256(in);
  std::fill(d.begin() + digest_bytes_, d.end(), std::uint8_t{0});
  return d;
}

PrefixBlock* PrefixCache::find(std::uint32_t tenant, const PrefixBlock* parent, int index, std::span<const int> tokens) {
  const auto it = entries_.find(digest(tenant, parent, index, tokens));
  if (it == entries_.end()) return nullptr;
  PrefixBlock* b = it->second;
  // The digest alone is never trusted: the entry must continue this very chain with these
  // very tokens.
  if (b->parent != parent || b->tenant != tenant || b->index != index ||
      !std::equal(tokens.begin(), tokens.end(), b->tokens.begin())) {
    ++stats_.collisions;
    return nullptr;
  }
  return b;
}

void PrefixCache::acquire(PrefixBlock* b) {
  if (evictable(b)) lru_.erase({b->last_used, b});
  if (b->refs++ == 0) stats_.unreferenced_bytes -= block_bytes_;
  b->last_used = ++tick_;
}

int PrefixCache::attach(KvCache& kv, std::uint32_t tenant, std::span<const int> tokens, int have, int max_blocks) {
  LW_ASSERT(kv.block_bytes() == block_bytes_);
  max_blocks = std::min(max_blocks, static_cast<int>(tokens.size()) / kBlk);
  if (max_blocks <= have) return have;
  std::vector<PrefixBlock*> found;
  {
    std::lock_guard lock(mutex_);
    ++stats_.lookups;
    // Follow the chain through the blocks kv has (they must be entries themselves, or the
    // chain cannot be told to continue), then collect what follows.
    const PrefixBlock* parent = nullptr;
    for (int i = 0; i < max_blocks; ++i) {
      const auto block_tokens = tokens.subspan(static_cast<std::size_t>(i) * kBlk, kBlk);
      PrefixBlock* b = i < have && kv.is_shared(static_cast<std::size_t>(i)) ? kv.shared_[static_cast<std::size_t>(i)]
                                                                             : find(tenant, parent, i, block_tokens);
      if (b == nullptr) break;
      if (i >= have) {
        acquire(b);
        found.push_back(b);
      }
      parent = b;
    }
    if (!found.empty()) {
      ++stats_.hits;
      stats_.blocks_attached += found.size();
    }
  }
  if (found.empty()) return have;
  kv.release_from(have * kBlk);
  for (PrefixBlock* b : found) {
    const std::size_t i = kv.blocks_.size();
    kv.blocks_.push_back(b->data);
    kv.shared_.resize(i + 1, nullptr);
    kv.shared_[i] = b;
    ++kv.n_shared_;
  }
  kv.prefix_ = this;
  return have + static_cast<int>(found.size());
}

int PrefixCache::publish(KvCache& kv, std::uint32_t tenant, std::span<const int> tokens, int valid) {
  LW_ASSERT(kv.block_bytes() == block_bytes_ && static_cast<int>(tokens.size()) >= valid);
  const std::size_t full = std::min(static_cast<std::size_t>(valid / kBlk), kv.blocks_.size());
  int published = 0;
  std::vector<float*> replaced;  // private blocks an equal entry replaced: back to the pool
  {
    std::lock_guard lock(mutex_);
    PrefixBlock* parent = nullptr;
    for (std::size_t i = 0; i < full; ++i) {
      if (kv.is_shared(i)) {
        parent = kv.shared_[i];
        continue;
      }
      if (i > 0 && parent == nullptr) break;  // the block before is private: no chain to extend
      const auto block_tokens = tokens.subspan(i * kBlk, kBlk);
      const BlockDigest d = digest(tenant, parent, static_cast<int>(i), block_tokens);
      PrefixBlock* b = nullptr;
      if (const auto it = entries_.find(d); it != entries_.end()) {
        b = it->second;
        if (b->parent != parent || b->tenant != tenant || b->index != static_cast<int>(i) ||
            !std::equal(block_tokens.begin(), block_tokens.end(), b->tokens.begin())) {
          ++stats_.collisions;  // another chain owns this digest: this one stays private
          break;
        }
        // Computed twice (two requests at once): the same bits, kept once.
        acquire(b);
        replaced.push_back(kv.blocks_[i]);
        kv.blocks_[i] = b->data;
        ++stats_.blocks_deduplicated;
      } else {
        b = new PrefixBlock;
        b->digest = d;
        b->parent = parent;
        b->tenant = tenant;
        b->index = static_cast<int>(i);
        std::copy(block_tokens.begin(), block_tokens.end(), b->tokens.begin());
        b->data = kv.blocks_[i];
        b->refs = 1;
        b->last_used = ++tick_;
        if (parent != nullptr) {
          if (evictable(parent)) lru_.erase({parent->last_used, parent});
          ++parent->children;
        }
        entries_.emplace(d, b);
        ++stats_.blocks;
        stats_.bytes += block_bytes_;
        ++stats_.blocks_published;
      }
      kv.shared_.resize(std::max(kv.shared_.size(), i + 1), nullptr);
      kv.shared_[i] = b;
      ++kv.n_shared_;
      // The block's charge moves here with it (or, replaced, goes back below).
      --kv.charged_blocks_;
      ++published;
      parent = b;
    }
    kv.prefix_ = this;
  }
  for (float* block : replaced) {
    pool_->give(block);
    if (budget_ != nullptr) budget_->give_back(block_bytes_);
  }
  return published;
}

void PrefixCache::release(PrefixBlock* b) {
  std::lock_guard lock(mutex_);
  LW_ASSERT(b->refs > 0);
  if (--b->refs == 0) {
    stats_.unreferenced_bytes += block_bytes_;
    if (evictable(b)) lru_.insert({b->last_used, b});
    trim();
  }
}

void PrefixCache::drop(PrefixBlock* b) {
  LW_ASSERT(evictable(b));
  lru_.erase({b->last_used, b});
  entries_.erase(b->digest);
  if (PrefixBlock* p = b->parent) {
    --p->children;
    if (evictable(p)) lru_.insert({p->last_used, p});
  }
  pool_->give(b->data);
  if (budget_ != nullptr) budget_->give_back(block_bytes_);
  --stats_.blocks;
  stats_.bytes -= block_bytes_;
  stats_.unreferenced_bytes -= block_bytes_;
  ++stats_.evictions;
  delete b;
}

void PrefixCache::trim() {
  while (stats_.unreferenced_bytes > max_unreferenced_bytes_ && !lru_.empty()) drop(lru_.begin()->second);
}

std::uint64_t PrefixCache::evict(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  std::uint64_t freed = 0;
  while (freed < bytes && !lru_.empty()) {
    drop(lru_.begin()->second);
    freed += block_bytes_;
  }
  return freed;
}

PrefixCache::Stats PrefixCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace llamawire
