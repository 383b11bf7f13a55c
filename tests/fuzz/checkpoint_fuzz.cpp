// libFuzzer: the checkpoint header parser and size validation (legacy, v1, v2).
#include "server/model/weight_store.hpp"

#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace lw = llamawire;
  // Parse as a file of exactly this size, and as a file whose size the last 8 bytes claim
  // (so the size checks see headers that describe big files).
  (void)lw::parse_checkpoint_header(std::span(data, size), size, "fuzz.bin");
  if (size >= 8) {
    std::uint64_t claimed = 0;
    std::memcpy(&claimed, data + size - 8, 8);
    const auto h = lw::parse_checkpoint_header(std::span(data, size - 8), claimed, "fuzz.bin");
    if (h && h->expected_bytes != claimed) __builtin_trap();  // accepted only when sizes agree
  }
  return 0;
}
