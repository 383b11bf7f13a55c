// llamawire-tokenize: print the ids of encode(TEXT) with BOS.
#include "common/tokenizer.hpp"

#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;
namespace lw = llamawire;

int main(int argc, char** argv) try {
  std::string tokenizer_path, text;
  po::options_description opts("Usage: llamawire-tokenize -z TOKENIZER TEXT");
  opts.add_options()("help,h", "show this help")("tokenizer,z", po::value(&tokenizer_path), "tokenizer file");
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
