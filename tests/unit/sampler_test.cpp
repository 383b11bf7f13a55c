#include "common/sampler.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lw = llamawire;

TEST_CASE("sampler RNG matches llama2.c's xorshift64* coins", "[sampler]") {
  // Seed 42: random_u32 gives 1456360119, 3359763283, 3393612768 (computed independently
  // from the reference formula), so the coins are 0.339.., 0.782.., 0.790.. and a uniform
  // distribution over 10 tokens picks 3, 7, 7.
  lw::Sampler s(10, {1.0f, 1.0f, 42});
  std::vector<int> picks;
  for (int i = 0; i < 3; ++i) {
    std::vector<float> logits(10, 0.0f);
    picks.push_back(s.sample(logits));
  }
  CHECK(picks == std::vector<int>{3, 7, 7});
}

TEST_CASE("sampler argmax and temperature 0", "[sampler]") {
  std::vector<float> v{0.1f, 3.0f, -2.0f, 3.0f};
  CHECK(lw::sample_argmax(v) == 1);  // first maximum wins
  lw::Sampler s(4, {0.0f, 0.9f, 1});
  CHECK(s.sample(v) == 1);
  CHECK(s.rng_state() == 1);  // greedy consumes no randomness
}

TEST_CASE("sampler top-p keeps the nucleus only", "[sampler]") {
  // Probabilities after softmax: one dominant token; top-p 0.5 must always choose it.
  for (std::uint64_t seed = 1; seed < 200; ++seed) {
    lw::Sampler s(5, {1.0f, 0.5f, seed});
    std::vector<float> logits{0.0f, 0.0f, 5.0f, 0.0f, 0.0f};
    REQUIRE(s.sample(logits) == 2);
  }
  // Full-distribution sampling reaches every token of a uniform distribution.
  lw::Sampler s(4, {1.0f, 0.0f, 7});
  std::vector<int> seen(4, 0);
  for (int i = 0; i < 400; ++i) {
    std::vector<float> logits(4, 1.0f);
    ++seen[static_cast<std::size_t>(s.sample(logits))];
  }
  for (int c : seen) CHECK(c > 50);
}

TEST_CASE("sample_mult and softmax reference", "[sampler]") {
  std::vector<float> p{0.25f, 0.25f, 0.5f};
  CHECK(lw::sample_mult(p, 0.0f) == 0);
  CHECK(lw::sample_mult(p, 0.3f) == 1);
  CHECK(lw::sample_mult(p, 0.9999f) == 2);
  CHECK(lw::sample_mult(p, 1.5f) == 2);  // past the cdf: the last index, as llama2.c
  std::vector<float> x{1.0f, 2.0f, 3.0f};
  lw::softmax_reference(x);
  CHECK(x[0] + x[1] + x[2] == Approx(1.0f));
  CHECK(x[2] > x[1]);
  CHECK(lw::resolve_seed(5) == 5);
  CHECK(lw::resolve_seed(0) != 0);
}

TEST_CASE("softmax skips exp only where expf is exactly zero", "[sampler]") {
  // The same bits as llama2.c's plain loop, across the underflow edge (-103.97).
  std::vector<float> x;
  for (float d = 0.0f; d > -130.0f; d -= 0.013f) x.push_back(d);
  for (float d : {-103.9f, -103.95f, -103.97f, -103.98f, -104.0f, -104.01f, -87.0f, -88.8f}) x.push_back(d);
  std::vector<float> ref = x;
  float mx = ref[0];
  for (float v : ref) mx = std::max(mx, v);
  float sum = 0.0f;
  for (float& v : ref) {
    v = std::exp(v - mx);
    sum += v;
  }
  for (float& v : ref) v /= sum;
  lw::softmax_reference(x);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(x[i] == ref[i]);
  CHECK(std::exp(-104.0f) == 0.0f);
}

TEST_CASE("max_reference agrees with llama2.c's sequential loop", "[sampler]") {
  const auto sequential = [](const std::vector<float>& x) {
    float m = x[0];
    for (std::size_t i = 1; i < x.size(); ++i) m = x[i] > m ? x[i] : m;
    return m;
  };
  const float nan = std::nanf("");
  const float inf = INFINITY;
  std::uint32_t state = 12345;
  const auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 16777216.0f * 40.0f - 20.0f;
  };
  for (std::size_t n : {1, 2, 7, 8, 9, 15, 16, 17, 63, 100, 32000}) {
    for (int where = 0; where < 5; ++where) {
      std::vector<float> x(n);
      for (auto& v : x) v = next();
      const std::size_t at = static_cast<std::size_t>(next() + 20.0f) % n;
      if (where == 1) x[at] = 1000.0f;          // one clear maximum anywhere, tails included
      if (where == 2) x[at] = nan;              // a NaN: ignored unless it is first
      if (where == 3) x[0] = nan;               // first NaN wins, as in the loop
      if (where == 4) x[at] = -inf, x[0] = inf;  // infinities
      const float want = sequential(x);
      const float got = lw::max_reference(x);
      if (std::isnan(want)) {
        REQUIRE(std::isnan(got));
      } else {
        REQUIRE(got == want);
      }
    }
  }
  // Zeros of both signs tie: either may come out, and softmax does not see the difference.
  std::vector<float> z{-0.0f, -1.0f, 0.0f, -2.0f, -0.0f, -3.0f, -4.0f, -5.0f, 0.0f, -6.0f};
  CHECK(lw::max_reference(z) == 0.0f);
  std::vector<float> a = z, b = z;
  lw::softmax_reference(a);
  float sum = 0.0f;
  for (float& v : b) {
    v = std::exp(v - 0.0f);
    sum += v;
  }
  for (float& v : b) v /= sum;
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == b[i]);
}

namespace {

// llama2.c's sample_topp written out plainly (full stable sort), as the oracle.
int reference_topp(const std::vector<float>& probs, float topp, float coin) {
  struct PI {
    float prob;
    int index;
  };
  std::vector<PI> c;
  const float cutoff = (1.0f - topp) / static_cast<float>(probs.size() - 1);
  for (std::size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] >= cutoff) c.push_back({probs[i], static_cast<int>(i)});
  }
  std::stable_sort(c.begin(), c.end(), [](const PI& a, const PI& b) { return a.prob > b.prob; });
  float cum = 0.0f;
  std::size_t last = c.size() - 1;
  for (std::size_t i = 0; i < c.size(); ++i) {
    cum += c[i].prob;
    if (cum > topp) {
      last = i;
      break;
    }
  }
  const float r = coin * cum;
  float cdf = 0.0f;
  for (std::size_t i = 0; i <= last; ++i) {
    cdf += c[i].prob;
    if (r < cdf) return c[i].index;
  }
  return c[last].index;
}

// What a fresh Sampler{temp, topp, seed} must pick from `logits` on its first draw: the
// same division, softmax and coin as the sampler, then the plain full-sort top-p.
int reference_first_draw(std::vector<float> logits, float temp, float topp, std::uint64_t seed) {
  for (auto& v : logits) v /= temp;
  lw::softmax_reference(logits);
  std::uint64_t st = seed;  // the first coin, as the sampler computes it
  st ^= st >> 12;
  st ^= st << 25;
  st ^= st >> 27;
  const auto u = static_cast<std::uint32_t>((st * 0x2545F4914F6CDD1DULL) >> 32);
  const float coin = static_cast<float>(u >> 8) / 16777216.0f;
  return reference_topp(logits, topp, coin);
}

// A xorshift64 stream for the randomized cases.
struct XorShift {
  std::uint64_t x;
  std::uint64_t operator()() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  }
};

}  // namespace

TEST_CASE("top-p with a partial sort picks exactly what the full sort picks", "[sampler]") {
  XorShift next{99};
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 2 + static_cast<int>(next() % 3000);
    const float temp = 0.2f + static_cast<float>(next() % 100) / 40.0f;
    const float topp = 0.05f + static_cast<float>(next() % 90) / 100.0f;
    std::vector<float> logits(static_cast<std::size_t>(n));
    for (auto& v : logits) v = static_cast<float>(next() % 2000) / 100.0f;  // many exact ties
    const std::uint64_t seed = 1 + next() % 100000;
    lw::Sampler s(n, {temp, topp, seed});
    auto work = logits;
    const int got = s.sample(work);
    INFO("trial " << trial << " n " << n << " topp " << topp);
    REQUIRE(got == reference_first_draw(logits, temp, topp, seed));
  }
}

TEST_CASE("top-p over a flat vocabulary (the radix sort path) picks what the full sort picks", "[sampler]") {
  // Nearly flat logits over up to 32000 tokens: the nucleus is most of the vocabulary, so the
  // sampler sorts the candidates at once by radix; exact ties stay in index order.
  XorShift next{7};
  for (int trial = 0; trial < 24; ++trial) {
    const int n = trial % 3 == 0 ? 32000 : 2048 + static_cast<int>(next() % 30000);
    const float temp = 0.5f + static_cast<float>(next() % 100) / 50.0f;
    const float topp = 0.5f + static_cast<float>(next() % 49) / 100.0f;
    const float spread = trial % 2 == 0 ? 0.5f : 3.0f;  // logits within [0, spread)
    std::vector<float> logits(static_cast<std::size_t>(n));
    for (auto& v : logits) v = static_cast<float>(next() % 1000) / 1000.0f * spread;
    const std::uint64_t seed = 1 + next() % 100000;
    lw::Sampler s(n, {temp, topp, seed});
    auto work = logits;
    const int got = s.sample(work);
    INFO("trial " << trial << " n " << n << " topp " << topp << " spread " << spread);
    REQUIRE(got == reference_first_draw(logits, temp, topp, seed));
  }
}

TEST_CASE("sampler: logit_bias and the penalties change exactly the logits they name", "[sampler]") {
  // Greedy over 6 tokens: the bias and the penalties decide which one wins.
  std::vector<float> base{1.0f, 2.0f, 3.0f, -1.0f, 0.5f, 2.9f};
  auto pick = [&](lw::SamplingParams p, std::vector<int> history) {
    p.temperature = 0.0f;
    lw::Sampler s(6, std::move(p));
    s.remember(history);
    auto l = base;
    return s.sample(l);
  };
  lw::SamplingParams p;
  CHECK(pick(p, {}) == 2);
  p.logit_bias = {{2, -0.2f}};  // 3.0 - 0.2 = 2.8 < 2.9
  CHECK(pick(p, {}) == 5);
  // repeat_penalty 2 divides a positive logit of a token in the window: 3.0 / 2 = 1.5.
  lw::SamplingParams r;
  r.repeat_penalty = 2.0f;
  CHECK(pick(r, {2}) == 5);
  // A negative logit is multiplied: token 3's -1.0 would become -2.0 (never the best anyway);
  // the window holds the last repeat_last_n tokens only.
  r.repeat_last_n = 1;
  CHECK(pick(r, {2, 4}) == 2);  // 2 fell out of the window
  // frequency: minus 0.1 per occurrence; presence: minus once.
  lw::SamplingParams f;
  f.frequency_penalty = 0.1f;
  CHECK(pick(f, {2}) == 2);        // 2.9 vs 3.0 - 0.1 = 2.9: a tie goes to the lower index
  CHECK(pick(f, {2, 2}) == 5);     // 3.0 - 0.2 = 2.8
  lw::SamplingParams pr;
  pr.presence_penalty = 0.5f;
  CHECK(pick(pr, {2, 2, 2}) == 5);  // 3.0 - 0.5 once
  // Off by default: nothing is remembered or changed.
  CHECK_FALSE(lw::SamplingParams{}.penalized());
}

TEST_CASE("sampler: top_k and min_p keep only what they say, renormalized; logprobs are log-softmax", "[sampler]") {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits log p). Coins from seed 42: 0.339, 0.782, 0.790.
  const std::vector<float> logits{std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  auto draws = [&](lw::SamplingParams p) {
    p.seed = 42;
    p.topp = 1.0f;
    lw::Sampler s(4, std::move(p));
    std::vector<int> out;
    for (int i = 0; i < 3; ++i) {
      auto l = logits;
      out.push_back(s.sample(l));
    }
    return out;
  };
  CHECK(draws({}) == std::vector<int>{0, 2, 2});  // cdf 0.5, 0.75, 0.875, 1
  lw::SamplingParams k;
  k.top_k = 2;  // 2/3, 1/3: coin 0.339 -> 0, 0.782 -> 1, 0.790 -> 1
  CHECK(draws(k) == std::vector<int>{0, 1, 1});
  lw::SamplingParams m;
  m.min_p = 0.3f;  // 0.125 < 0.15 cut: the same as top_k 2 here
  CHECK(draws(m) == std::vector<int>{0, 1, 1});
  m.min_p = 0.6f;  // only 0.5 stays
  CHECK(draws(m) == std::vector<int>{0, 0, 0});
  // Logprobs of the logits the draw saw, with the top alternatives in order.
  lw::Sampler s(4, {1.0f, 1.0f, 42});
  s.want_logprobs(2);
  auto l = logits;
  const int t = s.sample(l);
  const auto rec = s.take_logprobs();
  REQUIRE(rec.has_value());
  CHECK(rec->token == t);
  CHECK(rec->logprob == Approx(std::log(0.5)).margin(1e-6));
  REQUIRE(rec->top.size() == 2);
  CHECK(rec->top[0].first == 0);
  CHECK(rec->top[1].first == 1);
  CHECK(rec->top[1].second == Approx(std::log(0.25)).margin(1e-6));
  CHECK_FALSE(s.take_logprobs().has_value());
}
