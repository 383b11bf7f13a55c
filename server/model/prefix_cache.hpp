// Prefix caching: the keys and values of full 16-position blocks of token sequences, kept
// and shared read-only between sessions, so that a prompt's beginning that another request
// (or an earlier turn) has computed is attached instead of computed again.
//
//  - A block is identified by a digest chained over (the model, the tenant, the previous
//    block's digest, the block's index and its 16 tokens): SHA-256 keyed with a secret drawn
//    at startup, so no client can predict or aim at a digest. A lookup follows the chain and
//    on every hit also compares the tokens and the parent entry, so even a collision can
//    never attach wrong keys and values: it is only a miss.
//  - Entries are reference-counted: a KvCache holding one has a reference. A KvCache
//    attaches a chain of entries as its first blocks and computes past them in blocks of its
//    own; when it publishes, its full private blocks become entries (their memory and their
//    budget charge move to the cache, nothing is copied), or, where an equal entry already
//    exists, its block is given back and the entry used instead.
//  - The partial last block of a sequence is never an entry, and a lookup leaves at least
//    the last position of a prompt to compute (its logits are wanted).
//  - Unreferenced entries stay until memory is needed: past `max_unreferenced_bytes`, or
//    when the KV budget cannot hold a live request (Admission calls evict()). They go least
//    recently used first, and only leaves (an entry that another extends stays until that
//    one is gone), so a chain shrinks from its end.
//  - Tenants (API keys) have separate chains: the tenant is in the root of the digest and
//    in every entry, so a tenant can never attach, or time, another's blocks.
//
// Keys and values depend only on the tokens before them (the forward pass is batch
// invariant, bit for bit), so a sequence that attached cached blocks computes exactly the
// logits of one that computed them all. Thread-safe.
#pragma once

#include "server/model/kv_cache.hpp"

#include <array>
#include <cstdint>
#include <mutex>
#include <set>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace llamawire {

using BlockDigest = std::array<std::uint8_t, 32>;

// One cached block: an entry of the PrefixCache.
struct PrefixBlock {
  BlockDigest digest{};
  PrefixBlock* parent = nullptr;  // the block before it (nullptr for block 0)
  std::uint32_t tenant = 0;
  int index = 0;  // positions [16 index, 16 index + 16)
  std::array<int, KvCache::kBlockPositions> tokens{};
  float* data = nullptr;  // from the KvBlockPool
  int refs = 0;           // KvCaches holding it
  int children = 0;       // entries whose parent it is
  std::uint64_t last_used = 0;
};

class PrefixCache {
 public:
  struct Stats {
    std::uint64_t blocks = 0;               // entries now
    std::uint64_t bytes = 0;                // their memory
    std::uint64_t unreferenced_bytes = 0;   // of entries no KvCache holds
    std::uint64_t lookups = 0;              // attach() calls that could find something
    std::uint64_t hits = 0;                 // of those, the ones that attached at least one block
    std::uint64_t blocks_attached = 0;      // blocks attached, all lookups
    std::uint64_t blocks_published = 0;     // private blocks that became entries
    std::uint64_t blocks_deduplicated = 0;  // published blocks an equal entry replaced
    std::uint64_t evictions = 0;            // entries evicted
    std::uint64_t collisions = 0;           // digests found with other tokens (never attached)
  };

  // `model_id` names the weights (part of every digest); `budget` is the KV budget the
  // entries are charged to (nullptr: none). `digest_bytes` (1-32) keeps only that many bytes
  // of each digest: tests use 1 to make collisions certain.
  PrefixCache(const ModelConfig& config, std::string_view model_id, std::uint64_t max_unreferenced_bytes,
              KvBudget* budget, int digest_bytes = 32);
  // Every KvCache holding entries must be gone; the entries' blocks go back.
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // Attaches to `kv` the cached blocks that follow its first `have` blocks (which hold
  // `tokens`' keys and values) along `tokens`, up to `max_blocks` in all; kv's blocks from
  // `have` on are released first if anything is attached. Returns the blocks whose keys
  // and values kv now holds for `tokens` (have when nothing was found).
  int attach(KvCache& kv, std::uint32_t tenant, std::span<const int> tokens, int have, int max_blocks);
  // Makes kv's full private blocks within positions [0, valid) entries, in order from the
  // first, as long as the chain holds (a block after a private block that could not be
  // published stays private). `tokens` holds at least `valid` tokens. Returns the blocks
  // published or deduplicated.
  int publish(KvCache& kv, std::uint32_t tenant, std::span<const int> tokens, int valid);
  // Evicts unreferenced leaves, least recently used first, until at least `bytes` are
  // given back to the budget or none is left; the bytes freed.
  std::uint64_t evict(std::uint64_t bytes);
  // A KvCache gives back its reference.
  void release(PrefixBlock* b);

  Stats stats() const;
  std::uint64_t block_bytes() const { return block_bytes_; }
  // The digest of a block after `parent` (nullptr: the tenant's root).
  BlockDigest digest(std::uint32_t tenant, const PrefixBlock* parent, int index, std::span<const int> tokens) const;

 private:
  struct DigestHash {
    std::size_t operator()(const BlockDigest& d) const;
  };
  using Lru = std::set<std::pair<std::uint64_t, PrefixBlock*>>;  // (last_used, entry): evictable leaves

  PrefixBlock* find(std::uint32_t tenant, const PrefixBlock* parent, int index, std::span<const int> tokens);
  // With mutex_ held.
  void acquire(PrefixBlock* b);
  bool evictable(const PrefixBlock* b) const { return b->refs == 0 && b->children == 0; }
  void drop(PrefixBlock* b);  // frees an evictable entry
  void trim();                // to max_unreferenced_bytes_

  std::uint64_t block_bytes_;
  std::uint64_t max_unreferenced_bytes_;
  KvBudget* budget_;
  int digest_bytes_;
  KvBlockPool* pool_;
  std::array<std::uint8_t, 32> secret_{};
  BlockDigest model_root_{};  // digest of (secret, model id, shape)
  mutable std::mutex mutex_;
  std::unordered_map<BlockDigest, PrefixBlock*, DigestHash> entries_;
  Lru lru_;
  std::uint64_t tick_ = 0;
  Stats stats_;
};

}  // namespace llamawire
