// The load tester's arithmetic, apart from its sockets so that unit tests can check it.
#pragma once

#include <utility>
#include <vector>

namespace llamawire {

// The nearest-rank percentile p (0-100) of v; 0 for an empty v.
double percentile(std::vector<double> v, double p);

// Seconds covered by at least one of the [begin, end] intervals (overlaps counted once).
double covered_seconds(std::vector<std::pair<double, double>> intervals);

// Aggregate decode rate: the tokens after each request's first, over the time during which
// at least one request was decoding (between its first and its last token). Time spent
// only on prompts, or with nothing in flight, is left out, so one client and many clients
// are compared on the generation phase alone. Requests of fewer than two tokens add
// nothing. Each span is {first token s, last token s, tokens}.
struct DecodeSpan {
  double first_s = 0;
  double last_s = 0;
  int tokens = 0;
};
double decode_tokens_per_second(const std::vector<DecodeSpan>& spans);

}  // namespace llamawire
