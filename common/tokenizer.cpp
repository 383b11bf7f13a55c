#include "common/tokenizer.hpp"

#include "common/bytes.hpp"

#include <algorithm>
#include <cmath>

namespace llamawire {
namespace {

constexpr int kMaxTokenLength = 1 << 16;
constexpr int kMaxVocab = 1 << 22;
constexpr std::size_t kMaxTokenizerFileBytes = std::size_t{1} << 30;

// One single-byte string per byte value, so decode can return views for byte tokens.
const std::string& byte_piece(unsigned char b) {
  static const auto table = [] {
    std::vector<std::string> t(256);
    for (int i = 0; i < 256; ++i) t[static_cast<std::size_t>(i)] = std::string(1, static_cast<char>(i));
    return t;
  }();
  return table[b];
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<Tokenizer> Tokenizer::parse(std::span<const std::uint8_t> bytes, std::string_view name,
                                   int expected_vocab) {
  const std::string who(name);
  ByteReader r(bytes);
  const auto mtl = r.read<std::int32_t>();
  if (!mtl) return make_error(errc::bad_tokenizer, who + ": truncated: no max_token_length header");
  if (*mtl <= 0 || *mtl > kMaxTokenLength) {
    return make_error(errc::bad_tokenizer,
                      who + ": max_token_length " + std::to_string(*mtl) + " out of range [1, " +
                          std::to_string(kMaxTokenLength) + "]");
  }
  if (expected_vocab > kMaxVocab) {
    return make_error(errc::bad_tokenizer, who + ": vocab size " + std::to_string(expected_vocab) + " too large");
  }
  Tokenizer t;
  t.max_token_length_ = *mtl;
  if (expected_vocab > 0) {
    t.vocab_.reserve(static_cast<std::size_t>(expected_vocab));
    t.scores_.reserve(static_cast<std::size_t>(expected_vocab));
  }
  while (!r.empty() && (expected_vocab <= 0 || t.vocab_size() < expected_vocab)) {
    const int i = t.vocab_size();
    if (i >= kMaxVocab) return make_error(errc::bad_tokenizer, who + ": more than " + std::to_string(kMaxVocab) + " tokens");
    const auto score = r.read<float>();
    const auto len = r.read<std::int32_t>();
    if (!score || !len) {
      return make_error(errc::bad_tokenizer, who + ": truncated in the header of token " + std::to_string(i));
    }
    if (!std::isfinite(*score)) {
      return make_error(errc::bad_tokenizer, who + ": token " + std::to_string(i) + " has a non-finite score");
    }
    if (*len < 0 || *len > *mtl) {
      return make_error(errc::bad_tokenizer, who + ": token " + std::to_string(i) + " has length " +
                                                 std::to_string(*len) + ", outside [0, max_token_length " +
                                                 std::to_string(*mtl) + "]");
    }
    const auto piece = r.bytes(static_cast<std::size_t>(*len));
    if (!piece) {
      return make_error(errc::bad_tokenizer, who + ": truncated in the bytes of token " + std::to_string(i));
    }
    t.vocab_.emplace_back(reinterpret_cast<const char*>(piece->data()), piece->size());
    t.scores_.push_back(*score);
  }
  if (expected_vocab > 0 && t.vocab_size() < expected_vocab) {
    return make_error(errc::bad_tokenizer, who + ": holds " + std::to_string(t.vocab_size()) +
                                               " tokens but the model's vocab_size is " +
                                               std::to_string(expected_vocab));
  }
  if (!r.empty()) {
    return make_error(errc::bad_tokenizer, who + ": " + std::to_string(r.remaining()) +
                                               " bytes left after " + std::to_string(t.vocab_size()) +
                                               " tokens: vocab size differs from the model's (" +
                                               std::to_string(expected_vocab) + ")");
  }
  if (t.vocab_size() < 3) {
    return make_error(errc::bad_tokenizer, who + ": only " + std::to_string(t.vocab_size()) +
                                               " tokens; need at least <unk>, <s>, </s>");
  }
  // Every piece covers at most its own length of text, except byte-fallback tokens, which
  // cover one byte whatever their piece: an empty one of those would break the bound.
  t.max_bytes_per_token_ = static_cast<std::size_t>(t.max_token_length_);
  for (int id = 0; id < std::min(t.vocab_size(), 259); ++id) {
    if ((id == 0 || id >= 3) && t.vocab_[static_cast<std::size_t>(id)].empty()) t.max_bytes_per_token_ = 0;
  }
  t.index_.reserve(t.vocab_.size());
  for (int i = 0; i < t.vocab_size(); ++i) t.index_.emplace(t.vocab_[static_cast<std::size_t>(i)], i);
  t.raw_.assign(bytes.begin(), bytes.end());
  return t;
}

Result<Tokenizer> Tokenizer::load(const std::string& path, int expected_vocab) {
  // The header bounds the file: vocab tokens of (score, length, at most max_token_length
  // bytes) each. A larger file is refused before it is read.
  std::uint64_t size = 0;
  auto head = read_file_head(path, 4, &size);
  if (!head) return make_error(errc::bad_tokenizer, head.error().message);
  ByteReader hr(*head);
  if (const auto mtl = hr.read<std::int32_t>();
      mtl && *mtl > 0 && *mtl <= kMaxTokenLength && expected_vocab > 0 && expected_vocab <= kMaxVocab) {
    const std::uint64_t most = 4 + static_cast<std::uint64_t>(expected_vocab) * (8 + static_cast<std::uint64_t>(*mtl));
    if (size > most) {
      return make_error(errc::bad_tokenizer, path + ": " + std::to_string(size) + " bytes, more than " +
                                                 std::to_string(most) + " that " + std::to_string(expected_vocab) +
                                                 " tokens of at most " + std::to_string(*mtl) +
                                                 " bytes can take: vocab size differs from the model's (" +
                                                 std::to_string(expected_vocab) + ")");
    }
  }
  auto bytes = read_file(path, kMaxTokenizerFileBytes);
  if (!bytes) return make_error(errc::bad_tokenizer, bytes.error().message);
  return parse(*bytes, path, expected_vocab);
}

std::size_t Tokenizer::min_encoded_tokens(std::size_t text_bytes, bool bos, bool eos) const {
  std::size_t n = (bos ? 1 : 0) + (eos ? 1 : 0);
  if (text_bytes == 0) return n;
  if (max_bytes_per_token_ == 0) return n + 1;
  // The text and the dummy-prefix space, in tokens of at most max_bytes_per_token_ bytes.
  return n + (text_bytes + 1 + max_bytes_per_token_ - 1) / max_bytes_per_token_;
}

int Tokenizer::lookup(std::string_view s) const {
  const auto it = index_.find(s);
  return it == index_.end() ? -1 : it->second;
}

// Merges the adjacent pair with the highest score (leftmost on ties) until none merges, as
// llama2.c's loop does, in O(n log n) instead of its O(n^2): the tokens form a linked list,
// and every mergeable pair waits in a max-heap ordered by (score, then leftmost). A merge
// changes its left token and removes its right one; the entries that named either are left
// in the heap and skipped when they surface (each node's version tells them apart), and the
// two new pairs with the neighbours are pushed. The order of merges, and so the ids, are
// exactly those of the full rescan: the heap's top is the rescan's choice at every step
// (same scores, same tie rule, and positions keep their order in the list).
void Tokenizer::merge_pairs(std::vector<int>& tokens) const {
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
    float score;
    int left, right, id;
    std::uint32_t left_version, right_version;
  };
  // Top: the highest score; among equal scores, the leftmost (smallest position).
  auto below = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::vector<Pair> heap;
  heap.reserve(n);
  std::string merged;
  auto push = [&](int l, int r) {
    if (l == kNone || r == kNone) return;
    merged.assign(piece(tokens[static_cast<std::size_t>(l)]));
    merged += piece(tokens[static_cast<std::size_t>(r)]);
    const int id = lookup(merged);
    // llama2.c starts its search at a best score of -1e10 and takes only better ones.
    if (id < 0 || !(score(id) > -1e10f)) return;
    heap.push_back({score(id), l, r, id, version[static_cast<std::size_t>(l)], version[static_cast<std::size_t>(r)]});
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
  for (int i = 0; i != kNone; i = next[static_cast<std::size_t>(i)]) {
    tokens[out++] = tokens[static_cast<std::size_t>(i)];
  }
  tokens.resize(out);
}

std::vector<int> Tokenizer::encode(std::string_view text, bool bos, bool eos) const {
  std::vector<int> tokens;
  tokens.reserve(text.size() + 3);
  if (bos) tokens.push_back(kBosToken);
  if (!text.empty()) {
    // llama2.c adds the id of " " unconditionally; a vocab without " " has nothing to add.
    const int dummy_prefix = lookup(" ");
    if (dummy_prefix >= 0) tokens.push_back(dummy_prefix);
  }
  // UTF-8 code points: a lead byte followed by up to 3 continuation bytes.
  std::string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    const bool next_is_cont =
        i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (next_is_cont && buf.size() < 4) continue;
    const int id = lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      // Byte fallback: <0xXX> is id byte + 3 in Llama tokenizers. A vocabulary too small to
      // hold the byte tokens gets <unk> (0) instead of an id past its end.
      for (unsigned char b : buf) {
        const int byte_id = static_cast<int>(b) + 3;
        tokens.push_back(byte_id < vocab_size() ? byte_id : 0);
      }
    }
    buf.clear();
  }
  merge_pairs(tokens);
  if (eos) tokens.push_back(kEosToken);
  return tokens;
}

std::string_view Tokenizer::decode(int prev, int token) const {
  if (token < 0 || token >= vocab_size()) return {};
  std::string_view p = piece(token);
  if (prev == kBosToken && !p.empty() && p[0] == ' ') p.remove_prefix(1);
  // sscanf(piece, "<0x%02hhX>") semantics: "<0x" then one or two hex digits.
  if (p.size() >= 4 && p.substr(0, 3) == "<0x") {
    const int h1 = hex_digit(p[3]);
    if (h1 >= 0) {
      int v = h1;
      const int h2 = p.size() >= 5 ? hex_digit(p[4]) : -1;
      if (h2 >= 0) v = v * 16 + h2;
      return byte_piece(static_cast<unsigned char>(v));
    }
  }
  return p;
}

std::string_view printable_piece(std::string_view piece) {
  if (piece.empty()) return piece;
  if (piece.size() == 1) {
    const auto b = static_cast<unsigned char>(piece[0]);
    const bool print = b >= 0x20 && b <= 0x7E;
    const bool space = b == ' ' || (b >= '\t' && b <= '\r');
    if (!(print || space)) return {};
  }
  return piece;
}

}  // namespace llamawire
