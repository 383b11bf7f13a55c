// Prometheus-style histograms (fixed buckets, lock-free counts) and the /metrics text.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace llamawire {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends the _bucket (cumulative), _sum and _count series.
  void write(std::ostringstream& os, const std::string& name, const std::string& labels = "") const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<std::uint64_t>> counts_;  // one per bound, plus +Inf
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

}  // namespace llamawire
