#pragma once

#include <string_view>

namespace llamawire {

// Compares secrets without an early exit on the first differing byte; the time depends
// only on the length of `given`.
inline bool constant_time_equal(std::string_view expected, std::string_view given) {
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (std::size_t i = 0; i < given.size(); ++i) {
    const unsigned char e = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
    diff |= static_cast<unsigned char>(e ^ static_cast<unsigned char>(given[i]));
  }
  return diff == 0;
}

}  // namespace llamawire
