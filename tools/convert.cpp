// llamawire-convert IN OUT [--type T] [--tokenizer TOK.bin]: a llama2.c checkpoint (legacy,
// v1 or v2) or a GGUF file to a GGUF file of the `llama` architecture, every matrix in type
// T (norms stay f32). From llama2.c it writes the metadata and vocabulary as llama.cpp's
// llama2.c converter does (same keys, same order, the tokenizer's spaces as U+2581); from
// GGUF it keeps the input's metadata and vocabulary and requantizes the tensors.
//
// For Llama-3-shaped test models (random llama2.c weights, a real vocabulary): --vocab
// takes the vocabulary from a GGUF file or a vocabulary JSON (tests/data/llama3), and
// --rope-base, --rope-scaling llama3:FACTOR and --tie-output give the Llama-3.x model
// features. `llamawire-convert --vocab V OUT` (no IN) writes a vocabulary-only GGUF file.
#include "common/bytes.hpp"
#include "common/cli_support.hpp"
#include "common/tokenizer.hpp"
#include "server/kernels/tensor_types.hpp"
#include "server/model/gguf.hpp"
#include "server/model/gguf_writer.hpp"
#include "server/model/weight_store.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>
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

// The merges of a vocabulary whose ranks are its ids (tiktoken's, as Llama-3's): every split
// of a token into two tokens, ordered by the merged token's id, then the left part's, then
// the right part's. (tests/data/llama3/make-data.mjs checks that this is exactly the list
// in Llama-3's tokenizer.json.) Pieces are split between characters of the byte alphabet.
std::vector<std::string> merges_from_ranks(const std::vector<std::string>& pieces, const std::vector<std::int32_t>& types) {
  std::unordered_map<std::string_view, int> rank;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (types[i] == static_cast<std::int32_t>(lw::TokenType::normal)) rank.emplace(pieces[i], static_cast<int>(i));
  }
  std::vector<std::string> merges;
  std::vector<std::tuple<int, int, std::size_t>> local;
  for (std::size_t id = 0; id < pieces.size(); ++id) {
    if (types[id] != static_cast<std::int32_t>(lw::TokenType::normal)) continue;
    const std::string_view p = pieces[id];
    local.clear();
    for (std::size_t k = 1; k < p.size(); ++k) {
      if ((static_cast<unsigned char>(p[k]) & 0xC0) == 0x80) continue;  // inside a character
      const auto l = rank.find(p.substr(0, k)), r = rank.find(p.substr(k));
      if (l != rank.end() && r != rank.end()) local.emplace_back(l->second, r->second, k);
    }
    std::sort(local.begin(), local.end());
    for (const auto& [l, r, k] : local) merges.push_back(std::string(p.substr(0, k)) + " " + std::string(p.substr(k)));
  }
  return merges;
}

// A vocabulary JSON (tests/data/llama3/README.md): the tokenizer.* keys it stands for;
// returns the number of tokens.
std::size_t add_json_vocab(lw::GgufWriter& w, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const boost::json::object o = boost::json::parse(ss.str()).as_object();
  std::vector<std::string> pieces;
  for (const auto& t : o.at("tokens").as_array()) pieces.emplace_back(t.as_string());
  std::vector<std::int32_t> types;
  for (const auto& t : o.at("types").as_array()) types.push_back(static_cast<std::int32_t>(t.to_number<int>()));
  if (types.size() != pieces.size()) throw std::runtime_error(path + ": 'types' and 'tokens' differ in length");
  auto merges = merges_from_ranks(pieces, types);
  if (const auto* n = o.if_contains("n_merges"); n != nullptr && n->to_number<std::size_t>() != merges.size()) {
    throw std::runtime_error(path + ": the rank rule gives " + std::to_string(merges.size()) + " merges, the file says " +
                             std::to_string(n->to_number<std::size_t>()));
  }
  w.add_string("tokenizer.ggml.model", std::string(o.at("model").as_string()));
  w.add_string("tokenizer.ggml.pre", std::string(o.at("pre").as_string()));
  w.add_strings("tokenizer.ggml.tokens", pieces);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_strings("tokenizer.ggml.merges", merges);
  w.add_u32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(o.at("bos").to_number<int>()));
  w.add_u32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(o.at("eos").to_number<int>()));
  w.add_bool("tokenizer.ggml.add_bos_token", o.at("add_bos").as_bool());
  if (const auto* t = o.if_contains("chat_template")) w.add_string("tokenizer.chat_template", std::string(t->as_string()));
  return pieces.size();
}

// The tokenizer.* keys of --vocab (a GGUF file's, copied, or a vocabulary JSON's); returns
// the vocabulary's size.
std::size_t add_vocab_from(lw::GgufWriter& w, const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return add_json_vocab(w, path);
  {
    auto bytes = lw::read_file(path, std::size_t{1} << 31);
    if (!bytes) throw std::runtime_error(bytes.error().message);
    auto g = lw::GgufFile::parse(*bytes, path);
    if (!g) throw std::runtime_error(g.error().message);
    for (const auto& kv : g->kvs()) {
      if (kv.key.rfind("tokenizer.", 0) == 0) w.add_value(std::string(kv.key), kv.value);
    }
    const lw::GgufValue* tokens = g->find("tokenizer.ggml.tokens");
    if (tokens == nullptr) throw std::runtime_error(path + ": no tokenizer.ggml.tokens");
    return static_cast<std::size_t>(tokens->count);
  }
}

// Llama-3.1 RoPE scaling as Meta's reference and llama.cpp's converter compute it: per
// rotated pair i (frequency base^(-2i/dims)), 1 for short wavelengths, FACTOR for long ones,
// and a smooth blend between, with the original context 8192 and factors 1 (low) and 4 (high).
std::vector<float> llama3_rope_factors(float base, int dims, float factor) {
  const double old_ctx = 8192, low = 1, high = 4;
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  std::vector<float> out;
  for (int i = 0; i < dims; i += 2) {
    const double freq = 1.0 / std::pow(static_cast<double>(base), static_cast<double>(i) / dims);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

// Model features beyond llama2.c's (all off: the file is what llama.cpp's converter writes).
struct Features {
  bool own_vocab = false;   // --vocab: the tokenizer ids come with it
  float rope_base = 0;      // --rope-base (0: not written, 10000)
  float rope_scaling = 0;   // --rope-scaling llama3:FACTOR (0: none)
  bool tie_output = false;  // --tie-output
};

void add_llama2c_metadata(lw::GgufWriter& w, const lw::ModelConfig& c, const Features& f) {
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", "llama");
  if (!f.own_vocab) {
    w.add_u32("tokenizer.ggml.unknown_token_id", 0);
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);
    w.add_u32("tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu);  // sic, as llama.cpp spells it
    w.add_u32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
  }
  w.add_u32("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  w.add_u32("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  w.add_u32("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.add_u32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  w.add_u32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  w.add_u32("llama.rope.dimension_count", static_cast<std::uint32_t>(c.head_size()));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", c.rms_eps);
  if (f.rope_base > 0) w.add_f32("llama.rope.freq_base", f.rope_base);
  if (f.own_vocab) w.add_u32("llama.vocab_size", static_cast<std::uint32_t>(c.vocab_size));
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
void add_tensors(lw::GgufWriter& w, const lw::WeightStore& s, const TypeChoice& choice, bool keep_types,
                 const Features& f) {
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
  // A tied embedding is also the classifier: it gets the classifier's type, as
  // llama-quantize gives it.
  const bool tied = g == nullptr ? f.tie_output : c.shared_classifier;
  add_matrix("token_embd.weight", tied ? "output" : "token_embd", 0, s.embedding());
  add_norm("output_norm.weight", s.rms_final());
  // A llama2.c file with a shared classifier gets a copy as output.weight (as llama.cpp's
  // converter writes it); a GGUF file with tied embeddings stays tied.
  if ((g == nullptr && !f.tie_output) || !c.shared_classifier) add_matrix("output.weight", "output", 0, s.classifier());
  if (f.rope_scaling > 0) {
    auto factors = std::make_shared<std::vector<float>>(
        llama3_rope_factors(f.rope_base > 0 ? f.rope_base : 10000.0f, c.rotary_dims(), f.rope_scaling));
    w.add_tensor("rope_freqs.weight", TensorType::f32, {factors->size()}, [factors](std::vector<std::uint8_t>& out) {
      std::memcpy(out.data(), factors->data(), factors->size() * 4);
    });
  } else if (const float* rf = s.rope_freqs().empty() ? nullptr : s.rope_freqs().data()) {
    w.add_tensor("rope_freqs.weight", TensorType::f32, {s.rope_freqs().size()}, norm_producer(rf, static_cast<int>(s.rope_freqs().size())));
  }
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

// --rope-scaling, --rope-base and --tie-output into `f`; false (said on stderr) when out of
// range.
bool read_features(const po::variables_map& vm, const std::string& rope_scaling, Features& f) {
  if (!rope_scaling.empty()) {
    char* end = nullptr;
    const bool prefixed = rope_scaling.rfind("llama3:", 0) == 0;
    f.rope_scaling = prefixed ? std::strtof(rope_scaling.c_str() + 7, &end) : 0.0f;
    if (!prefixed || end == nullptr || *end != '\0' || !(f.rope_scaling >= 1.0f && f.rope_scaling <= 1024.0f)) {
      std::cerr << "llamawire-convert: --rope-scaling '" << rope_scaling << "': expected llama3:FACTOR, FACTOR in [1, 1024]\n";
      return false;
    }
  }
  if (vm.count("rope-base") && !(f.rope_base > 1.0f && f.rope_base <= 1e12f)) {
    std::cerr << "llamawire-convert: --rope-base must be in (1, 1e12]\n";
    return false;
  }
  f.tie_output = vm.count("tie-output") > 0;
  return true;
}

// `llamawire-convert --vocab V OUT`: a GGUF file of the vocabulary alone. Returns the exit code.
int write_vocab_only(const std::string& vocab_path, const std::string& out) {
  lw::GgufWriter w;
  w.add_string("general.architecture", "llama");  // as llama.cpp's vocab-only files say
  add_vocab_from(w, vocab_path);
  if (auto r = w.write(out); !r) {
    std::cerr << "llamawire-convert: " << r.error().message << "\n";
    return 1;
  }
  std::fprintf(stderr, "llamawire-convert: vocabulary %s -> %s\n", vocab_path.c_str(), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string in, out, type = "", tokenizer, vocab_path, rope_scaling;
  Features features;
  po::options_description opts("Usage: llamawire-convert IN OUT [options]\n\nOptions");
  opts.add_options()("help,h", "this help")(
      "type,t", po::value(&type),
      "matrix type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q4_k_m q5_k q5_k_m q6_k (default: f32 for f32 "
      "inputs, q8_0 for llama2.c Q8_0 ones, the input's own types for GGUF)")(
      "tokenizer,z", po::value(&tokenizer), "llama2.c tokenizer.bin for a llama2.c input (default: beside it)")(
      "vocab", po::value(&vocab_path),
      "for a llama2.c input: the vocabulary (tokenizer.* keys) of this GGUF file or vocabulary JSON instead of a "
      "tokenizer.bin; with OUT alone, write a vocabulary-only GGUF file")(
      "rope-base", po::value(&features.rope_base), "for a llama2.c input: write llama.rope.freq_base (e.g. 500000)")(
      "rope-scaling", po::value(&rope_scaling),
      "for a llama2.c input: llama3:FACTOR writes rope_freqs.weight, Llama-3.1 scaling (Llama-3.2: 32, 3.1: 8)")(
      "tie-output", "for a llama2.c input with a shared classifier: no output.weight (tied embeddings)");
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
  if (!in.empty() && out.empty() && !vocab_path.empty()) std::swap(in, out);  // `--vocab V OUT`
  if (out.empty() || (in.empty() && vocab_path.empty())) {
    std::cerr << "llamawire-convert: IN and OUT are required (or --vocab V and OUT)\n" << opts << "\n";
    return 2;
  }
  if (!read_features(vm, rope_scaling, features)) return 2;
  features.own_vocab = !vocab_path.empty();
  if (in.empty()) return write_vocab_only(vocab_path, out);
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
  if (g != nullptr && (!tokenizer.empty() || features.own_vocab || features.rope_base > 0 || features.rope_scaling > 0 ||
                       features.tie_output)) {
    std::cerr << "llamawire-convert: --tokenizer, --vocab, --rope-base, --rope-scaling and --tie-output apply to llama2.c "
                 "inputs; "
              << in << " has its own vocabulary and features\n";
    return 2;
  }
  if (features.tie_output && !c.shared_classifier) {
    std::cerr << "llamawire-convert: --tie-output: " << in << " has a separate classifier\n";
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
  } else if (features.own_vocab) {
    const std::size_t n = add_vocab_from(w, vocab_path);
    if (n != static_cast<std::size_t>(c.vocab_size)) {
      std::cerr << "llamawire-convert: " << vocab_path << " holds " << n << " tokens, " << in << " has vocab_size "
                << c.vocab_size << "\n";
      return 1;
    }
    add_llama2c_metadata(w, c, features);
  } else {
    auto tok = lw::load_model_tokenizer(s, tokenizer);
    if (!tok) {
      std::cerr << "llamawire-convert: " << tok.error().message << "\n";
      return 1;
    }
    add_llama2c_vocab(w, *tok);
    add_llama2c_metadata(w, c, features);
  }
  add_tensors(w, s, choice, keep_types, features);
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
