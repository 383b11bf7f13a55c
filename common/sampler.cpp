#include "common/sampler.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <ctime>

namespace llamawire {

int sample_argmax(std::span<const float> values) {
  int best = 0;
  float best_v = values[0];
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (values[i] > best_v) {
      best_v = values[i];
      best = static_cast<int>(i);
    }
  }
  return best;
}

int sample_mult(std::span<const float> probs, float coin) {
  float cdf = 0.0f;
  for (std::size_t i = 0; i < probs.size(); ++i) {
    cdf += probs[i];
    if (coin < cdf) return static_cast<int>(i);
  }
  return static_cast<int>(probs.size()) - 1;  // rounding errors
}

// The largest value, as llama2.c's loop `max = x[i] > max ? x[i] : max` finds it. Eight
// running maxima (each the same select, which compiles to a packed max) and then the
// same select across them: the same value for any input, NaNs included (a NaN in x[0]
// wins, any later NaN loses), except that between +0 and -0 either may come out, which
// no caller can see (v - max and the exponent do not depend on the sign of a zero max).
float max_reference(std::span<const float> x) {
  constexpr std::size_t kLanes = 8;
  std::array<float, kLanes> m;
  m.fill(x[0]);
  std::size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  }
  float max_val = x[0];
  for (const float v : m) max_val = v > max_val ? v : max_val;
  for (; i < x.size(); ++i) max_val = x[i] > max_val ? x[i] : max_val;
  return max_val;
}

void softmax_reference(std::span<float> x) {
  const float max_val = max_reference(x);
  float sum = 0.0f;
  for (float& v : x) {
    // expf is exactly 0 below ln(2^-150) ~ -103.97; skipping the call there avoids libm's
    // slow underflow path (errno), which a flat vocabulary of 32000 logits hits thousands
    // of times per token. Same bits as calling it.
    const float d = v - max_val;
    v = d < -104.0f ? 0.0f : std::exp(d);
    sum += v;
  }
  for (float& v : x) v /= sum;  // sum is a local: this loop is vectorized
}

std::uint64_t resolve_seed(std::uint64_t seed) {
  return seed != 0 ? seed : static_cast<std::uint64_t>(static_cast<unsigned int>(std::time(nullptr)));
}

Sampler::Sampler(int vocab_size, SamplingParams params)
    : vocab_size_(vocab_size), params_(params), state_(params.seed) {
  candidates_.reserve(static_cast<std::size_t>(vocab_size));
}

std::uint32_t Sampler::random_u32() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<std::uint32_t>((state_ * 0x2545F4914F6CDD1DULL) >> 32);
}

float Sampler::random_f32() { return static_cast<float>(random_u32() >> 8) / 16777216.0f; }

int Sampler::sample_topp(std::span<const float> probs, float coin) {
  const int n = static_cast<int>(probs.size());
  if (n == 1) return 0;
  const float cutoff = (1.0f - params_.topp) / static_cast<float>(n - 1);
  candidates_.clear();
  for (int i = 0; i < n; ++i) {
    if (probs[static_cast<std::size_t>(i)] >= cutoff) candidates_.push_back({probs[static_cast<std::size_t>(i)], i});
  }
  // llama2.c reads past its array here; a degenerate top-p falls back to the most likely.
  if (candidates_.empty()) return sample_argmax(probs);
  // llama2.c sorts every candidate by probability (glibc's qsort: a stable merge sort here,
  // so equal probabilities keep index order). Only the prefix up to the nucleus matters,
  // so sort just the top k under the same total order (probability desc, index asc),
  // doubling k until the cumulative probability passes topp: the same prefix and the same
  // float sums as the full sort, without sorting tens of thousands of tail candidates.
  const auto before = [](const ProbIndex& a, const ProbIndex& b) {
    return a.prob > b.prob || (a.prob == b.prob && a.index < b.index);
  };
  float cumulative = 0.0f;
  std::size_t last = candidates_.size() - 1;
  std::size_t sorted = 0;
  std::size_t k = std::min<std::size_t>(candidates_.size(), 64);
  for (;;) {
    std::partial_sort(candidates_.begin() + static_cast<std::ptrdiff_t>(sorted),
                      candidates_.begin() + static_cast<std::ptrdiff_t>(k), candidates_.end(), before);
    bool crossed = false;
    for (std::size_t i = sorted; i < k; ++i) {
      cumulative += candidates_[i].prob;
      if (cumulative > params_.topp) {
        last = i;
        crossed = true;
        break;
      }
    }
    if (crossed || k == candidates_.size()) break;
    sorted = k;
    k = std::min(candidates_.size(), k * 2);
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (std::size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].prob;
    if (r < cdf) return candidates_[i].index;
  }
  return candidates_[last].index;
}

int Sampler::sample(std::span<float> logits) {
  const auto n = static_cast<std::size_t>(vocab_size_);
  logits = logits.first(std::min(n, logits.size()));
  if (params_.temperature == 0.0f) return sample_argmax(logits);
  // A local copy: through the member the compiler must reload it for every element (it
  // could alias the logits) and cannot vectorize the division. Same quotients either way.
  const float temperature = params_.temperature;
  for (float& v : logits) v /= temperature;
  softmax_reference(logits);
  const float coin = random_f32();
  if (params_.topp <= 0.0f || params_.topp >= 1.0f) return sample_mult(logits, coin);
  return sample_topp(logits, coin);
}

}  // namespace llamawire
