// libFuzzer: the tokenizer loader, then encode/decode with whatever loaded.
#include "common/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace lw = llamawire;
  // The first byte picks the expected vocab size (or "read to the end").
  const int expected = size > 0 && data[0] < 64 ? data[0] : -1;
  const auto bytes = std::span(data, size);
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
