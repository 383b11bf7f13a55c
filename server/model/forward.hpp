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
};

class Forward {
 public:
  // Scratch for up to max_batch rows, of which at most max_logit_rows want logits (all
  // when 0); memory is proportional to these, not to seq_len.
  Forward(const WeightStore& weights, int max_batch, int max_threads, int max_logit_rows = 0);

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
  std::vector<float> x_, xb_, xb2_, q_, k_, v_, hb_, hb2_, att_, logits_, rope_, xcls_;
  std::vector<std::int8_t> xq_, hq_;
  std::vector<float> xs_, hs_;
  // GGUF block formats: activation rows in each format the model's matrices take (q8_0,
  // q8_1, q8_K), for inputs of dim (bit 0 of the masks) and of hidden_dim (bit 1).
  std::vector<std::uint8_t> act_buf_[3];
  unsigned act_dim_mask_ = 0, act_hidden_mask_ = 0;
  std::vector<int> chunk_ends_;  // matmul's task boundaries (kept to avoid allocating per call)
};

}  // namespace llamawire
