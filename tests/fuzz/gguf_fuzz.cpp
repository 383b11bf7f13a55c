// libFuzzer: the GGUF reader (header, every metadata type, tensor infos), the llama
// binding of a parsed file (keys, tensor shapes) and its vocabulary, on any bytes.
#include "common/tokenizer.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace lw = llamawire;
  const std::span<const std::uint8_t> bytes(data, size);
  auto g = lw::GgufFile::parse(bytes, "fuzz.gguf");
  if (g) {
    for (const auto& t : g->tensors()) {
      const auto b = g->tensor_bytes(t);  // must lie inside the input
      if (b.data() < data || b.data() + b.size() > data + size) __builtin_trap();
    }
    if (auto v = lw::read_gguf_vocab(*g, -1)) {
      if (auto tok = lw::Tokenizer::from_vocab(std::move(*v), "fuzz")) (void)tok->encode("a <s>b", true, false, true);
    }
  }
  // The whole load (binding, norms, vocabulary) from a file with these bytes.
  const int fd = ::memfd_create("fuzz.gguf", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (::write(fd, data, size) == static_cast<ssize_t>(size)) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    lw::WeightStore::Options o;
    o.load = lw::WeightStore::Load::mmap;
    if (auto s = lw::WeightStore::load(path, o)) (void)lw::load_model_tokenizer(**s, "");
  }
  ::close(fd);
  return 0;
}
