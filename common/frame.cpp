#include "common/frame.hpp"

#include <cstdio>
#include <cstring>

namespace llamawire {

Result<FrameHeader> decode_header(std::span<const std::uint8_t, kFrameHeaderBytes> bytes,
                                  std::uint32_t max_payload) {
  WireHeader w;
  std::memcpy(&w, bytes.data(), sizeof w);
  if (w.magic.value() != kFrameMagic) {
    return make_error(errc::bad_frame, "bad frame magic 0x" + [&] {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%04x", static_cast<unsigned>(w.magic.value()));
      return std::string(buf);
    }());
  }
  if (w.version.value() != kProtocolMajor) {
    return make_error(errc::version_mismatch, "protocol major " + std::to_string(w.version.value()) +
                                                  " not supported (this end speaks " +
                                                  std::to_string(kProtocolMajor) + ")");
  }
  if (w.length.value() > max_payload) {
    return make_error(errc::frame_too_large, "frame of " + std::to_string(w.length.value()) +
                                                 " bytes exceeds the limit of " + std::to_string(max_payload));
  }
  return FrameHeader{w.type.value(), w.request_id.value(), w.length.value()};
}

std::uint32_t raw_request_id(std::span<const std::uint8_t, kFrameHeaderBytes> bytes) {
  WireHeader w;
  std::memcpy(&w, bytes.data(), sizeof w);
  return w.magic.value() == kFrameMagic ? w.request_id.value() : 0;
}

void encode_header(std::span<std::uint8_t, kFrameHeaderBytes> out, const FrameHeader& h) {
  WireHeader w;
  w.magic = kFrameMagic;
  w.version = kProtocolMajor;
  w.type = h.type;
  w.request_id = h.request_id;
  w.length = h.length;
  std::memcpy(out.data(), &w, sizeof w);
}

}  // namespace llamawire
