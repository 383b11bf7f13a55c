// The frame header of proto-spec/PROTOCOL.md and its checks: the one codec both ends use.
#pragma once

#include "common/error.hpp"

#include <boost/endian/buffers.hpp>

#include <array>
#include <cstdint>
#include <span>

namespace llamawire {

inline constexpr std::uint16_t kFrameMagic = 0x574C;  // bytes "LW"
inline constexpr std::uint8_t kProtocolMajor = 1;
inline constexpr std::uint16_t kProtocolMinor = 5;
inline constexpr std::size_t kFrameHeaderBytes = 12;
inline constexpr std::uint32_t kDefaultMaxFrameBytes = 1u << 20;       // server receive limit
inline constexpr std::uint32_t kClientMaxFrameBytes = 64u << 20;       // client receive limit
// Until HELLO is accepted the server takes no frame longer than this (HELLO holds a key and
// a name): an unauthenticated peer cannot make it hold more.
inline constexpr std::uint32_t kMaxHelloFrameBytes = 4096;

// The header exactly as it lies on the wire (Boost.Endian buffer types: no padding, LE).
struct WireHeader {
  boost::endian::little_uint16_buf_t magic;
  boost::endian::little_uint8_buf_t version;
  boost::endian::little_uint8_buf_t type;
  boost::endian::little_uint32_buf_t request_id;
  boost::endian::little_uint32_buf_t length;
};
static_assert(sizeof(WireHeader) == kFrameHeaderBytes, "wire header must be 12 bytes");

struct FrameHeader {
  std::uint8_t type = 0;
  std::uint32_t request_id = 0;
  std::uint32_t length = 0;
};

// Checks magic, version and length (against max_payload) before anything is allocated.
// Errors: bad_frame, version_mismatch, frame_too_large.
// The request_id field of a header decode_header refused: meaningful unless the magic was
// wrong (then the bytes are not a frame at all and replies carry 0).
std::uint32_t raw_request_id(std::span<const std::uint8_t, kFrameHeaderBytes> bytes);
Result<FrameHeader> decode_header(std::span<const std::uint8_t, kFrameHeaderBytes> bytes,
                                  std::uint32_t max_payload);
void encode_header(std::span<std::uint8_t, kFrameHeaderBytes> out, const FrameHeader& h);

}  // namespace llamawire
