// Error values shared by client and server: an lw::errc wrapped in a Boost error_code,
// plus a human-readable message. Expected failures travel as Result<T>; exceptions are
// reserved for "cannot continue".
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace llamawire {

// The numeric values are the wire error codes of proto-spec/PROTOCOL.md; do not renumber.
enum class errc : std::uint16_t {
  ok = 0,
  bad_frame = 1,            // header malformed (magic, version, reserved bits)
  frame_too_large = 2,      // length above the negotiated limit
  unknown_message = 3,      // message type not defined
  bad_message = 4,          // payload does not parse for its type
  version_mismatch = 5,     // protocol major not supported
  not_ready = 6,            // request before the handshake
  token_out_of_range = 7,   // token id outside [0, vocab)
  position_out_of_range = 8,// start position past the session's context
  context_full = 9,         // the generation would run past the context
  busy = 10,                // too many sessions / a generation already running / queue full
  cancelled = 11,           // the client cancelled
  timed_out = 12,           // idle, handshake or write timeout
  unauthorized = 13,        // missing or wrong API key
  shutting_down = 14,       // server is draining
  internal = 15,            // server bug; logged
  unsupported = 16,         // (1.3) a valid request this server cannot serve this client
  bad_checkpoint = 100,     // local only: model file invalid
  bad_tokenizer = 101,      // local only: tokenizer file invalid
  io_error = 102,           // local only: file or socket error
  bad_argument = 103,       // local only: invalid option
};

const boost::system::error_category& lw_category() noexcept;
boost::system::error_code make_error_code(errc e) noexcept;

// A code plus a message that names what went wrong (file, field, numbers).
struct Error {
  boost::system::error_code code;
  std::string message;
};

Error make_error(errc e, std::string message);

// boost::system::result needs this to throw from .value() on an error.
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Error>;

// The one place where errc values map to and from the wire.
std::uint16_t to_wire(errc e) noexcept;
errc from_wire(std::uint16_t code) noexcept;
std::string_view errc_name(errc e) noexcept;
// snake_case identifier as in PROTOCOL.md ("token_out_of_range").
std::string_view errc_id(errc e) noexcept;

#define LW_ASSERT(cond) \
  ((cond) ? static_cast<void>(0) : ::llamawire::assert_fail(#cond, __FILE__, __LINE__))
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

}  // namespace llamawire

namespace boost::system {
template <>
struct is_error_code_enum<llamawire::errc> : std::true_type {};
}  // namespace boost::system
