#include "server/model/generator.hpp"

#include "common/error.hpp"
#include "common/tokenizer.hpp"

#include <algorithm>
#include <chrono>

namespace llamawire {

LocalGeneration generate_local(ForwardPass& fwd, KvCache& kv, Parallel& par, std::span<const int> prompt,
                               Sampler& sampler, int steps, const SpecialTokens& special,
                               const std::function<void(int, int)>& on_token) {
  const auto ends = [&](int t) { return special.stop_for(t, false) != SpecialTokens::Stop::none; };
  using clock = std::chrono::steady_clock;
  LW_ASSERT(!prompt.empty());
  LocalGeneration g;
  g.tokens.push_back(prompt[0]);
  const int n_prompt = static_cast<int>(prompt.size());
  steps = std::min(steps, kv.capacity());
  // Forced tokens: positions whose successor is the prompt's. Only their KV entries matter,
  // and the logits of the last prompt position, so they run as batches.
  const int forced = std::min(n_prompt - 1, steps);
  int pos = 0;
  const auto t0 = clock::now();
  std::vector<BatchRow> rows;
  if (n_prompt - 1 >= steps) {
    // The whole run is forced: nothing is sampled, nothing needs computing.
    for (int p = 0; p < steps; ++p) {
      const int next = prompt[static_cast<std::size_t>(p) + 1];
      g.positions = p + 1;
      if (ends(next)) break;
      on_token(prompt[static_cast<std::size_t>(p)], next);
      g.tokens.push_back(next);
    }
    return g;
  }
  // Prefill positions [0, forced] in batches of the forward's capacity; the last row wants logits.
  std::span<float> logits;
  while (pos <= forced) {
    const int n = std::min(forced + 1 - pos, fwd.max_batch());
    LW_ASSERT(kv.reserve(pos + n));
    rows.clear();
    for (int i = 0; i < n; ++i) {
      rows.push_back(BatchRow{prompt[static_cast<std::size_t>(pos + i)], pos + i, &kv, pos + i == forced});
    }
    logits = fwd.run(rows, par);
    pos += n;
  }
  g.prefilled = pos;
  const auto t1 = clock::now();
  g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  // Print the forced tokens now that the prompt is processed (llama2.c prints each as its
  // position runs; the bytes are the same).
  int token = prompt[0];
  for (int p = 0; p < forced; ++p) {
    const int next = prompt[static_cast<std::size_t>(p) + 1];
    if (ends(next)) {
      g.positions = p + 1;
      return g;
    }
    on_token(token, next);
    g.tokens.push_back(next);
    token = next;
  }
  // pos == forced + 1: the logits of position `forced` are ready.
  for (;;) {
    const int next = sampler.sample(logits);
    g.positions = pos;
    if (ends(next)) break;
    on_token(token, next);
    g.tokens.push_back(next);
    token = next;
    if (pos >= steps) break;
    LW_ASSERT(kv.reserve(pos + 1));
    const BatchRow row{token, pos, &kv, true};
    logits = fwd.run(std::span(&row, 1), par);
    ++pos;
  }
  g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return g;
}

}  // namespace llamawire
