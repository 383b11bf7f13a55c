#include "common/tokenizer.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <map>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

std::vector<std::uint8_t> make_tokenizer(int max_len, const std::vector<std::pair<float, std::string>>& toks) {
  std::vector<std::uint8_t> b;
  auto put = [&](const void* p, std::size_t n) {
    b.insert(b.end(), static_cast<const std::uint8_t*>(p), static_cast<const std::uint8_t*>(p) + n);
  };
  put(&max_len, 4);
  for (const auto& [score, s] : toks) {
    const auto len = static_cast<std::int32_t>(s.size());
    put(&score, 4);
    put(&len, 4);
    put(s.data(), s.size());
  }
  return b;
}

}  // namespace

TEST_CASE("tokenizer reproduces golden/tokenizer.jsonl for both tokenizers", "[tokenizer]") {
  LW_REQUIRE_SHARED();
  std::map<std::string, lw::Tokenizer> toks;
  int checked = 0;
  for (const auto& c : t::read_jsonl(t::golden_dir() / "tokenizer.jsonl")) {
    const std::string name(c.at("tokenizer").as_string());
    if (!toks.count(name)) toks.emplace(name, lw::Tokenizer::load((t::models_dir() / name).string()).value());
    const std::string text(c.at("text").as_string());
    std::vector<int> expected;
    for (const auto& v : c.at("ids").as_array()) expected.push_back(static_cast<int>(v.as_int64()));
    INFO(name << ": \"" << text << "\"");
    CHECK(toks.at(name).encode(text, true, false) == expected);
    ++checked;
  }
  CHECK(checked == 40);
  CHECK(toks.size() == 2);
}

TEST_CASE("tokenizer decode follows llama2.c", "[tokenizer]") {
  LW_REQUIRE_SHARED();
  const auto tok = lw::Tokenizer::load((t::models_dir() / "tokenizer.bin").string(), 32000).value();
  CHECK(tok.vocab_size() == 32000);
  // Leading space stripped after BOS only.
  CHECK(tok.decode(lw::kBosToken, 9038) == "Once");
  CHECK(tok.decode(9038, 2501) == " upon");
  // <0x0A> is the newline byte; <0xE4> a raw byte that safe-printing drops.
  CHECK(tok.decode(5, 13) == "\n");
  CHECK(tok.decode(5, 0xE4 + 3).size() == 1);
  CHECK(static_cast<unsigned char>(tok.decode(5, 0xE4 + 3)[0]) == 0xE4);
  CHECK(lw::printable_piece(tok.decode(5, 0xE4 + 3)).empty());
  CHECK(lw::printable_piece(tok.decode(5, 13)) == "\n");
  // Out-of-range ids decode to nothing instead of reading out of bounds.
  CHECK(tok.decode(5, 32000).empty());
  CHECK(tok.decode(5, -1).empty());
}

TEST_CASE("tokenizer encode merges by score on a hand-made vocab", "[tokenizer]") {
  // ids: 0 <unk>, 1 <s>, 2 </s>, then bytes are not present: unknown chars fall back to byte+3
  const auto bytes = make_tokenizer(5, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {0, " "}, {0, "a"}, {0, "b"},
                                        {1.0f, "ab"}, {2.0f, " a"}, {0.5f, " ab"}});
  const auto tok = lw::Tokenizer::parse(bytes, "hand").value();
  // " a" (score 2) merges before "ab" (score 1); then " a"+"b" -> " ab".
  CHECK(tok.encode("ab", true, false) == std::vector<int>{1, 8});
  CHECK(tok.encode("", true, true) == std::vector<int>{1, 2});
  CHECK(tok.encode("", false, false).empty());
}

TEST_CASE("malformed tokenizer files give a clear error", "[tokenizer]") {
  const auto good = make_tokenizer(5, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {0, " "}, {-1, "hello"}});
  REQUIRE(lw::Tokenizer::parse(good, "good.bin", 5).has_value());

  auto expect_error = [](const std::vector<std::uint8_t>& b, int vocab, const std::string& fragment) {
    const auto r = lw::Tokenizer::parse(b, "bad.bin", vocab);
    REQUIRE_FALSE(r.has_value());
    INFO(r.error().message);
    CHECK(r.error().code == lw::make_error_code(lw::errc::bad_tokenizer));
    CHECK(r.error().message.rfind("bad.bin: ", 0) == 0);
    CHECK(r.error().message.find(fragment) != std::string::npos);
    CHECK(r.error().message.find('\n') == std::string::npos);
  };
  expect_error({}, -1, "no max_token_length");
  expect_error(make_tokenizer(0, {}), -1, "max_token_length 0");
  expect_error(make_tokenizer(-3, {}), -1, "max_token_length -3");
  for (std::size_t cut : {std::size_t{6}, std::size_t{9}, good.size() - 2}) {
    expect_error(std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<long>(cut)), -1, "truncated");
  }
  expect_error(good, 6, "holds 5 tokens but the model's vocab_size is 6");
  expect_error(good, 4, "vocab size differs");
  expect_error(make_tokenizer(3, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}}), -1, "length 5");
  auto neg = good;
  const std::int32_t minus = -7;
  std::memcpy(neg.data() + 8, &minus, 4);  // first token's length
  expect_error(neg, -1, "length -7");
  auto nan = good;
  const float not_a_number = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan.data() + 4, &not_a_number, 4);
  expect_error(nan, -1, "non-finite score");
  expect_error(make_tokenizer(5, {{0, "<unk>"}}), -1, "at least");

  const auto missing = lw::Tokenizer::load("/nonexistent/tok.bin");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message.find("/nonexistent/tok.bin") != std::string::npos);
}

TEST_CASE("byte fallback never yields an id past a small vocabulary (fuzz regression)", "[tokenizer]") {
  const auto bytes = make_tokenizer(5, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {0, " "}, {0, "a"}});
  const auto tok = lw::Tokenizer::parse(bytes, "small").value();
  for (const int id : tok.encode("a\xff zq\xc3\xa9", true, true)) {
    CHECK(id >= 0);
    CHECK(id < tok.vocab_size());
  }
}
