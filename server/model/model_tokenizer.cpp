#include "common/cli_support.hpp"
#include "server/model/weight_store.hpp"

namespace llamawire {

Result<Tokenizer> load_model_tokenizer(const WeightStore& store, const std::string& tokenizer_path) {
  const int vocab = store.config().vocab_size;
  if (const GgufFile* g = store.gguf()) {
    if (!tokenizer_path.empty()) {
      return make_error(errc::bad_argument, "-z/--tokenizer applies to llama2.c checkpoints only: " + store.path() +
                                                " carries its own vocabulary");
    }
    auto v = read_gguf_vocab(*g, vocab);
    if (!v) return make_error(errc::bad_tokenizer, v.error().message);
    return Tokenizer::from_vocab(std::move(*v), store.path());
  }
  if (!tokenizer_path.empty()) return Tokenizer::load(tokenizer_path, vocab);
  Result<Tokenizer> tok = make_error(errc::bad_tokenizer, "no tokenizer");
  for (const auto& candidate : default_tokenizer_paths(store.path(), vocab)) {
    tok = Tokenizer::load(candidate, vocab);
    if (tok) break;
  }
  return tok;
}

}  // namespace llamawire
