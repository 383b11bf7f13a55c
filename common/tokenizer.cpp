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

int Tokenizer::lookup(std::string_view s) const {
  const auto it = index_.find(s);
  return it == index_.end() ? -1 : it->second;
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
  // Merge the adjacent pair with the highest score (leftmost on ties) until none merges.
  // pair_id[i] / pair_score[i] describe the merge of tokens[i] and tokens[i+1]; only the
  // neighbours of a merge are recomputed, which gives the same result as llama2.c's full
  // rescan without its quadratic string building.
  std::vector<int> pair_id;
  std::vector<float> pair_score;
  auto eval_pair = [&](std::size_t i) {
    std::string merged;
    merged.reserve(64);
    merged += piece(tokens[i]);
    merged += piece(tokens[i + 1]);
    const int id = lookup(merged);
    pair_id[i] = id;
    pair_score[i] = id >= 0 ? score(id) : 0.0f;
  };
  if (tokens.size() >= 2) {
    pair_id.resize(tokens.size() - 1);
    pair_score.resize(tokens.size() - 1);
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i) eval_pair(i);
  }
  while (tokens.size() >= 2) {
    float best_score = -1e10f;
    std::ptrdiff_t best = -1;
    for (std::size_t i = 0; i < pair_id.size(); ++i) {
      if (pair_id[i] >= 0 && pair_score[i] > best_score) {
        best_score = pair_score[i];
        best = static_cast<std::ptrdiff_t>(i);
      }
    }
    if (best < 0) break;
    const auto b = static_cast<std::size_t>(best);
    tokens[b] = pair_id[b];
    tokens.erase(tokens.begin() + best + 1);
    pair_id.erase(pair_id.begin() + best);
    pair_score.erase(pair_score.begin() + best);
    if (b < pair_id.size()) eval_pair(b);
    if (b > 0) eval_pair(b - 1);
  }
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
