// Q8_0 against f32 on the golden sequences: top-1 agreement and mean absolute logit error.
#include "server/model/forward.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

struct Agreement {
  int positions = 0;
  int top1_same = 0;
  double abs_err_sum = 0;
  double abs_ref_sum = 0;
  double top1() const { return positions ? static_cast<double>(top1_same) / positions : 0; }
  double mean_abs_err() const { return abs_err_sum; }
};

// Teacher-forced: both models see the same tokens; logits compared at every position.
Agreement compare(const lw::WeightStore& ref, const lw::WeightStore& q, const std::vector<std::vector<int>>& seqs) {
  lw::SerialParallel par;
  lw::ForwardPass fr(ref, 1, 1), fq(q, 1, 1);
  Agreement a;
  std::size_t values = 0;
  for (const auto& seq : seqs) {
    lw::KvCache kr(ref.config(), ref.config().seq_len), kq(q.config(), q.config().seq_len);
    const int n = std::min<int>(static_cast<int>(seq.size()), ref.config().seq_len);
    REQUIRE((kr.reserve(n) && kq.reserve(n)));
    for (int p = 0; p < n; ++p) {
      const lw::BatchRow rr{seq[static_cast<std::size_t>(p)], p, &kr, true}, rq{seq[static_cast<std::size_t>(p)], p, &kq, true};
      const auto lr = fr.run(std::span(&rr, 1), par);
      const auto lq = fq.run(std::span(&rq, 1), par);
      const auto top_r = std::max_element(lr.begin(), lr.end()) - lr.begin();
      const auto top_q = std::max_element(lq.begin(), lq.end()) - lq.begin();
      a.top1_same += top_r == top_q ? 1 : 0;
      ++a.positions;
      for (std::size_t i = 0; i < lr.size(); ++i) {
        a.abs_err_sum += std::abs(static_cast<double>(lr[i]) - lq[i]);
        a.abs_ref_sum += std::abs(static_cast<double>(lr[i]));
      }
      values += lr.size();
    }
  }
  a.abs_err_sum /= static_cast<double>(values);
  a.abs_ref_sum /= static_cast<double>(values);
  return a;
}

std::vector<std::vector<int>> golden_sequences() {
  std::vector<std::vector<int>> out;
  for (const auto& o : t::read_jsonl(t::golden_dir() / "generate.jsonl")) {
    std::vector<int> ids;
    for (const auto& v : o.at("ids").as_array()) ids.push_back(static_cast<int>(v.as_int64()));
    out.push_back(ids);
  }
  return out;
}

}  // namespace

TEST_CASE("Q8_0 agrees with f32 on the golden prompts", "[model][quant]") {
  LW_REQUIRE_SHARED();
  const auto seqs = golden_sequences();
  const auto f32 = lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string()).value();
  lw::WeightStore::Options o;
  o.weights = lw::WeightType::q8_0;
  const auto at_load = lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string(), o).value();
  const auto exported = lw::WeightStore::load((t::models_dir() / "aidreams260K_q80.bin").string()).value();
  for (const auto& [name, q] : {std::pair{"quantized at load", at_load}, std::pair{"llama2.c export v2", exported}}) {
    const auto a = compare(*f32, *q, seqs);
    std::printf("Q8_0 (%s, group %d) vs f32 on %d golden positions: top-1 agreement %.3f, mean |logit error| %.4f "
                "(mean |logit| %.3f)\n",
                name, q->group_size(), a.positions, a.top1(), a.mean_abs_err(), a.abs_ref_sum);
    INFO(name);
    // A correct Q8_0 keeps the argmax almost everywhere and the error a few percent of the
    // logits' size; a wrong scale, rounding or group layout misses both by far.
    CHECK(a.top1() >= 0.90);
    CHECK(a.mean_abs_err() <= 0.05 * a.abs_ref_sum);
  }
}

TEST_CASE("a broken quantizer fails the agreement thresholds", "[model][quant]") {
  LW_REQUIRE_SHARED();
  // The same comparison against a model with different weights (what a quantizer that
  // scrambles values produces) must fail both thresholds: the test has teeth.
  const auto seqs = golden_sequences();
  const auto f32 = lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string()).value();
  t::TempDir dir;
  auto bytes = t::read_bytes(t::models_dir() / "aidreams260K.bin");
  // Flip the sign of every weight after the header: a plausible-looking but wrong model.
  for (std::size_t off = 28; off + 4 <= bytes.size(); off += 4) bytes[off + 3] ^= 0x80;
  t::write_bytes(dir / "broken.bin", bytes);
  const auto broken = lw::WeightStore::load((dir / "broken.bin").string()).value();
  const auto a = compare(*f32, *broken, seqs);
  CHECK_FALSE((a.top1() >= 0.90 && a.mean_abs_err() <= 0.05 * a.abs_ref_sum));
}

TEST_CASE("Q4_0 and Q4_K quantized at load agree with f32 on the golden prompts", "[model][quant]") {
  LW_REQUIRE_SHARED();
  const auto seqs = golden_sequences();
  const auto f32 = lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string()).value();
  for (const auto w : {lw::WeightType::q4_0, lw::WeightType::q4_k}) {
    lw::WeightStore::Options o;
    o.weights = w;
    const auto q = lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string(), o).value();
    const auto a = compare(*f32, *q, seqs);
    std::printf("%s at load (%s) vs f32 on %d golden positions: top-1 agreement %.3f, mean |logit error| %.4f "
                "(mean |logit| %.3f)\n",
                w == lw::WeightType::q4_0 ? "q4_0" : "q4_k", q->type_summary().c_str(), a.positions, a.top1(),
                a.mean_abs_err(), a.abs_ref_sum);
    CHECK(q->weight_type() == lw::WeightType::gguf);
    // Four bits cost more than eight, but a correct quantizer keeps most of the argmaxes and
    // the error well under the logits' size (the sign-flipped model above fails both).
    CHECK(a.top1() >= 0.75);
    CHECK(a.mean_abs_err() <= 0.15 * a.abs_ref_sum);
  }
}
