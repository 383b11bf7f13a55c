// llamawire-bench-engine: single-stream decode and prompt-processing speed of the engine,
// with the machine's read bandwidth measured in the same process, as one JSON line.
//   llamawire-bench-engine CHECKPOINT [--weights f32|q8_0|q4_0|q4_k] [--kernels scalar|avx2|avx2-vnni|avx512-vnni|amx]
//                          [--threads N] [--decode N] [--prompt N] [--batch B]
//                          [--load read|mmap] [--bandwidth-mib N] [--compute]
#include "common/cli_support.hpp"
#include "server/kernels/kernels.hpp"
#include "server/model/forward.hpp"
#include "server/model/parallel.hpp"
#include "server/model/weight_store.hpp"

#include <boost/program_options.hpp>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

namespace po = boost::program_options;
namespace lw = llamawire;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds(clock_type::time_point a, clock_type::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Read bandwidth: the threads stream through a float buffer far larger than the caches
// with the active kernel table's dot product (the loads the matmuls do); the median of
// several passes, in GB/s of bytes read.
double read_bandwidth_gbs(lw::ThreadParallel& par, std::size_t mib) {
  const std::size_t n = mib * (1u << 20) / sizeof(float);
  std::unique_ptr<float[]> buf(new float[n]);
  for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i % 1000) * 1e-3f;
  const int threads = par.concurrency();
  // The fastest loads this CPU has, whatever table the model runs with: this measures the
  // machine, not the kernel under test.
  const auto& k = lw::kernels::avx2_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                      ? *lw::kernels::avx2_table()
                      : lw::kernels::scalar_table();
  std::vector<float> sink(static_cast<std::size_t>(threads) * 16);
  std::vector<double> passes;
  for (int pass = 0; pass < 9; ++pass) {
    const auto t0 = clock_type::now();
    par.for_each(threads, [&](int task, int) {
      const std::size_t begin = n * static_cast<std::size_t>(task) / static_cast<std::size_t>(threads);
      const std::size_t end = n * static_cast<std::size_t>(task + 1) / static_cast<std::size_t>(threads);
      float s = 0;
      constexpr std::size_t kChunk = 1 << 16;
      for (std::size_t i = begin; i < end; i += kChunk) {
        const int len = static_cast<int>(std::min(kChunk, end - i));
        s += k.dot(buf.get() + i, buf.get() + i, len) ;
      }
      sink[static_cast<std::size_t>(task) * 16] = s;
    });
    passes.push_back(static_cast<double>(n * sizeof(float)) / seconds(t0, clock_type::now()) / 1e9);
  }
  if (sink[0] == 42.0f) std::fprintf(stderr, " ");
  std::sort(passes.begin(), passes.end());
  return passes[passes.size() / 2];
}

// Arithmetic throughput the machine gives both threads right now: twelve independent
// chains per thread (enough to cover the latency on current x86 cores) of 8-wide fused
// multiply-adds, of 16-wide ones, or of 16-lane vpdpbusd (64 int8 products each), in
// G operations per second (a multiply-add is two), median of 9 passes. On a shared host
// this halves when the two vCPUs land on the two hyperthreads of one core, which is what
// moves batched decode (bound by arithmetic) between runs while single-stream decode
// (bound by memory) stays put.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float fma_chains(long iters, float seed) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(seed + static_cast<float>(i) * 1e-7f);
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  float s = 0.0f;
  for (int i = 0; i < 12; ++i) s += _mm256_cvtss_f32(acc[i]);
  return s;
}
__attribute__((target("avx512f"))) float fma_chains_512(long iters, float seed) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(seed + static_cast<float>(i) * 1e-7f);
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  alignas(64) float lanes[16];
  float s = 0.0f;
  for (int i = 0; i < 12; ++i) {
    _mm512_store_ps(lanes, acc[i]);
    s += lanes[0];
  }
  return s;
}
__attribute__((target("avx512f,avx512vnni"))) float dpbusd_chains_512(long iters, float seed) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(static_cast<int>(seed) + i);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  alignas(64) std::int32_t lanes[16];
  std::int32_t s = 0;
  for (int i = 0; i < 12; ++i) {
    _mm512_store_si512(lanes, acc[i]);
    s += lanes[0];
  }
  return static_cast<float>(s);
}
#endif

// One chain kernel on every thread: G operations per second, median of 9 passes.
double peak_gops(lw::ThreadParallel& par, float (*chains)(long, float), double ops_per_iter) {
  constexpr long kIters = 2'000'000;
  const int threads = par.concurrency();
  std::vector<float> sink(static_cast<std::size_t>(threads) * 16);
  std::vector<double> passes;
  for (int pass = 0; pass < 9; ++pass) {
    const auto t0 = clock_type::now();
    par.for_each(threads, [&](int task, int) {
      sink[static_cast<std::size_t>(task) * 16] = chains(kIters, 1.0f + static_cast<float>(task));
    });
    passes.push_back(static_cast<double>(kIters) * ops_per_iter * threads / seconds(t0, clock_type::now()) / 1e9);
  }
  if (sink[0] == 42.0f) std::fprintf(stderr, " ");
  std::sort(passes.begin(), passes.end());
  return passes[passes.size() / 2];
}

struct Peaks {
  double f32_avx2 = 0, f32_avx512 = 0, int8_vnni512 = 0;
};

Peaks compute_peaks(lw::ThreadParallel& par) {
  Peaks p;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) p.f32_avx2 = peak_gops(par, fma_chains, 12 * 16);
  if (lw::kernels::cpu_has_avx512_vnni()) {
    p.f32_avx512 = peak_gops(par, fma_chains_512, 12 * 32);
    p.int8_vnni512 = peak_gops(par, dpbusd_chains_512, 12 * 128);
  }
#else
  (void)par;
#endif
  return p;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string checkpoint, weights = "f32", kernels, load;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int decode = 64, prompt = 128, batch = 0;
  long long bw_mib = 1024;
  bool compute = false;
  po::options_description opts("Usage: llamawire-bench-engine CHECKPOINT [options]");
  opts.add_options()("help,h", "show this help")("weights", po::value(&weights), lw::kWeightsHelp)
      ("kernels", po::value(&kernels), "scalar | avx2 | avx2-vnni | avx512-vnni | amx")("threads", po::value(&threads), "compute threads")
      ("decode", po::value(&decode), "tokens decoded one at a time")
      ("prompt", po::value(&prompt), "prompt tokens processed in one batch")
      ("batch", po::value(&batch), "also decode B sessions together, one position each per forward (0: skip)")
      ("load", po::value(&load), "read (private copy, f32 in panel layout) | mmap (row-major mapping)")
      ("bandwidth-mib", po::value(&bw_mib), "buffer for the bandwidth measurement (0: skip)")
      ("compute", po::bool_switch(&compute), "also measure the threads' arithmetic peaks (compute_gflops: AVX2 FMA, compute_gflops_avx512, compute_int8_gops_vnni512)");
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
    std::cerr << "llamawire-bench-engine: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help") || checkpoint.empty()) {
    std::cout << opts;
    return checkpoint.empty() ? 2 : 0;
  }
  if (!kernels.empty() && !lw::kernels::select(kernels)) {
    std::cerr << "kernels " << kernels << " not available\n";
    return 2;
  }
  lw::OptionChecks checks;
  checks.integer("--threads", threads, 1, 256);
  checks.integer("--decode", decode, 0, 1 << 20);
  checks.integer("--prompt", prompt, 0, 1 << 20);
  checks.integer("--batch", batch, 0, 4096);
  checks.integer("--bandwidth-mib", bw_mib, 0, 1 << 16);
  if (checks.error()) {
    std::cerr << "llamawire-bench-engine: " << *checks.error() << "\n";
    return 2;
  }
  if (!lw::parse_weights_option(weights) || (!load.empty() && load != "read" && load != "mmap")) {
    std::cerr << "--weights is f32, q8_0, q4_0 or q4_k, --load is read or mmap\n";
    return 2;
  }
  lw::WeightStore::Options wo;
  wo.weights = *lw::parse_weights_option(weights);
  wo.load = load == "mmap"   ? lw::WeightStore::Load::mmap
            : load == "read" ? lw::WeightStore::Load::read
                             : lw::WeightStore::Load::automatic;
  auto store = lw::WeightStore::load(checkpoint, wo);
  if (!store) {
    std::cerr << store.error().message << "\n";
    return 1;
  }
  const auto& cfg = (*store)->config();
  lw::ThreadParallel par(threads);
  const double bw = bw_mib > 0 ? read_bandwidth_gbs(par, static_cast<std::size_t>(bw_mib)) : 0.0;
  const Peaks peaks = compute ? compute_peaks(par) : Peaks{};
  // The batched phase first runs a 16-position prompt per session in one forward.
  constexpr int kBatchPrompt = 16;
  prompt = std::min(prompt, cfg.seq_len / 2);
  decode = std::min(decode, cfg.seq_len / 2);
  if (cfg.seq_len < kBatchPrompt + 2) batch = 0;  // no room for the batched phase
  lw::ForwardPass fwd(**store, std::max({prompt, batch, batch > 0 ? kBatchPrompt : 1, 1}), threads);
  // Tokens away from BOS/EOS so random models do not degenerate.
  auto token_at = [&](int i) { return 3 + (i * 7919) % (cfg.vocab_size - 3); };

  // Decode: one position per forward, after a warm-up pass over the weights.
  lw::KvCache kv(cfg, cfg.seq_len);
  kv.reserve(cfg.seq_len);
  {
    const lw::BatchRow r{token_at(0), 0, &kv, true};
    fwd.run(std::span(&r, 1), par);
  }
  auto t0 = clock_type::now();
  for (int p = 1; p <= decode; ++p) {
    const lw::BatchRow r{token_at(p), p, &kv, true};
    fwd.run(std::span(&r, 1), par);
  }
  const double decode_tps = decode > 0 ? decode / seconds(t0, clock_type::now()) : 0.0;

  // Prompt processing: `prompt` positions in one batched forward (one request). As
  // llama-bench does, a warm-up run first (it touches the scratch and KV memory), then the
  // median of three runs over the same positions (each rewrites the same KV entries).
  lw::KvCache kv2(cfg, cfg.seq_len);
  kv2.reserve(prompt);
  std::vector<lw::BatchRow> rows;
  for (int p = 0; p < prompt; ++p) rows.push_back({token_at(p), p, &kv2, p == prompt - 1});
  double prompt_tps = 0.0;
  if (prompt > 0) {
    fwd.run(rows, par);
    std::vector<double> runs;
    for (int r = 0; r < 3; ++r) {
      t0 = clock_type::now();
      fwd.run(rows, par);
      runs.push_back(prompt / seconds(t0, clock_type::now()));
    }
    std::sort(runs.begin(), runs.end());
    prompt_tps = runs[1];
  }

  // Batched decode: `batch` sessions, each one position per forward, all in one pass (what
  // the scheduler runs with that many clients decoding), after a 16-position prompt each.
  double batch_tps = 0.0;
  if (batch > 0) {
    std::vector<std::unique_ptr<lw::KvCache>> caches;
    const int start = kBatchPrompt, steps = std::min(32, cfg.seq_len - start - 1);
    for (int b = 0; b < batch; ++b) {
      caches.push_back(std::make_unique<lw::KvCache>(cfg, cfg.seq_len));
      caches.back()->reserve(start + steps + 1);
      std::vector<lw::BatchRow> pr;
      for (int p = 0; p < start; ++p) pr.push_back({token_at(p + b), p, caches.back().get(), false});
      fwd.run(pr, par);
    }
    std::vector<lw::BatchRow> step(static_cast<std::size_t>(batch));
    auto fill = [&](int p) {
      for (int b = 0; b < batch; ++b) step[static_cast<std::size_t>(b)] = {token_at(p + b), p, caches[static_cast<std::size_t>(b)].get(), true};
    };
    fill(start);
    fwd.run(step, par);  // warm-up
    t0 = clock_type::now();
    for (int p = start + 1; p <= start + steps; ++p) {
      fill(p);
      fwd.run(step, par);
    }
    batch_tps = static_cast<double>(batch) * steps / seconds(t0, clock_type::now());
  }

  // The weight products' arithmetic per prompt token (two operations per multiply-add; the
  // classifier runs for the last position only, attention is left out).
  const double layer_macs = static_cast<double>(cfg.dim) * (2.0 * cfg.dim + 2.0 * cfg.kv_dim()) +
                            3.0 * static_cast<double>(cfg.dim) * cfg.hidden_dim;
  const double prompt_gops = 2.0 * layer_macs * cfg.n_layers * prompt_tps / 1e9;
  const double bytes = static_cast<double>((*store)->bytes_per_token());
  const double bound = bw > 0 ? bw * 1e9 / bytes : 0.0;
  std::printf(
      "{\"checkpoint\":\"%s\",\"weights\":\"%s\",\"kernels\":\"%s\",\"threads\":%d,\"bytes_per_token\":%.0f,"
      "\"bandwidth_gbs\":%.2f,\"compute_gflops\":%.1f,\"compute_gflops_avx512\":%.1f,\"compute_int8_gops_vnni512\":%.1f,\"bound_tok_s\":%.2f,\"decode_tok_s\":%.2f,\"fraction_of_bound\":%.3f,"
      "\"prompt_tokens\":%d,\"prompt_tok_s\":%.2f,\"prompt_gops\":%.1f,\"prompt_speedup\":%.2f,\"layout\":\"%s\",\"batch\":%d,"
      "\"batch_decode_tok_s\":%.2f,\"batch_speedup\":%.2f}\n",
      checkpoint.c_str(), (*store)->type_summary().c_str(),
      std::string(lw::kernels::active().name).c_str(), threads, bytes, bw, peaks.f32_avx2, peaks.f32_avx512, peaks.int8_vnni512, bound, decode_tps,
      bound > 0 ? decode_tps / bound : 0.0, prompt, prompt_tps, prompt_gops, decode_tps > 0 ? prompt_tps / decode_tps : 0.0,
      (*store)->layer(0).wq.panels ? "panels" : (*store)->layer(0).wq.packed_format() ? "packed" : "rows", batch, batch_tps, decode_tps > 0 ? batch_tps / decode_tps : 0.0);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-bench-engine: " << e.what() << "\n";
  return 1;
}
