// The grammar engine (GBNF parsing, matching, token masks) and JSON Schema to grammar.
#include "common/grammar.hpp"
#include "common/json_schema.hpp"
#include "common/tokenizer.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cmath>
#include <random>

namespace lw = llamawire;
namespace g = llamawire::grammar;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

const lw::Tokenizer& tok512() {
  static const lw::Tokenizer tok = lw::Tokenizer::load((t::models_dir() / "tok512.bin").string(), 512).value();
  return tok;
}

std::shared_ptr<const g::TokenTrie> trie512() {
  static const auto trie = std::make_shared<const g::TokenTrie>(tok512());
  return trie;
}

std::shared_ptr<g::CompiledGrammar> compile(std::string_view text) {
  auto rules = g::parse(text);
  INFO((rules ? std::string() : rules.error().message));
  REQUIRE(rules.has_value());
  return std::make_shared<g::CompiledGrammar>(std::move(*rules), trie512());
}

// Whether the whole text is in the language.
bool matches(g::CompiledGrammar& gr, std::string_view text) {
  const auto s = gr.advance(gr.start(), text);
  return s != g::CompiledGrammar::kDead && gr.accepting(s);
}
// Whether the text can begin a sentence of the language.
bool prefix_ok(g::CompiledGrammar& gr, std::string_view text) {
  return gr.advance(gr.start(), text) != g::CompiledGrammar::kDead;
}

// The token whose text is exactly `text` (one must exist).
int token_of(const g::CompiledGrammar& gr, std::string_view text) {
  for (int id = 0; id < gr.trie().vocab_size(); ++id) {
    if (gr.trie().text(id) == text) return id;
  }
  FAIL("no token '" << std::string(text) << "'");
  return -1;
}

std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string error_of(std::string_view text) {
  const auto r = g::parse(text);
  return r ? std::string() : r.error().message;
}

}  // namespace

TEST_CASE("grammar: GBNF is parsed, and what it cannot accept is refused with a position", "[grammar]") {
  CHECK(error_of("root ::= \"a\"").empty());
  CHECK(error_of("start ::= \"a\"").find("no 'root' rule") != std::string::npos);
  CHECK(error_of("root ::= missing").find("undefined rule 'missing'") != std::string::npos);
  CHECK(error_of("root ::= root \"a\" | \"b\"").find("left-recursive") != std::string::npos);
  CHECK(error_of("root ::= x \"a\"\nx ::= \"\" | root").find("left-recursive") != std::string::npos);
  CHECK(error_of("root ::= \"abc").find("unterminated string") != std::string::npos);
  CHECK(error_of("root ::= [abc").find("unterminated character class") != std::string::npos);
  CHECK(error_of("root ::= \"\\q\"").find("unknown escape") != std::string::npos);
  CHECK(error_of("root ::= \"a\"\nroot ::= \"b\"").find("defined twice") != std::string::npos);
  CHECK(error_of("root ::= ( \"a\" ").find("expected ')'") != std::string::npos);
  CHECK(error_of("root ::= \"a\"{3,2}").find("below its minimum") != std::string::npos);
  CHECK(error_of("root ::= * \"a\"").find("nothing to repeat") != std::string::npos);
  CHECK(error_of("root ::= [z-a]").find("ends before it begins") != std::string::npos);
  const std::string e = error_of("root ::= \"a\"\n\nx ::= @");
  CHECK(e.find("line 3, column 7") != std::string::npos);
}

TEST_CASE("grammar: literals, classes, repetition, groups and alternatives match what they say", "[grammar]") {
  auto gr = compile(R"(
# a comment
root ::= greeting " " name punct?   # trailing comment
greeting ::= "hello" | "hi"
name ::= [A-Z] [a-z]+
punct ::= [.!]
)");
  CHECK(matches(*gr, "hello World"));
  CHECK(matches(*gr, "hi Bob!"));
  CHECK_FALSE(matches(*gr, "hi bob"));
  CHECK_FALSE(matches(*gr, "hi B"));
  CHECK_FALSE(matches(*gr, "hey Bob"));
  CHECK(prefix_ok(*gr, "hel"));
  CHECK_FALSE(matches(*gr, "hel"));

  auto rep = compile(R"(root ::= "a"{2} "b"{1,3} "c"{2,} ("x" | "yz")* [^q]?)");
  CHECK(matches(*rep, "aabcc"));
  CHECK(matches(*rep, "aabbbcccxyzx"));
  CHECK(matches(*rep, "aabccr"));
  CHECK_FALSE(matches(*rep, "abcc"));
  CHECK_FALSE(matches(*rep, "aabbbbcc"));
  CHECK_FALSE(matches(*rep, "aabc"));
  CHECK_FALSE(matches(*rep, "aabccq"));

  // Multi-line alternatives continue until the next "name ::=".
  auto multi = compile("root ::= \"a\"\n  | \"b\"\n  | (\n \"c\" \"d\" )\nother ::= \"z\"");
  CHECK(matches(*multi, "b"));
  CHECK(matches(*multi, "cd"));
  CHECK_FALSE(matches(*multi, "z"));

  // Escapes and Unicode, in literals and classes.
  auto uni = compile(R"(root ::= "\x41\u00e9" [\u4e00-\u9fff]+ "\n" [^\n"\\]*)");
  CHECK(matches(*uni, "A\xc3\xa9\xe4\xb8\xad\xe6\x96\x87\nfree text"));
  CHECK_FALSE(matches(*uni, "A\xc3\xa9x\n"));
  CHECK_FALSE(matches(*uni, "A\xc3\xa9\xe4\xb8\xad\n\"quoted\""));
  // A character cut in the middle is a valid prefix when it may complete to a match.
  CHECK(prefix_ok(*uni, "A\xc3\xa9\xe4"));
  CHECK_FALSE(prefix_ok(*uni, "A\xc3\xa9\xc3"));  // U+00C0..U+00FF: not in [\u4e00-\u9fff]
  CHECK_FALSE(prefix_ok(*uni, "A\xc3\xa9\xff"));  // never UTF-8
  auto dot = compile("root ::= . .");
  CHECK(matches(*dot, "\xe2\x82\xac!"));
  CHECK_FALSE(matches(*dot, "x"));
}

TEST_CASE("grammar: the token mask allows exactly the tokens that keep the output a prefix", "[grammar]") {
  LW_REQUIRE_SHARED();
  const auto& tok = tok512();
  auto gr = compile(lw::json_object_gbnf());
  // From a few states along a JSON text, every token's verdict equals the brute-force one.
  const std::string text = R"({"name": "dream", "n": [1, 2.5e3, -7], "ok": true, "x": null})";
  int checked = 0;
  for (std::size_t cut : {0u, 1u, 2u, 6u, 9u, 18u, 26u, 30u, 45u, 58u}) {
    const auto s = gr->advance(gr->start(), text.substr(0, cut));
    REQUIRE(s != g::CompiledGrammar::kDead);
    const auto bits = gr->mask(s);
    for (int id = 0; id < tok.vocab_size(); ++id) {
      const std::string& piece = gr->trie().text(id);
      const bool expect = !piece.empty() && gr->advance(s, piece) != g::CompiledGrammar::kDead;
      const bool got = ((*bits)[static_cast<std::size_t>(id) / 64] >> (id % 64)) & 1;
      if (got != expect) FAIL("cut " << cut << " token " << id << " '" << piece << "'");
      ++checked;
    }
  }
  CHECK(checked == 10 * tok.vocab_size());
  // Applied to logits: the rest is -inf, and EOS only where the text may end.
  g::Matcher m(gr);
  std::vector<float> logits(512, 1.0f);
  const int eos = tok.eos_id();
  REQUIRE(m.apply(logits, std::span<const int>(&eos, 1)));
  CHECK(std::isinf(logits[static_cast<std::size_t>(eos)]));
  CHECK(logits[static_cast<std::size_t>(token_of(*gr, "{"))] == 1.0f);
  CHECK(std::isinf(logits[static_cast<std::size_t>(token_of(*gr, "a"))]));
  for (const char* piece : {"{", "}"}) REQUIRE(m.accept(token_of(*gr, piece)));
  CHECK(m.accepting());
  std::fill(logits.begin(), logits.end(), 1.0f);
  REQUIRE(m.apply(logits, std::span<const int>(&eos, 1)));
  CHECK(logits[static_cast<std::size_t>(eos)] == 1.0f);
  CHECK_FALSE(m.accept(token_of(*gr, "a")));
}

TEST_CASE("json schema: types, properties, required, enums, arrays, nesting, refs", "[grammar][json]") {
  LW_REQUIRE_SHARED();
  const auto schema = json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 12},
      "age": {"type": "integer"},
      "score": {"type": "number"},
      "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
      "kind": {"enum": ["cat", "dog", 3, null]},
      "ok": {"type": ["boolean", "null"]},
      "pet": {"$ref": "#/$defs/pet"}
    },
    "required": ["name", "age", "kind"],
    "additionalProperties": false,
    "$defs": {"pet": {"type": "object", "properties": {"legs": {"type": "integer"}, "child": {"$ref": "#/$defs/pet"}},
                      "required": ["legs"], "additionalProperties": false}}
  })");
  const auto gbnf = lw::json_schema_to_gbnf(schema);
  INFO((gbnf ? *gbnf : gbnf.error().message));
  REQUIRE(gbnf.has_value());
  auto gr = compile(*gbnf);
  CHECK(matches(*gr, R"({"name": "Rex", "age": 3, "kind": "dog"})"));
  CHECK(matches(*gr, R"({"name":"a \"q\" \u00e9","age":-12,"score":1.5e-3,"tags":["x","y"],"kind":null,"ok":false,"pet":{"legs":4,"child":{"legs":2}}})"));
  CHECK(matches(*gr, "{\n\"name\": \"R\",\n\"age\":\t0,\n\"kind\": 3\n}"));
  CHECK_FALSE(matches(*gr, "{\n  \"name\": \"R\", \"age\": 0, \"kind\": 3}"));  // one whitespace at most
  CHECK_FALSE(matches(*gr, R"({"age": 3, "name": "Rex", "kind": "dog"})"));  // the schema's order
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "kind": "dog"})"));            // age required
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3, "kind": "cow"})"));  // not in the enum
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3.5, "kind": "dog"})"));
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3, "kind": "dog", "extra": 1})"));
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3, "tags": [], "kind": "dog"})"));
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3, "tags": ["a","b","c","d"], "kind": "dog"})"));
  CHECK_FALSE(matches(*gr, R"({"name": "thirteen chars", "age": 3, "kind": "dog"})"));
  CHECK_FALSE(matches(*gr, R"({"name": "Rex", "age": 3, "kind": "dog", "pet": {"child": {"legs": 1}}})"));

  // additionalProperties absent: more pairs may follow the listed ones.
  auto open = compile(*lw::json_schema_to_gbnf(json::parse(R"({"type":"object","properties":{"a":{"type":"integer"}}})")));
  CHECK(matches(*open, R"({"a": 1, "b": [true]})"));
  CHECK(matches(*open, R"({"b": "x"})"));
  CHECK(matches(*open, R"({})"));

  // Refused by name, with the place.
  for (const auto& [s, what] : std::vector<std::pair<const char*, const char*>>{
           {R"({"type":"object","properties":{"age":{"type":"integer","minimum":0}}})", "properties.age: minimum is not supported"},
           {R"({"type":"string","pattern":"^a+$"})", "pattern is not supported"},
           {R"({"$ref":"#/components/x"})", "is not a #/$defs/"},
           {R"({"type":"object","required":["b"],"properties":{"a":{}}})", "required names 'b'"},
           {R"({"type":"frog"})", "unknown type 'frog'"}}) {
    const auto r = lw::json_schema_to_gbnf(json::parse(s));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(what) != std::string::npos);
  }
}

TEST_CASE("json schema: random walks of the grammar give JSON that parses and validates", "[grammar][json]") {
  LW_REQUIRE_SHARED();
  const auto& tok = tok512();
  const auto schema = json::parse(R"({"type":"object","properties":{
      "title":{"type":"string","maxLength":6},"n":{"type":"integer"},"list":{"type":"array","items":{"type":"number"},"maxItems":3},
      "mood":{"enum":["calm","wild"]}},"required":["title","n","mood"],"additionalProperties":false})");
  auto gr = compile(*lw::json_schema_to_gbnf(schema));
  std::mt19937 rng(7);
  const int eos = tok.eos_id();
  int finished = 0;
  for (int run = 0; run < 40; ++run) {
    g::Matcher m(gr);
    std::string out;
    for (int step = 0; step < 200; ++step) {
      std::vector<float> logits(static_cast<std::size_t>(tok.vocab_size()));
      for (auto& v : logits) v = std::uniform_real_distribution<float>(0, 1)(rng);
      REQUIRE(m.apply(logits, std::span<const int>(&eos, 1)));
      const int best = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (best == eos) break;
      REQUIRE(m.accept(best));
      out += gr->trie().text(best);
    }
    if (!m.accepting()) continue;  // a run the step limit cut
    ++finished;
    INFO(out);
    const auto v = json::parse(out).as_object();
    CHECK(code_points(v.at("title").as_string()) <= 6);
    CHECK(v.at("n").is_int64());
    CHECK((v.at("mood") == "calm" || v.at("mood") == "wild"));
    if (const auto* l = v.if_contains("list")) CHECK(l->as_array().size() <= 3);
  }
  CHECK(finished > 10);
}
