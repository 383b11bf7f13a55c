// A Llama-3-shaped model (the real 128256-token vocabulary, RoPE base 500000 with
// Llama-3.1 frequency factors, tied embeddings, GQA 32/8): llamawire's logits against a
// direct float64 computation from the file's weights, at positions where the frequency
// factors matter; the quantized files load with the types llama-quantize would give them.
#include "server/kernels/tensor_types.hpp"
#include "server/model/forward.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <map>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

// The file's tensors as doubles.
class Weights {
 public:
  explicit Weights(const std::string& path) : bytes_(t::read_bytes(path)), g_(lw::GgufFile::parse(bytes_, path).value()) {}
  const lw::GgufFile& gguf() const { return g_; }
  bool has(const std::string& name) const { return g_.tensor(name) != nullptr; }
  std::vector<double> get(const std::string& name) const {
    const lw::GgufTensor* ten = g_.tensor(name);
    REQUIRE(ten != nullptr);
    const std::size_t cols = ten->ne[0], rows = ten->rows();
    std::vector<float> row(cols);
    std::vector<double> out;
    out.reserve(cols * rows);
    const std::size_t rb = lw::kernels::row_bytes(ten->type, cols);
    for (std::size_t r = 0; r < rows; ++r) {
      lw::kernels::dequantize_row(ten->type, bytes_.data() + g_.data_offset() + ten->offset + r * rb, row.data(), cols);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  }

 private:
  std::vector<std::uint8_t> bytes_;
  lw::GgufFile g_;
};

std::vector<double> matvec(const std::vector<double>& w, const std::vector<double>& x, std::size_t rows) {
  const std::size_t cols = x.size();
  std::vector<double> y(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (std::size_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  double ss = 0;
  for (const double v : x) ss += v * v;
  const double k = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = w[i] * x[i] * k;
  return y;
}

// The Llama forward pass in float64, every position of `ids`; logits for those in `want`.
std::map<int, std::vector<double>> reference_logits(const Weights& W, const lw::ModelConfig& c, const std::vector<int>& ids,
                                                    const std::vector<int>& want, bool use_factors = true) {
  const std::size_t D = static_cast<std::size_t>(c.dim), HS = static_cast<std::size_t>(c.head_size());
  const std::size_t KV = static_cast<std::size_t>(c.kv_dim()), H = static_cast<std::size_t>(c.hidden_dim);
  const int NH = c.n_heads, kv_mul = c.kv_mul();
  const double base = W.gguf().get_float("llama.rope.freq_base").value();
  const double eps = W.gguf().get_float("llama.attention.layer_norm_rms_epsilon").value();
  const auto factors = W.get("rope_freqs.weight");
  const auto emb = W.get("token_embd.weight");
  REQUIRE_FALSE(W.has("output.weight"));  // tied
  struct Layer {
    std::vector<double> an, fn, wq, wk, wv, wo, w1, w2, w3;
  };
  std::vector<Layer> L;
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    L.push_back({W.get(p + "attn_norm.weight"), W.get(p + "ffn_norm.weight"), W.get(p + "attn_q.weight"),
                 W.get(p + "attn_k.weight"), W.get(p + "attn_v.weight"), W.get(p + "attn_output.weight"),
                 W.get(p + "ffn_gate.weight"), W.get(p + "ffn_down.weight"), W.get(p + "ffn_up.weight")});
  }
  const auto final_norm = W.get("output_norm.weight");
  std::vector<std::vector<std::vector<double>>> kc(L.size()), vc(L.size());
  std::map<int, std::vector<double>> out;
  for (std::size_t pos = 0; pos < ids.size(); ++pos) {
    std::vector<double> x(emb.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(ids[pos]) * D),
                          emb.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(ids[pos]) + 1) * D));
    for (std::size_t l = 0; l < L.size(); ++l) {
      const Layer& ly = L[l];
      const auto xb = rmsnorm(x, ly.an, eps);
      auto q = matvec(ly.wq, xb, D), k = matvec(ly.wk, xb, KV), v = matvec(ly.wv, xb, KV);
      auto rope = [&](std::vector<double>& vec) {
        for (std::size_t i = 0; i < vec.size(); i += 2) {
          const std::size_t hd = i % HS;
          const double theta = static_cast<double>(pos) * std::pow(base, -static_cast<double>(hd) / static_cast<double>(HS)) /
                               (use_factors ? factors[hd / 2] : 1.0);
          const double a = vec[i], b = vec[i + 1];
          vec[i] = a * std::cos(theta) - b * std::sin(theta);
          vec[i + 1] = a * std::sin(theta) + b * std::cos(theta);
        }
      };
      rope(q);
      rope(k);
      kc[l].push_back(k);
      vc[l].push_back(v);
      std::vector<double> att_out(D, 0.0);
      for (int h = 0; h < NH; ++h) {
        const std::size_t kh = static_cast<std::size_t>(h / kv_mul);
        std::vector<double> s(pos + 1);
        double mx = -1e300;
        for (std::size_t tp = 0; tp <= pos; ++tp) {
          double d = 0;
          for (std::size_t e = 0; e < HS; ++e) d += q[static_cast<std::size_t>(h) * HS + e] * kc[l][tp][kh * HS + e];
          s[tp] = d / std::sqrt(static_cast<double>(HS));
          mx = std::max(mx, s[tp]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (std::size_t tp = 0; tp <= pos; ++tp) {
          for (std::size_t e = 0; e < HS; ++e) att_out[static_cast<std::size_t>(h) * HS + e] += s[tp] / sum * vc[l][tp][kh * HS + e];
        }
      }
      const auto o = matvec(ly.wo, att_out, D);
      for (std::size_t i = 0; i < D; ++i) x[i] += o[i];
      const auto xf = rmsnorm(x, ly.fn, eps);
      auto g = matvec(ly.w1, xf, H);
      const auto u = matvec(ly.w3, xf, H);
      for (std::size_t i = 0; i < H; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const auto dn = matvec(ly.w2, g, D);
      for (std::size_t i = 0; i < D; ++i) x[i] += dn[i];
    }
    if (std::find(want.begin(), want.end(), static_cast<int>(pos)) != want.end()) {
      out[static_cast<int>(pos)] = matvec(emb, rmsnorm(x, final_norm, eps), static_cast<std::size_t>(c.vocab_size));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("llama3: a Llama-3-shaped model's logits equal a float64 computation of its weights", "[llama3][model]") {
  const std::string path = t::llama3_model("f32").string();
  const auto store = lw::WeightStore::load(path, {}).value();
  const lw::ModelConfig& c = store->config();
  REQUIRE(c.vocab_size == 128256);
  REQUIRE(c.n_heads == 32);
  REQUIRE(c.n_kv_heads == 8);
  CHECK(c.rope_base == 500000.0f);
  CHECK(c.shared_classifier);
  REQUIRE(store->rope_freqs().size() == static_cast<std::size_t>(c.rotary_dims() / 2));
  // Llama-3.2 scaling on 8-dimensional heads: all three regimes appear (1, the blend, 32).
  CHECK(store->rope_freqs().front() == 1.0f);
  CHECK(store->rope_freqs().back() == 32.0f);
  CHECK(store->rope_freqs()[2] > 1.0f);
  CHECK(store->rope_freqs()[2] < 32.0f);

  std::vector<int> ids;
  for (int p = 0; p < 400; ++p) ids.push_back((p * 7919 + 13) % c.vocab_size);
  ids[5] = 128009;
  ids[6] = 128255;
  const std::vector<int> want{0, 1, 6, 150, 399};
  const auto ref = reference_logits(Weights(path), c, ids, want);

  lw::ThreadParallel par(2);
  lw::ForwardPass fwd(*store, 64, 2);
  lw::KvCache kv(c, c.seq_len);
  REQUIRE(kv.reserve(static_cast<int>(ids.size())));
  double worst = 0;
  for (std::size_t start = 0; start < ids.size(); start += 64) {
    std::vector<lw::BatchRow> rows;
    std::vector<int> logit_pos;
    for (std::size_t p = start; p < std::min(ids.size(), start + 64); ++p) {
      const bool w = std::find(want.begin(), want.end(), static_cast<int>(p)) != want.end();
      rows.push_back({ids[p], static_cast<int>(p), &kv, w});
      if (w) logit_pos.push_back(static_cast<int>(p));
    }
    const auto l = fwd.run(rows, par);
    REQUIRE(l.size() == logit_pos.size() * static_cast<std::size_t>(c.vocab_size));
    for (std::size_t k = 0; k < logit_pos.size(); ++k) {
      const auto& r = ref.at(logit_pos[k]);
      for (std::size_t i = 0; i < r.size(); ++i) {
        const double ours = l[k * r.size() + i];
        worst = std::max(worst, std::abs(ours - r[i]) / std::max(1.0, std::abs(r[i])));
      }
    }
  }
  INFO("worst relative difference " << worst);
  CHECK(worst <= 1e-4);  // golden/logits.json's tolerance
  // The factors matter at these positions: without them the logits at 399 are far off.
  const auto plain = reference_logits(Weights(path), c, ids, {399}, false);
  double off = 0;
  for (std::size_t i = 0; i < plain.at(399).size(); ++i) off = std::max(off, std::abs(plain.at(399)[i] - ref.at(399)[i]));
  INFO("without the factors: max difference " << off);
  CHECK(off > 1e-2);
}

TEST_CASE("llama3: quantized Llama-3-shaped files get llama-quantize's types and load", "[llama3][model]") {
  for (const std::string type : {"q8_0", "q4_k_m"}) {
    INFO(type);
    const std::string path = t::llama3_model(type).string();
    const Weights W(path);
    const lw::GgufTensor* emb = W.gguf().tensor("token_embd.weight");
    REQUIRE(emb != nullptr);
    // Tied: the embedding is also the classifier and gets its type (q6_K in the K mixes).
    CHECK(emb->type == (type == "q8_0" ? lw::kernels::TensorType::q8_0 : lw::kernels::TensorType::q6_k));
    CHECK_FALSE(W.has("output.weight"));
    CHECK(W.has("rope_freqs.weight"));
    const auto store = lw::WeightStore::load(path, {}).value();
    lw::ThreadParallel par(2);
    lw::ForwardPass fwd(*store, 4, 2);
    lw::KvCache kv(store->config(), 64);
    REQUIRE(kv.reserve(4));
    std::vector<lw::BatchRow> rows;
    for (int p = 0; p < 4; ++p) rows.push_back({128000 + p * 3, p, &kv, p == 3});
    const auto l = fwd.run(rows, par);
    REQUIRE(l.size() == 128256u);
    for (const float v : l) REQUIRE(std::isfinite(v));
  }
}
