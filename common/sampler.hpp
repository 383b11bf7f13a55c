// llama2.c's sampler: argmax, temperature, top-p and full-distribution sampling driven by
// its xorshift64* RNG, bit-for-bit the same choices as run.c.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llamawire {

struct SamplingParams {
  float temperature = 1.0f;
  float topp = 0.9f;
  std::uint64_t seed = 0;  // 0 is resolved to the clock by the caller that owns the CLI
};

class Sampler {
 public:
  Sampler(int vocab_size, SamplingParams params);

  // Picks the next token. Modifies `logits` in place (divided, softmaxed), as run.c does.
  int sample(std::span<float> logits);

  std::uint64_t rng_state() const { return state_; }
  const SamplingParams& params() const { return params_; }

 private:
  struct ProbIndex {
    float prob;
    int index;
  };

  std::uint32_t random_u32();
  float random_f32();
  int sample_topp(std::span<const float> probs, float coin);

  int vocab_size_;
  SamplingParams params_;
  std::uint64_t state_;
  std::vector<ProbIndex> candidates_;
  std::vector<ProbIndex> scratch_;  // the radix sort's second buffer
};

// The stand-alone pieces, for tests and for the kernels' reference.
int sample_argmax(std::span<const float> values);
int sample_mult(std::span<const float> probs, float coin);
void softmax_reference(std::span<float> x);
// The largest element as llama2.c's sequential loop picks it (NaN rules included).
float max_reference(std::span<const float> x);

// A seed of 0 means "from the clock", as llama2.c's run does.
std::uint64_t resolve_seed(std::uint64_t seed);

}  // namespace llamawire
