// llamawire-bench-grammar: what constrained decoding costs per token. A vocabulary (a
// llama2.c tokenizer.bin, or a GGUF file's) is walked through a JSON document under a JSON
// Schema's grammar, as a generation would: at each step the token mask is taken and
// applied to a vector of logits, then the longest allowed token that continues the
// document is accepted. The same document is generated twice on one compiled grammar: the
// first time each state's mask is computed (a walk of the vocabulary's trie), the second
// time the masks come from the cache, as for every later request with the same schema.
// Prints one JSON line: vocabulary size, tokens, and per-token microseconds (mean, median,
// max) of both passes.
//   llamawire-bench-grammar VOCAB [--vocab-size N (tokenizer.bin)] [--repeat R]
#include "common/grammar.hpp"
#include "common/json_schema.hpp"
#include "common/bytes.hpp"
#include "common/tokenizer.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace lw = llamawire;
namespace g = llamawire::grammar;

namespace {

lw::Tokenizer load(const std::string& path, int vocab_size) {
  if (path.size() > 5 && path.substr(path.size() - 5) == ".gguf") {
    auto bytes = lw::read_file(path, std::size_t{1} << 31);
    if (!bytes) throw std::runtime_error(bytes.error().message);
    auto gf = lw::GgufFile::parse(*bytes, path);
    if (!gf) throw std::runtime_error(gf.error().message);
    auto v = lw::read_gguf_vocab(*gf, 0);
    if (!v) throw std::runtime_error(v.error().message);
    auto t = lw::Tokenizer::from_vocab(std::move(*v), path);
    if (!t) throw std::runtime_error(t.error().message);
    return std::move(*t);
  }
  auto t = lw::Tokenizer::load(path, vocab_size);
  if (!t) throw std::runtime_error(t.error().message);
  return std::move(*t);
}

struct Pass {
  std::vector<double> us;  // per token
  std::size_t tokens = 0;
};

// One guided generation of `doc`; returns the per-token costs of mask + apply.
Pass generate(const std::shared_ptr<g::CompiledGrammar>& gr, const std::string& doc, int eos) {
  Pass p;
  g::Matcher m(gr);
  std::vector<float> logits(static_cast<std::size_t>(gr->trie().vocab_size()));
  std::size_t at = 0;
  while (at < doc.size()) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    const auto t0 = std::chrono::steady_clock::now();
    if (!m.apply(logits, std::span<const int>(&eos, 1))) throw std::runtime_error("no token allowed");
    const auto t1 = std::chrono::steady_clock::now();
    p.us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    // The longest allowed token that continues the document.
    int best = -1;
    std::size_t best_len = 0;
    for (int id = 0; id < static_cast<int>(logits.size()); ++id) {
      if (logits[static_cast<std::size_t>(id)] != 0.0f) continue;
      const std::string& text = gr->trie().text(id);
      if (text.size() > best_len && doc.compare(at, text.size(), text) == 0) {
        best = id;
        best_len = text.size();
      }
    }
    if (best < 0) throw std::runtime_error("the document cannot be written at byte " + std::to_string(at));
    if (!m.accept(best)) throw std::runtime_error("an allowed token was refused");
    at += best_len;
    ++p.tokens;
  }
  if (!m.accepting()) throw std::runtime_error("the document is not complete");
  return p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: llamawire-bench-grammar VOCAB [--vocab-size N] [--repeat R]\n");
    return 2;
  }
  int vocab_size = 32000, repeat = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--vocab-size") == 0) vocab_size = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::max(1, std::atoi(argv[i + 1]));
  }
  const lw::Tokenizer tok = load(argv[1], vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  auto trie = std::make_shared<const g::TokenTrie>(tok);
  const double trie_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto schema = boost::json::parse(R"({"type":"object","properties":{
    "name":{"type":"string"},"age":{"type":"integer"},"email":{"type":"string"},
    "tags":{"type":"array","items":{"type":"string"}},"address":{"type":"object","properties":{
      "street":{"type":"string"},"city":{"type":"string"},"zip":{"type":"string"}},"required":["street","city"],
      "additionalProperties":false},"score":{"type":"number"},"active":{"type":"boolean"}},
    "required":["name","age","tags","address","active"],"additionalProperties":false})");
  std::string doc = R"({"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "tags": ["mathematics", "poetry", )"
                    R"("engines"], "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"}, )"
                    R"("score": 99.5, "active": true})";
  auto gbnf = lw::json_schema_to_gbnf(schema);
  if (!gbnf) throw std::runtime_error(gbnf.error().message);
  auto rules = g::parse(*gbnf);
  if (!rules) throw std::runtime_error(rules.error().message);
  std::vector<double> cold, warm;
  std::size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    auto gr = std::make_shared<g::CompiledGrammar>(*rules, trie);
    const Pass a = generate(gr, doc, tok.eos_id());
    const Pass b = generate(gr, doc, tok.eos_id());
    cold.insert(cold.end(), a.us.begin(), a.us.end());
    warm.insert(warm.end(), b.us.begin(), b.us.end());
    tokens = a.tokens;
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (const double x : v) s += x;
    return v.empty() ? 0 : s / static_cast<double>(v.size());
  };
  boost::json::object out{{"vocab", argv[1]},
                          {"vocab_size", tok.vocab_size()},
                          {"trie_ms", trie_ms},
                          {"trie_nodes", trie->nodes().size()},
                          {"document_tokens", tokens},
                          {"repeat", repeat},
                          {"first_us", {{"mean", mean(cold)}, {"median", median(cold)}, {"max", *std::max_element(cold.begin(), cold.end())}}},
                          {"cached_us", {{"mean", mean(warm)}, {"median", median(warm)}, {"max", *std::max_element(warm.begin(), warm.end())}}}};
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "llamawire-bench-grammar: %s\n", e.what());
  return 1;
}
