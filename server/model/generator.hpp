// llama2.c's generate loop, run locally (llamawire-run, tests): the prompt is forced (and
// prefilled as one batch), then tokens are sampled until `steps` positions or BOS.
#pragma once

#include "common/vocab.hpp"

#include "common/sampler.hpp"
#include "server/model/forward.hpp"

#include <functional>
#include <span>
#include <vector>

namespace llamawire {

struct LocalGeneration {
  std::vector<int> tokens;      // the whole sequence, BOS first, as golden/generate.jsonl
  int positions = 0;            // positions run (llama2.c's final `pos`)
  int prefilled = 0;            // positions in the first (prompt) batch
  double prefill_seconds = 0;   // time of the first batch
  double decode_seconds = 0;    // time after the first batch
};

// on_token(prev, next) is called for every token after the first, in order, as llama2.c
// prints them. `prompt` must be non-empty; steps is already clamped to the context. The
// run ends at the model's BOS (special.stop_for with stop_at_end false, as llama2.c runs
// on past EOS).
LocalGeneration generate_local(ForwardPass& fwd, KvCache& kv, Parallel& par, std::span<const int> prompt,
                               Sampler& sampler, int steps, const SpecialTokens& special,
                               const std::function<void(int, int)>& on_token);

}  // namespace llamawire
