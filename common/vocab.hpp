// A model's vocabulary as data: what a GGUF file's tokenizer.ggml.* keys hold (or a
// llama2.c tokenizer.bin), what the server sends in VOCAB, and what a Tokenizer is built
// from on either side.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llamawire {

// GGUF's token types (llama.cpp's llama_token_type).
enum class TokenType : std::uint8_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

enum class VocabKind : std::uint8_t {
  llama2c = 0,  // tokenizer.bin: pieces hold real spaces; BOS 1, EOS 2; "<0xXX>" pieces are bytes
  spm = 1,      // SentencePiece (GGUF tokenizer.ggml.model "llama"): "▁" (U+2581) marks a space
  bpe = 2,      // byte-level BPE (GGUF tokenizer.ggml.model "gpt2"): pieces in GPT-2's byte alphabet
};

// The ids that end or begin things. -1: none.
struct SpecialTokens {
  int bos = 1;
  int eos = 2;
  int eot = -1;  // the chat template's end-of-turn token when it is not EOS
  int unk = 0;
  int pad = -1;
  // More tokens that end a generation (llama.cpp's end-of-generation set: control tokens
  // such as <|eot_id|>, <|end_of_text|>, <|eom_id|> found by name), besides eos and eot.
  std::vector<int> also_end;
  // A generation with "stop on EOS" ends at any of these.
  bool ends_turn(int t) const {
    if (t == eos || (eot >= 0 && t == eot)) return true;
    for (const int e : also_end) {
      if (t == e) return true;
    }
    return false;
  }
  // The token rule of every generation loop (the binary session, the HTTP API, the
  // scheduler carrying a generation on, the client sampling itself): a drawn BOS always
  // ends it, an end token (ends_turn) when the generation stops at the end; the token that
  // ends it is not output. The position and context rules stay with each loop's limit.
  enum class Stop { none, bos, end };
  Stop stop_for(int t, bool stop_at_end) const {
    if (t == bos) return Stop::bos;
    return stop_at_end && ends_turn(t) ? Stop::end : Stop::none;
  }
};

struct Vocab {
  VocabKind kind = VocabKind::llama2c;
  std::vector<std::string> pieces;  // as stored (spm: with "▁")
  std::vector<float> scores;
  std::vector<TokenType> types;     // empty for llama2c
  SpecialTokens special;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;
  std::string chat_template;        // tokenizer.chat_template (Jinja text), possibly empty
  // bpe only: tokenizer.ggml.merges ("left right", by rank) and tokenizer.ggml.pre.
  std::vector<std::string> merges;
  std::string pre;
};

}  // namespace llamawire
