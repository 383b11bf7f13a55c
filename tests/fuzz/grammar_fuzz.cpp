// libFuzzer: the grammar engine and JSON Schema to grammar, both fed by requests. The input
// is read three ways: as GBNF (parsed; when it parses, compiled over a small vocabulary,
// walked along the input's own bytes with each state's mask taken), and as a JSON Schema
// (when the converter accepts it, its grammar must parse: the converter never writes a
// grammar the parser refuses).
#include "common/grammar.hpp"
#include "common/json_schema.hpp"
#include "common/tokenizer.hpp"

#include <boost/json.hpp>

#include <cstdlib>

namespace {

const llamawire::Tokenizer& tokenizer() {
  // A small vocabulary: the three specials, a space, printable ASCII, some pairs, and a
  // byte of a UTF-8 character.
  static const llamawire::Tokenizer tok = [] {
    std::vector<std::uint8_t> b;
    auto put = [&](const void* p, std::size_t n) {
      b.insert(b.end(), static_cast<const std::uint8_t*>(p), static_cast<const std::uint8_t*>(p) + n);
    };
    const std::int32_t max_len = 8;
    put(&max_len, 4);
    std::vector<std::string> pieces{"<unk>", "<s>", "</s>", " ", "\xc3", "\xa9", "\": ", "{\"", "ab", "12"};
    for (char c = 33; c < 127; ++c) pieces.emplace_back(1, c);
    for (const auto& p : pieces) {
      const float score = 0;
      const auto len = static_cast<std::int32_t>(p.size());
      put(&score, 4);
      put(&len, 4);
      put(p.data(), p.size());
    }
    return llamawire::Tokenizer::parse(b, "fuzz tokenizer").value();
  }();
  return tok;
}

void walk(const std::string& gbnf, std::string_view bytes) {
  namespace g = llamawire::grammar;
  auto rules = g::parse(gbnf);
  if (!rules) return;
  static const auto trie = std::make_shared<const g::TokenTrie>(tokenizer());
  g::CompiledGrammar gr(std::move(*rules), trie);
  auto s = gr.start();
  for (std::size_t i = 0; i < bytes.size() && i < 64 && s != g::CompiledGrammar::kDead; ++i) {
    (void)gr.mask(s);
    (void)gr.accepting(s);
    s = gr.advance(s, bytes.substr(i, 1));
    if (gr.states() > 20000) break;  // a grammar whose states explode: bounded here
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  walk(std::string(input), input);
  boost::system::error_code ec;
  const auto schema = boost::json::parse(input, ec);
  if (!ec) {
    const auto gbnf = llamawire::json_schema_to_gbnf(schema);
    if (gbnf) {
      if (!llamawire::grammar::parse(*gbnf)) std::abort();  // the converter wrote a grammar the parser refuses
      walk(*gbnf, "{\"a\": [1, \"x\"], \"b\": null}");
    }
  }
  return 0;
}
