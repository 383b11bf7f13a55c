#include "common/unicode.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace llamawire::unicode {
namespace {

struct CodePointRange {
  char32_t first, last;
};

#include "common/unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], char32_t cp) {
  const auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                   [](char32_t c, const CodePointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

// The class bits of the first 256 code points, so ASCII and Latin-1 text needs no search.
constexpr std::uint8_t kLetter = 1, kNumber = 2, kSpace = 4;
const std::array<std::uint8_t, 256>& latin1_classes() {
  static const auto table = [] {
    std::array<std::uint8_t, 256> t{};
    for (char32_t c = 0; c < 256; ++c) {
      t[c] = static_cast<std::uint8_t>((in_ranges(kLetterRanges, c) ? kLetter : 0) |
                                       (in_ranges(kNumberRanges, c) ? kNumber : 0) |
                                       (in_ranges(kWhiteSpaceRanges, c) ? kSpace : 0));
    }
    return t;
  }();
  return table;
}

}  // namespace

bool is_letter(char32_t cp) { return cp < 256 ? (latin1_classes()[cp] & kLetter) != 0 : in_ranges(kLetterRanges, cp); }
bool is_number(char32_t cp) { return cp < 256 ? (latin1_classes()[cp] & kNumber) != 0 : in_ranges(kNumberRanges, cp); }
bool is_white_space(char32_t cp) {
  return cp < 256 ? (latin1_classes()[cp] & kSpace) != 0 : in_ranges(kWhiteSpaceRanges, cp);
}

std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int need = 0;
    unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
    char32_t cp = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      cp = b0 & 0x0F;
      if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
      if (b0 == 0xED) hi = 0x9F;  // no surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      cp = b0 & 0x07;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
    } else {
      out.push_back(kReplacement);  // a continuation byte or one that never appears
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      const unsigned b = j < s.size() ? static_cast<unsigned char>(s[j]) : 0u;
      const unsigned l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
      if (j >= s.size() || b < l || b > h) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (b & 0x3F);
    }
    // On failure, the bytes consumed so far (a maximal subpart) are one U+FFFD and the byte
    // that broke the sequence starts afresh.
    out.push_back(ok ? cp : kReplacement);
    i = j;
  }
  return out;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace llamawire::unicode
