#include "common/bytes.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace llamawire {

namespace {

// Opens a regular file for reading; a FIFO, device or folder is refused without waiting on
// it (O_NONBLOCK: opening a FIFO would otherwise block until a writer comes).
Result<int> open_regular(const std::string& path, std::uint64_t& size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return make_error(errc::io_error, path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(errc::io_error, path + ": not a regular file (a FIFO, device or folder cannot be read as one)");
  }
  size = static_cast<std::uint64_t>(st.st_size);
  return fd;
}

Result<std::vector<std::uint8_t>> read_fd(int fd, const std::string& path, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return make_error(errc::io_error, path + ": read error: " + std::strerror(errno));
    if (r == 0) break;  // shorter than its size said (truncated meanwhile)
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

}  // namespace

Result<std::vector<std::uint8_t>> read_file(const std::string& path, std::size_t max_bytes) {
  std::uint64_t size = 0;
  auto fd = open_regular(path, size);
  if (!fd) return fd.error();
  if (size > max_bytes) {
    ::close(*fd);
    return make_error(errc::io_error, path + ": file of " + std::to_string(size) + " bytes is larger than the limit of " +
                                          std::to_string(max_bytes) + " bytes");
  }
  auto out = read_fd(*fd, path, static_cast<std::size_t>(size));
  ::close(*fd);
  return out;
}

Result<std::vector<std::uint8_t>> read_file_head(const std::string& path, std::size_t n, std::uint64_t* file_size) {
  std::uint64_t size = 0;
  auto fd = open_regular(path, size);
  if (!fd) return fd.error();
  if (file_size != nullptr) *file_size = size;
  auto out = read_fd(*fd, path, static_cast<std::size_t>(std::min<std::uint64_t>(n, size)));
  ::close(*fd);
  return out;
}

}  // namespace llamawire
