// Code points for the byte-level BPE tokenizer: UTF-8 decoding with replacement (as the
// WHATWG Encoding Standard's decoder, which JavaScript's TextDecoder implements) and the
// character classes of the pre-tokenizer regular expressions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llamawire::unicode {

inline constexpr char32_t kReplacement = 0xFFFD;

// The code points of s. Each maximal subpart of an ill-formed sequence becomes one U+FFFD
// (Unicode's "best practice", the WHATWG decoder's rule): E2 82 41 is U+FFFD 'A', C0 80 is
// two U+FFFD, a truncated sequence at the end is one.
std::vector<char32_t> decode_utf8(std::string_view s);

// Appends the UTF-8 of cp (a scalar value) to out.
void append_utf8(char32_t cp, std::string& out);

bool is_letter(char32_t cp);      // general category L
bool is_number(char32_t cp);      // general category N
bool is_white_space(char32_t cp); // the White_Space property (regex \s in Unicode mode)

}  // namespace llamawire::unicode
