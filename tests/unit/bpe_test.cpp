// Byte-level BPE: the Llama-3 vocabulary (a vocabulary-only GGUF file written from
// tests/data/llama3) against the ids two independent reference tokenizers give
// (tests/data/llama3/cases.jsonl), the pre-tokenizer rules, ill-formed UTF-8, decoding.
#include "common/bpe.hpp"
#include "common/tokenizer.hpp"
#include "common/unicode.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <random>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

std::string unhex(std::string_view h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return out;
}

// The vocabulary-only file's vocabulary, as the server reads a GGUF file's.
const lw::Vocab& llama3_vocab() {
  static const lw::Vocab v = [] {
    const auto bytes = t::read_bytes(t::llama3_vocab_gguf());
    auto g = lw::GgufFile::parse(bytes, "llama3-vocab.gguf").value();
    return lw::read_gguf_vocab(g, 0).value();
  }();
  return v;
}

const lw::Tokenizer& llama3() {
  static const lw::Tokenizer tok = lw::Tokenizer::from_vocab(llama3_vocab(), "llama3").value();
  return tok;
}

std::string decode_all(const lw::Tokenizer& tok, const std::vector<int>& ids) {
  std::string s;
  int prev = -1;
  for (const int id : ids) {
    s += tok.decode(prev, id);
    prev = id;
  }
  return s;
}

// The words of a text under a pre-tokenizer, as strings.
std::vector<std::string> words(lw::bpe::PreTokenizer p, std::string_view text) {
  const auto cps = lw::unicode::decode_utf8(text);
  std::vector<lw::bpe::Range> r;
  lw::bpe::split_words(p, cps, r);
  std::vector<std::string> out;
  for (const auto& [b, e] : r) {
    std::string w;
    for (auto k = b; k < e; ++k) lw::unicode::append_utf8(cps[k], w);
    out.push_back(w);
  }
  return out;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("bpe: the Llama-3 vocabulary encodes every reference case as both references do", "[bpe]") {
  const lw::Tokenizer& tok = llama3();
  REQUIRE(tok.kind() == lw::VocabKind::bpe);
  REQUIRE(tok.vocab_size() == 128256);
  CHECK(tok.bos_id() == 128000);
  CHECK(tok.add_bos());
  const auto cases = t::read_jsonl(t::llama3_cases());
  REQUIRE(cases.size() >= 200);
  int failures = 0;
  for (const auto& c : cases) {
    const std::string name(c.at("name").as_string());
    const std::string text = unhex(c.at("hex").as_string());
    const bool special = c.at("special").as_bool();
    std::vector<int> want;
    for (const auto& v : c.at("ids").as_array()) want.push_back(static_cast<int>(v.as_int64()));
    const auto got = tok.encode(text, false, false, special);
    if (got != want) ++failures;
    INFO(name);
    CHECK(got == want);
    // Decoding gives back what the reference decodes (control tokens print nothing), and
    // for well-formed text without special tokens, the text itself.
    CHECK(decode_all(tok, want) == unhex(c.at("decoded_hex").as_string()));
    if (!special && name.rfind("invalid", 0) != 0) CHECK(decode_all(tok, want) == text);
  }
  CHECK(failures == 0);
}

TEST_CASE("bpe: every pre-tokenizer gives llama.cpp's ids on the same vocabulary", "[bpe]") {
  // tests/data/llama3/llamacpp-cases.jsonl: llama-tokenize (c392e50) on the Llama-3
  // vocabulary with tokenizer.ggml.pre set to each name, BOS first, no special parsing.
  const auto cases = t::read_jsonl(t::llama3_cases().parent_path() / "llamacpp-cases.jsonl");
  std::map<std::string, int> per_pre;
  for (const std::string pre : {"llama-bpe", "smollm", "gpt-2"}) {
    lw::Vocab v = llama3_vocab();
    v.pre = pre;
    const auto tok = lw::Tokenizer::from_vocab(std::move(v), pre).value();
    for (const auto& c : cases) {
      if (c.at("pre").as_string() != pre) continue;
      const std::string text = unhex(c.at("hex").as_string());
      std::vector<int> want;
      for (const auto& x : c.at("ids").as_array()) want.push_back(static_cast<int>(x.as_int64()));
      INFO(pre << ": " << text);
      CHECK(tok.encode(text, true, false, false) == want);
      ++per_pre[pre];
    }
  }
  CHECK(per_pre["llama-bpe"] >= 200);
  CHECK(per_pre["smollm"] >= 200);
  CHECK(per_pre["gpt-2"] >= 200);
}

TEST_CASE("bpe: BOS, special tokens only when asked, and <|eot_id|> ends a turn", "[bpe]") {
  const lw::Tokenizer& tok = llama3();
  CHECK(tok.encode("Hello", true, false) == std::vector<int>{128000, 9906});
  const int eot = tok.find("<|eot_id|>");
  REQUIRE(eot == 128009);
  CHECK(tok.type(eot) == lw::TokenType::control);
  CHECK(tok.encode("<|eot_id|>", false, false, true) == std::vector<int>{eot});
  const auto literal = tok.encode("<|eot_id|>", false, false, false);
  CHECK(literal.size() > 1);
  CHECK(decode_all(tok, literal) == "<|eot_id|>");
  CHECK(tok.decode(-1, eot).empty());  // control tokens print nothing
  CHECK(tok.special().ends_turn(eot));
  CHECK(tok.special().ends_turn(tok.find("<|end_of_text|>")));
  CHECK_FALSE(tok.special().ends_turn(tok.find("<|start_header_id|>")));
}

TEST_CASE("bpe: the pre-tokenizer rules, word by word", "[bpe]") {
  using lw::bpe::PreTokenizer;
  CHECK(words(PreTokenizer::llama3, "Hello world") == V{"Hello", " world"});
  CHECK(words(PreTokenizer::llama3, "I'LL don't") == V{"I", "'LL", " don", "'t"});
  CHECK(words(PreTokenizer::llama3, "12345") == V{"123", "45"});
  CHECK(words(PreTokenizer::llama3, "a  b") == V{"a", " ", " b"});
  CHECK(words(PreTokenizer::llama3, "x \n\n y") == V{"x", " \n\n", " y"});
  CHECK(words(PreTokenizer::llama3, "end   ") == V{"end", "   "});
  CHECK(words(PreTokenizer::llama3, "(ok)!!\n\nz") == V{"(ok", ")!!\n\n", "z"});
  CHECK(words(PreTokenizer::llama3, "\tword") == V{"\tword"});
  CHECK(words(PreTokenizer::gpt2, "I'LL 123456 ok") == V{"I", "'", "LL", " 123456", " ok"});
  CHECK(words(PreTokenizer::gpt2, "a  b") == V{"a", " ", " b"});
  CHECK(words(PreTokenizer::smollm, "abc 123 x") == V{"abc", " ", "1", "2", "3", " x"});
  CHECK(words(PreTokenizer::smollm, "v1.25") == V{"v", "1", ".", "2", "5"});
  // Every code point belongs to exactly one word, in order, on random input.
  std::mt19937 rng(7);
  const std::vector<std::string> pool{"a", "Z", "é", "中", "7", "٣", " ", "  ", "\n", "\r", "\t", "'", "'s", ".", "😀", "\xc2\xa0"};
  for (int i = 0; i < 500; ++i) {
    std::string s;
    for (int k = 0; k < 20; ++k) s += pool[rng() % pool.size()];
    for (const auto p : {PreTokenizer::llama3, PreTokenizer::gpt2, PreTokenizer::smollm}) {
      std::string joined;
      for (const auto& w : words(p, s)) {
        CHECK_FALSE(w.empty());
        joined += w;
      }
      CHECK(joined == s);
    }
  }
}

TEST_CASE("bpe: ill-formed UTF-8 is read as the WHATWG decoder reads it", "[bpe]") {
  using lw::unicode::decode_utf8;
  const char32_t R = lw::unicode::kReplacement;
  CHECK(decode_utf8("\xe2\x82\x41") == std::vector<char32_t>{R, 'A'});
  CHECK(decode_utf8("\xc0\x80") == std::vector<char32_t>{R, R});
  CHECK(decode_utf8("\xf0\x9f\x98") == std::vector<char32_t>{R});
  CHECK(decode_utf8("\xed\xa0\x80") == std::vector<char32_t>{R, R, R});
  CHECK(decode_utf8("\xf4\x90\x80\x80") == std::vector<char32_t>{R, R, R, R});
  CHECK(decode_utf8("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80") == std::vector<char32_t>{'a', 0xE9, 0x4E2D, 0x1F600});
  CHECK(lw::bpe::byte_to_symbol(' ') == "\xc4\xa0");   // Ġ
  CHECK(lw::bpe::byte_to_symbol('\n') == "\xc4\x8a");  // Ċ
  CHECK(lw::bpe::byte_to_symbol('a') == "a");
  for (int b = 0; b < 256; ++b) {
    CHECK(lw::bpe::symbols_to_bytes(lw::bpe::byte_to_symbol(static_cast<unsigned char>(b))) ==
          std::string(1, static_cast<char>(b)));
  }
}

TEST_CASE("bpe: a bad vocabulary is refused with a clear message", "[bpe]") {
  lw::Vocab v;
  v.kind = lw::VocabKind::bpe;
  v.pre = "llama-bpe";
  for (int b = 0; b < 256; ++b) v.pieces.emplace_back(lw::bpe::byte_to_symbol(static_cast<unsigned char>(b)));
  v.scores.assign(v.pieces.size(), 0.0f);
  v.special = {};
  v.special.unk = -1;
  v.special.bos = 0;
  v.special.eos = 1;
  v.merges = {"a b"};  // the merged piece is not a token: never applies
  CHECK(lw::Tokenizer::from_vocab(v, "ok").has_value());
  auto bad_pre = v;
  bad_pre.pre = "qwen2";
  const auto e1 = lw::Tokenizer::from_vocab(bad_pre, "v");
  REQUIRE_FALSE(e1.has_value());
  CHECK_THAT(e1.error().message, Catch::Contains("pre-tokenizer 'qwen2' is not supported"));
  auto bad_merge = v;
  bad_merge.merges = {"nospace"};
  const auto e2 = lw::Tokenizer::from_vocab(bad_merge, "v");
  REQUIRE_FALSE(e2.has_value());
  CHECK_THAT(e2.error().message, Catch::Contains("merge 0"));
  auto no_byte = v;
  no_byte.pieces[65] = "zz";
  const auto e3 = lw::Tokenizer::from_vocab(no_byte, "v");
  REQUIRE_FALSE(e3.has_value());
  CHECK_THAT(e3.error().message, Catch::Contains("no token for byte 65"));
}

TEST_CASE("bpe: 1 MB of English text encodes in well under a second, and decodes back", "[bpe]") {
  const lw::Tokenizer& tok = llama3();
  std::string text;
  std::mt19937 rng(11);
  const std::vector<std::string> words{"the", "a", "little", "girl", "named", "Lily", "went", "to", "park", "and",
                                       "saw", "big", "dog", "It", "was", "happy", "day", "She", "liked", "play",
                                       "with", "her", "friends", "because", "they", "were", "kind", "Once", "upon", "time"};
  while (text.size() < (1u << 20)) {
    text += words[rng() % words.size()];
    const unsigned r = rng() % 16;
    text += r == 0 ? ". " : r == 1 ? ", " : r == 2 ? "\n\n" : " ";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, true, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("1 MiB encodes to " << ids.size() << " tokens in " << s << " s");
  CHECK(decode_all(tok, ids) == text);
}

TEST_CASE("bpe: llamawire-tokenize reads a vocabulary-only GGUF file as llama-tokenize --ids prints", "[bpe][tools]") {
  const auto r = t::run_process({(t::bin_dir() / "llamawire-tokenize").string(), "-z", t::llama3_vocab_gguf().string(),
                                 "Hello world<|eot_id|>"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "[128000, 9906, 1917, 128009]\n");
  const auto plain = t::run_process({(t::bin_dir() / "llamawire-tokenize").string(), "-z", t::llama3_vocab_gguf().string(),
                                     "--no-parse-special", "<|eot_id|>"});
  CHECK(plain.out == "[128000, 27, 91, 68, 354, 851, 91, 29]\n");
}
