// llamawire-convert: llama2.c checkpoints to GGUF (byte for byte what llama.cpp's own
// converter writes), GGUF to GGUF with requantization (the types llama-quantize picks, and
// logits that stay those of the source), and its refusals.
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

std::string bin(const char* name) { return (t::bin_dir() / name).string(); }
std::string model(const std::string& name) { return (t::models_dir() / name).string(); }
std::string gguf(const std::string& name) { return (t::models_dir() / "gguf" / name).string(); }

t::ProcessResult convert(const std::vector<std::string>& args) {
  std::vector<std::string> argv{bin("llamawire-convert")};
  argv.insert(argv.end(), args.begin(), args.end());
  return t::run_process(argv, "", 300);
}

// Logits of every position of `ids` in one batch.
std::vector<float> logits_of(const std::string& path, const std::vector<int>& ids, lw::WeightStore::Load load) {
  lw::WeightStore::Options o;
  o.load = load;
  const auto store = lw::WeightStore::load(path, o).value();
  lw::ThreadParallel par(2);
  lw::ForwardPass fwd(*store, static_cast<int>(ids.size()), 2);
  lw::KvCache kv(store->config(), store->config().seq_len);
  REQUIRE(kv.reserve(static_cast<int>(ids.size())));
  std::vector<lw::BatchRow> rows;
  for (std::size_t p = 0; p < ids.size(); ++p) rows.push_back({ids[p], static_cast<int>(p), &kv, true});
  const auto l = fwd.run(rows, par);
  return {l.begin(), l.end()};
}

std::map<std::string, std::string> tensor_types(const std::string& path, std::vector<std::uint8_t>& keep) {
  keep = t::read_bytes(path);
  const auto g = lw::GgufFile::parse(keep, path).value();
  std::map<std::string, std::string> out;
  for (const auto& ten : g.tensors()) out[std::string(ten.name)] = std::string(lw::kernels::traits(ten.type).name);
  return out;
}

}  // namespace

TEST_CASE("llama2.c checkpoints convert to exactly the GGUF files llama.cpp's converter wrote", "[tools][gguf]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  for (const auto& [src, ref] : {std::pair{"aidreams260K.bin", "aidreams260K-f32.gguf"}, {"tiny_gqa.bin", "tiny_gqa-f32.gguf"},
                                 {"aidreams260K_v1.bin", "aidreams260K-f32.gguf"}}) {
    INFO(src);
    const auto out = (dir / (std::string(src) + ".gguf")).string();
    const auto r = convert({model(src), out, "-z", model("tok512.bin")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(t::read_bytes(out) == t::read_bytes(gguf(ref)));
  }
  // A llama2.c Q8_0 (export v2) checkpoint: to q8_0 GGUF (its groups of 64 requantized in
  // ggml's blocks of 32), close to the checkpoint's logits.
  const auto q80 = (dir / "q80.gguf").string();
  const auto rq = convert({model("aidreams260K_q80.bin"), q80, "-z", model("tok512.bin")});
  INFO(rq.err);
  REQUIRE(rq.exit_code == 0);
  {
    const std::vector<int> ids{1, 303, 281, 269, 435, 447, 328};
    const auto a = logits_of(model("aidreams260K_q80.bin"), ids, lw::WeightStore::Load::mmap);
    const auto b = logits_of(q80, ids, lw::WeightStore::Load::mmap);
    REQUIRE(a.size() == b.size());
    double err = 0, mag = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      err += std::abs(a[i] - b[i]);
      mag += std::abs(a[i]);
    }
    CHECK(err / mag < 0.05);
  }
  // The converted file gives the checkpoint's logits bit for bit, in both load modes.
  const std::vector<int> ids{1, 303, 281, 269, 435, 447, 328, 446, 299, 303};
  for (const auto load : {lw::WeightStore::Load::read, lw::WeightStore::Load::mmap}) {
    CHECK(logits_of(model("aidreams260K.bin"), ids, load) == logits_of(gguf("aidreams260K-f32.gguf"), ids, load));
    CHECK(logits_of(model("tiny_gqa.bin"), ids, load) == logits_of(gguf("tiny_gqa-f32.gguf"), ids, load));
  }
}

TEST_CASE("requantized GGUF files get llama-quantize's types and keep the source's predictions", "[tools][gguf]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  const std::vector<int> ids{1, 303, 281, 269, 435, 447, 328, 446, 299, 303, 266, 358, 430, 312, 379, 441};
  const auto ref = logits_of(gguf("k256-f32.gguf"), ids, lw::WeightStore::Load::mmap);
  const std::size_t V = 512;
  for (const auto& [type, shared] : std::vector<std::pair<std::string, std::string>>{
           {"q8_0", "k256-q8_0.gguf"}, {"q4_0", "k256-q4_0.gguf"}, {"q4_1", "k256-q4_1.gguf"}, {"q5_0", "k256-q5_0.gguf"},
           {"q5_1", "k256-q5_1.gguf"}, {"q4_k_m", "k256-q4_k_m.gguf"}, {"q5_k_m", "k256-q5_k_m.gguf"},
           {"q6_k", "k256-q6_k.gguf"}, {"f16", ""}, {"bf16", ""}, {"q4_k", ""}, {"q5_k", ""}}) {
    INFO(type);
    const auto out = (dir / ("k256-" + type + ".gguf")).string();
    const auto r = convert({gguf("k256-f32.gguf"), out, "--type", type});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<std::uint8_t> a, b;
    const auto ours = tensor_types(out, a);
    if (!shared.empty()) {
      CHECK(ours == tensor_types(gguf(shared), b));
      CHECK(std::filesystem::file_size(out) == std::filesystem::file_size(gguf(shared)));
    }
    // Same predictions as the float model: top-1 at nearly every position, small logit error.
    const auto got = logits_of(out, ids, lw::WeightStore::Load::mmap);
    REQUIRE(got.size() == ref.size());
    int agree = 0;
    double err = 0, mag = 0;
    for (std::size_t p = 0; p < ids.size(); ++p) {
      const auto* x = ref.data() + p * V;
      const auto* y = got.data() + p * V;
      agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y ? 1 : 0;
      for (std::size_t i = 0; i < V; ++i) {
        err += std::abs(x[i] - y[i]);
        mag += std::abs(x[i]);
      }
    }
    INFO("top-1 " << agree << "/" << ids.size() << ", relative logit error " << err / mag);
    CHECK(agree >= static_cast<int>(ids.size()) - 3);
    CHECK(err / mag < (type == "f16" || type == "bf16" || type == "q8_0" ? 0.02 : 0.15));
  }
  // GGUF to GGUF with no --type keeps every tensor's type and bytes' meaning.
  const auto same = (dir / "same.gguf").string();
  REQUIRE(convert({gguf("k256-q4_k_m.gguf"), same}).exit_code == 0);
  std::vector<std::uint8_t> a, b;
  CHECK(tensor_types(same, a) == tensor_types(gguf("k256-q4_k_m.gguf"), b));
  CHECK(logits_of(same, ids, lw::WeightStore::Load::mmap) == logits_of(gguf("k256-q4_k_m.gguf"), ids, lw::WeightStore::Load::mmap));
}

TEST_CASE("llamawire-convert refuses what it cannot do, with one clear line", "[tools][gguf]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  auto r = convert({model("aidreams260K.bin"), (dir / "x.gguf").string(), "--type", "q3_k"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--type 'q3_k'") != std::string::npos);
  r = convert({gguf("k256-f32.gguf"), (dir / "x.gguf").string(), "-z", model("tok512.bin")});
  CHECK(r.exit_code == 2);
  r = convert({(dir / "missing.bin").string(), (dir / "x.gguf").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("missing.bin") != std::string::npos);
  r = convert({model("aidreams260K.bin"), (dir / "nodir" / "x.gguf").string(), "-z", model("tok512.bin")});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot create") != std::string::npos);
  CHECK(!std::filesystem::exists(dir / "x.gguf"));
}
