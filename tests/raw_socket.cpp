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

std::string RawSocket::read_some() {
  char buf[8192];
  const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
  return r > 0 ? std::string(buf, static_cast<std::size_t>(r)) : std::string();
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

GenerateResult generate_on(RawSocket& s, const msg::Generate& g, std::uint32_t rid) {
  GenerateResult out;
  if (!s.send(g, rid)) return out;
  for (;;) {
    const auto r = s.receive();
    if (!r) return out;
    if (const auto* tk = std::get_if<msg::Token>(&r->second)) out.tokens.push_back(tk->token);
    if (const auto* tl = std::get_if<msg::TokenLogprobs>(&r->second)) {
      out.tokens.push_back(tl->token);
      out.logprobs.push_back(*tl);
    }
    if (const auto* e = std::get_if<msg::End>(&r->second)) {
      out.end = *e;
      out.ok = true;
      return out;
    }
    if (const auto* e = std::get_if<msg::Error>(&r->second)) {
      out.error = e->message;
      return out;
    }
  }
}

msg::Generate gen_request(std::uint32_t start, std::vector<std::uint32_t> tokens, std::uint32_t limit,
                          std::uint64_t seed, float temperature) {
  msg::Generate g;
  g.start_pos = start;
  g.limit_pos = limit;
  g.temperature = temperature;
  g.topp = 0.9f;
  g.seed = seed;
  g.tokens = std::move(tokens);
  return g;
}

boost::json::object stats_of(int port, const std::string& api_key) {
  RawSocket s(port);
  if (!s.handshake(api_key) || !s.send(msg::Stats{}, 9)) throw std::runtime_error("STATS: no session");
  const auto r = s.receive();
  if (!r || !std::holds_alternative<msg::StatsReply>(r->second)) throw std::runtime_error("STATS: no reply");
  return boost::json::parse(std::get<msg::StatsReply>(r->second).json).as_object();
}

std::optional<msg::Logits> forward_on(RawSocket& s, const msg::Forward& f, std::uint32_t rid) {
  if (!s.send(f, rid)) return std::nullopt;
  for (;;) {
    const auto r = s.receive();
    if (!r) return std::nullopt;
    if (const auto* l = std::get_if<msg::Logits>(&r->second)) return *l;
    if (std::holds_alternative<msg::Error>(r->second)) return std::nullopt;
  }
}

}  // namespace llamawire::test
