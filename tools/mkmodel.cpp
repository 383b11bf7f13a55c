// llamawire-mkmodel: write a legacy-format llama2.c checkpoint with deterministic random
// weights of a given shape (for tests and benchmarks of real sizes).
#include "common/cli_support.hpp"

#include <boost/program_options.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <vector>

namespace po = boost::program_options;
namespace lw = llamawire;

namespace {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ULL + 1) {}
  // splitmix64 -> uniform in [-1, 1)
  float uniform() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) / static_cast<float>(1ULL << 23) - 1.0f;
  }

 private:
  std::uint64_t state_;
};

class Writer {
 public:
  explicit Writer(std::FILE* f) : f_(f) {}
  bool ok() const { return ok_; }
  void i32(std::int32_t v) { ok_ = ok_ && std::fwrite(&v, 4, 1, f_) == 1; }
  // n floats of uniform(-scale, scale) + offset, written in chunks.
  void random(std::uint64_t n, float scale, float offset, Rng& rng) {
    std::vector<float> buf(1 << 16);
    while (n > 0 && ok_) {
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, buf.size()));
      for (std::size_t i = 0; i < k; ++i) buf[i] = offset + scale * rng.uniform();
      ok_ = std::fwrite(buf.data(), 4, k, f_) == k;
      n -= k;
    }
  }
  void floats(const std::vector<float>& v) { ok_ = ok_ && std::fwrite(v.data(), 4, v.size(), f_) == v.size(); }

 private:
  std::FILE* f_;
  bool ok_ = true;
};

}  // namespace

int main(int argc, char** argv) try {
  std::string out;
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, seq_len = 0;
  long long seed = 1;
  po::options_description opts(
      "Usage: llamawire-mkmodel OUT --dim D --hidden H --layers L --heads N --kv-heads K --vocab V --seq-len T\n"
      "       [--separate-classifier] [--seed S]\n"
      "Shapes: stories15M 288 768 6 6 6 32000 256; stories42M 512 1376 8 8 8 32000 1024;\n"
      "        stories110M 768 2048 12 12 12 32000 1024; TinyLlama-1.1B 2048 5632 22 32 4 32000 2048");
  opts.add_options()("help,h", "show this help")("dim", po::value(&dim)->required(), "model dimension")
      ("hidden", po::value(&hidden)->required(), "FFN hidden dimension")
      ("layers", po::value(&layers)->required(), "number of layers")
      ("heads", po::value(&heads)->required(), "query heads")
      ("kv-heads", po::value(&kv_heads)->required(), "key/value heads")
      ("vocab", po::value(&vocab)->required(), "vocabulary size")
      ("seq-len", po::value(&seq_len)->required(), "maximum sequence length")
      ("separate-classifier", "store a separate classifier (negative vocab_size in the header)")
      ("seed", po::value(&seed)->default_value(1), "random seed");
  po::options_description hidden_opts;
  hidden_opts.add_options()("out", po::value(&out));
  po::options_description all;
  all.add(opts).add(hidden_opts);
  po::positional_options_description pos;
  pos.add("out", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire-mkmodel: " << e.what() << "\n" << opts << "\n";
    return 2;
  }
  lw::OptionChecks checks;
  checks.integer("--dim", dim, 2, 1 << 16);
  checks.integer("--hidden", hidden, 1, 1 << 18);
  checks.integer("--layers", layers, 1, 1024);
  checks.integer("--heads", heads, 1, 1024);
  checks.integer("--kv-heads", kv_heads, 1, 1024);
  checks.integer("--vocab", vocab, 3, 1 << 22);
  checks.integer("--seq-len", seq_len, 1, 1 << 20);
  checks.integer("--seed", seed, 0, std::numeric_limits<long long>::max());
  if (checks.error()) {
    std::cerr << "llamawire-mkmodel: " << *checks.error() << "\n";
    return 2;
  }
  if (out.empty() || dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0) {
    std::cerr << "llamawire-mkmodel: OUT is required; dimensions must be positive, dim a multiple of heads, heads a "
                 "multiple of kv-heads, head size even\n";
    return 2;
  }
  const bool separate = vm.count("separate-classifier") > 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(out.c_str(), "wb"), &std::fclose);
  if (!f) {
    std::cerr << "llamawire-mkmodel: cannot create " << out << "\n";
    return 1;
  }
  const std::uint64_t D = static_cast<std::uint64_t>(dim), H = static_cast<std::uint64_t>(hidden),
                      L = static_cast<std::uint64_t>(layers), V = static_cast<std::uint64_t>(vocab);
  const std::uint64_t KV = D / static_cast<std::uint64_t>(heads) * static_cast<std::uint64_t>(kv_heads);
  const int head_size = dim / heads;
  Rng rng(static_cast<std::uint64_t>(seed));
  Writer w(f.get());
  for (int v : {dim, hidden, layers, heads, kv_heads, separate ? -vocab : vocab, seq_len}) w.i32(v);
  const float sd = 1.0f / std::sqrt(static_cast<float>(dim));
  const float sh = 1.0f / std::sqrt(static_cast<float>(hidden));
  w.random(V * D, 1.0f, 0.0f, rng);         // token embedding
  w.random(L * D, 0.1f, 1.0f, rng);         // rms_att
  w.random(L * D * D, sd, 0.0f, rng);       // wq
  w.random(L * KV * D, sd, 0.0f, rng);      // wk
  w.random(L * KV * D, sd, 0.0f, rng);      // wv
  w.random(L * D * D, sd, 0.0f, rng);       // wo
  w.random(L * D, 0.1f, 1.0f, rng);         // rms_ffn
  w.random(L * H * D, sd, 0.0f, rng);       // w1
  w.random(L * D * H, sh, 0.0f, rng);       // w2
  w.random(L * H * D, sd, 0.0f, rng);       // w3
  w.random(D, 0.1f, 1.0f, rng);             // rms_final
  std::vector<float> re, im;                // freq_cis tables (unused by llama2.c's run)
  for (int p = 0; p < seq_len; ++p) {
    for (int i = 0; i < head_size; i += 2) {
      const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(i) / static_cast<float>(head_size));
      re.push_back(std::cos(static_cast<float>(p) * freq));
      im.push_back(std::sin(static_cast<float>(p) * freq));
    }
  }
  w.floats(re);
  w.floats(im);
  if (separate) w.random(V * D, sd, 0.0f, rng);
  if (!w.ok()) {
    std::cerr << "llamawire-mkmodel: write error on " << out << "\n";
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-mkmodel: fatal: " << e.what() << "\n";
  return 1;
}
