#include "common/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace llamawire {
namespace {

class LwCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "llamawire"; }
  std::string message(int ev) const override { return std::string(errc_name(static_cast<errc>(ev))); }
};

}  // namespace

const boost::system::error_category& lw_category() noexcept {
  static const LwCategory category;
  return category;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), lw_category()};
}

Error make_error(errc e, std::string message) { return Error{make_error_code(e), std::move(message)}; }

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(e.message.empty() ? e.code.message() : e.message);
}

std::string_view errc_name(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::bad_frame: return "bad frame";
    case errc::frame_too_large: return "frame too large";
    case errc::unknown_message: return "unknown message type";
    case errc::bad_message: return "malformed message";
    case errc::version_mismatch: return "protocol version not supported";
    case errc::not_ready: return "request before handshake";
    case errc::token_out_of_range: return "token id out of range";
    case errc::position_out_of_range: return "position out of range";
    case errc::context_full: return "context full";
    case errc::busy: return "server busy";
    case errc::cancelled: return "cancelled";
    case errc::timed_out: return "timed out";
    case errc::unauthorized: return "unauthorized";
    case errc::shutting_down: return "server shutting down";
    case errc::internal: return "internal error";
    case errc::unsupported: return "not supported";
    case errc::bad_checkpoint: return "bad checkpoint";
    case errc::bad_tokenizer: return "bad tokenizer";
    case errc::io_error: return "i/o error";
    case errc::bad_argument: return "bad argument";
  }
  return "unknown error";
}

std::string_view errc_id(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::bad_frame: return "bad_frame";
    case errc::frame_too_large: return "frame_too_large";
    case errc::unknown_message: return "unknown_message";
    case errc::bad_message: return "bad_message";
    case errc::version_mismatch: return "version_mismatch";
    case errc::not_ready: return "not_ready";
    case errc::token_out_of_range: return "token_out_of_range";
    case errc::position_out_of_range: return "position_out_of_range";
    case errc::context_full: return "context_full";
    case errc::busy: return "busy";
    case errc::cancelled: return "cancelled";
    case errc::timed_out: return "timed_out";
    case errc::unauthorized: return "unauthorized";
    case errc::shutting_down: return "shutting_down";
    case errc::internal: return "internal";
    case errc::unsupported: return "unsupported";
    case errc::bad_checkpoint: return "bad_checkpoint";
    case errc::bad_tokenizer: return "bad_tokenizer";
    case errc::io_error: return "io_error";
    case errc::bad_argument: return "bad_argument";
  }
  return "unknown";
}

std::uint16_t to_wire(errc e) noexcept {
  const auto v = static_cast<std::uint16_t>(e);
  // Local-only codes never go on the wire as themselves.
  return v >= 100 ? static_cast<std::uint16_t>(errc::internal) : v;
}

errc from_wire(std::uint16_t code) noexcept {
  if (code >= 1 && code <= static_cast<std::uint16_t>(errc::unsupported)) return static_cast<errc>(code);
  return errc::internal;
}

void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "llamawire: assertion failed: %s (%s:%d)\n", expr, file, line);
  std::abort();
}

}  // namespace llamawire
