// llamawire-tokenize: print the ids of encode(TEXT). With a llama2.c tokenizer.bin: BOS
// first, space-separated. With a GGUF file: its own vocabulary, BOS as its add_bos_token
// says, special-token text parsed unless --no-parse-special, printed as llama.cpp's
// `llama-tokenize --ids` prints them ("[1, 263, 0]"); a vocabulary-only GGUF file too.
#include "common/bytes.hpp"
#include "common/tokenizer.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"

#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;
namespace lw = llamawire;

int main(int argc, char** argv) try {
  std::string tokenizer_path, text;
  po::options_description opts("Usage: llamawire-tokenize -z TOKENIZER|MODEL.gguf TEXT");
  opts.add_options()("help,h", "show this help")("tokenizer,z", po::value(&tokenizer_path),
                                                 "llama2.c tokenizer.bin, or a GGUF model file (its vocabulary)")(
      "no-parse-special", "GGUF: special-token text such as </s> is plain text (llama-tokenize's flag)");
  po::options_description hidden;
  hidden.add_options()("text", po::value(&text));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("text", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire-tokenize: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (tokenizer_path.empty() || !vm.count("text")) {
    std::cerr << "llamawire-tokenize: -z TOKENIZER and TEXT are required\n" << opts;
    return 2;
  }
  std::uint64_t file_bytes = 0;
  const auto head = lw::read_file_head(tokenizer_path, 4, &file_bytes);
  if (head && lw::is_gguf(*head)) {
    lw::WeightStore::Options o;
    o.load = lw::WeightStore::Load::mmap;  // only the metadata pages are read
    auto store = lw::WeightStore::load(tokenizer_path, o);
    lw::Result<lw::Tokenizer> tok = lw::make_error(lw::errc::bad_tokenizer, "no vocabulary");
    if (store) {
      tok = lw::load_model_tokenizer(**store, "");
    } else {
      // A vocabulary-only file (no tensors, as `llamawire-convert --vocab V OUT` writes and
      // llama.cpp's tokenizer tests use): its tokenizer.* keys alone.
      auto bytes = file_bytes < (std::uint64_t{1} << 28) ? lw::read_file(tokenizer_path, std::size_t{1} << 28)
                                                         : lw::Result<std::vector<std::uint8_t>>(store.error());
      auto g = bytes ? lw::GgufFile::parse(*bytes, tokenizer_path) : lw::Result<lw::GgufFile>(bytes.error());
      if (!g || !g->tensors().empty()) {
        std::cerr << "llamawire-tokenize: " << store.error().message << "\n";
        return 1;
      }
      auto v = lw::read_gguf_vocab(*g, 0);
      tok = v ? lw::Tokenizer::from_vocab(std::move(*v), tokenizer_path) : lw::Result<lw::Tokenizer>(v.error());
    }
    if (!tok) {
      std::cerr << "llamawire-tokenize: " << tok.error().message << "\n";
      return 1;
    }
    const auto ids = tok->encode(text, tok->add_bos(), tok->add_eos(), !vm.count("no-parse-special"));
    std::cout << "[";
    for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? ", " : "") << ids[i];
    std::cout << "]\n";
    return 0;
  }
  auto tok = lw::Tokenizer::load(tokenizer_path);
  if (!tok) {
    std::cerr << "llamawire-tokenize: " << tok.error().message << "\n";
    return 1;
  }
  const auto ids = tok->encode(text, true, false);
  for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "llamawire-tokenize: fatal: " << e.what() << "\n";
  return 1;
}
