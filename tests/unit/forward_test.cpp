#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/model/forward.hpp"
#include "server/model/generator.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <memory>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

std::vector<float> read_f32(const std::filesystem::path& p) {
  const auto b = t::read_bytes(p);
  std::vector<float> out(b.size() / 4);
  std::memcpy(out.data(), b.data(), out.size() * 4);
  return out;
}

// golden/logits.json tolerance: max |ours - ref| <= 1e-4 * max(1, |ref|)
void check_row(std::span<const float> ours, std::span<const float> ref, int pos) {
  REQUIRE(ours.size() == ref.size());
  float worst = 0.0f;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const float excess = std::abs(ours[i] - ref[i]) - 1e-4f * std::max(1.0f, std::abs(ref[i]));
    worst = std::max(worst, excess);
  }
  INFO("position " << pos);
  CHECK(worst <= 0.0f);
}

struct Case {
  std::string checkpoint, tokenizer, prompt;
  float temperature, topp;
  std::uint64_t seed;
  int steps;
};

Case parse_case(const boost::json::object& o) {
  return Case{std::string(o.at("checkpoint").as_string()), std::string(o.at("tokenizer").as_string()),
              std::string(o.at("prompt").as_string()),     static_cast<float>(o.at("temperature").to_number<double>()),
              static_cast<float>(o.at("topp").to_number<double>()), o.at("seed").to_number<std::uint64_t>(),
              static_cast<int>(o.at("steps").to_number<int>())};
}

// Runs one golden case locally and returns (ids, stdout text).
std::pair<std::vector<int>, std::string> run_case(const Case& c, lw::Parallel& par, int max_batch) {
  const auto store = lw::WeightStore::load((t::models_dir() / c.checkpoint).string()).value();
  const auto& cfg = store->config();
  const auto tok = lw::Tokenizer::load((t::models_dir() / c.tokenizer).string(), cfg.vocab_size).value();
  lw::ForwardPass fwd(*store, max_batch, par.concurrency());
  lw::KvCache kv(cfg, cfg.seq_len);
  lw::Sampler sampler(cfg.vocab_size, {c.temperature, c.topp, c.seed});
  std::string text;
  const auto g = lw::generate_local(fwd, kv, par, tok.encode(c.prompt, true, false), sampler,
                                    std::min(c.steps, cfg.seq_len), tok.special(),
                                    [&](int prev, int next) { text += lw::printable_piece(tok.decode(prev, next)); });
  return {g.tokens, text + "\n"};
}

}  // namespace

TEST_CASE("forward matches golden logits at all 24 positions", "[model]") {
  LW_REQUIRE_SHARED();
  const auto meta = boost::json::parse([] {
                      const auto b = t::read_bytes(t::golden_dir() / "logits.json");
                      return std::string(b.begin(), b.end());
                    }()).as_object();
  std::vector<int> tokens;
  for (const auto& v : meta.at("tokens").as_array()) tokens.push_back(static_cast<int>(v.as_int64()));
  REQUIRE(tokens.size() == 24);
  lw::SerialParallel serial;
  lw::ThreadParallel threads(2);
  for (const auto& cv : meta.at("cases").as_array()) {
    const auto& c = cv.as_object();
    const std::string ckpt(c.at("checkpoint").as_string());
    INFO(ckpt);
    const auto ref = read_f32(t::golden_dir() / std::string(c.at("logits").as_string()));
    // Read (f32 in panel layout, the panel kernel) and mapped (row-major, the row kernel).
    for (const auto load : {lw::WeightStore::Load::read, lw::WeightStore::Load::mmap}) {
    lw::WeightStore::Options opts;
    opts.load = load;
    const auto store = lw::WeightStore::load((t::models_dir() / ckpt).string(), opts).value();
    INFO("layout " << (store->layer(0).wq.panels ? "panels" : "rows"));
    const int V = store->config().vocab_size;
    REQUIRE(ref.size() == tokens.size() * static_cast<std::size_t>(V));

    std::vector<const lw::kernels::KernelTable*> tables{&lw::kernels::scalar_table()};
    if (lw::kernels::avx2_table() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      tables.push_back(lw::kernels::avx2_table());
    }
    for (const auto* table : tables)
    for (lw::Parallel* par : {static_cast<lw::Parallel*>(&serial), static_cast<lw::Parallel*>(&threads)}) {
      INFO("kernels " << table->name << ", threads " << par->concurrency());
      // One position per forward call (decode).
      lw::ForwardPass fwd(*store, 24, 2);
      lw::KvCache kv(store->config(), store->config().seq_len);
      REQUIRE(kv.reserve(24));
      for (int p = 0; p < 24; ++p) {
        const lw::BatchRow row{tokens[static_cast<std::size_t>(p)], p, &kv, true};
        const auto logits = fwd.run(std::span(&row, 1), *par, *table);
        check_row(logits, std::span(ref).subspan(static_cast<std::size_t>(p * V), static_cast<std::size_t>(V)), p);
      }
      // All 24 positions in one batch (prefill), logits for every row.
      lw::KvCache kv2(store->config(), store->config().seq_len);
      REQUIRE(kv2.reserve(24));
      std::vector<lw::BatchRow> rows;
      for (int p = 0; p < 24; ++p) rows.push_back({tokens[static_cast<std::size_t>(p)], p, &kv2, true});
      const auto all = fwd.run(rows, *par, *table);
      for (int p = 0; p < 24; ++p) {
        check_row(all.subspan(static_cast<std::size_t>(p * V), static_cast<std::size_t>(V)),
                  std::span(ref).subspan(static_cast<std::size_t>(p * V), static_cast<std::size_t>(V)), p);
      }
    }
    }
  }
}

TEST_CASE("a batch mixing two sessions gives each its solo logits", "[model]") {
  LW_REQUIRE_SHARED();
  const auto store = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string()).value();
  const int V = store->config().vocab_size;
  lw::SerialParallel par;
  lw::ForwardPass fwd(*store, 8, 1);
  lw::KvCache a(store->config(), 64), b(store->config(), 64), solo(store->config(), 64);
  REQUIRE((a.reserve(8) && b.reserve(8) && solo.reserve(8)));
  std::vector<float> solo_logits;
  for (int p = 0; p < 4; ++p) {
    const lw::BatchRow r{10 + p, p, &solo, true};
    const auto l = fwd.run(std::span(&r, 1), par);
    solo_logits.assign(l.begin(), l.end());
  }
  // Session a prefills 3 tokens while b decodes unrelated ones, then both step together.
  std::vector<lw::BatchRow> rows{{10, 0, &a, false}, {11, 1, &a, false}, {12, 2, &a, false}, {99, 0, &b, true}};
  fwd.run(rows, par);
  rows = {{98, 1, &b, true}, {13, 3, &a, true}};
  const auto l = fwd.run(rows, par);
  for (int i = 0; i < V; ++i) REQUIRE(l[static_cast<std::size_t>(V + i)] == solo_logits[static_cast<std::size_t>(i)]);
}

TEST_CASE("13 sessions decoding in one batch each get their solo logits, bit for bit", "[model]") {
  // Several tile shapes of the panel and packed kernels (6 + 6 + 1 or 8 + 4 + 1 rows), two
  // threads, a model whose hidden size (172) leaves a 12-row tail outside the panels, both
  // weight layouts, the 4-bit types quantized at load (packed, ggml rows and f16 mixed) and
  // a packed GGUF file with every K type.
  LW_REQUIRE_SHARED();
  struct Config {
    std::string file;
    lw::WeightStore::Options opts;
    const char* what;
  };
  std::vector<Config> configs;
  for (const auto load : {lw::WeightStore::Load::read, lw::WeightStore::Load::mmap}) {
    lw::WeightStore::Options o;
    o.load = load;
    configs.push_back({(t::models_dir() / "aidreams260K.bin").string(), o, load == lw::WeightStore::Load::read ? "panels" : "rows"});
    configs.push_back({(t::models_dir() / "gguf" / "k256-q4_k_m.gguf").string(), o,
                       load == lw::WeightStore::Load::read ? "k256 q4_k_m packed" : "k256 q4_k_m rows"});
  }
  for (const auto w : {lw::WeightType::q4_0, lw::WeightType::q4_k}) {
    lw::WeightStore::Options o;
    o.weights = w;
    configs.push_back({(t::models_dir() / "aidreams260K.bin").string(), o, w == lw::WeightType::q4_0 ? "q4_0 at load" : "q4_k at load"});
  }
  for (const Config& cfg : configs) {
    INFO(cfg.what);
    const auto store = lw::WeightStore::load(cfg.file, cfg.opts).value();
    const int V = store->config().vocab_size;
    constexpr int kSessions = 13, kSteps = 5;
    lw::ThreadParallel par(2);
    lw::ForwardPass fwd(*store, kSessions, 2);
    auto token = [](int s, int p) { return 1 + (s * 31 + p * 17) % 400; };
    // Solo runs.
    std::vector<std::vector<float>> solo(kSessions);
    for (int s = 0; s < kSessions; ++s) {
      lw::KvCache kv(store->config(), 32);
      REQUIRE(kv.reserve(kSteps));
      for (int p = 0; p < kSteps; ++p) {
        const lw::BatchRow r{token(s, p), p, &kv, true};
        const auto l = fwd.run(std::span(&r, 1), par);
        if (p == kSteps - 1) solo[static_cast<std::size_t>(s)].assign(l.begin(), l.end());
      }
    }
    // All together, one row each per step.
    std::vector<std::unique_ptr<lw::KvCache>> caches;
    for (int s = 0; s < kSessions; ++s) {
      caches.push_back(std::make_unique<lw::KvCache>(store->config(), 32));
      REQUIRE(caches.back()->reserve(kSteps));
    }
    std::span<float> last;
    for (int p = 0; p < kSteps; ++p) {
      std::vector<lw::BatchRow> rows;
      for (int s = 0; s < kSessions; ++s) rows.push_back({token(s, p), p, caches[static_cast<std::size_t>(s)].get(), true});
      last = fwd.run(rows, par);
    }
    for (int s = 0; s < kSessions; ++s) {
      INFO("session " << s);
      const auto row = last.subspan(static_cast<std::size_t>(s) * static_cast<std::size_t>(V), static_cast<std::size_t>(V));
      REQUIRE(std::equal(row.begin(), row.end(), solo[static_cast<std::size_t>(s)].begin()));
    }
  }
}

TEST_CASE("version 1 export gives exactly the legacy file's logits", "[model]") {
  LW_REQUIRE_SHARED();
  for (const auto& [legacy_name, v1_name] : {std::pair{"aidreams260K.bin", "aidreams260K_v1.bin"},
                                             std::pair{"tiny_gqa.bin", "tiny_gqa_v1.bin"}}) {
    const auto legacy = lw::WeightStore::load((t::models_dir() / legacy_name).string()).value();
    const auto v1 = lw::WeightStore::load((t::models_dir() / v1_name).string()).value();
    lw::SerialParallel par;
    lw::ForwardPass f1(*legacy, 1, 1), f2(*v1, 1, 1);
    lw::KvCache k1(legacy->config(), 16), k2(v1->config(), 16);
    REQUIRE((k1.reserve(16) && k2.reserve(16)));
    for (int p = 0; p < 16; ++p) {
      const lw::BatchRow r1{(p * 37) % 500, p, &k1, true}, r2{(p * 37) % 500, p, &k2, true};
      const auto a = f1.run(std::span(&r1, 1), par);
      const auto b = f2.run(std::span(&r2, 1), par);
      REQUIRE(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
  }
}

TEST_CASE("local generation reproduces golden/generate.jsonl ids", "[model]") {
  LW_REQUIRE_SHARED();
  lw::ThreadParallel par(2);
  int n = 0;
  for (const auto& o : t::read_jsonl(t::golden_dir() / "generate.jsonl")) {
    const Case c = parse_case(o);
    std::vector<int> expected;
    for (const auto& v : o.at("ids").as_array()) expected.push_back(static_cast<int>(v.as_int64()));
    INFO(c.prompt << " t=" << c.temperature << " p=" << c.topp << " seed=" << c.seed);
    CHECK(run_case(c, par, 64).first == expected);
    CHECK(run_case(c, par, 1).first == expected);  // no batched prefill
    ++n;
  }
  CHECK(n == 6);
}

TEST_CASE("local generation reproduces golden texts byte for byte (f32 and Q8_0 files)", "[model]") {
  LW_REQUIRE_SHARED();
  lw::ThreadParallel par(2);
  int n = 0;
  for (const char* file : {"generate_text.jsonl", "generate_q80_text.jsonl"}) {
    for (const auto& o : t::read_jsonl(t::golden_dir() / file)) {
      const Case c = parse_case(o);
      INFO(file << ": " << c.checkpoint << " \"" << c.prompt << "\" t=" << c.temperature << " seed=" << c.seed);
      CHECK(run_case(c, par, 64).second == std::string(o.at("stdout").as_string()));
      ++n;
    }
  }
  CHECK(n == 12);
}
