// llama2.c's sampler: argmax, temperature, top-p and full-distribution sampling driven by
// its xorshift64* RNG, bit-for-bit the same choices as run.c; and around it, the samplers
// that servers' APIs offer, each off by default (so that the defaults give run.c's choices).
//
// The order, for each token:
//   1. logit_bias: added to the named tokens' logits;
//   2. penalties, over the window of the last repeat_last_n tokens of the sequence (the
//      prompt's and the generated ones; remember() feeds it): repeat_penalty divides a
//      positive logit and multiplies a negative one of every token in the window (llama.cpp's
//      rule); then presence_penalty is subtracted once from each token in the window and
//      frequency_penalty once per occurrence (OpenAI's rule);
//   3. the grammar: tokens that would leave its language get -infinity; the end tokens only
//      where the text may end;
//   (the logits now are those that logprobs report, as log-softmax)
//   4. temperature 0: the argmax; otherwise divide by the temperature and softmax;
//   5. top_k: only the k most probable stay; min_p: only those at least min_p times the
//      most probable stay (what is cut is set to 0 and the rest renormalized, when either
//      is on);
//   6. top-p (0 < top_p < 1) or the full distribution, with llama2.c's coin.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace llamawire {

namespace grammar {
class CompiledGrammar;
class Matcher;
}  // namespace grammar

struct SamplingParams {
  float temperature = 1.0f;
  float topp = 0.9f;
  std::uint64_t seed = 0;  // 0 is resolved to the clock by the caller that owns the CLI
  int top_k = 0;           // 0: off
  float min_p = 0.0f;      // 0: off
  float repeat_penalty = 1.0f;     // 1: off
  int repeat_last_n = 64;          // the penalties' window; -1: the whole sequence, 0: none
  float presence_penalty = 0.0f;   // 0: off
  float frequency_penalty = 0.0f;  // 0: off
  std::vector<std::pair<int, float>> logit_bias;  // (token, added to its logit)

  bool penalized() const {
    return repeat_last_n != 0 && (repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f);
  }
};

// A drawn token's log-probability and the most likely alternatives, as log-softmax of the
// logits after steps 1-3 (before the temperature): what an API's "logprobs" report.
struct TokenLogprobs {
  int token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int, float>> top;  // (token, logprob), most likely first
};

class Sampler {
 public:
  Sampler(int vocab_size, SamplingParams params);
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;

  // Constrains what is drawn to `g`'s language; `ends` (EOS, the end of turn ...) are
  // allowed only where the text may end.
  void set_grammar(std::shared_ptr<grammar::CompiledGrammar> g, std::vector<int> ends);
  // Record each drawn token's log-probability and its `top` most likely alternatives (0-20);
  // read them in order with take_logprobs().
  void want_logprobs(int top) { logprobs_top_ = top; }
  // The oldest record not yet taken (thread-safe: draws run ahead on the compute threads).
  std::optional<TokenLogprobs> take_logprobs();
  // Tokens of the sequence before what is drawn (the prompt), for the penalties' window.
  void remember(std::span<const int> tokens);
  // Picks the next token. Modifies `logits` in place (biased, penalized, masked, divided,
  // softmaxed), as run.c does; the drawn token joins the window and moves the grammar on.
  int sample(std::span<float> logits);
  // With a grammar: its text is complete and nothing may follow (or no token was allowed):
  // the generation must end here.
  bool finished() const { return finished_at_.load(std::memory_order_acquire) >= 0; }
  // Which drawn token (1: the first) finished it, or -1. A reader that is behind the
  // drawing (a generation's tokens are drawn ahead on the compute threads) asks this
  // rather than finished().
  int finished_at() const { return finished_at_.load(std::memory_order_acquire); }

  std::uint64_t rng_state() const { return state_; }
  const SamplingParams& params() const { return params_; }

 private:
  bool adjust(std::span<float> logits);  // steps 1-3; false when the grammar allows nothing
  void truncate(std::span<float> probs);  // step 5
  void take(int token);
  void record(std::span<const float> logits, int token);  // with logprobs wanted

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
  std::unique_ptr<grammar::Matcher> grammar_;
  std::vector<int> ends_;
  int drawn_ = 0;
  std::atomic<int> finished_at_{-1};
  std::vector<int> window_;  // the last repeat_last_n tokens (all, for -1)
  int logprobs_top_ = -1;    // -1: no records
  std::vector<float> adjusted_;  // the logits after steps 1-3, while records are wanted
  std::mutex records_mutex_;
  std::deque<TokenLogprobs> records_;
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
