// The GGUF files of shared/models/gguf against llama.cpp's reference data (golden/gguf):
// dequantization checksums, teacher-forced log-probabilities within the bounds the golden
// README derives, top-1 agreement with llama.cpp, and greedy ids.
#include "common/tokenizer.hpp"
#include "server/model/forward.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

namespace lw = llamawire;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

std::string sha256_hex(const void* data, std::size_t n) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data, n, md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) {
    s += hex[md[i] >> 4];
    s += hex[md[i] & 15];
  }
  return s;
}

std::vector<std::uint8_t> read_file(const std::string& name) {
  return t::read_bytes(t::models_dir() / "gguf" / name);
}

// golden/gguf/README.md's bounds against the float64 reference: {mean |d| per file, any |d|}.
struct Bound {
  double mean, single;
};
Bound bound_for(const std::string& type, bool trained) {
  static const std::map<std::string, std::pair<Bound, Bound>> table = {
      // type: {trained (aidreams260K), random models}
      {"F32", {{1.1e-5, 1.0e-4}, {1.1e-5, 1.0e-4}}},      {"F16", {{1.7e-3, 1.1e-2}, {1.7e-3, 1.1e-2}}},
      {"Q8_0", {{3.6e-2, 2.9e-1}, {8.4e-3, 4.4e-2}}},     {"Q6_K", {{1.2e-2, 5.8e-2}, {1.2e-2, 5.8e-2}}},
      {"Q5_K_M", {{1.1e-2, 4.0e-2}, {1.1e-2, 4.0e-2}}},   {"Q5_1", {{9.3e-3, 4.4e-2}, {9.3e-3, 4.4e-2}}},
      {"Q5_0", {{9.8e-3, 4.1e-2}, {9.8e-3, 4.1e-2}}},     {"Q4_K_M", {{3.3e-2, 2.4e-1}, {1.2e-2, 4.5e-2}}},
      {"Q4_1", {{9.0e-3, 3.8e-2}, {9.0e-3, 3.8e-2}}},     {"Q4_0", {{3.0e-2, 2.2e-1}, {9.8e-3, 4.3e-2}}},
  };
  const auto it = table.find(type);
  REQUIRE(it != table.end());
  return trained ? it->second.first : it->second.second;
}

// The near-tie margin below which a top-1 disagreement with llama.cpp is not counted.
double tie_margin(const std::string& type) {
  if (type == "F32" || type == "F16") return 1e-3;
  if (type == "BF16") return 5e-3;
  return 0.05;
}
bool exact_type(const std::string& type) { return type == "F32" || type == "F16" || type == "BF16"; }

// log-softmax of one row, in double.
std::vector<double> log_softmax(std::span<const float> logits) {
  double mx = -INFINITY;
  for (const float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (const float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - lse;
  return out;
}

std::vector<int> ints(const json::value& v) {
  std::vector<int> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int>(x.to_number<std::int64_t>()));
  return out;
}

// Teacher-forced logits of every position of `ids`, the whole sequence as one batch.
std::vector<std::vector<double>> teacher_logprobs(const lw::WeightStore& store, const std::vector<int>& ids,
                                                  lw::Parallel& par) {
  const auto& cfg = store.config();
  const int n = static_cast<int>(ids.size());
  lw::ForwardPass fwd(store, n, par.concurrency());
  lw::KvCache kv(cfg, cfg.seq_len);
  REQUIRE(kv.reserve(n));
  std::vector<lw::BatchRow> rows;
  for (int p = 0; p < n; ++p) rows.push_back({ids[static_cast<std::size_t>(p)], p, &kv, true});
  const auto logits = fwd.run(rows, par);
  std::vector<std::vector<double>> out;
  const auto V = static_cast<std::size_t>(cfg.vocab_size);
  for (int p = 0; p < n; ++p) out.push_back(log_softmax(logits.subspan(static_cast<std::size_t>(p) * V, V)));
  return out;
}

}  // namespace

TEST_CASE("every tensor of every shared GGUF file dequantizes to ggml's values", "[gguf][golden]") {
  LW_REQUIRE_SHARED();
  const auto records = t::read_jsonl(t::golden_dir() / "gguf" / "dequant.jsonl");
  REQUIRE(records.size() > 100);
  std::map<std::string, std::pair<std::vector<std::uint8_t>, std::unique_ptr<lw::GgufFile>>> files;
  int exact = 0;
  for (const auto& r : records) {
    const std::string file(r.at("file").as_string());
    auto& entry = files[file];
    if (!entry.second) {
      entry.first = read_file(file);
      auto g = lw::GgufFile::parse(entry.first, file);
      REQUIRE(g.has_value());
      entry.second = std::make_unique<lw::GgufFile>(std::move(*g));
    }
    const lw::GgufFile& g = *entry.second;
    const std::string name(r.at("tensor").as_string());
    const lw::GgufTensor* ten = g.tensor(name);
    REQUIRE(ten != nullptr);
    INFO(file << " " << name);
    std::string type(lw::kernels::traits(ten->type).name);
    std::string want_type(r.at("type").as_string());
    std::transform(type.begin(), type.end(), type.begin(), ::toupper);
    std::transform(want_type.begin(), want_type.end(), want_type.begin(), ::toupper);
    CHECK(type == want_type);
    const std::size_t row = ten->ne[0];
    const std::size_t rows = ten->rows();
    std::vector<float> vals(row * rows);
    const auto bytes = g.tensor_bytes(*ten);
    const std::size_t rb = lw::kernels::row_bytes(ten->type, row);
    for (std::size_t i = 0; i < rows; ++i) lw::kernels::dequantize_row(ten->type, bytes.data() + i * rb, vals.data() + i * row, row);
    const std::string sha = sha256_hex(vals.data(), vals.size() * 4);
    if (sha == std::string(r.at("sha256_f32").as_string())) {
      ++exact;
      continue;
    }
    // The README allows a different rounding order: the sums must then agree to ~1e-12.
    double sum = 0.0, sum_sq = 0.0;
    for (const float v : vals) {
      sum += v;
      sum_sq += static_cast<double>(v) * v;
    }
    const double want_sum = r.at("sum").to_number<double>(), want_sq = r.at("sum_sq").to_number<double>();
    CHECK(std::abs(sum - want_sum) <= 1e-9 * std::max(1.0, std::abs(want_sum)));
    CHECK(std::abs(sum_sq - want_sq) <= 1e-9 * std::max(1.0, want_sq));
  }
  // Dequantization follows ggml's reference float operations, so every checksum is exact.
  CHECK(exact == static_cast<int>(records.size()));
}

TEST_CASE("teacher-forced logprobs on every shared GGUF file are within the golden bounds", "[gguf][golden]") {
  LW_REQUIRE_SHARED();
  const auto records = t::read_jsonl(t::golden_dir() / "gguf" / "logprobs.jsonl");
  REQUIRE(records.size() >= 50);
  lw::ThreadParallel par(2);
  struct FileStats {
    std::string type;
    bool trained = false;
    double sum = 0.0, worst = 0.0;
    int values = 0, counted = 0, agree = 0;
  };
  std::map<std::string, FileStats> stats;
  std::map<std::string, std::shared_ptr<const lw::WeightStore>> stores;
  for (const auto& r : records) {
    const std::string file(r.at("file").as_string());
    auto& store = stores[file];
    if (!store) {
      auto s = lw::WeightStore::load((t::models_dir() / "gguf" / file).string());
      INFO(file);
      REQUIRE(s.has_value());
      store = *s;
    }
    FileStats& fs = stats[file];
    fs.type = std::string(r.at("type").as_string());
    fs.trained = r.at("model").as_string() == "aidreams260K";
    const auto ids = ints(r.at("ids"));
    const auto lp = teacher_logprobs(*store, ids, par);
    for (const auto& pv : r.at("positions").as_array()) {
      const auto& p = pv.as_object();
      const auto pos = static_cast<std::size_t>(p.at("pos").to_number<int>());
      const auto& row = lp[pos];
      const auto& top = p.at("top").as_array();
      const auto& ref_at_top = p.at("ref_at_top").as_array();
      for (std::size_t k = 0; k < top.size(); ++k) {
        const auto id = static_cast<std::size_t>(top[k].as_array()[0].to_number<int>());
        const double d = std::abs(row[id] - ref_at_top[k].to_number<double>());
        fs.sum += d;
        fs.worst = std::max(fs.worst, d);
        ++fs.values;
      }
      if (!p.at("next").is_null()) {
        const auto next = static_cast<std::size_t>(p.at("next").to_number<int>());
        const double d = std::abs(row[next] - p.at("ref_next_logprob").to_number<double>());
        fs.sum += d;
        fs.worst = std::max(fs.worst, d);
        ++fs.values;
      }
      // Top-1 against llama.cpp's, unless llama.cpp's own top two are a near-tie.
      const double margin = top[0].as_array()[1].to_number<double>() - top[1].as_array()[1].to_number<double>();
      if (margin >= tie_margin(fs.type)) {
        ++fs.counted;
        const auto ours = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
        if (ours == top[0].as_array()[0].to_number<int>()) ++fs.agree;
      }
    }
  }
  REQUIRE(stats.size() == 18);
  for (const auto& [file, fs] : stats) {
    const Bound b = bound_for(fs.type, fs.trained);
    const double mean = fs.sum / fs.values;
    std::ostringstream line;
    line << file << " (" << fs.type << "): mean |d| " << mean << " (bound " << b.mean << "), max " << fs.worst
         << " (bound " << b.single << "), top-1 = llama.cpp's " << fs.agree << "/" << fs.counted;
    INFO(line.str());
    WARN(line.str());  // the figures bench/README.md quotes
    CHECK(mean <= b.mean);
    CHECK(fs.worst <= b.single);
    if (exact_type(fs.type)) {
      CHECK(fs.agree == fs.counted);
    } else {
      CHECK(fs.agree >= 0.99 * fs.counted);
    }
  }
}

TEST_CASE("greedy generation on every shared GGUF file gives llama.cpp's ids", "[gguf][golden]") {
  LW_REQUIRE_SHARED();
  const auto records = t::read_jsonl(t::golden_dir() / "gguf" / "greedy.jsonl");
  REQUIRE(records.size() >= 50);
  lw::ThreadParallel par(2);
  std::map<std::string, std::shared_ptr<const lw::WeightStore>> stores;
  int full = 0, f32_records = 0, f32_full = 0;
  for (const auto& r : records) {
    const std::string file(r.at("file").as_string());
    auto& store = stores[file];
    if (!store) store = lw::WeightStore::load((t::models_dir() / "gguf" / file).string()).value();
    const std::string type(r.at("type").as_string());
    const bool trained = r.at("model").as_string() == "aidreams260K";
    const auto prompt = ints(r.at("prompt_ids"));
    const auto want = ints(r.at("ids"));
    const auto& margins = r.at("top2_margin").as_array();
    const auto& cfg = store->config();
    // llama.cpp's way: the prompt as one batch, then one token per step; it does not stop at BOS.
    lw::ForwardPass fwd(*store, static_cast<int>(prompt.size()), par.concurrency());
    lw::KvCache kv(cfg, cfg.seq_len);
    REQUIRE(kv.reserve(static_cast<int>(prompt.size() + want.size())));
    std::vector<lw::BatchRow> rows;
    for (std::size_t p = 0; p < prompt.size(); ++p) {
      rows.push_back({prompt[p], static_cast<int>(p), &kv, p + 1 == prompt.size()});
    }
    std::vector<int> got;
    auto logits = fwd.run(rows, par);
    for (std::size_t step = 0; step < want.size(); ++step) {
      const int next = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      got.push_back(next);
      if (next == 2) break;
      const lw::BatchRow row{next, static_cast<int>(prompt.size() + step), &kv, true};
      logits = fwd.run(std::span(&row, 1), par);
    }
    // Compare up to the first step that llama.cpp itself decided by a near-tie.
    const double tie = 2.0 * bound_for(type, trained).single;
    std::size_t comparable = want.size();
    for (std::size_t s = 0; s < want.size(); ++s) {
      if (margins[s].to_number<double>() < tie) {
        comparable = s + 1;  // this step may go either way; nothing after it compares
        break;
      }
    }
    INFO(file << " '" << r.at("prompt").as_string() << "': comparable steps " << comparable);
    std::size_t first_diff = 0;
    while (first_diff < std::min(got.size(), want.size()) && got[first_diff] == want[first_diff]) ++first_diff;
    f32_records += type == "F32" ? 1 : 0;
    if (comparable == want.size()) {
      CHECK(got == want);
      ++full;
      f32_full += type == "F32" ? 1 : 0;
    } else {
      CHECK(first_diff + 1 >= comparable);
    }
  }
  // Every F32 record compares in full (its smallest margin, 6e-4, is above the tie bound).
  CHECK(f32_records == 9);
  CHECK(f32_full == f32_records);
  WARN(full << " of " << records.size() << " greedy records compared in full, the rest up to a near-tie");
}

namespace {

lw::Tokenizer gguf_tokenizer(const std::string& file) {
  static std::map<std::string, std::vector<std::uint8_t>> bytes;  // the parse holds views into these
  auto& b = bytes[file];
  if (b.empty()) b = read_file(file);
  const auto g = lw::GgufFile::parse(b, file).value();
  auto vocab = lw::read_gguf_vocab(g, -1);
  REQUIRE(vocab.has_value());
  auto tok = lw::Tokenizer::from_vocab(std::move(*vocab), file);
  REQUIRE(tok.has_value());
  return std::move(*tok);
}

}  // namespace

TEST_CASE("a GGUF vocabulary encodes and decodes as llama.cpp does", "[gguf][golden][tokenizer]") {
  LW_REQUIRE_SHARED();
  const auto records = t::read_jsonl(t::golden_dir() / "gguf" / "tokenize.jsonl");
  REQUIRE(records.size() >= 80);
  std::map<std::string, lw::Tokenizer> toks;
  int n = 0;
  for (const auto& r : records) {
    const std::string file(r.at("gguf").as_string());
    if (!toks.count(file)) toks.emplace(file, gguf_tokenizer(file));
    const lw::Tokenizer& tok = toks.at(file);
    const std::string text(r.at("text").as_string());
    INFO(file << ": '" << text << "'");
    CHECK(tok.add_bos());
    CHECK(tok.encode(text, tok.add_bos(), false, true) == ints(r.at("ids")));
    const auto plain = tok.encode(text, tok.add_bos(), false, false);
    CHECK(plain == ints(r.at("ids_no_parse_special")));
    // Decoding the plain ids gives the text back (the space prefix goes with BOS).
    std::string back;
    for (std::size_t i = 1; i < plain.size(); ++i) back += tok.decode(plain[i - 1], plain[i]);
    CHECK(back == text);
    ++n;
  }
  CHECK(n == static_cast<int>(records.size()));
}
