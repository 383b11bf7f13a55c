// libFuzzer: the frame header decoder and every message parser. Whatever decodes must
// re-encode to the same bytes.
#include "common/messages.hpp"

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
      const auto again = lw::encode_payload(*m);
      if (again.size() != payload.size() || !std::equal(again.begin(), again.end(), payload.begin())) std::abort();
    }
  }
  return 0;
}
