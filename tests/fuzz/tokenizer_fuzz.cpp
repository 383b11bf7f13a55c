// libFuzzer: the tokenizer loader, then encode/decode with whatever loaded; and the same
// input as text for a small byte-level BPE vocabulary under each pre-tokenizer, where
// decoding must give back the text as the WHATWG decoder reads it.
#include "common/bpe.hpp"
#include "common/tokenizer.hpp"
#include "common/unicode.hpp"

#include <cstdlib>
#include <memory>

namespace {

// The 256 byte tokens, the merges of a few common pairs (and of their results), and two
// control tokens.
const llamawire::Tokenizer& bpe_vocab(llamawire::bpe::PreTokenizer p) {
  namespace lw = llamawire;
  static std::unique_ptr<lw::Tokenizer> toks[3];
  auto& t = toks[static_cast<int>(p)];
  if (t) return *t;
  lw::Vocab v;
  v.kind = lw::VocabKind::bpe;
  v.pre = std::string(lw::bpe::pre_tokenizer_name(p));
  for (int b = 0; b < 256; ++b) v.pieces.emplace_back(lw::bpe::byte_to_symbol(static_cast<unsigned char>(b)));
  const std::string g = std::string(lw::bpe::byte_to_symbol(' '));
  for (const auto& [l, r] : {std::pair<std::string, std::string>{"t", "h"}, {"th", "e"}, {g, "the"}, {"a", "n"}, {g, "a"},
                             {"e", "r"}, {"i", "n"}, {"in", "g"}, {g, g}, {"1", "2"}, {"12", "3"}, {"Ã", "©"}}) {
    v.merges.push_back(l + " " + r);
    v.pieces.push_back(l + r);
  }
  v.pieces.push_back("<|eot_id|>");
  v.pieces.push_back("<|user|>");
  v.types.assign(v.pieces.size(), lw::TokenType::normal);
  v.types[v.pieces.size() - 2] = lw::TokenType::control;
  v.types[v.pieces.size() - 1] = lw::TokenType::user_defined;
  v.scores.assign(v.pieces.size(), 0.0f);
  v.special.bos = static_cast<int>(v.pieces.size()) - 2;
  v.special.eos = v.special.bos;
  v.special.unk = -1;
  auto built = lw::Tokenizer::from_vocab(std::move(v), "fuzz-bpe");
  if (!built) std::abort();
  t = std::make_unique<lw::Tokenizer>(std::move(*built));
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace lw = llamawire;
  // The first byte picks the expected vocab size (or "read to the end").
  const int expected = size > 0 && data[0] < 64 ? data[0] : -1;
  const auto bytes = std::span(data, size);
  {
    const std::string_view raw(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 4096));
    std::string want;
    for (const char32_t c : lw::unicode::decode_utf8(raw)) lw::unicode::append_utf8(c, want);
    for (const auto p : {lw::bpe::PreTokenizer::llama3, lw::bpe::PreTokenizer::gpt2, lw::bpe::PreTokenizer::smollm}) {
      const lw::Tokenizer& bt = bpe_vocab(p);
      std::string back;
      for (const int id : bt.encode(raw, false, false, false)) back += bt.decode(-1, id);
      if (back != want) std::abort();  // no special parsing: every byte comes back
      (void)bt.encode(raw, true, true, true);
    }
  }
  auto tok = lw::Tokenizer::parse(size > 0 ? bytes.subspan(1) : bytes, "fuzz", expected);
  if (!tok) return 0;
  const std::string text(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 64));
  const auto ids = tok->encode(text, true, true);
  int prev = lw::kBosToken;
  for (int id : ids) {
    (void)lw::printable_piece(tok->decode(prev, id));
    prev = id;
  }
  for (int id = -1; id <= tok->vocab_size(); ++id) (void)tok->decode(lw::kBosToken, id);
  return 0;
}
