#include "client/bench_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace llamawire {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

double covered_seconds(std::vector<std::pair<double, double>> intervals) {
  std::sort(intervals.begin(), intervals.end());
  double total = 0;
  bool open = false;
  double begin = 0, end = 0;
  for (const auto& [b, e] : intervals) {
    if (e <= b) continue;
    if (open && b <= end) {
      end = std::max(end, e);
      continue;
    }
    if (open) total += end - begin;
    begin = b;
    end = e;
    open = true;
  }
  if (open) total += end - begin;
  return total;
}

double decode_tokens_per_second(const std::vector<DecodeSpan>& spans) {
  std::vector<std::pair<double, double>> intervals;
  double tokens = 0;
  for (const auto& s : spans) {
    if (s.tokens < 2 || s.last_s <= s.first_s) continue;
    intervals.emplace_back(s.first_s, s.last_s);
    tokens += s.tokens - 1;
  }
  const double secs = covered_seconds(std::move(intervals));
  return secs > 0 ? tokens / secs : 0.0;
}

}  // namespace llamawire
