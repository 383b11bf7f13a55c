#include "client/bench_stats.hpp"

#include <catch2/catch.hpp>

#include <vector>

namespace lw = llamawire;

TEST_CASE("bench percentiles are nearest-rank", "[bench]") {
  CHECK(lw::percentile({}, 50) == 0);
  const std::vector<double> v{5, 1, 4, 2, 3};
  CHECK(lw::percentile(v, 50) == 3);
  CHECK(lw::percentile(v, 90) == 5);
  CHECK(lw::percentile(v, 0) == 1);
  CHECK(lw::percentile(v, 100) == 5);
}

TEST_CASE("bench covered time counts overlapping intervals once", "[bench]") {
  CHECK(lw::covered_seconds({}) == 0);
  CHECK(lw::covered_seconds({{1, 3}}) == Approx(2));
  // Overlapping, nested, touching, disjoint, out of order, and an empty one.
  CHECK(lw::covered_seconds({{4, 6}, {1, 3}, {2, 5}, {1.5, 2}, {8, 9}, {9, 10}, {7, 7}}) == Approx(5 + 2));
}

TEST_CASE("bench decode rate leaves out time spent only on prompts", "[bench]") {
  // One client, two requests of 11 tokens one after the other, each with 1 s of prompt
  // before its first token and 10 tokens over the next 2 s: 20 decode tokens in 4 s.
  CHECK(lw::decode_tokens_per_second({{1, 3, 11}, {4, 6, 11}}) == Approx(5));
  // Four clients at once, decoding together over the same 2 s after a shared prompt step.
  CHECK(lw::decode_tokens_per_second({{1, 3, 11}, {1, 3, 11}, {1, 3, 11}, {1, 3, 11}}) == Approx(20));
  // Staggered: time when any request decodes counts, once. 10 + 10 tokens over [1, 4].
  CHECK(lw::decode_tokens_per_second({{1, 3, 11}, {2, 4, 11}}) == Approx(20.0 / 3.0));
  // Requests with one token (or none) have no decode phase.
  CHECK(lw::decode_tokens_per_second({{1, 1, 1}, {0, 0, 0}}) == 0);
  CHECK(lw::decode_tokens_per_second({}) == 0);
}
