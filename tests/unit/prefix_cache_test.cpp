#include "server/model/prefix_cache.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace lw = llamawire;

namespace {

constexpr int kBlk = lw::KvCache::kBlockPositions;

lw::ModelConfig config() {
  lw::ModelConfig c;
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 64;
  c.seq_len = 256;
  return c;
}

// What a forward pass would write: every row of position p gets a value that depends on
// the tokens [0, p] (a stand-in for keys and values, which depend on exactly those).
float stamp(const std::vector<int>& tokens, int p) {
  std::uint32_t h = 2166136261u;
  for (int i = 0; i <= p; ++i) h = (h ^ static_cast<std::uint32_t>(tokens[static_cast<std::size_t>(i)])) * 16777619u;
  return static_cast<float>(h % 1000003u);
}

void compute(lw::KvCache& kv, const std::vector<int>& tokens, int from, int to, int kv_dim) {
  REQUIRE(kv.reserve(to));
  for (int p = from; p < to; ++p) {
    for (int l = 0; l < 2; ++l) {
      std::fill_n(kv.key(l, p), kv_dim, stamp(tokens, p));
      std::fill_n(kv.value(l, p), kv_dim, -stamp(tokens, p));
    }
  }
}

bool holds(const lw::KvCache& kv, const std::vector<int>& tokens, int n, int kv_dim) {
  for (int p = 0; p < n; ++p) {
    for (int l = 0; l < 2; ++l) {
      for (int i = 0; i < kv_dim; ++i) {
        if (kv.key(l, p)[i] != stamp(tokens, p) || kv.value(l, p)[i] != -stamp(tokens, p)) return false;
      }
    }
  }
  return true;
}

std::vector<int> seq(int n, int base) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = (base + i * 7) % 64;
  return v;
}

}  // namespace

TEST_CASE("prefix cache: published blocks are attached by later caches, budget charged once", "[kv][prefix]") {
  const auto c = config();
  const int KV = c.kv_dim();
  lw::KvBudget budget(0);
  lw::PrefixCache cache(c, "m", 1ull << 30, &budget);
  const std::uint64_t block = cache.block_bytes();
  const auto tokens = seq(70, 3);  // 4 full blocks and 6 positions
  {
    lw::KvCache a(c, 256, &budget);
    compute(a, tokens, 0, 70, KV);
    CHECK(budget.used() == 5 * block);
    CHECK(cache.publish(a, 0, tokens, 70) == 4);  // the partial block stays private
    CHECK(a.shared_blocks() == 4);
    CHECK(a.writable_from() == 64);
    CHECK(budget.used() == 5 * block);  // the charge moved, nothing copied
    CHECK(cache.publish(a, 0, tokens, 70) == 0);  // nothing new

    lw::KvCache b(c, 256, &budget);
    // The last position is always computed: a 64-token prompt attaches 3 blocks, not 4.
    CHECK(cache.attach(b, 0, std::span(tokens).first(64), 0, 63 / kBlk) == 3);
    CHECK(b.reserved() == 48);
    CHECK(holds(b, tokens, 48, KV));
    CHECK(budget.used() == 5 * block);  // attaching is free
    // Another tenant sees nothing.
    lw::KvCache other(c, 256, &budget);
    CHECK(cache.attach(other, 7, tokens, 0, 4) == 0);
    CHECK(other.reserved() == 0);
    // A different token in block 2 ends the chain there.
    auto diverged = tokens;
    diverged[40] = (diverged[40] + 1) % 64;
    lw::KvCache d(c, 256, &budget);
    CHECK(cache.attach(d, 0, diverged, 0, 4) == 2);
    const auto s = cache.stats();
    CHECK(s.blocks == 4);
    CHECK(s.unreferenced_bytes == 0);
    CHECK(s.hits == 2);
    CHECK(s.lookups == 3);
  }
  // Everyone gone: the entries stay, unreferenced, still charged.
  const auto s = cache.stats();
  CHECK(s.blocks == 4);
  CHECK(s.unreferenced_bytes == 4 * block);
  CHECK(budget.used() == 4 * block);
  // Eviction gives them back, leaves first.
  CHECK(cache.evict(block) == block);
  CHECK(cache.stats().blocks == 3);
  lw::KvCache e(c, 256, &budget);
  CHECK(cache.attach(e, 0, tokens, 0, 4) == 3);  // blocks 0-2 are still there
  CHECK(cache.evict(100 * block) == 0);          // all referenced now
  e.release_from(0);
  CHECK(cache.evict(100 * block) == 3 * block);
  CHECK(budget.used() == 0);
}

TEST_CASE("prefix cache: a block computed twice is kept once, and diverging caches copy nothing", "[kv][prefix]") {
  const auto c = config();
  const int KV = c.kv_dim();
  lw::KvBudget budget(0);
  lw::PrefixCache cache(c, "m", 1ull << 30, &budget);
  const std::uint64_t block = cache.block_bytes();
  const auto tokens = seq(40, 5);
  lw::KvCache a(c, 256, &budget), b(c, 256, &budget);
  compute(a, tokens, 0, 40, KV);
  compute(b, tokens, 0, 40, KV);
  CHECK(budget.used() == 6 * block);
  CHECK(cache.publish(a, 0, tokens, 40) == 2);
  CHECK(cache.publish(b, 0, tokens, 40) == 2);  // deduplicated: b's own blocks go back
  CHECK(budget.used() == 4 * block);
  CHECK(cache.stats().blocks_deduplicated == 2);
  CHECK(b.key(0, 0) == a.key(0, 0));
  CHECK(holds(b, tokens, 40, KV));
  // b goes on differently after position 32: its own block, the shared ones untouched.
  auto other = tokens;
  other.resize(32);
  for (int i = 0; i < 20; ++i) other.push_back(i);
  b.release_from(32);
  compute(b, other, 32, 52, KV);
  CHECK(holds(a, tokens, 40, KV));
  CHECK(holds(b, other, 52, KV));
  CHECK(cache.publish(b, 0, other, 52) == 1);
  CHECK(cache.stats().blocks == 3);
}

TEST_CASE("prefix cache: a rewind into a shared block drops it instead of writing it", "[kv][prefix]") {
  const auto c = config();
  const int KV = c.kv_dim();
  lw::KvBudget budget(0);
  lw::PrefixCache cache(c, "m", 1ull << 30, &budget);
  const auto tokens = seq(48, 9);
  lw::KvCache a(c, 256, &budget);
  compute(a, tokens, 0, 48, KV);
  cache.publish(a, 0, tokens, 48);
  lw::KvCache b(c, 256, &budget);
  REQUIRE(cache.attach(b, 0, tokens, 0, 3) == 3);
  CHECK(b.release_from(40) == 32);  // position 40 is inside shared block 2: it goes
  CHECK(b.reserved() == 32);
  CHECK(b.writable_from() == 32);
  CHECK(b.release_from(32) == 32);  // a block boundary keeps what it has
  CHECK(b.release_from(0) == 0);
  CHECK(holds(a, tokens, 48, KV));
}

TEST_CASE("prefix cache: unreferenced blocks past --prefix-cache-mb go least recently used, leaves first",
          "[kv][prefix]") {
  const auto c = config();
  const int KV = c.kv_dim();
  lw::KvBudget budget(0);
  const std::uint64_t block = lw::KvCache::block_bytes_for(c);
  lw::PrefixCache cache(c, "m", 5 * block, &budget);
  const auto x = seq(64, 1), y = seq(64, 2);
  for (const auto* t : {&x, &y}) {
    lw::KvCache k(c, 256, &budget);
    compute(k, *t, 0, 64, KV);
    CHECK(cache.publish(k, 0, *t, 64) == 4);
  }
  // 8 unreferenced blocks, 5 allowed: x's three last blocks went (x is older), from its end.
  CHECK(cache.stats().blocks == 5);
  CHECK(cache.stats().evictions == 3);
  lw::KvCache probe(c, 256, &budget);
  CHECK(cache.attach(probe, 0, x, 0, 4) == 1);
  probe.release_from(0);
  lw::KvCache probe2(c, 256, &budget);
  CHECK(cache.attach(probe2, 0, y, 0, 4) == 4);
  CHECK(budget.used() == 5 * block);
}

TEST_CASE("prefix cache: colliding digests never attach another sequence's blocks", "[kv][prefix]") {
  const auto c = config();
  const int KV = c.kv_dim();
  lw::KvBudget budget(0);
  // One byte of digest: 256 values for hundreds of blocks, so collisions are certain.
  lw::PrefixCache cache(c, "m", 1ull << 30, &budget, 1);
  std::mt19937 rng(42);
  std::vector<std::vector<int>> seqs;
  for (int i = 0; i < 60; ++i) {
    std::vector<int> t(96);
    for (auto& v : t) v = static_cast<int>(rng() % 64);
    if (i % 3 == 1) std::copy_n(seqs.back().begin(), 32, t.begin());  // some share a prefix
    lw::KvCache k(c, 256, &budget);
    compute(k, t, 0, 96, KV);
    cache.publish(k, 0, t, 96);
    seqs.push_back(t);
  }
  CHECK(cache.stats().collisions > 0);
  int attached = 0;
  for (const auto& t : seqs) {
    lw::KvCache k(c, 256, &budget);
    const int got = cache.attach(k, 0, t, 0, 6);
    attached += got;
    // Whatever was attached holds exactly this sequence's keys and values.
    CHECK(holds(k, t, got * kBlk, KV));
  }
  CHECK(attached > 0);
}
