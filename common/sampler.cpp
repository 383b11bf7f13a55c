#include "common/sampler.hpp"

#include "common/grammar.hpp"

#include <algorithm>
#include <limits>
#include <array>
#include <cmath>
#include <cstring>
#include <ctime>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace llamawire {
namespace {

// True when every one of p[0..8) minus max_val is below -104 (so its expf term is exactly
// 0), computing each difference as softmax_reference does. A NaN makes it false.
bool all_underflow8(const float* p, float max_val) {
#if defined(__SSE2__)
  const __m128 m = _mm_set1_ps(max_val), lim = _mm_set1_ps(-104.0f);
  const __m128 a = _mm_cmplt_ps(_mm_sub_ps(_mm_loadu_ps(p), m), lim);
  const __m128 b = _mm_cmplt_ps(_mm_sub_ps(_mm_loadu_ps(p + 4), m), lim);
  return _mm_movemask_ps(_mm_and_ps(a, b)) == 0xF;
#else
  for (int l = 0; l < 8; ++l) {
    if (!(p[l] - max_val < -104.0f)) return false;
  }
  return true;
#endif
}

// True when none of p[0..8) is >= cutoff (NaNs are not).
bool none_reach8(const float* p, float cutoff) {
#if defined(__SSE2__)
  const __m128 c = _mm_set1_ps(cutoff);
  return _mm_movemask_ps(_mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(p), c), _mm_cmpge_ps(_mm_loadu_ps(p + 4), c))) == 0;
#else
  for (int l = 0; l < 8; ++l) {
    if (p[l] >= cutoff) return false;
  }
  return true;
#endif
}

// Sorts [first, last) by probability descending, then index ascending (the top-p order),
// as a least-significant-byte-first radix sort of the 64-bit key (~prob bits, index):
// probabilities here are positive and finite, so their bits order like their values. A
// byte that all keys share costs no pass. For the flat distributions where the nucleus is
// most of the vocabulary, this is several times faster than a comparison sort.
template <class T>
void radix_sort_top_p(T* first, T* last, std::vector<T>& scratch) {
  const auto n = static_cast<std::size_t>(last - first);
  const auto key = [](const T& e) {
    std::uint32_t bits = 0;
    static_assert(sizeof(bits) == sizeof(e.prob));
    std::memcpy(&bits, &e.prob, sizeof(bits));
    return static_cast<std::uint64_t>(~bits) << 32 | static_cast<std::uint32_t>(e.index);
  };
  std::array<std::array<std::size_t, 256>, 8> count{};
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t k = key(first[i]);
    for (int b = 0; b < 8; ++b) ++count[static_cast<std::size_t>(b)][(k >> (8 * b)) & 0xFF];
  }
  scratch.resize(n);
  T* src = first;
  T* dst = scratch.data();
  for (int b = 0; b < 8; ++b) {
    auto& c = count[static_cast<std::size_t>(b)];
    if (std::find(c.begin(), c.end(), n) != c.end()) continue;  // one value: already in order
    std::size_t pos = 0;
    for (auto& v : c) {
      const std::size_t here = v;
      v = pos;
      pos += here;
    }
    for (std::size_t i = 0; i < n; ++i) dst[c[(key(src[i]) >> (8 * b)) & 0xFF]++] = src[i];
    std::swap(src, dst);
  }
  if (src != first) std::copy(src, src + n, first);
}

}  // namespace

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

// The largest value, as llama2.c's loop `max = x[i] > max ? x[i] : max` finds it. 32
// running maxima (each the same select, which compiles to a packed max) and then the
// same select across them: the same value for any input, NaNs included (a NaN in x[0]
// wins, any later NaN loses), except that between +0 and -0 either may come out, which
// no caller can see (v - max and the exponent do not depend on the sign of a zero max).
float max_reference(std::span<const float> x) {
  constexpr std::size_t kLanes = 32;
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
  // expf is exactly 0 below ln(2^-150) ~ -103.97; skipping the call there avoids libm's
  // slow underflow path (errno), which a flat vocabulary of 32000 logits hits thousands
  // of times per token. Same bits as calling it.
  auto term = [max_val](float v) {
    const float d = v - max_val;
    return d < -104.0f ? 0.0f : std::exp(d);
  };
  // The sum is llama2.c's sequential one, a chain of dependent adds. Eight values at a time
  // whose terms are all exactly 0 are set and skipped whole: adding +0 to a sum of
  // non-negative terms leaves its bits as they are, so only the chain gets shorter (a
  // peaked distribution underflows almost everywhere). A NaN is never skipped.
  constexpr std::size_t kLanes = 8;
  float sum = 0.0f;
  std::size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes) {
    if (all_underflow8(x.data() + i, max_val)) {
      std::fill_n(x.begin() + static_cast<std::ptrdiff_t>(i), kLanes, 0.0f);
      continue;
    }
    for (std::size_t l = 0; l < kLanes; ++l) {
      x[i + l] = term(x[i + l]);
      sum += x[i + l];
    }
  }
  for (; i < x.size(); ++i) {
    x[i] = term(x[i]);
    sum += x[i];
  }
  for (float& v : x) v /= sum;  // sum is a local: this loop is vectorized
}

std::uint64_t resolve_seed(std::uint64_t seed) {
  return seed != 0 ? seed : static_cast<std::uint64_t>(static_cast<unsigned int>(std::time(nullptr)));
}

Sampler::Sampler(int vocab_size, SamplingParams params)
    : vocab_size_(vocab_size), params_(std::move(params)), state_(params_.seed) {
  candidates_.reserve(static_cast<std::size_t>(vocab_size));
}

Sampler::~Sampler() = default;

Sampler::Sampler(Sampler&& o) noexcept
    : vocab_size_(o.vocab_size_),
      params_(std::move(o.params_)),
      state_(o.state_),
      grammar_(std::move(o.grammar_)),
      ends_(std::move(o.ends_)),
      drawn_(o.drawn_),
      finished_at_(o.finished_at_.load()),
      window_(std::move(o.window_)),
      logprobs_top_(o.logprobs_top_),
      adjusted_(std::move(o.adjusted_)),
      records_(std::move(o.records_)),
      candidates_(std::move(o.candidates_)),
      scratch_(std::move(o.scratch_)) {}

Sampler& Sampler::operator=(Sampler&& o) noexcept {
  vocab_size_ = o.vocab_size_;
  params_ = std::move(o.params_);
  state_ = o.state_;
  candidates_ = std::move(o.candidates_);
  scratch_ = std::move(o.scratch_);
  grammar_ = std::move(o.grammar_);
  ends_ = std::move(o.ends_);
  drawn_ = o.drawn_;
  finished_at_ = o.finished_at_.load();
  window_ = std::move(o.window_);
  logprobs_top_ = o.logprobs_top_;
  adjusted_ = std::move(o.adjusted_);
  records_ = std::move(o.records_);
  return *this;
}

void Sampler::set_grammar(std::shared_ptr<grammar::CompiledGrammar> g, std::vector<int> ends) {
  grammar_ = g ? std::make_unique<grammar::Matcher>(std::move(g)) : nullptr;
  ends_ = std::move(ends);
  finished_at_ = -1;
}

std::optional<TokenLogprobs> Sampler::take_logprobs() {
  std::lock_guard lock(records_mutex_);
  if (records_.empty()) return std::nullopt;
  TokenLogprobs r = std::move(records_.front());
  records_.pop_front();
  return r;
}

void Sampler::record(std::span<const float> logits, int token) {
  // log-softmax: l - (m + log(sum exp(l - m))), the sum in double.
  const float m = max_reference(logits);
  double sum = 0.0;
  for (const float l : logits) sum += l == -std::numeric_limits<float>::infinity() ? 0.0 : std::exp(static_cast<double>(l - m));
  const double lse = static_cast<double>(m) + std::log(sum);
  auto lp = [&](int i) { return static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(i)]) - lse); };
  TokenLogprobs r;
  r.token = token;
  r.logprob = lp(token);
  if (logprobs_top_ > 0) {
    std::vector<int> idx(logits.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
    const auto k = std::min<std::size_t>(static_cast<std::size_t>(logprobs_top_), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(), [&](int a, int b) {
      const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
      return la > lb || (la == lb && a < b);
    });
    for (std::size_t i = 0; i < k; ++i) {
      if (logits[static_cast<std::size_t>(idx[i])] == -std::numeric_limits<float>::infinity()) break;  // masked out
      r.top.emplace_back(idx[i], lp(idx[i]));
    }
  }
  std::lock_guard lock(records_mutex_);
  records_.push_back(std::move(r));
}

void Sampler::remember(std::span<const int> tokens) {
  if (!params_.penalized()) return;
  window_.insert(window_.end(), tokens.begin(), tokens.end());
  if (params_.repeat_last_n > 0 && window_.size() > static_cast<std::size_t>(params_.repeat_last_n)) {
    window_.erase(window_.begin(), window_.end() - params_.repeat_last_n);
  }
}

void Sampler::take(int token) {
  ++drawn_;
  remember(std::span<const int>(&token, 1));
  if (!grammar_ || finished()) return;
  if (std::find(ends_.begin(), ends_.end(), token) != ends_.end() || !grammar_->accept(token) || grammar_->finished()) {
    finished_at_.store(drawn_, std::memory_order_release);
  }
}

bool Sampler::adjust(std::span<float> logits) {
  const auto n = logits.size();
  for (const auto& [token, bias] : params_.logit_bias) {
    if (token >= 0 && static_cast<std::size_t>(token) < n) logits[static_cast<std::size_t>(token)] += bias;
  }
  if (params_.penalized() && !window_.empty()) {
    std::vector<int> w = window_;
    std::sort(w.begin(), w.end());
    for (std::size_t i = 0; i < w.size();) {
      std::size_t j = i;
      while (j < w.size() && w[j] == w[i]) ++j;
      if (w[i] >= 0 && static_cast<std::size_t>(w[i]) < n) {
        float& l = logits[static_cast<std::size_t>(w[i])];
        if (params_.repeat_penalty != 1.0f) l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
        l -= static_cast<float>(j - i) * params_.frequency_penalty + params_.presence_penalty;
      }
      i = j;
    }
  }
  return !grammar_ || grammar_->apply(logits, ends_);
}

void Sampler::truncate(std::span<float> probs) {
  float threshold = 0.0f;
  if (params_.min_p > 0.0f) threshold = params_.min_p * max_reference(probs);
  std::vector<char> keep(probs.size(), 1);
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < probs.size()) {
    // The k most probable, ties to the lower index (the top-p order).
    std::vector<ProbIndex> order(probs.size());
    for (std::size_t i = 0; i < probs.size(); ++i) order[i] = {probs[i], static_cast<int>(i)};
    const auto nth = order.begin() + params_.top_k;
    std::nth_element(order.begin(), nth, order.end(), [](const ProbIndex& a, const ProbIndex& b) {
      return a.prob > b.prob || (a.prob == b.prob && a.index < b.index);
    });
    std::fill(keep.begin(), keep.end(), 0);
    for (auto it = order.begin(); it != nth; ++it) keep[static_cast<std::size_t>(it->index)] = 1;
  }
  float sum = 0.0f;
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (!keep[i] || probs[i] < threshold) probs[i] = 0.0f;
    sum += probs[i];
  }
  if (sum > 0.0f) {
    for (float& p : probs) p /= sum;
  }
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
  // In index order, as llama2.c collects them; eight at a time are tested first, since
  // most of a vocabulary is usually below the cutoff.
  auto consider = [&](int k) {
    if (probs[static_cast<std::size_t>(k)] >= cutoff) candidates_.push_back({probs[static_cast<std::size_t>(k)], k});
  };
  constexpr int kLanes = 8;
  int j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    if (none_reach8(probs.data() + j, cutoff)) continue;
    for (int l = 0; l < kLanes; ++l) consider(j + l);
  }
  for (; j < n; ++j) consider(j);
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
    // The next k - sorted in order: select them (linear), then sort only them. The order is
    // total, so the selected set and its order are the full sort's. When that is most of
    // what is left, everything left is sorted at once, by radix when it is long.
    // (partial_sort's heap took 7 ms per draw on a flat 32000-token distribution, where the
    // nucleus is most of the vocabulary; the whole draw now takes 0.7 ms.)
    const std::size_t left = candidates_.size() - sorted;
    if (2 * (k - sorted) >= left) k = candidates_.size();
    const auto first = candidates_.begin() + static_cast<std::ptrdiff_t>(sorted);
    const auto nth = candidates_.begin() + static_cast<std::ptrdiff_t>(k);
    if (nth != candidates_.end()) {
      std::nth_element(first, nth, candidates_.end(), before);
      std::sort(first, nth, before);
    } else if (left >= 2048) {
      radix_sort_top_p(candidates_.data() + sorted, candidates_.data() + candidates_.size(), scratch_);
    } else {
      std::sort(first, nth, before);
    }
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
    // A flat distribution (the top k hold under a quarter of the nucleus): the nucleus is
    // likely much of the vocabulary, so sort the rest at once instead of selecting again.
    k = cumulative < params_.topp / 4 ? candidates_.size() : std::min(candidates_.size(), k * 2);
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
  if ((!params_.logit_bias.empty() || params_.penalized() || grammar_) && !adjust(logits)) {
    // The grammar allows no token at all: the generation ends (at an end token if it has one).
    const int token = ends_.empty() ? sample_argmax(logits) : ends_.front();
    ++drawn_;
    if (!finished()) finished_at_.store(drawn_, std::memory_order_release);
    return token;
  }
  if (logprobs_top_ >= 0) adjusted_.assign(logits.begin(), logits.end());
  int token = 0;
  if (params_.temperature == 0.0f) {
    token = sample_argmax(logits);
  } else {
    // A local copy: through the member the compiler must reload it for every element (it
    // could alias the logits) and cannot vectorize the division. Same quotients either way.
    const float temperature = params_.temperature;
    for (float& v : logits) v /= temperature;
    softmax_reference(logits);
    if (params_.top_k > 0 || params_.min_p > 0.0f) truncate(logits);
    const float coin = random_f32();
    token = params_.topp <= 0.0f || params_.topp >= 1.0f ? sample_mult(logits, coin) : sample_topp(logits, coin);
  }
  if (logprobs_top_ >= 0) record(adjusted_, token);
  take(token);
  return token;
}

}  // namespace llamawire
