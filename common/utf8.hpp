// UTF-8 checks shared by the log (peer strings must not forge lines or break JSON) and the
// HTTP API (a streamed chunk must never end inside a character).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace llamawire::utf8 {

// Length of the well-formed UTF-8 sequence at the start of s (1-4), or 0 when s starts
// with a byte that cannot begin one, or with a sequence that is malformed, overlong, a
// surrogate or past U+10FFFF. A sequence cut short by the end of s is also 0; use
// incomplete_tail() to tell the two apart.
std::size_t sequence_length(std::string_view s);

// Bytes at the end of s that begin a well-formed sequence but stop before its end (0-3):
// what a stream must hold back until the next bytes arrive.
std::size_t incomplete_tail(std::string_view s);

// The largest n <= limit such that s[0, n) does not end inside a well-formed character
// (a cut there splits no character).
std::size_t boundary_at_or_before(std::string_view s, std::size_t limit);

// s with every byte that is not part of a well-formed sequence replaced by U+FFFD.
std::string sanitize(std::string_view s);

// s for a log line: control characters as \n, \r, \t or \xNN, bytes that are not
// well-formed UTF-8 as \xNN, and (with quote) '"' and '\\' backslash-escaped, so a peer's
// string can neither start a new line nor end its field early.
std::string escape_for_log(std::string_view s, bool quote);

}  // namespace llamawire::utf8
