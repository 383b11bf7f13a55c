// llamawire-bench-tokenize: encoding speed of two GGUF vocabularies on the same English
// text (generated from a fixed seed: words, punctuation, numbers, paragraphs), interleaved
// A B A B, medians, and the ratio of the first to the second. Prints one JSON line.
//   llamawire-bench-tokenize A.gguf B.gguf [--mib N] [--rounds R]
#include "common/bytes.hpp"
#include "common/tokenizer.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace lw = llamawire;

namespace {

lw::Tokenizer load(const char* path) {
  auto bytes = lw::read_file(path, std::size_t{1} << 31);
  if (!bytes) throw std::runtime_error(bytes.error().message);
  auto g = lw::GgufFile::parse(*bytes, path);
  if (!g) throw std::runtime_error(g.error().message);
  auto v = lw::read_gguf_vocab(*g, 0);
  if (!v) throw std::runtime_error(v.error().message);
  auto t = lw::Tokenizer::from_vocab(std::move(*v), path);
  if (!t) throw std::runtime_error(t.error().message);
  return std::move(*t);
}

std::string english(std::size_t bytes) {
  static const char* words[] = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
      "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
      "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
      "people", "time", "government", "country", "children", "question", "important", "development", "information",
      "understanding", "everything", "beautiful", "yesterday", "morning", "library", "mountain", "river", "science",
      "history", "computer", "language", "written", "thought", "through", "between", "without", "another", "however",
      "don't", "it's", "we're", "they'll", "I've", "London", "Paris", "Monday", "September", "Dr.", "e.g.", "U.S."};
  std::mt19937 rng(2024);
  std::string s;
  bool start = true;
  while (s.size() < bytes) {
    std::string w = words[rng() % std::size(words)];
    if (start && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
    s += w;
    start = false;
    const unsigned r = rng() % 40;
    if (r < 3) {
      s += ". ";
      start = true;
    } else if (r < 5) {
      s += ", ";
    } else if (r == 5) {
      s.push_back(' ');
      s.append(std::to_string(rng() % 100000));
      s.push_back(' ');
    } else if (r == 6) {
      s += ".\n\n";
      start = true;
    } else {
      s += " ";
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: llamawire-bench-tokenize A.gguf B.gguf [--mib N] [--rounds R]\n");
    return 2;
  }
  double mib = 1;
  int rounds = 5;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string o = argv[i];
    if (o == "--mib") mib = std::atof(argv[i + 1]);
    else if (o == "--rounds") rounds = std::atoi(argv[i + 1]);
  }
  if (!(mib > 0 && mib <= 256) || rounds < 1 || rounds > 100) {
    std::fprintf(stderr, "llamawire-bench-tokenize: --mib in (0, 256], --rounds in [1, 100]\n");
    return 2;
  }
  const lw::Tokenizer a = load(argv[1]), b = load(argv[2]);
  const std::string text = english(static_cast<std::size_t>(mib * 1048576));
  std::vector<double> ta, tb;
  std::size_t na = 0, nb = 0;
  auto time = [&](const lw::Tokenizer& t, std::size_t& n) {
    const auto t0 = std::chrono::steady_clock::now();
    n = t.encode(text, true, false).size();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int r = 0; r < rounds; ++r) {
    ta.push_back(time(a, na));
    tb.push_back(time(b, nb));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double ma = median(ta), mb = median(tb);
  std::printf("{\"bytes\":%zu,\"a\":\"%s\",\"a_tokens\":%zu,\"a_s\":%.4f,\"a_mib_s\":%.2f,\"b\":\"%s\",\"b_tokens\":%zu,"
              "\"b_s\":%.4f,\"b_mib_s\":%.2f,\"a_over_b_time\":%.3f}\n",
              text.size(), argv[1], na, ma, mib / ma, argv[2], nb, mb, mib / mb, ma / mb);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "llamawire-bench-tokenize: %s\n", e.what());
  return 1;
}
