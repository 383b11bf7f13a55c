#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

void set_i32(std::vector<std::uint8_t>& b, std::size_t offset, std::int32_t v) { std::memcpy(b.data() + offset, &v, 4); }

// Loads `bytes` as a checkpoint file and expects an error naming the file and `fragment`.
void expect_bad(const t::TempDir& dir, const std::string& name, const std::vector<std::uint8_t>& bytes,
                const std::string& fragment) {
  const auto path = (dir / name).string();
  t::write_bytes(path, bytes);
  const auto r = lw::WeightStore::load(path);
  INFO(name);
  REQUIRE_FALSE(r.has_value());
  INFO(r.error().message);
  CHECK(r.error().code == lw::make_error_code(lw::errc::bad_checkpoint));
  CHECK(r.error().message.rfind(path + ": ", 0) == 0);
  CHECK(r.error().message.find(fragment) != std::string::npos);
  CHECK(r.error().message.find('\n') == std::string::npos);
}

// Same shape and the same value at every (row, column), whatever either layout is.
bool same_matrix(const lw::Matrix& a, const lw::Matrix& b) {
  if (a.rows != b.rows || a.cols != b.cols) return false;
  std::vector<float> ra(static_cast<std::size_t>(a.cols)), rb(ra.size());
  for (int i = 0; i < a.rows; ++i) {
    a.copy_row(i, ra.data());
    b.copy_row(i, rb.data());
    if (std::memcmp(ra.data(), rb.data(), ra.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("weight store loads the test checkpoints with their shapes", "[model]") {
  LW_REQUIRE_SHARED();
  const auto mha = lw::WeightStore::load((t::models_dir() / "tiny_mha.bin").string()).value();
  CHECK(mha->config().dim == 64);
  CHECK(mha->config().n_layers == 2);
  CHECK(mha->config().shared_classifier);
  CHECK(mha->classifier().f32 != nullptr);
  {
    // Shared classifier: the embedding row is the classifier's row, whatever the layout.
    std::vector<float> row(64), scratch(64);
    mha->classifier().copy_row(5, row.data());
    const float* emb = mha->embedding_row(5, scratch.data());
    CHECK(std::equal(row.begin(), row.end(), emb));
  }
  const auto gqa = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string()).value();
  CHECK(gqa->config().n_heads == 6);
  CHECK(gqa->config().n_kv_heads == 2);
  CHECK(gqa->config().kv_dim() == 32);
  CHECK(gqa->config().vocab_size == 512);
  CHECK_FALSE(gqa->config().shared_classifier);
  const auto v1 = lw::WeightStore::load((t::models_dir() / "tiny_gqa_v1.bin").string()).value();
  CHECK(v1->header().format == lw::CheckpointFormat::v1_f32);
  CHECK_FALSE(v1->config().shared_classifier);
  const auto q8 = lw::WeightStore::load((t::models_dir() / "aidreams260K_q80.bin").string()).value();
  CHECK(q8->header().format == lw::CheckpointFormat::v2_q8);
  CHECK(q8->weight_type() == lw::WeightType::q8_0);
  CHECK(q8->group_size() == 4);
  // The same weights through both layouts: tensors must be identical.
  const auto legacy = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string()).value();
  const auto& c = legacy->config();
  CHECK(same_matrix(legacy->layer(2).w2, v1->layer(2).w2));
  CHECK(same_matrix(legacy->classifier(), v1->classifier()));
  CHECK(std::memcmp(legacy->rms_final(), v1->rms_final(), sizeof(float) * c.dim) == 0);
}

TEST_CASE("weight store reads or maps the same tensors", "[model]") {
  LW_REQUIRE_SHARED();
  lw::WeightStore::Options o;
  o.load = lw::WeightStore::Load::mmap;
  const auto mapped = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string(), o).value();
  const auto read = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string()).value();
  const auto& c = read->config();
  // A read copy is rearranged into panels (tiny_gqa: dim 96, hidden 256, vocab 512, and
  // kv_dim 32 are all whole panels); a mapping stays row-major. Same values either way.
  CHECK_FALSE(mapped->layer(1).w1.panels);
  CHECK(read->layer(1).w1.panels);
  CHECK(read->classifier().panels);
  CHECK(same_matrix(mapped->layer(1).w1, read->layer(1).w1));
  CHECK(same_matrix(mapped->layer(0).wk, read->layer(0).wk));
  CHECK(same_matrix(mapped->classifier(), read->classifier()));
  CHECK(std::memcmp(mapped->rms_final(), read->rms_final(), sizeof(float) * c.dim) == 0);
  CHECK(mapped->resident_bytes() == read->resident_bytes());
}

TEST_CASE("weight store quantizes f32 files at load into one Q8_0 copy", "[model]") {
  LW_REQUIRE_SHARED();
  lw::WeightStore::Options o;
  o.weights = lw::WeightType::q8_0;
  const auto q = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string(), o).value();
  CHECK(q->weight_type() == lw::WeightType::q8_0);
  CHECK(q->group_size() == 32);  // 64 does not divide dim 96
  const auto f = lw::WeightStore::load((t::models_dir() / "tiny_gqa.bin").string()).value();
  // Only the Q8_0 copy and the norm vectors stay: the float32 source is gone after load.
  CHECK(q->resident_bytes() < f->resident_bytes() / 3);
  const int D = f->config().dim;
  CHECK(std::memcmp(q->rms_final(), f->rms_final(), sizeof(float) * static_cast<std::size_t>(D)) == 0);
  CHECK(std::memcmp(q->layer(1).rms_ffn, f->layer(1).rms_ffn, sizeof(float) * static_cast<std::size_t>(D)) == 0);
  // Dequantized values are within half a step of the originals.
  const auto& m = q->layer(0).wq;
  const auto& mf = f->layer(0).wq;
  std::vector<float> row(static_cast<std::size_t>(mf.cols));
  for (int r = 0; r < m.rows; ++r) {
    mf.copy_row(r, row.data());
    for (int j = 0; j < m.cols; ++j) {
      const int i = r * m.cols + j;
      const float scale = m.q8.s[i / m.q8.group];
      REQUIRE(std::abs(m.q8.q[i] * scale - row[static_cast<std::size_t>(j)]) <= scale * 0.5f + 1e-7f);
    }
  }
}

TEST_CASE("malformed checkpoints give one clear line naming the file", "[model]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  const auto good = t::read_bytes(t::models_dir() / "tiny_mha.bin");
  expect_bad(dir, "empty.bin", {}, "file too short");
  expect_bad(dir, "short-header.bin", std::vector<std::uint8_t>(good.begin(), good.begin() + 10), "file too short");
  expect_bad(dir, "truncated.bin", std::vector<std::uint8_t>(good.begin(), good.end() - 100), "100 bytes missing");
  auto extra = good;
  extra.resize(extra.size() + 12);
  expect_bad(dir, "extra.bin", extra, "12 extra bytes");

  struct FieldCase {
    const char* name;
    int field;
    std::int32_t value;
    const char* fragment;
  };
  const FieldCase cases[] = {
      {"dim0.bin", 0, 0, "dim = 0 out of range"},
      {"dimneg.bin", 0, -64, "dim = -64 out of range"},
      {"hidden0.bin", 1, 0, "hidden_dim = 0"},
      {"layers-huge.bin", 2, 1 << 30, "n_layers = 1073741824 out of range"},
      {"heads0.bin", 3, 0, "n_heads = 0"},
      {"heads3.bin", 3, 3, "not a multiple of n_heads 3"},
      {"kvheads3.bin", 4, 3, "n_heads 4 is not a multiple of n_kv_heads 3"},
      {"kvheads-neg.bin", 4, -4, "n_kv_heads = -4"},
      {"oddhead.bin", 3, 64, "head size 1 is odd"},
      {"vocab-huge.bin", 5, 0x7fffffff, "vocab_size = 2147483647 out of range"},
      {"vocab-min.bin", 5, INT32_MIN, "vocab_size -2147483648 out of range"},
      {"vocab0.bin", 5, 0, "vocab_size = 0"},
      {"seq-huge.bin", 6, 1 << 28, "seq_len = 268435456 out of range"},
      {"seq-neg.bin", 6, -1, "seq_len = -1"},
      {"grow.bin", 1, 100000, "bytes missing"},
  };
  for (const auto& c : cases) {
    auto b = good;
    set_i32(b, static_cast<std::size_t>(c.field) * 4, c.value);
    expect_bad(dir, c.name, b, c.fragment);
  }

  // Export headers: unsupported version, bad flag, bad group size.
  std::vector<std::uint8_t> v1 = t::read_bytes(t::models_dir() / "tiny_gqa_v1.bin");
  auto badver = v1;
  set_i32(badver, 4, 9);
  expect_bad(dir, "v9.bin", badver, "unsupported export version 9");
  auto badflag = v1;
  badflag[36] = 7;
  expect_bad(dir, "flag.bin", badflag, "shared_classifier flag is 7");
  auto q8 = t::read_bytes(t::models_dir() / "tiny_gqa_q80.bin");
  auto badgs = q8;
  set_i32(badgs, 37, 0);
  expect_bad(dir, "gs0.bin", badgs, "group_size 0");
  auto oddgs = q8;
  set_i32(oddgs, 37, 7);
  expect_bad(dir, "gs7.bin", oddgs, "group_size 7");
  expect_bad(dir, "v1-short.bin", std::vector<std::uint8_t>(v1.begin(), v1.begin() + 100), "256-byte export header");

  const auto missing = lw::WeightStore::load((dir / "nope.bin").string());
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message.find("cannot open") != std::string::npos);
  const auto directory = lw::WeightStore::load(dir.path().string());
  REQUIRE_FALSE(directory.has_value());
  CHECK(directory.error().message.find("not a regular file") != std::string::npos);
}
