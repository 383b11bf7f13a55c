// The merge loop shared by the SentencePiece and the byte-level BPE tokenizers: merge the
// best adjacent pair (leftmost among equals) until no pair merges, in O(n log n).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace llamawire {

struct MergeChoice {
  double priority;  // higher merges first
  int id;           // the token the pair becomes
};

// The tokens form a linked list and every mergeable pair waits in a max-heap ordered by
// (priority, then leftmost). A merge changes its left token and removes its right one; the
// entries that named either stay in the heap and are skipped when they surface (each
// node's version tells them apart), and the two new pairs with the neighbours are pushed.
// The order of merges is exactly that of a full rescan picking the best pair each time:
// the heap's top is the rescan's choice at every step (positions keep their order in the
// list). `choose(left, right)` returns the merge of two adjacent tokens, if any.
template <class Choose>
void merge_adjacent(std::vector<int>& tokens, Choose&& choose) {
  const std::size_t n = tokens.size();
  if (n < 2) return;
  constexpr int kNone = -1;
  std::vector<int> next(n), prev(n);
  std::vector<std::uint32_t> version(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? static_cast<int>(i + 1) : kNone;
    prev[i] = i > 0 ? static_cast<int>(i - 1) : kNone;
  }
  struct Pair {
    double priority;
    int left, right, id;
    std::uint32_t left_version, right_version;
  };
  auto below = [](const Pair& a, const Pair& b) {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  };
  std::vector<Pair> heap;
  heap.reserve(n);
  auto push = [&](int l, int r) {
    if (l == kNone || r == kNone) return;
    const std::optional<MergeChoice> m = choose(tokens[static_cast<std::size_t>(l)], tokens[static_cast<std::size_t>(r)]);
    if (!m) return;
    heap.push_back({m->priority, l, r, m->id, version[static_cast<std::size_t>(l)], version[static_cast<std::size_t>(r)]});
    std::push_heap(heap.begin(), heap.end(), below);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int>(i), static_cast<int>(i + 1));
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), below);
    const Pair p = heap.back();
    heap.pop_back();
    const auto l = static_cast<std::size_t>(p.left), r = static_cast<std::size_t>(p.right);
    if (!alive[l] || !alive[r] || next[l] != p.right || version[l] != p.left_version || version[r] != p.right_version) {
      continue;  // stale: one of its tokens has changed or gone since it was pushed
    }
    tokens[l] = p.id;
    ++version[l];
    alive[r] = 0;
    next[l] = next[r];
    if (next[r] != kNone) prev[static_cast<std::size_t>(next[r])] = p.left;
    push(prev[l], p.left);
    push(p.left, next[l]);
  }
  std::size_t out = 0;
  for (int i = 0; i != kNone; i = next[static_cast<std::size_t>(i)]) tokens[out++] = tokens[static_cast<std::size_t>(i)];
  tokens.resize(out);
}

}  // namespace llamawire
