// The GGUF reader against malformed files: every defect gives one error naming the file and
// the key or tensor, never a crash or a read past the end (the ASan build runs these).
#include "server/model/gguf.hpp"
#include "server/model/gguf_writer.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <functional>
#include <set>

namespace lw = llamawire;
namespace t = llamawire::test;
using lw::kernels::TensorType;

namespace {

// A tiny but complete llama GGUF file: dim 32, hidden 64, 1 layer, 2 heads, 16 tokens.
struct Spec {
  std::set<std::string> drop;                                   // keys or tensors left out
  std::function<void(lw::GgufWriter&)> extra;                   // added at the end
  std::string arch = "llama", tokenizer = "llama";
  std::uint32_t heads = 2, ctx = 64;
  float eps = 1e-5f;
  TensorType q_type = TensorType::f32;
  std::uint64_t q_rows = 32;
};

std::vector<std::uint8_t> make_file(const Spec& s) {
  lw::GgufWriter w;
  auto key = [&](const std::string& k) { return !s.drop.count(k); };
  std::vector<std::string> pieces{"<unk>", "<s>", "</s>"};
  for (int i = 3; i < 16; ++i) pieces.push_back(std::string(1, static_cast<char>('a' + i)));
  if (key("tokenizer.ggml.tokens")) w.add_strings("tokenizer.ggml.tokens", pieces);
  if (key("tokenizer.ggml.scores")) w.add_f32s("tokenizer.ggml.scores", std::vector<float>(16, 0.0f));
  if (key("tokenizer.ggml.token_type")) w.add_i32s("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  if (key("tokenizer.ggml.model")) w.add_string("tokenizer.ggml.model", s.tokenizer);
  if (key("general.architecture")) w.add_string("general.architecture", s.arch);
  if (key("llama.context_length")) w.add_u32("llama.context_length", s.ctx);
  if (key("llama.embedding_length")) w.add_u32("llama.embedding_length", 32);
  if (key("llama.feed_forward_length")) w.add_u32("llama.feed_forward_length", 64);
  if (key("llama.attention.head_count")) w.add_u32("llama.attention.head_count", s.heads);
  if (key("llama.block_count")) w.add_u32("llama.block_count", 1);
  if (key("llama.attention.layer_norm_rms_epsilon")) w.add_f32("llama.attention.layer_norm_rms_epsilon", s.eps);
  if (s.extra) s.extra(w);
  auto fill = [](std::vector<std::uint8_t>& out) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>((i * 7) & 0x3F);  // small floats
  };
  auto ten = [&](const std::string& name, TensorType type, std::vector<std::uint64_t> ne) {
    if (!s.drop.count(name)) w.add_tensor(name, type, std::move(ne), fill);
  };
  ten("token_embd.weight", TensorType::f32, {32, 16});
  ten("output_norm.weight", TensorType::f32, {32});
  ten("blk.0.attn_norm.weight", TensorType::f32, {32});
  ten("blk.0.attn_q.weight", s.q_type, {32, s.q_rows});
  ten("blk.0.attn_k.weight", TensorType::f32, {32, 32});
  ten("blk.0.attn_v.weight", TensorType::f32, {32, 32});
  ten("blk.0.attn_output.weight", TensorType::f32, {32, 32});
  ten("blk.0.ffn_norm.weight", TensorType::f32, {32});
  ten("blk.0.ffn_gate.weight", TensorType::f32, {32, 64});
  ten("blk.0.ffn_up.weight", TensorType::f32, {32, 64});
  ten("blk.0.ffn_down.weight", TensorType::f32, {64, 32});
  return w.bytes();
}

// Loads `bytes` as a file; returns the error message ("" when it loaded).
std::string load_error(const std::vector<std::uint8_t>& bytes, t::TempDir& dir) {
  const auto path = (dir / "m.gguf").string();
  t::write_bytes(path, bytes);
  for (const auto load : {lw::WeightStore::Load::mmap, lw::WeightStore::Load::read}) {
    lw::WeightStore::Options o;
    o.load = load;
    auto s = lw::WeightStore::load(path, o);
    if (!s) return s.error().message;
    auto tok = lw::load_model_tokenizer(**s, "");
    if (!tok) return tok.error().message;
  }
  return "";
}

void put_u64(std::vector<std::uint8_t>& b, std::size_t at, std::uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
void put_u32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

}  // namespace

TEST_CASE("a well-formed GGUF file loads, in both load modes", "[gguf]") {
  t::TempDir dir;
  CHECK(load_error(make_file({}), dir).empty());
  Spec q;
  q.q_type = TensorType::q4_k;
  q.extra = [](lw::GgufWriter&) {};
  // q4_K needs rows of 256: a 32-value row cannot be q4_K.
  CHECK(load_error(make_file(q), dir).find("not a multiple of 256") != std::string::npos);
}

TEST_CASE("GGUF header defects are named", "[gguf]") {
  t::TempDir dir;
  const auto good = make_file({});
  auto b = good;
  b[0] = 'X';
  CHECK(load_error(b, dir).find("out of range") != std::string::npos);  // not GGUF: read as a llama2.c header
  b = good;
  put_u32(b, 4, 1);
  CHECK(load_error(b, dir).find("GGUF version 1 is not supported") != std::string::npos);
  put_u32(b, 4, 0x03000000);
  CHECK(load_error(b, dir).find("big-endian") != std::string::npos);
  put_u32(b, 4, 7);
  CHECK(load_error(b, dir).find("version 7") != std::string::npos);
  b = good;
  put_u64(b, 8, 1ull << 60);
  CHECK(load_error(b, dir).find("tensor count") != std::string::npos);
  b = good;
  put_u64(b, 16, 1ull << 60);
  CHECK(load_error(b, dir).find("metadata count") != std::string::npos);
  // The first key's length (right after the header).
  b = good;
  put_u64(b, 24, 1ull << 40);
  CHECK(load_error(b, dir).find("string length") != std::string::npos);
}

TEST_CASE("every truncation of a GGUF file is an error, never a crash", "[gguf]") {
  t::TempDir dir;
  const auto good = make_file({});
  for (std::size_t n = 0; n < good.size(); n += n < 2000 ? 7 : 997) {
    const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string e = load_error(cut, dir);
    INFO("truncated to " << n << " bytes");
    CHECK(!e.empty());
  }
}

TEST_CASE("GGUF metadata defects are named", "[gguf]") {
  t::TempDir dir;
  auto err = [&](Spec s) { return load_error(make_file(s), dir); };
  Spec s;
  s.arch = "gpt2";
  CHECK(err(s).find("architecture 'gpt2' is not supported") != std::string::npos);
  s = {};
  s.tokenizer = "rwkv";
  CHECK(err(s).find("tokenizer model 'rwkv' is not supported") != std::string::npos);
  s = {};
  s.tokenizer = "gpt2";  // byte-level BPE needs its pre-tokenizer named
  CHECK(err(s).find("key 'tokenizer.ggml.pre': pre-tokenizer '' is not supported") != std::string::npos);
  s = {};
  s.drop = {"llama.embedding_length"};
  CHECK(err(s).find("'llama.embedding_length': missing") != std::string::npos);
  s = {};
  s.heads = 0;
  CHECK(err(s).find("'llama.attention.head_count': value 0 out of range") != std::string::npos);
  s = {};
  s.heads = 3;
  CHECK(err(s).find("not a multiple of head_count") != std::string::npos);
  s = {};
  s.ctx = 1u << 30;
  CHECK(err(s).find("'llama.context_length'") != std::string::npos);
  s = {};
  s.eps = std::nanf("");
  CHECK(err(s).find("layer_norm_rms_epsilon") != std::string::npos);
  s = {};
  s.drop = {"llama.attention.layer_norm_rms_epsilon"};
  CHECK(err(s).find("layer_norm_rms_epsilon': missing") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) { w.add_string("llama.block_count", "x"); };  // twice
  CHECK(err(s).find("appears twice") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) { w.add_string("llama.rope.freq_base", "fast"); };
  CHECK(err(s).find("'llama.rope.freq_base': is a string, expected f32") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) { w.add_raw("x.bad", 13, {}); };
  CHECK(err(s).find("value type 13") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) {
    std::vector<std::uint8_t> p(12, 0);
    p[0] = 4;                                         // array of u32 ...
    const std::uint64_t n = 1ull << 62;               // ... whose byte count overflows
    std::memcpy(p.data() + 4, &n, 8);
    w.add_raw("x.huge", 9, p);
  };
  CHECK(err(s).find("'x.huge'") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) {
    std::vector<std::uint8_t> p;
    for (int d = 0; d < 10; ++d) {  // arrays of arrays, 10 deep
      const std::uint32_t type = 9;
      const std::uint64_t one = 1;
      p.insert(p.end(), reinterpret_cast<const std::uint8_t*>(&type), reinterpret_cast<const std::uint8_t*>(&type) + 4);
      p.insert(p.end(), reinterpret_cast<const std::uint8_t*>(&one), reinterpret_cast<const std::uint8_t*>(&one) + 8);
    }
    p.resize(p.size() + 64, 0);
    w.add_raw("x.deep", 9, p);
  };
  CHECK(err(s).find("nested deeper") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) { w.add_i32s("tokenizer.ggml.bos_token_id_list", {1}); w.add_u32("tokenizer.ggml.bos_token_id", 99); };
  CHECK(err(s).find("'tokenizer.ggml.bos_token_id': id 99 is outside the vocabulary") != std::string::npos);
  s = {};
  s.drop = {"tokenizer.ggml.tokens"};
  CHECK(err(s).find("tokenizer.ggml.tokens") != std::string::npos);
}

TEST_CASE("GGUF tensor defects are named", "[gguf]") {
  t::TempDir dir;
  auto err = [&](Spec s) { return load_error(make_file(s), dir); };
  Spec s;
  s.drop = {"blk.0.ffn_up.weight"};
  CHECK(err(s).find("tensor 'blk.0.ffn_up.weight' is missing") != std::string::npos);
  s = {};
  s.q_rows = 31;
  CHECK(err(s).find("tensor 'blk.0.attn_q.weight': shape [32, 31], expected [32, 32]") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) {
    w.add_tensor("rope_freqs.weight", TensorType::f32, {8}, [](std::vector<std::uint8_t>&) {});
  };
  CHECK(err(s).find("rope_freqs.weight") != std::string::npos);
  s = {};
  s.extra = [](lw::GgufWriter& w) { w.add_tensor("blk.7.attn_q.weight", TensorType::f32, {32, 32}, [](std::vector<std::uint8_t>&) {}); };
  CHECK(err(s).find("'blk.7.attn_q.weight' is not part of the llama architecture") != std::string::npos);
  // Byte-level defects in the tensor infos of a good file.
  const auto good = make_file({});
  std::vector<std::uint8_t> keep = good;
  const auto g = lw::GgufFile::parse(keep, "m").value();
  // Find the info of the first tensor: its name follows the metadata.
  const std::string name = "token_embd.weight";
  std::size_t at = 0;
  for (std::size_t i = 0; i + name.size() < good.size(); ++i) {
    if (std::memcmp(good.data() + i, name.data(), name.size()) == 0) at = i + name.size();
  }
  REQUIRE(at > 0);
  // Layout after the name: u32 n_dims, u64 ne0, u64 ne1, u32 type, u64 offset.
  auto b = good;
  put_u32(b, at, 5);
  CHECK(load_error(b, dir).find("5 dimensions") != std::string::npos);
  b = good;
  put_u64(b, at + 4, 0);
  CHECK(load_error(b, dir).find("dimension 0 is 0") != std::string::npos);
  b = good;
  put_u32(b, at + 20, 10);  // Q2_K
  CHECK(load_error(b, dir).find("tensor type id 10 is not supported") != std::string::npos);
  b = good;
  put_u32(b, at + 20, 99);
  CHECK(load_error(b, dir).find("tensor type id 99") != std::string::npos);
  b = good;
  put_u64(b, at + 24, 3);
  CHECK(load_error(b, dir).find("not a multiple of the alignment") != std::string::npos);
  b = good;
  put_u64(b, at + 24, 1ull << 40);
  CHECK(load_error(b, dir).find("runs past the end of the file") != std::string::npos);
  b = good;
  put_u64(b, at + 24, UINT64_MAX - 31);
  CHECK(load_error(b, dir).find("runs past the end of the file") != std::string::npos);
  // Every message names the file.
  CHECK(load_error(b, dir).find("m.gguf") != std::string::npos);
}

TEST_CASE("the GGUF reader decodes every metadata value type", "[gguf]") {
  lw::GgufWriter w;
  w.add_u32("a.u32", 7);
  w.add_i32("a.i32", -7);
  w.add_f32("a.f32", 1.5f);
  w.add_bool("a.bool", true);
  w.add_string("a.str", "hé");
  w.add_strings("a.strs", {"x", "", "yz"});
  w.add_f32s("a.f32s", {1.0f, -2.0f});
  w.add_i32s("a.i32s", {3, -4});
  const std::vector<std::pair<std::uint32_t, std::vector<std::uint8_t>>> raw = {
      {0, {200}}, {1, {0xFE}}, {2, {0x34, 0x12}}, {3, {0xFE, 0xFF}}, {10, {1, 0, 0, 0, 0, 0, 0, 0x80}},
      {11, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}}, {12, {0, 0, 0, 0, 0, 0, 0xF8, 0x3F}}};
  for (const auto& [type, bytes] : raw) w.add_raw("r." + std::to_string(type), type, bytes);
  // An array of two arrays (of u8 [1, 2] and of strings ["ab"]).
  w.add_raw("r.nested", 9, {9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,  // array of 2 arrays
                            0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2,
                            8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b'});
  w.set_alignment(64);
  w.add_u32("general.alignment", 64);
  const auto bytes = w.bytes();
  const auto g = lw::GgufFile::parse(bytes, "v.gguf").value();
  CHECK(g.alignment() == 64);
  CHECK(g.data_offset() % 64 == 0);
  CHECK(g.find("a.u32")->u == 7);
  CHECK(g.find("a.i32")->i == -7);
  CHECK(g.find("a.f32")->f == 1.5);
  CHECK(g.get_bool("a.bool", false).value());
  CHECK(g.get_string("a.str").value() == "hé");
  CHECK(g.find("a.strs")->strings == std::vector<std::string_view>{"x", "", "yz"});
  CHECK(*g.find("a.f32s")->number_at(1) == -2.0);
  CHECK(*g.find("a.i32s")->int_at(1) == -4);
  CHECK(g.find("r.0")->u == 200);
  CHECK(g.find("r.1")->i == -2);
  CHECK(g.find("r.2")->u == 0x1234);
  CHECK(g.find("r.3")->i == -2);
  CHECK(g.find("r.10")->u == 0x8000000000000001ull);
  CHECK(!g.find("r.10")->as_int());  // above INT64_MAX
  CHECK(g.find("r.11")->i == -1);
  CHECK(g.find("r.12")->f == 1.5);
  CHECK(g.get_int("a.u32", 0, 5).error().message.find("out of range [0, 5]") != std::string::npos);
  CHECK(g.find("r.nested")->count == 2);
  // Every value is copied byte for byte by the writer (what llamawire-convert does).
  lw::GgufWriter copy;
  for (const auto& kv : g.kvs()) copy.add_value(std::string(kv.key), kv.value);
  copy.set_alignment(64);
  CHECK(copy.bytes() == bytes);
  // A bad alignment is refused.
  lw::GgufWriter w2;
  w2.add_u32("general.alignment", 48);
  CHECK(lw::GgufFile::parse(w2.bytes(), "a.gguf").error().message.find("power of two") != std::string::npos);
}
