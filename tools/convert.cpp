// llamawire-convert IN OUT [--type T] [--tokenizer TOK.bin]: a llama2.c checkpoint (legacy,
// v1 or v2) or a GGUF file to a GGUF file of the `llama` architecture, every matrix in type
// T (norms stay f32). From llama2.c it writes the metadata and vocabulary as llama.cpp's
// llama2.c converter does (same keys, same order, the tokenizer's spaces as U+2581); from
// GGUF it keeps the input's metadata and vocabulary and requantizes the tensors.
#include "common/cli_support.hpp"
#include "common/tokenizer.hpp"
#include "server/kernels/tensor_types.hpp"
#include "server/model/gguf_writer.hpp"
#include "server/model/weight_store.hpp"

#include <boost/program_options.hpp>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>

namespace lw = llamawire;
namespace po = boost::program_options;
using lw::kernels::TensorType;

namespace {

struct TypeChoice {
  TensorType base;
  bool k_mix;             // q4_k_m / q5_k_m: some attn_v / ffn_down rows get q6_K
  std::uint32_t ftype;    // general.file_type (llama_ftype); 0: not written (f32)
};

const std::map<std::string, TypeChoice>& type_names() {
  static const std::map<std::string, TypeChoice> m = {
      {"f32", {TensorType::f32, false, 0}},    {"f16", {TensorType::f16, false, 1}},
      {"bf16", {TensorType::bf16, false, 32}}, {"q8_0", {TensorType::q8_0, false, 7}},
      {"q4_0", {TensorType::q4_0, false, 2}},  {"q4_1", {TensorType::q4_1, false, 3}},
      {"q5_0", {TensorType::q5_0, false, 8}},  {"q5_1", {TensorType::q5_1, false, 9}},
      {"q4_k", {TensorType::q4_k, false, 14}}, {"q4_k_m", {TensorType::q4_k, true, 15}},
      {"q5_k", {TensorType::q5_k, false, 16}}, {"q5_k_m", {TensorType::q5_k, true, 17}},
      {"q6_k", {TensorType::q6_k, false, 18}},
  };
  return m;
}

bool fits(TensorType t, int cols) { return cols % lw::kernels::traits(t).block == 0; }

// A type whose block does not divide the rows falls back as llama-quantize does: the K
// types to q5_0 / q5_1 / q8_0, anything to f16 last.
TensorType fit(TensorType t, int cols) {
  if (fits(t, cols)) return t;
  const TensorType next = t == TensorType::q4_k   ? TensorType::q5_0
                          : t == TensorType::q5_k ? TensorType::q5_1
                          : t == TensorType::q6_k ? TensorType::q8_0
                                                  : TensorType::f16;
  return fits(next, cols) ? next : TensorType::f16;
}

bool is_quantized(TensorType t) { return t != TensorType::f32 && t != TensorType::f16 && t != TensorType::bf16; }

// The layers that get more bits in the _m mixes: the first and last eighth, and every third
// one between.
bool more_bits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

TensorType type_for(const std::string& role, int layer, int n_layers, int cols, const TypeChoice& c) {
  TensorType t = c.base;
  if (role == "output" && is_quantized(c.base) && c.base != TensorType::q8_0) t = TensorType::q6_k;
  if (c.k_mix && (role == "attn_v" || role == "ffn_down") && more_bits(layer, n_layers)) t = TensorType::q6_k;
  return fit(t, cols);
}

// llama.cpp's llama2.c converter: ids 0/1/2 renamed, byte and empty tokens typed, spaces
// escaped.
void add_llama2c_vocab(lw::GgufWriter& w, const lw::Tokenizer& tok) {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  for (int id = 0; id < tok.vocab_size(); ++id) {
    std::string text(tok.piece(id));
    lw::TokenType type = lw::TokenType::normal;
    if (id == 0) {
      text = "<unk>";
      type = lw::TokenType::unknown;
    } else if (id == 1 || id == 2) {
      text = id == 1 ? "<s>" : "</s>";
      type = lw::TokenType::control;
    } else if (text.empty()) {
      type = lw::TokenType::control;
    } else if (text.size() >= 4 && text.compare(0, 3, "<0x") == 0 && std::isxdigit(static_cast<unsigned char>(text[3]))) {
      type = lw::TokenType::byte;
    }
    std::string escaped;
    for (const char ch : text) {
      if (ch == ' ') {
        escaped += "\xe2\x96\x81";
      } else {
        escaped += ch;
      }
    }
    pieces.push_back(std::move(escaped));
    scores.push_back(tok.score(id));
    types.push_back(static_cast<std::int32_t>(type));
  }
  w.add_strings("tokenizer.ggml.tokens", pieces);
  w.add_f32s("tokenizer.ggml.scores", scores);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_string("tokenizer.ggml.model", "llama");
}

void add_llama2c_metadata(lw::GgufWriter& w, const lw::ModelConfig& c) {
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", "llama");
  w.add_u32("tokenizer.ggml.unknown_token_id", 0);
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_u32("tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu);  // sic, as llama.cpp spells it
  w.add_u32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
  w.add_u32("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  w.add_u32("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  w.add_u32("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.add_u32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  w.add_u32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  w.add_u32("llama.rope.dimension_count", static_cast<std::uint32_t>(c.head_size()));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
}

// Every row of `m` as floats, then quantized to `t`; a block matrix already of type `t` is
// copied as it is (requantizing would only lose precision).
lw::GgufWriter::Producer matrix_producer(const lw::Matrix& m, TensorType t) {
  if (m.block_format() && m.blocks.type == t) {
    return [&m](std::vector<std::uint8_t>& out) {
      std::memcpy(out.data(), m.blocks.data, m.blocks.row_bytes * static_cast<std::size_t>(m.rows));
    };
  }
  return [&m, t](std::vector<std::uint8_t>& out) {
    std::vector<float> row(static_cast<std::size_t>(m.cols));
    const std::size_t rb = lw::kernels::row_bytes(t, static_cast<std::size_t>(m.cols));
    for (int i = 0; i < m.rows; ++i) {
      m.copy_row(i, row.data());
      lw::kernels::quantize_row(t, row.data(), out.data() + static_cast<std::size_t>(i) * rb, row.size());
    }
  };
}

lw::GgufWriter::Producer norm_producer(const float* v, int n) {
  return [v, n](std::vector<std::uint8_t>& out) { std::memcpy(out.data(), v, static_cast<std::size_t>(n) * 4); };
}

// The tensors in the order of llama.cpp's llama2.c converter, each matrix in the type the
// choice gives it (or its own with keep_types), then the quantization keys.
void add_tensors(lw::GgufWriter& w, const lw::WeightStore& s, const TypeChoice& choice, bool keep_types) {
  const lw::ModelConfig& c = s.config();
  const lw::GgufFile* g = s.gguf();
  const int L = c.n_layers;
  bool any_quantized = false;
  auto add_matrix = [&](const std::string& name, const std::string& role, int layer, const lw::Matrix& m) {
    TensorType t = type_for(role, layer, L, m.cols, choice);
    if (keep_types) t = m.block_format() ? m.blocks.type : TensorType::f32;
    any_quantized = any_quantized || is_quantized(t) || t == TensorType::f16 || t == TensorType::bf16;
    w.add_tensor(name, t, {static_cast<std::uint64_t>(m.cols), static_cast<std::uint64_t>(m.rows)}, matrix_producer(m, t));
  };
  auto add_norm = [&](const std::string& name, const float* v) {
    w.add_tensor(name, TensorType::f32, {static_cast<std::uint64_t>(c.dim)}, norm_producer(v, c.dim));
  };
  // The order of llama.cpp's llama2.c converter.
  add_matrix("token_embd.weight", "token_embd", 0, s.embedding());
  add_norm("output_norm.weight", s.rms_final());
  // A llama2.c file with a shared classifier gets a copy as output.weight (as llama.cpp's
  // converter writes it); a GGUF file with tied embeddings stays tied.
  if (g == nullptr || !c.shared_classifier) add_matrix("output.weight", "output", 0, s.classifier());
  for (int l = 0; l < L; ++l) {
    const lw::LayerWeights& lw_ = s.layer(l);
    const std::string p = "blk." + std::to_string(l) + ".";
    add_matrix(p + "attn_q.weight", "attn_q", l, lw_.wq);
    add_matrix(p + "attn_k.weight", "attn_k", l, lw_.wk);
    add_matrix(p + "attn_v.weight", "attn_v", l, lw_.wv);
    add_matrix(p + "attn_output.weight", "attn_output", l, lw_.wo);
    add_norm(p + "attn_norm.weight", lw_.rms_att);
    add_matrix(p + "ffn_gate.weight", "ffn_gate", l, lw_.w1);
    add_matrix(p + "ffn_down.weight", "ffn_down", l, lw_.w2);
    add_matrix(p + "ffn_up.weight", "ffn_up", l, lw_.w3);
    add_norm(p + "ffn_norm.weight", lw_.rms_ffn);
  }
  if (any_quantized) {
    w.add_u32("general.quantization_version", 2);
    std::uint32_t ftype = choice.ftype;
    if (keep_types) {
      const lw::GgufValue* ft = g->find("general.file_type");
      ftype = ft != nullptr && ft->as_int() ? static_cast<std::uint32_t>(*ft->as_int()) : 0;
    }
    if (ftype != 0) w.add_u32("general.file_type", ftype);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  std::string in, out, type = "", tokenizer;
  po::options_description opts("Usage: llamawire-convert IN OUT [options]\n\nOptions");
  opts.add_options()("help,h", "this help")(
      "type,t", po::value(&type),
      "matrix type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q4_k_m q5_k q5_k_m q6_k (default: f32 for f32 "
      "inputs, q8_0 for llama2.c Q8_0 ones, the input's own types for GGUF)")(
      "tokenizer,z", po::value(&tokenizer), "llama2.c tokenizer.bin for a llama2.c input (default: beside it)");
  po::options_description hidden;
  hidden.add_options()("in", po::value(&in))("out", po::value(&out));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("in", 1).add("out", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire-convert: " << e.what() << "\n" << opts << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  if (in.empty() || out.empty()) {
    std::cerr << "llamawire-convert: IN and OUT are required\n" << opts << "\n";
    return 2;
  }
  if (!type.empty() && !type_names().count(type)) {
    std::cerr << "llamawire-convert: --type '" << type << "' is not one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k "
                 "q4_k_m q5_k q5_k_m q6_k\n";
    return 2;
  }
  lw::WeightStore::Options wopts;
  wopts.load = lw::WeightStore::Load::mmap;
  auto store = lw::WeightStore::load(in, wopts);
  if (!store) {
    std::cerr << "llamawire-convert: " << store.error().message << "\n";
    return 1;
  }
  const lw::WeightStore& s = **store;
  const lw::ModelConfig& c = s.config();
  const lw::GgufFile* g = s.gguf();
  if (g != nullptr && !tokenizer.empty()) {
    std::cerr << "llamawire-convert: --tokenizer applies to llama2.c inputs; " << in << " has its own vocabulary\n";
    return 2;
  }
  if (type.empty()) type = s.weight_type() == lw::WeightType::q8_0 ? "q8_0" : "f32";
  const TypeChoice choice = type_names().at(type);
  const bool keep_types = g != nullptr && !vm.count("type");

  lw::GgufWriter w;
  if (g != nullptr) {
    for (const auto& kv : g->kvs()) {
      const std::string key(kv.key);
      if (key == "general.file_type" || key == "general.quantization_version" || key == "general.alignment") continue;
      w.add_value(key, kv.value);
    }
  } else {
    auto tok = lw::load_model_tokenizer(s, tokenizer);
    if (!tok) {
      std::cerr << "llamawire-convert: " << tok.error().message << "\n";
      return 1;
    }
    add_llama2c_vocab(w, *tok);
    add_llama2c_metadata(w, c);
  }
  add_tensors(w, s, choice, keep_types);
  if (auto r = w.write(out); !r) {
    std::cerr << "llamawire-convert: " << r.error().message << "\n";
    return 1;
  }
  std::fprintf(stderr, "llamawire-convert: %s -> %s (%s)\n", in.c_str(), out.c_str(), keep_types ? "types kept" : type.c_str());
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-convert: " << e.what() << "\n";
  return 1;
}
