#include "common/bpe.hpp"

#include "common/pair_merge.hpp"
#include "common/unicode.hpp"

#include <array>

namespace llamawire::bpe {
namespace {

using unicode::is_letter;
using unicode::is_number;
using unicode::is_white_space;

bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }
bool is_other(char32_t c) { return !is_white_space(c) && !is_letter(c) && !is_number(c); }
char32_t ascii_lower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// The length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
std::uint32_t contraction(std::span<const char32_t> t, std::size_t i, bool any_case) {
  const std::size_t n = t.size();
  if (t[i] != '\'' || i + 1 >= n) return 0;
  auto at = [&](std::size_t k) { return k < n ? (any_case ? ascii_lower(t[k]) : t[k]) : char32_t{0}; };
  const char32_t a = at(i + 1), b = at(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

template <class Pred>
std::size_t run(std::span<const char32_t> t, std::size_t i, Pred p, std::size_t most = SIZE_MAX) {
  std::size_t j = i;
  while (j < t.size() && j - i < most && p(t[j])) ++j;
  return j;
}

// \s+(?!\S) then \s+, for a whitespace run [i, r): all of it at the end of the text, else
// all but its last character (which goes with what follows), else the one character.
std::size_t trailing_space(std::size_t i, std::size_t r, std::size_t n) { return r == n || r - i < 2 ? r : r - 1; }

void split_llama3(std::span<const char32_t> t, std::size_t base, std::vector<Range>& out) {
  const std::size_t n = t.size();
  std::size_t i = 0;
  auto emit = [&](std::size_t j) {
    out.emplace_back(static_cast<std::uint32_t>(base + i), static_cast<std::uint32_t>(base + j));
    i = j;
  };
  while (i < n) {
    const char32_t c = t[i];
    if (const auto m = contraction(t, i, true)) {
      emit(i + m);
    } else if (is_letter(c)) {
      emit(run(t, i, is_letter));
    } else if (!is_newline(c) && !is_number(c) && i + 1 < n && is_letter(t[i + 1])) {
      emit(run(t, i + 1, is_letter));  // one leading non-letter, non-digit, then letters
    } else if (is_number(c)) {
      emit(run(t, i, is_number, 3));
    } else if (const std::size_t o = i + (c == ' ' ? 1 : 0); o < n && is_other(t[o])) {
      emit(run(t, run(t, o, is_other), is_newline));
    } else {
      // Whitespace (anything else was taken above): \s*[\r\n]+ ends after the run's last
      // newline; without one, \s+(?!\S) or \s+.
      const std::size_t r = run(t, i, is_white_space);
      std::size_t after_newline = 0;
      for (std::size_t k = r; k > i; --k) {
        if (is_newline(t[k - 1])) {
          after_newline = k;
          break;
        }
      }
      emit(after_newline != 0 ? after_newline : trailing_space(i, r, n));
    }
  }
}

void split_gpt2(std::span<const char32_t> t, std::size_t base, std::vector<Range>& out) {
  const std::size_t n = t.size();
  std::size_t i = 0;
  auto emit = [&](std::size_t j) {
    out.emplace_back(static_cast<std::uint32_t>(base + i), static_cast<std::uint32_t>(base + j));
    i = j;
  };
  while (i < n) {
    const char32_t c = t[i];
    const std::size_t k = i + (c == ' ' ? 1 : 0);
    if (const auto m = contraction(t, i, false)) {
      emit(i + m);
    } else if (k < n && is_letter(t[k])) {
      emit(run(t, k, is_letter));
    } else if (k < n && is_number(t[k])) {
      emit(run(t, k, is_number));
    } else if (k < n && is_other(t[k])) {
      emit(run(t, k, is_other));
    } else {
      emit(trailing_space(i, run(t, i, is_white_space), n));
    }
  }
}

const std::array<std::string, 256>& symbol_table() {
  static const auto table = [] {
    std::array<std::string, 256> t;
    char32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool itself = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      unicode::append_utf8(itself ? static_cast<char32_t>(b) : extra++, t[static_cast<std::size_t>(b)]);
    }
    return t;
  }();
  return table;
}

}  // namespace

std::optional<PreTokenizer> pre_tokenizer_from_name(std::string_view name) {
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3" || name == "falcon3") return PreTokenizer::llama3;
  if (name == "gpt-2") return PreTokenizer::gpt2;
  if (name == "smollm") return PreTokenizer::smollm;
  return std::nullopt;
}

std::string_view pre_tokenizer_name(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::llama3: return "llama-bpe";
    case PreTokenizer::gpt2: return "gpt-2";
    case PreTokenizer::smollm: return "smollm";
  }
  return "?";
}

std::string_view known_pre_tokenizers() { return "llama-bpe, llama3, llama-v3, falcon3, smollm, gpt-2"; }

std::string_view byte_to_symbol(unsigned char b) { return symbol_table()[b]; }

std::optional<std::string> symbols_to_bytes(std::string_view piece) {
  static const auto reverse = [] {
    std::unordered_map<char32_t, unsigned char> m;
    for (int b = 0; b < 256; ++b) {
      m.emplace(unicode::decode_utf8(byte_to_symbol(static_cast<unsigned char>(b)))[0], static_cast<unsigned char>(b));
    }
    return m;
  }();
  std::string out;
  out.reserve(piece.size());
  for (const char32_t c : unicode::decode_utf8(piece)) {
    const auto it = reverse.find(c);
    if (it == reverse.end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
  }
  return out;
}

void split_words(PreTokenizer p, std::span<const char32_t> cps, std::vector<Range>& out) {
  switch (p) {
    case PreTokenizer::llama3: split_llama3(cps, 0, out); return;
    case PreTokenizer::gpt2: split_gpt2(cps, 0, out); return;
    case PreTokenizer::smollm: {
      // Each digit is a word; GPT-2's rule splits what lies between them, as text of its own.
      std::size_t start = 0;
      for (std::size_t i = 0; i <= cps.size(); ++i) {
        if (i < cps.size() && !is_number(cps[i])) continue;
        if (i > start) split_gpt2(cps.subspan(start, i - start), start, out);
        if (i < cps.size()) out.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i + 1));
        start = i + 1;
      }
      return;
    }
  }
}

Result<Encoder> Encoder::build(const std::vector<std::string>& pieces, const std::vector<bool>& normal,
                               const std::vector<std::string>& merges, std::string_view pre, int unk,
                               std::string_view name) {
  const std::string who(name);
  const auto p = pre_tokenizer_from_name(pre);
  if (!p) {
    return make_error(errc::bad_tokenizer, who + ": pre-tokenizer '" + std::string(pre) + "' is not supported (" +
                                               std::string(known_pre_tokenizers()) + ")");
  }
  Encoder e;
  e.pre_ = *p;
  e.ignore_merges_ = *p == PreTokenizer::llama3;
  std::unordered_map<std::string_view, int> by_piece;
  by_piece.reserve(pieces.size());
  e.word_ids_.reserve(pieces.size());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    by_piece.emplace(pieces[i], static_cast<int>(i));
    if (!normal[i]) continue;
    if (auto bytes = symbols_to_bytes(pieces[i])) e.word_ids_.emplace(std::move(*bytes), static_cast<int>(i));
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = by_piece.find(byte_to_symbol(static_cast<unsigned char>(b)));
    e.byte_ids_[b] = it != by_piece.end() ? it->second : unk;
    if (e.byte_ids_[b] < 0) {
      return make_error(errc::bad_tokenizer, who + ": no token for byte " + std::to_string(b) +
                                                 " and no unknown token to stand for it");
    }
  }
  e.merges_.reserve(merges.size());
  std::string joined;
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const std::size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos) {
      return make_error(errc::bad_tokenizer,
                        who + ": merge " + std::to_string(rank) + " is not two pieces separated by a space");
    }
    const std::string_view l(m.data(), sp), r(m.data() + sp + 1, m.size() - sp - 1);
    joined.assign(l);
    joined += r;
    const auto li = by_piece.find(l), ri = by_piece.find(r), ji = by_piece.find(joined);
    if (li == by_piece.end() || ri == by_piece.end() || ji == by_piece.end()) continue;  // can never apply
    const auto key = (static_cast<std::uint64_t>(li->second) << 32) | static_cast<std::uint32_t>(ri->second);
    e.merges_.emplace(key, std::pair{static_cast<std::uint32_t>(rank), ji->second});  // the first rank wins
  }
  return e;
}

void Encoder::encode_word(std::string_view bytes, std::vector<int>& out) const {
  if (ignore_merges_) {
    if (const auto it = word_ids_.find(bytes); it != word_ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int> symbols;
  symbols.reserve(bytes.size());
  for (const char c : bytes) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  merge_adjacent(symbols, [&](int l, int r) -> std::optional<MergeChoice> {
    const auto key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32) | static_cast<std::uint32_t>(r);
    const auto it = merges_.find(key);
    if (it == merges_.end()) return std::nullopt;
    return MergeChoice{-static_cast<double>(it->second.first), it->second.second};
  });
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void Encoder::encode(std::string_view text, std::vector<int>& out) const {
  const std::vector<char32_t> cps = unicode::decode_utf8(text);
  std::vector<Range> words;
  split_words(pre_, cps, words);
  std::string bytes;
  for (const auto& [b, e] : words) {
    bytes.clear();
    for (std::uint32_t k = b; k < e; ++k) unicode::append_utf8(cps[k], bytes);
    encode_word(bytes, out);
  }
}

}  // namespace llamawire::bpe
