#include "server/model/forward.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace llamawire {

struct ForwardPass::Act {
  const float* f = nullptr;  // float activations [batch][n]
  int n = 0;
  kernels::Q8Vector q;       // quantized copy when the weights are llama2.c's Q8_0
  kernels::BlockAct blocks[3];  // GGUF: q8_0, q8_1, q8_K rows where the model needs them

  kernels::BlockAct for_type(kernels::TensorType t) const;
};

namespace {

std::size_t sz(int v) { return static_cast<std::size_t>(v); }

// Index of an activation format in Act::blocks, or -1 for plain floats.
int act_index(kernels::TensorType act) {
  switch (act) {
    case kernels::TensorType::q8_0: return 0;
    case kernels::TensorType::q8_1: return 1;
    case kernels::TensorType::q8_k: return 2;
    default: return -1;
  }
}
constexpr kernels::TensorType kActFormats[3] = {kernels::TensorType::q8_0, kernels::TensorType::q8_1,
                                                kernels::TensorType::q8_k};

// The activation formats (as a mask over act_index) that these matrices take.
unsigned act_mask(std::initializer_list<const Matrix*> ms) {
  unsigned mask = 0;
  for (const Matrix* m : ms) {
    if (!m->block_format() && !m->packed_format()) continue;
    const int i = act_index(kernels::traits(m->block_type()).act);
    if (i >= 0) mask |= 1u << i;
  }
  return mask;
}

// Guided chunks for the threads: each takes half of a thread's fair share of what is left
// (so a core that started late or runs slow evens out), down to `min_units`, so the last
// chunks are small and no thread waits long at the end of a matrix for another's big one.
// Appends the chunk ends to `ends` and returns how many.
int guided_chunks(int units, int threads, int min_units, std::vector<int>& ends) {
  int n = 0;
  for (int done = 0; done < units; ++n) {
    const int left = units - done;
    done += std::min(left, std::max(min_units, (left + 2 * threads - 1) / (2 * threads)));
    ends.push_back(done);
  }
  return n;
}

}  // namespace

ForwardPass::ForwardPass(const WeightStore& weights, int max_batch, int max_threads, int max_logit_rows)
    : w_(weights),
      max_batch_(std::max(1, max_batch)),
      max_logit_rows_(max_logit_rows > 0 ? std::min(max_logit_rows, max_batch_) : max_batch_),
      max_threads_(std::max(1, max_threads)) {
  const ModelConfig& c = w_.config();
  const std::size_t B = sz(max_batch_);
  x_.resize(B * sz(c.dim));
  xb_.resize(B * sz(c.dim));
  xb2_.resize(B * sz(c.dim));
  q_.resize(B * sz(c.dim));
  k_.resize(B * sz(c.kv_dim()));
  v_.resize(B * sz(c.kv_dim()));
  hb_.resize(B * sz(c.hidden_dim));
  hb2_.resize(B * sz(c.hidden_dim));
  att_.resize(sz(max_threads_) * sz(c.n_heads) * sz(c.seq_len));
  rope_.resize(B * sz(c.head_size()));
  xcls_.resize(sz(max_logit_rows_) * sz(c.dim));
  logits_.resize(sz(max_logit_rows_) * sz(c.vocab_size));
  if (w_.weight_type() == WeightType::q8_0) {
    const int gs = w_.group_size();
    xq_.resize(B * sz(c.dim));
    xs_.resize(B * sz(c.dim / gs));
    hq_.resize(B * sz(c.hidden_dim));
    hs_.resize(B * sz(c.hidden_dim / gs));
  }
  act_dim_mask_ = act_mask({&w_.classifier()});
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w_.layer(l);
    act_dim_mask_ |= act_mask({&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w1, &lw.w3});
    act_hidden_mask_ |= act_mask({&lw.w2});
  }
  for (int i = 0; i < 3; ++i) {
    std::size_t bytes = 0;
    if (act_dim_mask_ & (1u << i)) bytes = kernels::act_row_bytes(kActFormats[i], sz(c.dim));
    if (act_hidden_mask_ & (1u << i)) bytes = std::max(bytes, kernels::act_row_bytes(kActFormats[i], sz(c.hidden_dim)));
    act_buf_[i].resize(B * bytes);
  }
}

kernels::BlockAct ForwardPass::Act::for_type(kernels::TensorType t) const {
  const kernels::TensorType act = kernels::traits(t).act;
  const int i = act_index(act);
  if (i < 0) return kernels::BlockAct{act, reinterpret_cast<const std::uint8_t*>(f), sz(n) * sizeof(float)};
  LW_ASSERT(blocks[i].data != nullptr);
  return blocks[i];
}

ForwardPass::Act ForwardPass::prepare(Parallel& par, const kernels::KernelTable& k, const float* x, int n, int batch,
                              std::vector<std::int8_t>& q, std::vector<float>& s) {
  Act a;
  a.f = x;
  a.n = n;
  const ModelConfig& c = w_.config();
  const unsigned mask = (n == c.dim ? act_dim_mask_ : 0u) | (n == c.hidden_dim ? act_hidden_mask_ : 0u);
  for (int i = 0; i < 3; ++i) {
    if (!(mask & (1u << i))) continue;
    const std::size_t rb = kernels::act_row_bytes(kActFormats[i], sz(n));
    std::uint8_t* buf = act_buf_[i].data();
    a.blocks[i] = kernels::BlockAct{kActFormats[i], buf, rb};
    // A small batch (decode) also splits each row, at 256-value boundaries, so both threads
    // quantize; every block is quantized the same way whatever the split.
    const int parts = batch >= par.concurrency() ? 1 : std::min(par.concurrency(), std::max(1, n / 256));
    par.for_each(batch * parts, [&](int task, int) {
      const int b = task / parts, p = task % parts;
      const std::size_t groups = sz(n) / 256, rest = sz(n) % 256;
      std::size_t begin = groups * sz(p) / sz(parts) * 256, end = groups * sz(p + 1) / sz(parts) * 256;
      if (p == parts - 1) end += rest;  // the tail of 32-value blocks (n % 256) goes last
      k.quantize_act(kActFormats[i], x + sz(b) * sz(n), buf + sz(b) * rb, sz(n), begin, end);
    });
  }
  if (w_.weight_type() == WeightType::q8_0) {
    const int gs = w_.group_size();
    a.q = kernels::Q8Vector{q.data(), s.data(), gs};
    par.for_each(batch, [&](int b, int) {
      k.quantize_q8(q.data() + sz(b) * sz(n), s.data() + sz(b) * sz(n / gs), x + sz(b) * sz(n), n, gs);
    });
  }
  return a;
}

void ForwardPass::matmul(Parallel& par, const kernels::KernelTable& k, std::initializer_list<MatmulOut> outs,
                     const Act& x, int batch) {
  // Each matrix is cut into chunks (at panel boundaries for panel-layout weights); the
  // tasks of all of them form one for_each.
  struct Part {
    float* out;
    const Matrix* w;
    int unit;
    int first_task;
  };
  std::array<Part, 3> parts{};
  std::vector<int>& ends = chunk_ends_;  // each task's end, in units of its matrix
  ends.clear();
  LW_ASSERT(outs.size() <= parts.size());
  int n_parts = 0;
  int tasks = 0;
  for (const auto& o : outs) {
    const Matrix& w = *o.w;
    // Panels or tiles for panel-layout and packed weights (a chunk never splits one), else
    // rows, 16 at least.
    const int unit = w.panels ? kernels::kPanelRows : w.packed_format() ? kernels::kTileRows : 1;
    const int units = (w.rows + unit - 1) / unit;
    const int min_units = unit > 1 ? 1 : 16;
    parts[sz(n_parts++)] = Part{o.out, &w, unit, tasks};
    tasks += guided_chunks(units, par.concurrency(), min_units, ends);
  }
  par.for_each(tasks, [&](int task, int) {
    int i = n_parts - 1;
    while (parts[sz(i)].first_task > task) --i;
    const Part& p = parts[sz(i)];
    const Matrix& w = *p.w;
    const int d = w.rows;
    const int n = w.cols;
    const int begin = task == p.first_task ? 0 : ends[sz(task - 1)] * p.unit;
    const int end = std::min(d, ends[sz(task)] * p.unit);
    if (w.packed_format()) {
      k.matmul_packed(p.out, x.for_type(w.packed.type), w.packed, batch, begin, end);
    } else if (w.block_format()) {
      k.matmul_blocks(p.out, x.for_type(w.blocks.type), w.blocks, n, d, batch, begin, end);
    } else if (w.quantized()) {
      k.matmul_q8(p.out, x.q, w.q8, n, d, batch, begin, end);
    } else if (w.panels) {
      k.matmul_panels(p.out, x.f, w.f32, n, d, batch, begin, end);
    } else {
      k.matmul(p.out, x.f, w.f32, n, d, batch, begin, end);
    }
  });
}

void ForwardPass::swiglu(Parallel& par, int B) {
  const int H = w_.config().hidden_dim;
  // SwiGLU per element; a small batch splits its rows too (at 64-value boundaries), so
  // both threads work.
  const int parts = B >= par.concurrency() ? 1 : par.concurrency();
  par.for_each(B * parts, [&](int task, int) {
    const int b = task / parts, p = task % parts;
    float* h1 = hb_.data() + sz(b) * sz(H);
    const float* h3 = hb2_.data() + sz(b) * sz(H);
    const int chunks = (H + 63) / 64;
    const int from = std::min(H, chunks * p / parts * 64), to = std::min(H, chunks * (p + 1) / parts * 64);
    // SwiGLU, val * (1 / (1 + exp(-val))) * h3 as llama2.c computes it, in two passes per
    // chunk: the exp calls, then the rest, which the compiler vectorizes (the same IEEE
    // operations in the same order, so the same bits).
    constexpr int kChunk = 64;
    float e[kChunk];
    for (int i0 = from; i0 < to; i0 += kChunk) {
      const int n = std::min(kChunk, to - i0);
      for (int j = 0; j < n; ++j) e[j] = std::exp(-h1[i0 + j]);
      for (int j = 0; j < n; ++j) h1[i0 + j] = h1[i0 + j] * (1.0f / (1.0f + e[j])) * h3[i0 + j];
    }
  });
}

std::span<float> ForwardPass::run(std::span<const BatchRow> rows, Parallel& par, const kernels::KernelTable& k) {
  const ModelConfig& c = w_.config();
  const int B = static_cast<int>(rows.size());
  LW_ASSERT(B >= 1 && B <= max_batch_);
  LW_ASSERT(par.concurrency() <= max_threads_);
  const int D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, HS = c.head_size(), V = c.vocab_size;
  const int kv_mul = c.kv_mul();
  const int ROT = c.rotary_dims();  // the first ROT dimensions of each head rotate

  for (int b = 0; b < B; ++b) {
    const BatchRow& r = rows[sz(b)];
    LW_ASSERT(r.token >= 0 && r.token < V && r.pos >= 0 && r.pos < r.kv->reserved());
    LW_ASSERT(r.pos >= r.kv->writable_from());  // shared prefix blocks are read-only
    float* xrow = x_.data() + sz(b) * sz(D);
    const float* emb = w_.embedding_row(r.token, xrow);
    if (emb != xrow) std::copy_n(emb, D, xrow);
    // RoPE rotation for this row's position, as llama2.c computes it (per pair of a head);
    // a frequency factor divides the angle, as ggml's rope does with freq_factors.
    float* rope = rope_.data() + sz(b) * sz(HS);
    const std::vector<float>& factors = w_.rope_freqs();
    for (int i = 0; i < ROT; i += 2) {
      const float freq = 1.0f / std::pow(c.rope_base, static_cast<float>(i) / static_cast<float>(ROT));
      float val = static_cast<float>(r.pos) * freq;
      if (!factors.empty()) val /= factors[sz(i / 2)];
      rope[i] = std::cos(val);
      rope[i + 1] = std::sin(val);
    }
  }
  const float sqrt_hs = std::sqrt(static_cast<float>(HS));

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w_.layer(l);
    par.for_each(B, [&](int b, int) {
      k.rmsnorm(xb_.data() + sz(b) * sz(D), x_.data() + sz(b) * sz(D), lw.rms_att, D, c.rms_eps);
    });
    const Act xb = prepare(par, k, xb_.data(), D, B, xq_, xs_);
    matmul(par, k, {{q_.data(), &lw.wq}, {k_.data(), &lw.wk}, {v_.data(), &lw.wv}}, xb, B);

    // RoPE on q (all heads) and k (kv heads), then store k and v in each row's cache.
    par.for_each(B, [&](int b, int) {
      const float* rope = rope_.data() + sz(b) * sz(HS);
      float* q = q_.data() + sz(b) * sz(D);
      float* kk = k_.data() + sz(b) * sz(KV);
      for (int i = 0; i < D; i += 2) {
        const int hd = i % HS;
        if (hd >= ROT) continue;
        const float fcr = rope[hd], fci = rope[hd + 1];
        const int rotn = i < KV ? 2 : 1;
        for (int v = 0; v < rotn; ++v) {
          float* vec = v == 0 ? q : kk;
          const float v0 = vec[i], v1 = vec[i + 1];
          vec[i] = v0 * fcr - v1 * fci;
          vec[i + 1] = v0 * fci + v1 * fcr;
        }
      }
      const BatchRow& r = rows[sz(b)];
      std::copy_n(kk, KV, r.kv->key(l, r.pos));
      std::copy_n(v_.data() + sz(b) * sz(KV), KV, r.kv->value(l, r.pos));
    });

    // Attention. A task is one row and a group of its heads; within it, each KV block is
    // read once for all the group's heads (its rows are contiguous), which streams from
    // memory better than a sweep per head. Groups are whole heads, as many as it takes to
    // give every thread work when the batch is small. Each head's sums run in the same
    // order as before (dot() per position, then positions in order), so the bits do not
    // depend on the grouping.
    const int groups = std::clamp(4 * par.concurrency() / B, 1, c.n_heads);
    par.for_each(B * groups, [&](int task, int thread) {
      const int b = task / groups;
      const int g = task % groups;
      const int h0 = c.n_heads * g / groups;
      const int h1 = c.n_heads * (g + 1) / groups;
      const BatchRow& r = rows[sz(b)];
      const int n_pos = r.pos + 1;
      float* att = att_.data() + sz(thread) * sz(c.n_heads) * sz(c.seq_len);
      auto head_att = [&](int h) { return att + sz(h - h0) * sz(c.seq_len); };
      constexpr int kBlk = KvCache::kBlockPositions;
      for (int t0 = 0; t0 < n_pos; t0 += kBlk) {
        const float* kblock = r.kv->key(l, t0);
        for (int h = h0; h < h1; ++h) {
          const float* q = q_.data() + sz(b) * sz(D) + sz(h) * sz(HS);
          k.attn_scores(head_att(h) + t0, q, kblock + sz(h / kv_mul) * sz(HS), sz(KV), std::min(kBlk, n_pos - t0), HS,
                        sqrt_hs);
        }
      }
      for (int h = h0; h < h1; ++h) k.softmax(head_att(h), n_pos);
      float* out = xb_.data() + sz(b) * sz(D);
      std::fill(out + sz(h0) * sz(HS), out + sz(h1) * sz(HS), 0.0f);
      for (int t0 = 0; t0 < n_pos; t0 += kBlk) {
        const float* vblock = r.kv->value(l, t0);
        for (int h = h0; h < h1; ++h) {
          k.attn_values(out + sz(h) * sz(HS), head_att(h) + t0, vblock + sz(h / kv_mul) * sz(HS), sz(KV),
                        std::min(kBlk, n_pos - t0), HS);
        }
      }
    });

    const Act att_out = prepare(par, k, xb_.data(), D, B, xq_, xs_);
    matmul(par, k, xb2_.data(), att_out, lw.wo, B);
    par.for_each(B, [&](int b, int) {
      float* x = x_.data() + sz(b) * sz(D);
      const float* d = xb2_.data() + sz(b) * sz(D);
      for (int i = 0; i < D; ++i) x[i] += d[i];
      k.rmsnorm(xb_.data() + sz(b) * sz(D), x, lw.rms_ffn, D, c.rms_eps);
    });
    const Act xf = prepare(par, k, xb_.data(), D, B, xq_, xs_);
    matmul(par, k, {{hb_.data(), &lw.w1}, {hb2_.data(), &lw.w3}}, xf, B);
    swiglu(par, B);
    const Act hact = prepare(par, k, hb_.data(), H, B, hq_, hs_);
    matmul(par, k, xb_.data(), hact, lw.w2, B);
    par.for_each(B, [&](int b, int) {
      float* x = x_.data() + sz(b) * sz(D);
      const float* d = xb_.data() + sz(b) * sz(D);
      for (int i = 0; i < D; ++i) x[i] += d[i];
    });
  }

  // The final hidden states some rows add up (embeddings), then the final norm and
  // classifier, only for the rows that want logits.
  for (int b = 0; b < B; ++b) {
    float* sum = rows[sz(b)].hidden_sum;
    if (sum == nullptr) continue;
    k.rmsnorm(xb_.data(), x_.data() + sz(b) * sz(D), w_.rms_final(), D, c.rms_eps);
    for (int i = 0; i < D; ++i) sum[i] += xb_[sz(i)];
  }
  int n_want = 0;
  for (int b = 0; b < B; ++b) {
    if (!rows[sz(b)].want_logits) continue;
    LW_ASSERT(n_want < max_logit_rows_);
    k.rmsnorm(xcls_.data() + sz(n_want) * sz(D), x_.data() + sz(b) * sz(D), w_.rms_final(), D, c.rms_eps);
    ++n_want;
  }
  if (n_want == 0) return {};
  const Act xc = prepare(par, k, xcls_.data(), D, n_want, xq_, xs_);
  matmul(par, k, logits_.data(), xc, w_.classifier(), n_want);
  return std::span<float>(logits_.data(), sz(n_want) * sz(V));
}

}  // namespace llamawire
