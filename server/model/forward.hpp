// One transformer step over a batch of rows: each row is (token, position, KV cache). Rows
// may belong to different sessions (continuous batching) or be a run of one session's
// prompt (prefill). Calls kernels only through the kernel table.
#pragma once

#include "server/kernels/kernels.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/parallel.hpp"
#include "server/model/weight_store.hpp"

#include <initializer_list>
#include <span>
#include <vector>

namespace llamawire {

struct BatchRow {
  int token = 0;
  int pos = 0;
  KvCache* kv = nullptr;     // reserved past `pos` by the caller
  bool want_logits = false;  // compute the classifier for this row
  // When set, the row's final hidden state (after the final RMSNorm: what the classifier
  // reads) is added into these dim floats (an embedding's pooling).
  float* hidden_sum = nullptr;
};

class ForwardPass {
 public:
  // Scratch for up to max_batch rows, of which at most max_logit_rows want logits (all
  // when 0); memory is proportional to these, not to seq_len.
  ForwardPass(const WeightStore& weights, int max_batch, int max_threads, int max_logit_rows = 0);

  int max_batch() const { return max_batch_; }

  // Runs the rows through the model, writes their keys/values into their caches, and
  // returns the logits of the rows with want_logits ([n_wanted][vocab], in row order).
  // Rows of one cache must come in increasing position order. Throws nothing; the caller
  // validates tokens and positions first.
  std::span<float> run(std::span<const BatchRow> rows, Parallel& par, const kernels::KernelTable& k);
  std::span<float> run(std::span<const BatchRow> rows, Parallel& par) {
    return run(rows, par, kernels::active());
  }

 private:
  struct Act;
  // out = x * w^T for up to three matrices sharing one input, as one parallel region (the
  // threads meet once, not once per matrix).
  struct MatmulOut {
    float* out;
    const Matrix* w;
  };
  void matmul(Parallel& par, const kernels::KernelTable& k, std::initializer_list<MatmulOut> outs, const Act& x,
              int batch);
  void matmul(Parallel& par, const kernels::KernelTable& k, float* out, const Act& x, const Matrix& w, int batch) {
    matmul(par, k, {MatmulOut{out, &w}}, x, batch);
  }
  // hb_ = SwiGLU(hb_, hb2_) for B rows.
  void swiglu(Parallel& par, int B);
  Act prepare(Parallel& par, const kernels::KernelTable& k, const float* x, int n, int batch, std::vector<std::int8_t>& q,
              std::vector<float>& s);

  const WeightStore& w_;
  int max_batch_;
  int max_logit_rows_;
  int max_threads_;
  // Scratch, B = max_batch rows (shapes as llama2.c's RunState writes them):
  std::vector<float> x_;       // (B, dim) the residual stream
  std::vector<float> xb_;      // (B, dim) rmsnorm(x), then the attention output, then w2's
  std::vector<float> xb2_;     // (B, dim) wo's output
  std::vector<float> q_;       // (B, dim) queries
  std::vector<float> k_, v_;   // (B, kv_dim) this step's keys and values (copied into the caches)
  std::vector<float> hb_;      // (B, hidden_dim) w1's output, then SwiGLU
  std::vector<float> hb2_;     // (B, hidden_dim) w3's output
  std::vector<float> att_;     // (max_threads, n_heads, seq_len) attention scores, per thread
  std::vector<float> logits_;  // (max_logit_rows, vocab_size)
  std::vector<float> rope_;    // (B, head_size) cos/sin pairs of each row's position
  std::vector<float> xcls_;    // (max_logit_rows, dim) final rmsnorm of the rows that want logits
  // llama2.c's Q8_0 weights: activations as int8 values and a scale per group.
  std::vector<std::int8_t> xq_;  // (B, dim)
  std::vector<std::int8_t> hq_;  // (B, hidden_dim)
  std::vector<float> xs_;        // (B, dim / group)
  std::vector<float> hs_;        // (B, hidden_dim / group)
  // GGUF block formats: activation rows in each format the model's matrices take (q8_0,
  // q8_1, q8_K), for inputs of dim (bit 0 of the masks) and of hidden_dim (bit 1).
  std::vector<std::uint8_t> act_buf_[3];
  unsigned act_dim_mask_ = 0, act_hidden_mask_ = 0;
  std::vector<int> chunk_ends_;  // matmul's task boundaries (kept to avoid allocating per call)
};

}  // namespace llamawire
