#include "common/tokenizer.hpp"

#include "common/bytes.hpp"
#include "common/pair_merge.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>

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
  t.finish_index();
  t.raw_.assign(bytes.begin(), bytes.end());
  t.vocab_data_.kind = VocabKind::llama2c;
  t.vocab_data_.pieces = t.vocab_;
  t.vocab_data_.scores = t.scores_;
  return t;
}

void Tokenizer::finish_index() {
  index_.clear();
  index_.reserve(vocab_.size());
  for (int i = 0; i < vocab_size(); ++i) index_.emplace(vocab_[static_cast<std::size_t>(i)], i);
}

namespace {

constexpr std::string_view kSpaceMarker = "\xe2\x96\x81";  // U+2581, SentencePiece's space

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (s.substr(i, from.size()) == from) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

// "<0xXX>" exactly, as a byte value; -1 otherwise.
int byte_token_value(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  const int h1 = hex_digit(p[3]), h2 = hex_digit(p[4]);
  return h1 < 0 || h2 < 0 ? -1 : h1 * 16 + h2;
}

// Sizes, scores, types and special ids of a vocabulary received or read: all checked.
std::optional<Error> check_vocab(const Vocab& v, std::string_view name) {
  const std::string who(name);
  auto fail = [&](const std::string& what) { return make_error(errc::bad_tokenizer, who + ": " + what); };
  const std::size_t n = v.pieces.size();
  if (n < 3 || n > static_cast<std::size_t>(kMaxVocab)) {
    return fail(std::to_string(n) + " tokens (must be in [3, " + std::to_string(kMaxVocab) + "])");
  }
  if (v.scores.size() != n) return fail("scores hold " + std::to_string(v.scores.size()) + " values for " + std::to_string(n) + " tokens");
  if (!v.types.empty() && v.types.size() != n) {
    return fail("token types hold " + std::to_string(v.types.size()) + " values for " + std::to_string(n) + " tokens");
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v.scores[i])) return fail("token " + std::to_string(i) + " has a non-finite score");
    if (v.pieces[i].size() > static_cast<std::size_t>(kMaxTokenLength)) return fail("token " + std::to_string(i) + " is longer than 65536 bytes");
    if (!v.types.empty() && static_cast<int>(v.types[i]) > 6) return fail("token " + std::to_string(i) + " has an unknown type");
  }
  if (v.merges.size() > static_cast<std::size_t>(kMaxVocab) * 4) {
    return fail(std::to_string(v.merges.size()) + " merges: too many");
  }
  for (std::size_t i = 0; i < v.merges.size(); ++i) {
    if (v.merges[i].size() > 2 * static_cast<std::size_t>(kMaxTokenLength) + 1) {
      return fail("merge " + std::to_string(i) + " is too long");
    }
  }
  if (v.kind == VocabKind::bpe && !bpe::pre_tokenizer_from_name(v.pre)) {
    return fail("pre-tokenizer '" + v.pre + "' is not supported (" + std::string(bpe::known_pre_tokenizers()) + ")");
  }
  const int vn = static_cast<int>(n);
  auto check_id = [&](int id, const char* what, bool optional) -> std::optional<Error> {
    if ((optional && id == -1) || (id >= 0 && id < vn)) return std::nullopt;
    return fail(std::string(what) + " id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(vn) + " tokens)");
  };
  for (const auto& [id, what, opt] : {std::tuple{v.special.bos, "BOS", true}, {v.special.eos, "EOS", true},
                                      {v.special.eot, "end-of-turn", true}, {v.special.unk, "unknown-token", true},
                                      {v.special.pad, "padding", true}}) {
    if (auto e = check_id(id, what, opt)) return e;
  }
  return std::nullopt;
}

}  // namespace

Result<Tokenizer> Tokenizer::from_vocab(Vocab v, std::string_view name) {
  if (auto e = check_vocab(v, name)) return *e;
  const std::size_t n = v.pieces.size();
  const int vn = static_cast<int>(n);
  Tokenizer t;
  if (v.kind == VocabKind::llama2c) {
    // A llama2.c vocabulary received as data: as if its tokenizer.bin had been read.
    ByteWriter w;
    int mtl = 1;
    for (const auto& p : v.pieces) mtl = std::max(mtl, static_cast<int>(p.size()));
    w.write<std::int32_t>(mtl);
    for (std::size_t i = 0; i < n; ++i) {
      w.write<float>(v.scores[i]);
      w.write<std::int32_t>(static_cast<std::int32_t>(v.pieces[i].size()));
      w.bytes(std::string_view(v.pieces[i]));
    }
    const auto bytes = w.take();
    auto parsed = parse(bytes, name, vn);
    if (!parsed) return parsed.error();
    parsed->vocab_data_.special = v.special;
    return parsed;
  }
  if (v.types.empty()) v.types.assign(n, TokenType::normal);
  const bool is_bpe = v.kind == VocabKind::bpe;
  t.vocab_.resize(n);
  t.decoded_.resize(n);
  t.scores_ = v.scores;
  for (int& b : t.byte_ids_) b = v.special.unk >= 0 ? v.special.unk : 0;
  std::size_t longest = 1;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string& p = v.pieces[i];
    const TokenType ty = v.types[i];
    const bool text = ty == TokenType::normal || ty == TokenType::undefined;
    if (is_bpe) {
      // A normal piece stands for bytes; one outside the byte alphabet is taken as written.
      auto bytes = text ? bpe::symbols_to_bytes(p) : std::nullopt;
      t.vocab_[i] = bytes ? std::move(*bytes) : p;
    } else {
      t.vocab_[i] = replace_all(p, kSpaceMarker, " ");
    }
    longest = std::max(longest, t.vocab_[i].size());
    switch (ty) {
      case TokenType::normal:
      case TokenType::undefined: t.decoded_[i] = t.vocab_[i]; break;
      case TokenType::user_defined: t.decoded_[i] = p; break;
      case TokenType::byte: {
        const int b = byte_token_value(p);
        if (b < 0) {
          return make_error(errc::bad_tokenizer, std::string(name) + ": token " + std::to_string(i) +
                                                     " is of type BYTE but its text is not <0xXX>");
        }
        t.decoded_[i] = std::string(1, static_cast<char>(b));
        t.byte_ids_[b] = static_cast<int>(i);
        break;
      }
      default: break;  // control, unknown, unused: nothing
    }
  }
  t.max_token_length_ = static_cast<int>(longest);
  t.max_bytes_per_token_ = longest;
  t.finish_index();
  if (is_bpe) {
    std::vector<bool> normal(n);
    for (std::size_t i = 0; i < n; ++i) normal[i] = v.types[i] == TokenType::normal || v.types[i] == TokenType::undefined;
    auto enc = bpe::Encoder::build(v.pieces, normal, v.merges, v.pre, v.special.unk, name);
    if (!enc) return enc.error();
    t.bpe_ = std::make_unique<const bpe::Encoder>(std::move(*enc));
  } else {
    // Bytes for 1.0 clients: the same pieces in tokenizer.bin form.
    ByteWriter w;
    w.write<std::int32_t>(t.max_token_length_);
    for (std::size_t i = 0; i < n; ++i) {
      w.write<float>(t.scores_[i]);
      w.write<std::int32_t>(static_cast<std::int32_t>(t.vocab_[i].size()));
      w.bytes(std::string_view(t.vocab_[i]));
    }
    t.raw_ = w.take();
  }
  t.vocab_data_ = std::move(v);
  for (std::size_t i = 0; i < n; ++i) {
    const TokenType ty = t.vocab_data_.types[i];
    const std::string& p = t.vocab_data_.pieces[i];
    if (p.empty()) continue;
    if (ty == TokenType::control || ty == TokenType::unknown || ty == TokenType::user_defined) {
      t.specials_.push_back({p, static_cast<int>(i), ty == TokenType::user_defined});
    }
  }
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });
  for (std::size_t k = 0; k < t.specials_.size(); ++k) {
    t.special_by_byte_[static_cast<unsigned char>(t.specials_[k].text[0])].push_back(static_cast<int>(k));
  }
  return t;
}

TokenType Tokenizer::type(int id) const {
  if (id < 0 || id >= vocab_size() || vocab_data_.types.empty()) return TokenType::normal;
  return vocab_data_.types[static_cast<std::size_t>(id)];
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
  // The text and (but for bpe) the dummy-prefix space, in tokens of at most
  // max_bytes_per_token_ bytes. (bpe reads an ill-formed byte as U+FFFD, three bytes: the
  // text only grows.)
  const std::size_t prefix = vocab_data_.kind == VocabKind::bpe ? 0 : 1;
  return n + (text_bytes + prefix + max_bytes_per_token_ - 1) / max_bytes_per_token_;
}

int Tokenizer::lookup(std::string_view s) const {
  const auto it = index_.find(s);
  return it == index_.end() ? -1 : it->second;
}

// Merges the adjacent pair with the highest score (leftmost on ties) until none merges, as
// llama2.c's loop does, in O(n log n) instead of its O(n^2) (see merge_adjacent).
void Tokenizer::merge_pairs(std::vector<int>& tokens) const {
  std::string merged;
  merge_adjacent(tokens, [&](int l, int r) -> std::optional<MergeChoice> {
    merged.assign(piece(l));
    merged += piece(r);
    const int id = lookup(merged);
    // llama2.c starts its search at a best score of -1e10 and takes only better ones.
    if (id < 0 || !(score(id) > -1e10f)) return std::nullopt;
    return MergeChoice{score(id), id};
  });
}

void Tokenizer::append_code_points(std::string_view text, std::vector<int>& tokens) const {
  // UTF-8 code points: a lead byte followed by up to 3 continuation bytes.
  const bool spm = vocab_data_.kind == VocabKind::spm;
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
      for (unsigned char b : buf) {
        if (spm) {
          tokens.push_back(byte_ids_[b]);
        } else {
          // Byte fallback: <0xXX> is id byte + 3 in Llama tokenizers. A vocabulary too small
          // to hold the byte tokens gets <unk> (0) instead of an id past its end.
          const int byte_id = static_cast<int>(b) + 3;
          tokens.push_back(byte_id < vocab_size() ? byte_id : 0);
        }
      }
    }
    buf.clear();
  }
}

std::vector<int> Tokenizer::encode(std::string_view text, bool bos, bool eos, bool parse_special) const {
  if (vocab_data_.kind != VocabKind::llama2c) return encode_vocab(text, bos, eos, parse_special);
  std::vector<int> tokens;
  tokens.reserve(text.size() + 3);
  if (bos) tokens.push_back(kBosToken);
  if (!text.empty()) {
    // llama2.c adds the id of " " unconditionally; a vocab without " " has nothing to add.
    const int dummy_prefix = lookup(" ");
    if (dummy_prefix >= 0) tokens.push_back(dummy_prefix);
  }
  append_code_points(text, tokens);
  merge_pairs(tokens);
  if (eos) tokens.push_back(kEosToken);
  return tokens;
}

void Tokenizer::encode_fragment(std::string_view raw, bool after_special, std::vector<int>& out) const {
  if (raw.empty()) return;
  if (bpe_) {
    bpe_->encode(raw, out);
    return;
  }
  std::string buf;
  if (vocab_data_.add_space_prefix && after_special) buf.push_back(' ');
  buf.append(raw);
  std::vector<int> frag;
  append_code_points(buf, frag);
  merge_pairs(frag);
  out.insert(out.end(), frag.begin(), frag.end());
}

std::vector<int> Tokenizer::encode_vocab(std::string_view text, bool bos, bool eos, bool parse_special) const {
  std::vector<int> out;
  out.reserve(text.size() / 2 + 3);
  const SpecialTokens& sp = vocab_data_.special;
  if (bos && sp.bos >= 0) out.push_back(sp.bos);
  bool after_special = true;  // the first fragment gets the space prefix too
  auto flush = [&](std::string_view raw) {
    if (raw.empty()) return;
    encode_fragment(raw, after_special, out);
    after_special = false;
  };
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const Special* hit = nullptr;
    for (const int k : special_by_byte_[static_cast<unsigned char>(text[i])]) {
      const Special& s = specials_[static_cast<std::size_t>(k)];
      if ((s.always || parse_special) && text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;  // longest first
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    flush(text.substr(start, i - start));
    out.push_back(hit->id);
    after_special = true;
    i += hit->text.size();
    start = i;
  }
  flush(text.substr(start));
  if (eos && sp.eos >= 0) out.push_back(sp.eos);
  return out;
}

std::string_view Tokenizer::decode(int prev, int token) const {
  if (token < 0 || token >= vocab_size()) return {};
  if (vocab_data_.kind == VocabKind::bpe) return decoded_[static_cast<std::size_t>(token)];
  if (vocab_data_.kind == VocabKind::spm) {
    std::string_view d = decoded_[static_cast<std::size_t>(token)];
    if (prev == vocab_data_.special.bos && !d.empty() && d[0] == ' ') d.remove_prefix(1);
    return d;
  }
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
