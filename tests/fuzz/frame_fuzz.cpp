// libFuzzer: the frame header decoder and every message parser. Whatever decodes must
// re-encode to the same bytes (HELLO and HELLO_OK: to the bytes of the fields it knows). A VOCAB that decodes is built into a tokenizer (as a client
// does with the server's) and, if it builds, encodes a text.
#include "common/messages.hpp"
#include "common/tokenizer.hpp"

#include <cstdlib>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace lw = llamawire;
  if (size < lw::kFrameHeaderBytes) return 0;
  const auto h = lw::decode_header(std::span<const std::uint8_t, lw::kFrameHeaderBytes>(data, lw::kFrameHeaderBytes),
                                   lw::kDefaultMaxFrameBytes);
  const auto payload = std::span(data + lw::kFrameHeaderBytes, size - lw::kFrameHeaderBytes);
  // Parse the payload under its header's type, and under the first payload byte's type too,
  // so every parser sees arbitrary bytes even when the header is invalid.
  const std::uint8_t types[] = {h ? h->type : std::uint8_t{0x03}, payload.empty() ? std::uint8_t{0x04} : payload[0]};
  for (auto type : types) {
    const auto m = lw::decode_payload(type, payload);
    if (m) {
      // HELLO and HELLO_OK ignore fields of later minor versions (PROTOCOL.md, Versioning):
      // their known fields are a prefix of the payload; every other message is all of it.
      const auto again = lw::encode_payload(*m);
      const auto t = lw::message_type(*m);
      const bool extensible = t == lw::MsgType::hello || t == lw::MsgType::hello_ok;
      if (extensible ? again.size() > payload.size() : again.size() != payload.size()) std::abort();
      if (!std::equal(again.begin(), again.end(), payload.begin())) std::abort();
      if (const auto* v = std::get_if<lw::msg::Vocab>(&*m)) {
        auto tok = lw::Tokenizer::from_vocab(v->vocab, "fuzz");
        if (tok) {
          const std::string text(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 48));
          for (const int id : tok->encode(text, true, true, true)) {
            if (id < 0 || id >= tok->vocab_size()) std::abort();
            (void)tok->decode(-1, id);
          }
        }
      }
    }
  }
  return 0;
}
