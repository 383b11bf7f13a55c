// Byte-level BPE (GGUF tokenizer.ggml.model "gpt2": Llama-3, SmolLM, GPT-2 vocabularies):
// the text is split by a pre-tokenizer into words, each word's UTF-8 bytes are written in
// GPT-2's byte-to-unicode alphabet, and ranked merges join adjacent symbols, lowest rank
// first, leftmost among equals (Hugging Face's BPE model; llama.cpp's llm_tokenizer_bpe).
#pragma once

#include "common/error.hpp"
#include "common/vocab.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llamawire::bpe {

// The pre-tokenizer split rules that GGUF files name in tokenizer.ggml.pre.
enum class PreTokenizer : std::uint8_t {
  llama3 = 0,  // "llama-bpe", "llama3", "llama-v3", "falcon3": Llama-3's regex (below)
  gpt2 = 1,    // "gpt-2": GPT-2's regex
  smollm = 2,  // "smollm": every digit alone, then GPT-2's regex within the rest
};
std::optional<PreTokenizer> pre_tokenizer_from_name(std::string_view name);
// The canonical name ("llama-bpe", "gpt-2", "smollm").
std::string_view pre_tokenizer_name(PreTokenizer p);
// The names accepted, for error messages.
std::string_view known_pre_tokenizers();

// GPT-2's byte-to-unicode alphabet: the UTF-8 of the character that stands for byte b
// (printable Latin-1 stands for itself, the other 68 bytes for U+0100 onwards).
std::string_view byte_to_symbol(unsigned char b);
// The bytes a piece written in that alphabet stands for; nullopt when a character of it
// is not in the alphabet.
std::optional<std::string> symbols_to_bytes(std::string_view piece);

// The words of cps[0, n) as [begin, end) ranges, in order, covering every code point.
// llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//         ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s the White_Space property, \p{L} and \p{N} the general categories.
using Range = std::pair<std::uint32_t, std::uint32_t>;
void split_words(PreTokenizer p, std::span<const char32_t> cps, std::vector<Range>& out);

// The encoder of one vocabulary: its merges by token ids, its byte symbols, and (for
// llama3) the whole-word lookup that skips merging (Hugging Face's ignore_merges).
class Encoder {
 public:
  // `pieces` are the vocabulary's tokens as stored (in the byte alphabet); `normal[i]`
  // says whether token i is text (normal or undefined type) rather than special.
  static Result<Encoder> build(const std::vector<std::string>& pieces, const std::vector<bool>& normal,
                               const std::vector<std::string>& merges, std::string_view pre,
                               int unk, std::string_view name);
  // Appends the tokens of a text fragment (no special tokens in it) to out. Ill-formed
  // UTF-8 is read as U+FFFD (see unicode::decode_utf8).
  void encode(std::string_view text, std::vector<int>& out) const;
  PreTokenizer pre() const { return pre_; }

 private:
  void encode_word(std::string_view bytes, std::vector<int>& out) const;
  PreTokenizer pre_ = PreTokenizer::llama3;
  bool ignore_merges_ = false;
  int byte_ids_[256] = {};
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int, Hash, std::equal_to<>> word_ids_;  // a normal token's bytes -> id
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, int>> merges_;  // (left, right) -> (rank, id)
};

}  // namespace llamawire::bpe
