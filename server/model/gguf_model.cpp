// Loading a GGUF file of the `llama` architecture into a WeightStore: the model's shape
// from its metadata, its tensors by name, each checked against the shape it must have.
#include "server/model/weight_store.hpp"
#include "common/bpe.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

namespace llamawire {
namespace {

using kernels::TensorType;

Error bad(const std::string& name, const std::string& what) {
  return make_error(errc::bad_checkpoint, name + ": " + what);
}

std::string shape_text(const GgufTensor& t) {
  std::string s = "[";
  for (std::uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

// The tensors the llama architecture uses, per layer and global.
constexpr const char* kLayerTensors[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};

// The model's shape and constants from the llama.* keys, each range-checked.
Result<void> read_llama_config(const GgufFile& g, ModelConfig& c) {
  auto arch = g.get_string("general.architecture");
  if (!arch) return arch.error();
  if (*arch != "llama") {
    return g.error("architecture '" + std::string(*arch) + "' is not supported (only 'llama' is)");
  }
  if (const GgufValue* e = g.find("llama.expert_count"); e != nullptr && e->as_int().value_or(0) > 0) {
    return g.error("key 'llama.expert_count': mixture-of-experts models are not supported");
  }
  struct IntKey {
    const char* key;
    int* out;
    std::int64_t hi;
  };
  const IntKey keys[] = {{"llama.embedding_length", &c.dim, 1 << 16},
                         {"llama.feed_forward_length", &c.hidden_dim, 1 << 18},
                         {"llama.block_count", &c.n_layers, 1024},
                         {"llama.attention.head_count", &c.n_heads, 1024},
                         {"llama.context_length", &c.seq_len, 1 << 20}};
  for (const IntKey& k : keys) {
    auto v = g.get_int(k.key, 1, k.hi);
    if (!v) return v.error();
    *k.out = static_cast<int>(*v);
  }
  auto kv = g.get_int("llama.attention.head_count_kv", 1, 1024, c.n_heads);
  if (!kv) return kv.error();
  c.n_kv_heads = static_cast<int>(*kv);
  if (c.dim % c.n_heads != 0) {
    return g.error("embedding_length " + std::to_string(c.dim) + " is not a multiple of head_count " +
                   std::to_string(c.n_heads));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return g.error("head_count " + std::to_string(c.n_heads) + " is not a multiple of head_count_kv " +
                   std::to_string(c.n_kv_heads));
  }
  if (c.head_size() % 2 != 0) return g.error("head size " + std::to_string(c.head_size()) + " is odd; RoPE needs it even");
  for (const char* k : {"llama.attention.key_length", "llama.attention.value_length"}) {
    auto v = g.get_int(k, c.head_size(), c.head_size(), c.head_size());
    if (!v) return v.error();
  }
  auto rot = g.get_int("llama.rope.dimension_count", 2, c.head_size(), c.head_size());
  if (!rot) return rot.error();
  if (*rot % 2 != 0) return g.error("key 'llama.rope.dimension_count': " + std::to_string(*rot) + " is odd");
  c.rope_dims = static_cast<int>(*rot);
  auto base = g.get_float("llama.rope.freq_base", 10000.0);
  if (!base) return base.error();
  if (!std::isfinite(*base) || *base <= 1.0 || *base > 1e12) {
    return g.error("key 'llama.rope.freq_base': " + std::to_string(*base) + " out of range (1, 1e12]");
  }
  c.rope_base = static_cast<float>(*base);
  auto eps = g.get_float("llama.attention.layer_norm_rms_epsilon");
  if (!eps) return eps.error();
  if (!std::isfinite(*eps) || *eps <= 0.0 || *eps >= 1.0) {
    return g.error("key 'llama.attention.layer_norm_rms_epsilon': " + std::to_string(*eps) + " out of range (0, 1)");
  }
  c.rms_eps = static_cast<float>(*eps);
  if (const GgufValue* sc = g.find("llama.rope.scaling.type"); sc != nullptr && sc->s != "none" && !sc->s.empty()) {
    return g.error("key 'llama.rope.scaling.type': RoPE scaling '" + std::string(sc->s) + "' is not supported");
  }

  return {};
}

// The first tensor that is not part of the llama architecture, as an error.
Error unknown_tensor(const GgufFile& g, int n_layers) {
  for (const GgufTensor& t : g.tensors()) {
    const std::string n(t.name);
    bool known = n == "token_embd.weight" || n == "output.weight" || n == "output_norm.weight" || n == "rope_freqs.weight";
    if (n.rfind("blk.", 0) == 0) {
      const std::size_t dot = n.find('.', 4);
      const std::string layer = dot == std::string::npos ? "" : n.substr(4, dot - 4);
      const bool numeric = !layer.empty() && layer.size() < 5 &&
                           layer.find_first_not_of("0123456789") == std::string::npos && std::stoi(layer) < n_layers;
      for (const char* k : kLayerTensors) {
        if (numeric && n == "blk." + layer + "." + k + ".weight") known = true;
      }
    }
    if (!known) {
      return g.error("tensor '" + n + "' is not part of the llama architecture as supported here (" +
                     "unexpected tensor)");
    }
  }
  return g.error("internal: tensor count mismatch");
}

}  // namespace

Result<std::shared_ptr<const WeightStore>> WeightStore::load_gguf(const std::string& path, int fd,
                                                                  std::uint64_t file_bytes, Options opts) {
  if (opts.weights != WeightType::f32) {
    return bad(path, "--weights applies to float32 llama2.c checkpoints; a GGUF file keeps its own tensor types "
                     "(requantize it with llamawire-convert --type TYPE)");
  }
  if (file_bytes == 0) return bad(path, "empty file");
  const bool use_mmap = opts.load == Load::mmap;
  void* map = MAP_FAILED;
  if (use_mmap) {
    map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return bad(path, std::string("mmap failed: ") + std::strerror(errno));
  } else {
    map = ::mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return bad(path, "cannot allocate " + std::to_string(file_bytes) + " bytes for the weights");
    ::madvise(map, file_bytes, MADV_HUGEPAGE);
    std::uint64_t done = 0;
    auto* dst = static_cast<std::uint8_t*>(map);
    while (done < file_bytes) {
      const ssize_t n = ::pread(fd, dst + done, static_cast<std::size_t>(std::min<std::uint64_t>(file_bytes - done, 1u << 30)),
                                static_cast<off_t>(done));
      if (n <= 0) {
        const std::string why = n < 0 ? std::strerror(errno) : "the file shrank while being read";
        ::munmap(map, file_bytes);
        return bad(path, "read error: " + why);
      }
      done += static_cast<std::uint64_t>(n);
    }
  }
  std::shared_ptr<WeightStore> store(new WeightStore());
  store->path_ = path;
  store->map_base_ = map;
  store->map_len_ = file_bytes;
  store->map_ = static_cast<const std::uint8_t*>(map);
  store->mapped_bytes_ = file_bytes;
  store->mapped_file_ = use_mmap;
  store->type_ = WeightType::gguf;
  store->header_.format = CheckpointFormat::gguf;
  store->header_.expected_bytes = file_bytes;
  auto parsed = GgufFile::parse(std::span(store->map_, static_cast<std::size_t>(file_bytes)), path);
  if (!parsed) return parsed.error();
  store->header_.header_bytes = parsed->data_offset();
  store->gguf_ = std::make_unique<GgufFile>(std::move(*parsed));
  if (auto r = store->bind_gguf(); !r) return r.error();
  if (!use_mmap) {
    store->pack_all();
    store->pack_blocks();
    ::mprotect(map, file_bytes, PROT_READ);
  }
  return std::shared_ptr<const WeightStore>(std::move(store));
}

Result<void> WeightStore::bind_gguf() {
  const GgufFile& g = *gguf_;
  ModelConfig& c = header_.config;
  if (auto r = read_llama_config(g, c); !r) return r;
  const GgufTensor* emb = g.tensor("token_embd.weight");
  if (emb == nullptr) return g.error("tensor 'token_embd.weight' is missing");
  if (emb->n_dims != 2 || emb->ne[0] != static_cast<std::uint64_t>(c.dim) || emb->ne[1] > (1u << 22)) {
    return g.error("tensor 'token_embd.weight': shape " + shape_text(*emb) + ", expected [" + std::to_string(c.dim) +
                   ", vocab <= 4194304]");
  }
  c.vocab_size = static_cast<int>(emb->ne[1]);
  if (auto vs = g.get_int("llama.vocab_size", c.vocab_size, c.vocab_size, c.vocab_size); !vs) return vs.error();

  auto mat = [&](const std::string& name, int cols, int rows, Matrix& out) -> Result<void> {
    const GgufTensor* t = g.tensor(name);
    if (t == nullptr) return g.error("tensor '" + name + "' is missing");
    if (t->n_dims != 2 || t->ne[0] != static_cast<std::uint64_t>(cols) || t->ne[1] != static_cast<std::uint64_t>(rows)) {
      return g.error("tensor '" + name + "': shape " + shape_text(*t) + ", expected [" + std::to_string(cols) + ", " +
                     std::to_string(rows) + "]");
    }
    const std::uint8_t* data = map_ + g.data_offset() + t->offset;
    out = Matrix{};
    out.rows = rows;
    out.cols = cols;
    if (t->type == TensorType::f32) {
      out.f32 = reinterpret_cast<const float*>(data);
    } else {
      out.blocks = kernels::BlockMatrix{t->type, data, kernels::row_bytes(t->type, static_cast<std::size_t>(cols))};
    }
    return {};
  };
  const auto D = static_cast<std::size_t>(c.dim);
  norms_.assign((2 * static_cast<std::size_t>(c.n_layers) + 1) * D, 0.0f);
  std::size_t norm_at = 0;
  auto norm = [&](const std::string& name, const float*& out) -> Result<void> {
    const GgufTensor* t = g.tensor(name);
    if (t == nullptr) return g.error("tensor '" + name + "' is missing");
    if (t->ne[0] != D || t->rows() != 1) {
      return g.error("tensor '" + name + "': shape " + shape_text(*t) + ", expected [" + std::to_string(D) + "]");
    }
    float* dst = norms_.data() + norm_at;
    kernels::dequantize_row(t->type, map_ + g.data_offset() + t->offset, dst, D);
    norm_at += D;
    out = dst;
    return {};
  };

  std::size_t used = 0;
  if (auto r = mat("token_embd.weight", c.dim, c.vocab_size, embedding_); !r) return r;
  ++used;
  layers_.assign(static_cast<std::size_t>(c.n_layers), LayerWeights{});
  const int KV = c.kv_dim(), H = c.hidden_dim;
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = layers_[static_cast<std::size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    Result<void> rs[] = {norm(p + "attn_norm.weight", lw.rms_att),
                         mat(p + "attn_q.weight", c.dim, c.dim, lw.wq),
                         mat(p + "attn_k.weight", c.dim, KV, lw.wk),
                         mat(p + "attn_v.weight", c.dim, KV, lw.wv),
                         mat(p + "attn_output.weight", c.dim, c.dim, lw.wo),
                         norm(p + "ffn_norm.weight", lw.rms_ffn),
                         mat(p + "ffn_gate.weight", c.dim, H, lw.w1),
                         mat(p + "ffn_up.weight", c.dim, H, lw.w3),
                         mat(p + "ffn_down.weight", H, c.dim, lw.w2)};
    for (auto& r : rs) {
      if (!r) return r;
    }
    used += std::size(kLayerTensors);
  }
  if (auto r = norm("output_norm.weight", rms_final_); !r) return r;
  ++used;
  if (g.tensor("output.weight") != nullptr) {
    if (auto r = mat("output.weight", c.dim, c.vocab_size, wcls_); !r) return r;
    c.shared_classifier = false;
    ++used;
  } else {
    wcls_ = embedding_;  // tied embeddings
    c.shared_classifier = true;
  }
  // Llama-3.1 RoPE scaling: one f32 factor per rotated pair; theta is divided by it.
  if (const GgufTensor* rf = g.tensor("rope_freqs.weight")) {
    const auto pairs = static_cast<std::uint64_t>(c.rotary_dims() / 2);
    if (rf->n_dims != 1 || rf->ne[0] != pairs || rf->type != TensorType::f32) {
      return g.error("tensor 'rope_freqs.weight': shape " + shape_text(*rf) + ", expected f32 [" + std::to_string(pairs) + "]");
    }
    const auto* f = reinterpret_cast<const float*>(map_ + g.data_offset() + rf->offset);
    rope_freqs_.assign(f, f + pairs);
    for (std::size_t i = 0; i < rope_freqs_.size(); ++i) {
      if (!std::isfinite(rope_freqs_[i]) || rope_freqs_[i] <= 0.0f) {
        return g.error("tensor 'rope_freqs.weight': factor " + std::to_string(i) + " is " + std::to_string(rope_freqs_[i]) +
                       " (must be finite and positive)");
      }
    }
    ++used;
  }
  if (used != g.tensors().size()) return unknown_tensor(g, c.n_layers);
  return {};
}

std::string WeightStore::type_summary() const {
  if (type_ != WeightType::gguf) return type_ == WeightType::q8_0 ? "q8_0" : "f32";
  std::map<std::string, int> counts;
  auto add = [&](const Matrix& m) {
    counts[std::string(kernels::traits(m.block_type()).name)] += 1;
  };
  add(embedding_);
  for (const auto& l : layers_) {
    for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) add(*m);
  }
  if (!config().shared_classifier) add(wcls_);
  std::string s;
  for (const auto& [name, n] : counts) s += (s.empty() ? "" : ", ") + name + " x" + std::to_string(n);
  return s;
}

}  // namespace llamawire

namespace llamawire {

Result<Vocab> read_gguf_vocab(const GgufFile& g, int vocab_size) {
  auto model = g.get_string("tokenizer.ggml.model");
  if (!model) return model.error();
  if (*model != "llama" && *model != "gpt2") {
    return g.error("tokenizer model '" + std::string(*model) +
                   "' is not supported ('llama', SentencePiece, and 'gpt2', byte-level BPE)");
  }
  const bool is_bpe = *model == "gpt2";
  const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufType::array || tokens->elem != GgufType::string) {
    return g.error("key 'tokenizer.ggml.tokens': missing or not an array of strings");
  }
  const std::uint64_t n = tokens->count;
  if (vocab_size > 0 && n != static_cast<std::uint64_t>(vocab_size)) {
    return g.error("key 'tokenizer.ggml.tokens': " + std::to_string(n) + " tokens, but token_embd.weight has " +
                   std::to_string(vocab_size) + " rows");
  }
  Vocab v;
  v.kind = is_bpe ? VocabKind::bpe : VocabKind::spm;
  if (is_bpe) {
    auto pre = g.get_string("tokenizer.ggml.pre", std::string_view{});
    if (!pre) return pre.error();
    if (!bpe::pre_tokenizer_from_name(*pre)) {
      return g.error("key 'tokenizer.ggml.pre': pre-tokenizer '" + std::string(*pre) + "' is not supported (" +
                     std::string(bpe::known_pre_tokenizers()) + ")");
    }
    v.pre = std::string(*pre);
    const GgufValue* merges = g.find("tokenizer.ggml.merges");
    if (merges == nullptr || merges->type != GgufType::array || merges->elem != GgufType::string) {
      return g.error("key 'tokenizer.ggml.merges': missing or not an array of strings");
    }
    v.merges.reserve(static_cast<std::size_t>(merges->count));
    for (const auto m : merges->strings) v.merges.emplace_back(m);
  }
  v.pieces.reserve(static_cast<std::size_t>(n));
  for (const auto s : tokens->strings) v.pieces.emplace_back(s);
  v.scores.assign(static_cast<std::size_t>(n), 0.0f);
  if (const GgufValue* sc = g.find("tokenizer.ggml.scores")) {
    if (sc->type != GgufType::array || sc->elem != GgufType::f32 || sc->count != n) {
      return g.error("key 'tokenizer.ggml.scores': expected " + std::to_string(n) + " f32 values");
    }
    for (std::uint64_t k = 0; k < n; ++k) v.scores[static_cast<std::size_t>(k)] = static_cast<float>(*sc->number_at(k));
  }
  v.types.assign(static_cast<std::size_t>(n), TokenType::normal);
  if (const GgufValue* ty = g.find("tokenizer.ggml.token_type")) {
    if (ty->type != GgufType::array || (ty->elem != GgufType::i32 && ty->elem != GgufType::u32) || ty->count != n) {
      return g.error("key 'tokenizer.ggml.token_type': expected " + std::to_string(n) + " i32 values");
    }
    for (std::uint64_t k = 0; k < n; ++k) {
      const auto t = ty->int_at(k);
      if (!t || *t < 0 || *t > 6) {
        return g.error("key 'tokenizer.ggml.token_type': token " + std::to_string(k) + " has type " +
                       (t ? std::to_string(*t) : std::string("?")) + " (0-6 are defined)");
      }
      v.types[static_cast<std::size_t>(k)] = static_cast<TokenType>(*t);
    }
  }
  // Ids: a u32 of 0xFFFFFFFF (or -1) means none, as llama.cpp reads it.
  auto id = [&](const char* key, int fallback, int& out) -> Result<void> {
    auto x = g.get_int(key, -1, 0xFFFFFFFFll, fallback);
    if (!x) return x.error();
    if (*x == 0xFFFFFFFFll || *x == -1) {
      out = -1;
    } else if (*x >= static_cast<std::int64_t>(n)) {
      return g.error("key '" + std::string(key) + "': id " + std::to_string(*x) + " is outside the vocabulary (" +
                     std::to_string(n) + " tokens)");
    } else {
      out = static_cast<int>(*x);
    }
    return {};
  };
  // llama.cpp's defaults: SentencePiece 1, 2, 0; BPE 11, 11, none (GPT-2's <|endoftext|>).
  for (auto [key, fallback, out] : {std::tuple{"tokenizer.ggml.bos_token_id", is_bpe ? 11 : 1, &v.special.bos},
                                    {"tokenizer.ggml.eos_token_id", is_bpe ? 11 : 2, &v.special.eos},
                                    {"tokenizer.ggml.unknown_token_id", is_bpe ? -1 : 0, &v.special.unk},
                                    {"tokenizer.ggml.padding_token_id", -1, &v.special.pad},
                                    {"tokenizer.ggml.eot_token_id", -1, &v.special.eot}}) {
    if (auto r = id(key, fallback, *out); !r) return r.error();
  }
  if (v.special.eot == v.special.eos) v.special.eot = -1;
  // llama.cpp's end-of-generation set: control tokens with these names end a generation
  // too (Llama-3: <|eot_id|> and <|end_of_text|>, whichever EOS is).
  for (std::size_t k = 0; k < v.pieces.size(); ++k) {
    const int tid = static_cast<int>(k);
    if (v.types[k] != TokenType::control || tid == v.special.eos || tid == v.special.eot) continue;
    for (const char* name : {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
                             "<end_of_turn>"}) {
      if (v.pieces[k] == name) v.special.also_end.push_back(tid);
    }
  }
  // llama.cpp adds BOS by default for SentencePiece and the Llama-3 pre-tokenizer.
  const bool bos_default = !is_bpe || *bpe::pre_tokenizer_from_name(v.pre) == bpe::PreTokenizer::llama3;
  auto b = g.get_bool("tokenizer.ggml.add_bos_token", bos_default);
  auto e = g.get_bool("tokenizer.ggml.add_eos_token", false);
  auto sp = g.get_bool("tokenizer.ggml.add_space_prefix", true);
  if (!b) return b.error();
  if (!e) return e.error();
  if (!sp) return sp.error();
  v.add_bos = *b;
  v.add_eos = *e;
  v.add_space_prefix = *sp;
  auto tmpl = g.get_string("tokenizer.chat_template", std::string_view{});
  if (!tmpl) return tmpl.error();
  v.chat_template = std::string(*tmpl);
  return v;
}

}  // namespace llamawire
