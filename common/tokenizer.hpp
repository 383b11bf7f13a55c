// llama2.c's tokenizer (tokenizer.bin format): encode and decode exactly as run.c does.
#pragma once

#include "common/error.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llamawire {

inline constexpr int kBosToken = 1;
inline constexpr int kEosToken = 2;

class Tokenizer {
 public:
  // Parses the tokenizer.bin format: int32 max_token_length, then per token float32 score,
  // int32 length, bytes. When expected_vocab > 0 the file must hold exactly that many
  // tokens; otherwise it is read to its end. `name` is used in error messages.
  static Result<Tokenizer> parse(std::span<const std::uint8_t> bytes, std::string_view name,
                                 int expected_vocab = -1);
  static Result<Tokenizer> load(const std::string& path, int expected_vocab = -1);

  // llama2.c encode(): optional BOS, dummy-prefix " " for non-empty text, UTF-8 code points
  // (byte fallback id = byte + 3), then greedy highest-score pair merges.
  std::vector<int> encode(std::string_view text, bool bos, bool eos) const;

  // llama2.c decode(): the piece for `token` following `prev`; strips the leading space
  // after BOS and turns "<0xXX>" pieces into the raw byte.
  std::string_view decode(int prev, int token) const;

  // A lower bound on encode(text, bos, eos).size() from the text's length alone, so that a
  // text too long for a context is refused before it is encoded: each token covers at most
  // max_token_length bytes of the text (byte-fallback tokens one byte each).
  std::size_t min_encoded_tokens(std::size_t text_bytes, bool bos, bool eos) const;

  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  int max_token_length() const { return max_token_length_; }
  std::string_view piece(int id) const { return vocab_[static_cast<std::size_t>(id)]; }
  float score(int id) const { return scores_[static_cast<std::size_t>(id)]; }
  // The file's bytes, as the server sends them to clients.
  std::span<const std::uint8_t> raw() const { return raw_; }

 private:
  int lookup(std::string_view s) const;
  // The merge phase of encode (over every token, BOS included, as llama2.c does).
  void merge_pairs(std::vector<int>& tokens) const;

  int max_token_length_ = 0;
  // At most this many text bytes per token (0: no bound: a byte-fallback piece is empty).
  std::size_t max_bytes_per_token_ = 0;
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, int> index_;  // views into vocab_
  std::vector<std::uint8_t> raw_;
};

// llama2.c safe_printf(): a single byte that is neither printable nor whitespace prints
// nothing. Returns the bytes to print.
std::string_view printable_piece(std::string_view piece);

}  // namespace llamawire
