#include "tests/raw_socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace llamawire::test {

RawSocket::RawSocket(int port, int timeout_ms) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect failed");
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawSocket::~RawSocket() { close(); }

void RawSocket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawSocket::shutdown_write() { ::shutdown(fd_, SHUT_WR); }

void RawSocket::reset() {
  linger l{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close();
}

bool RawSocket::send(const std::vector<std::uint8_t>& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool RawSocket::read_exact(std::uint8_t* p, std::size_t n) {
  std::size_t off = 0;
  while (off < n) {
    const ssize_t r = ::recv(fd_, p + off, n - off, 0);
    if (r <= 0) return false;
    off += static_cast<std::size_t>(r);
  }
  return true;
}

std::optional<std::pair<FrameHeader, Message>> RawSocket::receive() {
  std::array<std::uint8_t, kFrameHeaderBytes> head{};
  if (!read_exact(head.data(), head.size())) return std::nullopt;
  const auto h = decode_header(head, kClientMaxFrameBytes);
  if (!h) return std::nullopt;
  std::vector<std::uint8_t> payload(h->length);
  if (!read_exact(payload.data(), payload.size())) return std::nullopt;
  auto m = decode_payload(h->type, payload);
  if (!m) return std::nullopt;
  return std::pair{*h, std::move(*m)};
}

std::string RawSocket::read_until_closed() {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
    if (r <= 0) return out;
    out.append(buf, static_cast<std::size_t>(r));
  }
}

bool RawSocket::closed_by_peer() {
  std::uint8_t b;
  for (;;) {
    const ssize_t r = ::recv(fd_, &b, 1, 0);
    if (r == 0) return true;
    if (r < 0) return errno == ECONNRESET;
    // Drain any remaining frames before EOF.
  }
}

bool RawSocket::handshake(const std::string& api_key) {
  if (!send(msg::Hello{kProtocolMajor, kProtocolMinor, api_key, "test"}, 1)) return false;
  const auto r = receive();
  return r && std::holds_alternative<msg::HelloOk>(r->second);
}

}  // namespace llamawire::test
