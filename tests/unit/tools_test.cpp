// The command-line tools as users run them: exact stdout, clear errors, exit codes.
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

namespace t = llamawire::test;

namespace {

std::string bin(const char* name) { return (t::bin_dir() / name).string(); }

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

TEST_CASE("llamawire-run reproduces golden/generate_text.jsonl byte for byte", "[tools]") {
  LW_REQUIRE_SHARED();
  for (const char* file : {"generate_text.jsonl", "generate_q80_text.jsonl"}) {
    for (const auto& o : t::read_jsonl(t::golden_dir() / file))
    for (const char* kernels : {"avx2", "scalar"}) {
      std::vector<std::string> argv{bin("llamawire-run"),
                                          (t::models_dir() / std::string(o.at("checkpoint").as_string())).string(),
                                          "-z",
                                          (t::models_dir() / std::string(o.at("tokenizer").as_string())).string(),
                                          "-t",
                                          num(o.at("temperature").to_number<double>()),
                                          "-p",
                                          num(o.at("topp").to_number<double>()),
                                          "-s",
                                          std::to_string(o.at("seed").to_number<long long>()),
                                          "-n",
                                          std::to_string(o.at("steps").to_number<int>()),
                                          "-i",
                                          std::string(o.at("prompt").as_string())};
      argv.insert(argv.end(), {"--kernels", kernels});
      const auto r = t::run_process(argv);
      INFO(file << " " << argv[1] << " seed " << argv[8] << " kernels " << kernels << "\nstderr: " << r.err);
      CHECK(r.exit_code == 0);
      CHECK(r.out == std::string(o.at("stdout").as_string()));
      // stderr ends with the tok/s line
      const auto last = r.err.rfind("achieved tok/s: ");
      CHECK(last != std::string::npos);
      CHECK(r.err.find('\n', last) == r.err.size() - 1);
    }
  }
}

TEST_CASE("llamawire-run finds tok<vocab>.bin beside the checkpoint and rejects bad files", "[tools]") {
  LW_REQUIRE_SHARED();
  // Default tokenizer lookup: aidreams260K.bin (vocab 512) next to tok512.bin.
  auto r = t::run_process({bin("llamawire-run"), (t::models_dir() / "aidreams260K.bin").string(), "-t", "0", "-n",
                           "20", "-i", "I dreamed"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("I dreamed", 0) == 0);

  t::TempDir dir;
  const auto good = t::read_bytes(t::models_dir() / "tiny_mha.bin");
  const auto truncated = (dir / "truncated.bin").string();
  t::write_bytes(truncated, std::vector<std::uint8_t>(good.begin(), good.end() - 4));
  auto badheads = good;
  const std::int32_t three = 3;
  std::memcpy(badheads.data() + 16, &three, 4);
  const auto heads = (dir / "heads.bin").string();
  t::write_bytes(heads, badheads);
  for (const auto& path : {truncated, heads, (dir / "missing.bin").string()}) {
    r = t::run_process({bin("llamawire-run"), path, "-z", (t::models_dir() / "tok512.bin").string(), "-n", "4"});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(path) != std::string::npos);
  }
  // Tokenizer whose vocab differs from the model's.
  r = t::run_process({bin("llamawire-run"), (t::models_dir() / "tiny_mha.bin").string(), "-z",
                      (t::models_dir() / "tokenizer.bin").string(), "-n", "4"});
  CHECK(r.exit_code == 1);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("vocab") != std::string::npos);
  // Bad options: usage and exit 2.
  r = t::run_process({bin("llamawire-run"), (t::models_dir() / "tiny_mha.bin").string(), "--bogus"});
  CHECK(r.exit_code == 2);
  r = t::run_process({bin("llamawire-run")});
  CHECK(r.exit_code == 2);
}

TEST_CASE("llamawire-tokenize prints ids with BOS", "[tools]") {
  LW_REQUIRE_SHARED();
  const auto r = t::run_process({bin("llamawire-tokenize"), "-z", (t::models_dir() / "tokenizer.bin").string(),
                                 "Hello, world!"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "1 15043 29892 3186 29991\n");
  CHECK(t::run_process({bin("llamawire-tokenize"), "Hello"}).exit_code == 2);
}

TEST_CASE("llamawire-mkmodel writes a loadable checkpoint of the asked shape", "[tools]") {
  t::TempDir dir;
  const auto out = (dir / "m.bin").string();
  auto r = t::run_process({bin("llamawire-mkmodel"), out, "--dim", "48", "--hidden", "96", "--layers", "2", "--heads",
                           "4", "--kv-heads", "2", "--vocab", "300", "--seq-len", "32", "--separate-classifier",
                           "--seed", "3"});
  REQUIRE(r.exit_code == 0);
  // header + emb + 2*(rms + wq + wk + wv + wo + rms + w1 + w2 + w3) + rms_final + freq + wcls
  const std::uint64_t D = 48, H = 96, KV = 24, V = 300, T = 32, L = 2;
  const std::uint64_t floats =
      V * D + L * (D + D * D + 2 * KV * D + D * D + D + 3 * H * D) + D + T * 12 / 2 * 2 + V * D;
  CHECK(std::filesystem::file_size(out) == 28 + floats * 4);
  // Deterministic: same seed, same bytes.
  const auto out2 = (dir / "m2.bin").string();
  r = t::run_process({bin("llamawire-mkmodel"), out2, "--dim", "48", "--hidden", "96", "--layers", "2", "--heads",
                      "4", "--kv-heads", "2", "--vocab", "300", "--seq-len", "32", "--separate-classifier", "--seed",
                      "3"});
  REQUIRE(r.exit_code == 0);
  CHECK(t::read_bytes(out) == t::read_bytes(out2));
  // It runs.
  r = t::run_process({bin("llamawire-run"), out, "-z", (t::models_dir() / "tok512.bin").string(), "-n", "8", "-t",
                      "0"});
  if (!t::shared_dir().empty()) CHECK(r.exit_code != 0);  // vocab 300 vs tok512: refused clearly
  CHECK(t::run_process({bin("llamawire-mkmodel"), out, "--dim", "48"}).exit_code == 2);
}

TEST_CASE("llamawire-bench-engine measures each phase it is asked for and rejects bad options", "[tools]") {
  t::TempDir dir;
  const auto model = (dir / "m.bin").string();
  REQUIRE(t::run_process({bin("llamawire-mkmodel"), model, "--dim", "48", "--hidden", "96", "--layers", "2",
                          "--heads", "4", "--kv-heads", "2", "--vocab", "300", "--seq-len", "64"})
              .exit_code == 0);
  auto measure = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {bin("llamawire-bench-engine"), model, "--threads", "2"});
    const auto r = t::run_process(args);
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    return boost::json::parse(r.out).as_object();
  };
  // Every phase, with the host probes.
  auto j = measure({"--decode", "4", "--prompt", "8", "--batch", "3", "--bandwidth-mib", "8", "--compute"});
  CHECK(j.at("decode_tok_s").to_number<double>() > 0);
  CHECK(j.at("prompt_tok_s").to_number<double>() > 0);
  CHECK(j.at("batch_decode_tok_s").to_number<double>() > 0);
  CHECK(j.at("bandwidth_gbs").to_number<double>() > 0);
  const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  CHECK((j.at("compute_gflops").to_number<double>() > 0) == fma);  // 0 where it cannot run
  // Phases left out report 0 (no prompt: the batched phase's own 16-position prompts
  // still fit; no decode: no speedups to divide by).
  j = measure({"--decode", "0", "--prompt", "0", "--batch", "2", "--bandwidth-mib", "0"});
  CHECK(j.at("decode_tok_s").to_number<double>() == 0);
  CHECK(j.at("prompt_tok_s").to_number<double>() == 0);
  CHECK(j.at("batch_decode_tok_s").to_number<double>() > 0);
  CHECK(j.at("batch_speedup").to_number<double>() == 0);
  CHECK(j.at("bandwidth_gbs").to_number<double>() == 0);
  for (const char* bad : {"--threads=0", "--decode=-1", "--batch=-2", "--weights=q4", "--load=disk"}) {
    const auto r = t::run_process({bin("llamawire-bench-engine"), model, bad});
    INFO(bad << " stderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(!r.err.empty());
  }
}

TEST_CASE("llamawire-tokenize with a GGUF file prints llama-tokenize's ids, both parse modes", "[tools][gguf]") {
  LW_REQUIRE_SHARED();
  int n = 0;
  for (const auto& o : t::read_jsonl(t::golden_dir() / "gguf" / "tokenize.jsonl")) {
    const std::string file = (t::models_dir() / "gguf" / std::string(o.at("gguf").as_string())).string();
    const std::string text(o.at("text").as_string());
    auto list = [](const boost::json::value& v) {
      std::string s = "[";
      for (const auto& x : v.as_array()) s += (s.size() > 1 ? ", " : "") + std::to_string(x.to_number<int>());
      return s + "]\n";
    };
    INFO(file << ": " << text);
    const auto a = t::run_process({bin("llamawire-tokenize"), "-z", file, text});
    CHECK(a.exit_code == 0);
    CHECK(a.out == list(o.at("ids")));
    const auto b = t::run_process({bin("llamawire-tokenize"), "-z", file, "--no-parse-special", text});
    CHECK(b.out == list(o.at("ids_no_parse_special")));
    ++n;
  }
  CHECK(n >= 80);
}
