#include "common/utf8.hpp"

#include <cstdint>
#include <cstdio>

namespace llamawire::utf8 {
namespace {

// Expected sequence length from the lead byte (0: not a lead byte).
std::size_t lead_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether the second byte is allowed after this lead byte (excludes overlongs, surrogates
// and code points past U+10FFFF).
bool second_ok(unsigned char lead, unsigned char b) {
  if ((b & 0xC0) != 0x80) return false;
  if (lead == 0xE0) return b >= 0xA0;
  if (lead == 0xED) return b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90;
  if (lead == 0xF4) return b <= 0x8F;
  return true;
}

// How many bytes of s form a valid prefix of the sequence its first byte starts.
std::size_t valid_prefix(std::string_view s, std::size_t need) {
  const auto lead = static_cast<unsigned char>(s[0]);
  std::size_t i = 1;
  for (; i < need && i < s.size(); ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (i == 1 ? !second_ok(lead, b) : (b & 0xC0) != 0x80) break;
  }
  return i;
}

}  // namespace

std::size_t sequence_length(std::string_view s) {
  if (s.empty()) return 0;
  const std::size_t need = lead_length(static_cast<unsigned char>(s[0]));
  if (need == 0) return 0;
  return valid_prefix(s, need) == need ? need : 0;
}

std::size_t incomplete_tail(std::string_view s) {
  // A cut-short sequence starts at most 3 bytes before the end.
  for (std::size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const std::string_view tail = s.substr(s.size() - back);
    const std::size_t need = lead_length(static_cast<unsigned char>(tail[0]));
    if (need == 0) continue;  // a continuation byte (or invalid): look further back
    return need > back && valid_prefix(tail, need) == back ? back : 0;
  }
  return 0;
}

std::size_t boundary_at_or_before(std::string_view s, std::size_t limit) {
  const std::string_view head = s.substr(0, limit < s.size() ? limit : s.size());
  return head.size() - incomplete_tail(head);
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const std::size_t n = sequence_length(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      s.remove_prefix(1);
    } else {
      out.append(s.substr(0, n));
      s.remove_prefix(n);
    }
  }
  return out;
}

std::string escape_for_log(std::string_view s, bool quote) {
  std::string out;
  out.reserve(s.size());
  auto hex = [&](unsigned char c) {
    char buf[5];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  while (!s.empty()) {
    const auto c = static_cast<unsigned char>(s[0]);
    const std::size_t n = sequence_length(s);
    if (n == 0) {
      hex(c);
      s.remove_prefix(1);
      continue;
    }
    if (n == 1) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c < 0x20 || c == 0x7F) {
        hex(c);
      } else if (quote && (c == '"' || c == '\\')) {
        out += '\\';
        out += static_cast<char>(c);
      } else {
        out += static_cast<char>(c);
      }
    } else if (n == 2 && c == 0xC2 && static_cast<unsigned char>(s[1]) < 0xA0) {
      hex(c);  // C1 control characters (U+0080-U+009F), which terminals may act on
      hex(static_cast<unsigned char>(s[1]));
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

}  // namespace llamawire::utf8
