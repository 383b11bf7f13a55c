#include "server/net/metrics.hpp"

namespace llamawire {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

void Histogram::write(std::ostringstream& os, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    os << name << "_bucket{" << labels << sep << "le=\"";
    if (i < bounds_.size()) {
      os << bounds_[i];
    } else {
      os << "+Inf";
    }
    os << "\"} " << cumulative << "\n";
  }
  os << name << "_sum" << (labels.empty() ? "" : "{" + labels + "}") << " " << sum_.load() << "\n";
  os << name << "_count" << (labels.empty() ? "" : "{" + labels + "}") << " " << count_.load() << "\n";
}

}  // namespace llamawire
