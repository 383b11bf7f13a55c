// llamawire-run: generate locally in one process, with llama2.c run's options and output.
#include "common/cli_support.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/kernels/kernels.hpp"
#include "server/model/forward.hpp"
#include "server/model/generator.hpp"
#include "server/model/weight_store.hpp"

#include <boost/program_options.hpp>

#include <cstdio>
#include <iostream>
#include <limits>
#include <thread>

namespace po = boost::program_options;
namespace lw = llamawire;

int main(int argc, char** argv) try {
  std::string checkpoint, tokenizer_path, prompt, weights = "f32", kernels_name;
  float temperature = 1.0f, topp = 0.9f;
  long long seed = 0;
  int steps = 256;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  po::options_description opts("Usage: llamawire-run CHECKPOINT [options]");
  opts.add_options()("help,h", "show this help")
      ("tokenizer,z", po::value(&tokenizer_path), "tokenizer file (default: tokenizer.bin or tok<vocab>.bin beside the checkpoint)")
      ("temperature,t", po::value(&temperature)->default_value(1.0f, "1.0"), "sampling temperature; 0 = greedy")
      ("topp,p", po::value(&topp)->default_value(0.9f, "0.9"), "top-p (nucleus) value in (0,1); otherwise full sampling")
      ("seed,s", po::value(&seed)->default_value(0), "random seed; 0 = from the clock")
      ("steps,n", po::value(&steps)->default_value(256), "positions to run; 0 = seq_len")
      ("input_prompt,i", po::value(&prompt), "prompt text")
      ("weights", po::value(&weights)->default_value("f32"), lw::kWeightsHelp)
      ("threads", po::value(&threads), "compute threads (default: all cores)")
      ("kernels", po::value(&kernels_name), "force a kernel table: scalar | avx2 | avx2-vnni | avx512-vnni | amx");
  po::options_description hidden;
  hidden.add_options()("checkpoint", po::value(&checkpoint));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("checkpoint", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire-run: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (checkpoint.empty()) {
    std::cerr << "llamawire-run: a checkpoint path is required\n" << opts;
    return 2;
  }
  lw::OptionChecks checks;
  checks.real("--temperature", temperature, 0, 1e6);
  checks.real("--topp", topp, -1e6, 1e6);
  checks.integer("--seed", seed, 0, std::numeric_limits<long long>::max());
  checks.integer("--steps", steps, 0, std::numeric_limits<int>::max());
  checks.integer("--threads", threads, 1, 256);
  if (checks.error() || !lw::parse_weights_option(weights)) {
    std::cerr << "llamawire-run: " << checks.error().value_or("--weights must be f32, q8_0, q4_0 or q4_k") << "\n";
    return 2;
  }
  if (!kernels_name.empty() && !lw::kernels::select(kernels_name)) {
    std::cerr << "llamawire-run: kernel table '" << kernels_name << "' is not available here\n";
    return 2;
  }

  lw::WeightStore::Options wopts;
  wopts.weights = *lw::parse_weights_option(weights);
  auto store = lw::WeightStore::load(checkpoint, wopts);
  if (!store) {
    std::cerr << "llamawire-run: " << store.error().message << "\n";
    return 1;
  }
  const lw::ModelConfig& cfg = (*store)->config();
  auto tok = lw::load_model_tokenizer(**store, tokenizer_path);
  if (!tok) {
    std::cerr << "llamawire-run: " << tok.error().message << "\n";
    return 1;
  }

  const int n_steps = lw::clamp_steps(steps, cfg.seq_len);
  const std::vector<int> prompt_tokens = tok->encode(prompt, tok->add_bos(), false, tok->kind() != lw::VocabKind::llama2c);
  lw::Sampler sampler(cfg.vocab_size, {temperature, topp, lw::resolve_seed(static_cast<std::uint64_t>(seed))});
  lw::ThreadParallel par(threads);
  lw::ForwardPass fwd(**store, std::min(256, cfg.seq_len), threads);
  lw::KvCache kv(cfg, cfg.seq_len);
  const auto g = lw::generate_local(fwd, kv, par, prompt_tokens, sampler, n_steps, tok->special(), [&](int prev, int next) {
    const auto decoded = tok->decode(prev, next);
    const auto piece = tok->kind() == lw::VocabKind::llama2c ? lw::printable_piece(decoded) : decoded;
    if (!piece.empty()) std::fwrite(piece.data(), 1, piece.size(), stdout);  // an empty view may hold no pointer
    std::fflush(stdout);
  });
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "kernels: %s, weights: %s, threads: %d\n", std::string(lw::kernels::active().name).c_str(),
               (*store)->type_summary().c_str(), threads);
  if (g.prefilled > 1) {
    std::fprintf(stderr, "prompt: %d positions in %.1f ms (%.1f tok/s)\n", g.prefilled, g.prefill_seconds * 1e3,
                 g.prefilled / std::max(g.prefill_seconds, 1e-9));
  }
  // Timed from after the first batch, as llama2.c times from its second position.
  const int decoded = g.positions - g.prefilled;
  if (g.positions > 1) {
    std::fprintf(stderr, "achieved tok/s: %f\n", decoded > 0 ? decoded / std::max(g.decode_seconds, 1e-9) : 0.0);
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-run: fatal: " << e.what() << "\n";
  return 1;
}
