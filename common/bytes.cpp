#include "common/bytes.hpp"

#include <cerrno>
#include <cstdio>
#include <memory>

namespace llamawire {

Result<std::vector<std::uint8_t>> read_file(const std::string& path, std::size_t max_bytes) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return make_error(errc::io_error, path + ": cannot open: " + std::strerror(errno));
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
    if (n == 0) break;
    if (out.size() + n > max_bytes) {
      return make_error(errc::io_error,
                        path + ": file larger than the limit of " + std::to_string(max_bytes) + " bytes");
    }
    out.insert(out.end(), buf, buf + n);
  }
  if (std::ferror(f.get())) return make_error(errc::io_error, path + ": read error");
  return out;
}

}  // namespace llamawire
