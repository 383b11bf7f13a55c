// The tokenizer of llama2.c (tokenizer.bin: encode and decode exactly as run.c does) and of
// SentencePiece vocabularies from GGUF files (as llama.cpp's SPM tokenizer: the same
// score-ordered merges, plus token types, special-token parsing and byte tokens by name).
#pragma once

#include "common/bpe.hpp"
#include "common/error.hpp"
#include "common/vocab.hpp"

#include <cstdint>
#include <memory>
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
  Tokenizer() = default;
  // Moves keep the views into the pieces valid (the strings' buffers move with the vector);
  // a copy would not, so there is none.
  Tokenizer(Tokenizer&&) = default;
  Tokenizer& operator=(Tokenizer&&) = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  // Parses the tokenizer.bin format: int32 max_token_length, then per token float32 score,
  // int32 length, bytes. When expected_vocab > 0 the file must hold exactly that many
  // tokens; otherwise it is read to its end. `name` is used in error messages.
  static Result<Tokenizer> parse(std::span<const std::uint8_t> bytes, std::string_view name,
                                 int expected_vocab = -1);
  static Result<Tokenizer> load(const std::string& path, int expected_vocab = -1);
  // From a vocabulary (a GGUF file's, or one received in VOCAB). Checks ids and sizes.
  static Result<Tokenizer> from_vocab(Vocab vocab, std::string_view name);

  // llama2c: llama2.c encode(): optional BOS, dummy-prefix " " for non-empty text, UTF-8
  // code points (byte fallback id = byte + 3), then greedy highest-score pair merges.
  // spm: llama.cpp's: the text is cut at special tokens (user-defined ones always, control
  // and unknown ones when parse_special), each text fragment gets a space prefix when it
  // starts the text or follows a special token (add_space_prefix), code points, byte
  // fallback to the "<0xXX>" tokens (else unk), the same merges within each fragment.
  // bpe: the same cut at special tokens, then each fragment as bpe::Encoder says (no
  // space prefix; ill-formed UTF-8 is read as U+FFFD).
  // BOS and EOS are the vocabulary's.
  std::vector<int> encode(std::string_view text, bool bos, bool eos, bool parse_special = false) const;

  // The text of `token` following `prev`, with the leading space stripped after BOS.
  // llama2c: "<0xXX>" pieces become the raw byte. spm: normal tokens with "▁" as spaces,
  // byte tokens as their byte, user-defined ones as written; control, unknown and unused
  // tokens print nothing (llama.cpp's token_to_piece without `special`). bpe: normal tokens
  // as the bytes their symbols stand for (no space is stripped after BOS), the rest as spm.
  std::string_view decode(int prev, int token) const;

  // A lower bound on encode(text, bos, eos).size() from the text's length alone, so that a
  // text too long for a context is refused before it is encoded: each token covers at most
  // max_token_length bytes of the text (byte-fallback tokens one byte each).
  std::size_t min_encoded_tokens(std::size_t text_bytes, bool bos, bool eos) const;

  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  int max_token_length() const { return max_token_length_; }
  std::string_view piece(int id) const { return vocab_[static_cast<std::size_t>(id)]; }
  float score(int id) const { return scores_[static_cast<std::size_t>(id)]; }
  // The tokenizer.bin bytes, as the server sends them to 1.0 clients (for an spm
  // vocabulary: written from it, with real spaces). Empty for bpe: llama2.c's encoding
  // cannot stand for it.
  std::span<const std::uint8_t> raw() const { return raw_; }
  VocabKind kind() const { return vocab_data_.kind; }
  const SpecialTokens& special() const { return vocab_data_.special; }
  int bos_id() const { return vocab_data_.special.bos; }
  int eos_id() const { return vocab_data_.special.eos; }
  // Whether encode should add BOS / EOS for a plain prompt (llama2.c: BOS yes, EOS no).
  bool add_bos() const { return vocab_data_.add_bos; }
  bool add_eos() const { return vocab_data_.add_eos; }
  TokenType type(int id) const;
  // The vocabulary this tokenizer was built from (pieces as stored).
  const Vocab& vocab() const { return vocab_data_; }
  void set_eot(int id) { vocab_data_.special.eot = id; }
  // The id whose text is exactly `s` (spm: "▁" written as a space), or -1.
  int find(std::string_view s) const { return lookup(s); }

 private:
  int lookup(std::string_view s) const;
  // The merge phase of encode (over every token, BOS included, as llama2.c does).
  void merge_pairs(std::vector<int>& tokens) const;
  // Code points of `text` (looked up, or their bytes' fallback ids) appended to `out`.
  void append_code_points(std::string_view text, std::vector<int>& out) const;
  void finish_index();
  // spm and bpe: cut at special tokens, each fragment encoded by kind.
  std::vector<int> encode_vocab(std::string_view text, bool bos, bool eos, bool parse_special) const;
  void encode_fragment(std::string_view raw, bool after_special, std::vector<int>& out) const;

  int max_token_length_ = 0;
  // At most this many text bytes per token (0: no bound: a byte-fallback piece is empty).
  std::size_t max_bytes_per_token_ = 0;
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, int> index_;  // views into vocab_
  std::vector<std::uint8_t> raw_;
  Vocab vocab_data_;                 // kind, types, special ids, flags (pieces: spm only)
  std::vector<std::string> decoded_; // spm, bpe: what decode prints per token
  std::unique_ptr<const bpe::Encoder> bpe_;
  int byte_ids_[256] = {};           // spm: the "<0xXX>" token of each byte (unk if none)
  struct Special {
    std::string_view text;
    int id;
    bool always;  // user-defined: parsed even without parse_special
  };
  std::vector<Special> specials_;    // spm, bpe: longest first
  std::vector<int> special_by_byte_[256];  // indexes into specials_, by first byte
};

// llama2.c safe_printf(): a single byte that is neither printable nor whitespace prints
// nothing. Returns the bytes to print.
std::string_view printable_piece(std::string_view piece);

}  // namespace llamawire
