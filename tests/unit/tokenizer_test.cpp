#include "common/tokenizer.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <random>

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

namespace {

// llama2.c's merge loop as written there (a full rescan per merge, quadratic): the oracle
// for the heap-based merge of Tokenizer::encode.
std::vector<int> reference_encode(const lw::Tokenizer& tok, std::string_view text, bool bos) {
  std::vector<int> tokens;
  if (bos) tokens.push_back(lw::kBosToken);
  auto lookup = [&](std::string_view s) {
    for (int i = 0; i < tok.vocab_size(); ++i) {
      if (tok.piece(i) == s) return i;
    }
    return -1;
  };
  if (!text.empty()) {
    const int sp = lookup(" ");
    if (sp >= 0) tokens.push_back(sp);
  }
  std::string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int id = lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (unsigned char b : buf) tokens.push_back(b + 3 < tok.vocab_size() ? b + 3 : 0);
    }
    buf.clear();
  }
  for (;;) {
    float best_score = -1e10f;
    int best_id = -1, best_idx = -1;
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
      const std::string merged = std::string(tok.piece(tokens[i])) + std::string(tok.piece(tokens[i + 1]));
      const int id = lookup(merged);
      if (id != -1 && tok.score(id) > best_score) {
        best_score = tok.score(id);
        best_id = id;
        best_idx = static_cast<int>(i);
      }
    }
    if (best_idx == -1) break;
    tokens[static_cast<std::size_t>(best_idx)] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  return tokens;
}

std::string random_text(std::mt19937& rng, std::size_t n, const std::string& alphabet) {
  std::string s;
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  while (s.size() < n) s += alphabet[pick(rng)];
  return s;
}

}  // namespace

TEST_CASE("tokenizer heap merge equals llama2.c's full rescan on random texts", "[tokenizer]") {
  LW_REQUIRE_SHARED();
  const auto tok = lw::Tokenizer::load((t::models_dir() / "tok512.bin").string()).value();
  std::mt19937 rng(7);
  const std::string alphabet = "abcdeilmnorst   ,.\n\xC3\xA9";
  for (int i = 0; i < 60; ++i) {
    const std::string text = random_text(rng, 1 + static_cast<std::size_t>(i) * 7, alphabet);
    INFO(text);
    CHECK(tok.encode(text, i % 2 == 0, false) == reference_encode(tok, text, i % 2 == 0));
  }
  // Ties everywhere: every merge has the same score, so only the leftmost rule decides.
  std::vector<std::pair<float, std::string>> v{{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}};
  for (int b = 0; b < 256; ++b) v.push_back({0, "<0x00>"});
  for (const char* p : {" ", "a", "b", "aa", "ab", "ba", "bb", "aaa", "aab", "abab", " a", " b", "aaaa"}) v.push_back({1.0f, p});
  const auto bytes = make_tokenizer(8, v);
  const auto ties = lw::Tokenizer::parse(bytes, "ties").value();
  for (int i = 0; i < 80; ++i) {
    const std::string text = random_text(rng, 1 + static_cast<std::size_t>(i), "ab ");
    INFO(text);
    CHECK(ties.encode(text, true, false) == reference_encode(ties, text, true));
  }
}

TEST_CASE("tokenizer encodes a megabyte in well under a second, and bounds token counts from below", "[tokenizer]") {
  LW_REQUIRE_SHARED();
  const auto tok = lw::Tokenizer::load((t::models_dir() / "tokenizer.bin").string(), 32000).value();
  std::mt19937 rng(3);
  std::string text;
  const std::vector<std::string> words{"Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily",
                                       "日本", "ça", "\n", "42", "the", "dog"};
  while (text.size() < (1u << 20)) text += words[rng() % words.size()] + " ";
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, true, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("encoded " << text.size() << " bytes into " << ids.size() << " tokens in " << secs << " s");
  CHECK(ids.size() >= tok.min_encoded_tokens(text.size(), true, false));
  for (const std::string s : {"", "a", "Once upon a time", "\xE6\x97\xA5\xE6\x97\xA5", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}) {
    CHECK(tok.encode(s, true, true).size() >= tok.min_encoded_tokens(s.size(), true, true));
  }
}
