// A blocking loopback TCP client for tests that speak the protocol badly on purpose.
#pragma once

#include "common/messages.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llamawire::test {

class RawSocket {
 public:
  explicit RawSocket(int port, int timeout_ms = 10000);
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool send(const std::vector<std::uint8_t>& bytes);
  bool send(const Message& m, std::uint32_t rid) { return send(encode_frame(m, rid)); }
  bool send_text(const std::string& s) { return send(std::vector<std::uint8_t>(s.begin(), s.end())); }
  // Everything the peer sends until it closes (or the receive timeout passes).
  std::string read_until_closed();
  // What one receive returns (empty at EOF or the receive timeout).
  std::string read_some();
  // Next frame, or nullopt on EOF/timeout/garbage.
  std::optional<std::pair<FrameHeader, Message>> receive();
  // True when the server has closed the connection (EOF within the timeout).
  bool closed_by_peer();
  // HELLO + HELLO_OK.
  bool handshake(const std::string& api_key = "");
  void close();
  // Half-close: no more sends (SHUT_WR); replies can still be read.
  void shutdown_write();
  // Close with a reset (SO_LINGER 0) instead of a FIN.
  void reset();

 private:
  bool read_exact(std::uint8_t* p, std::size_t n);
  int fd_ = -1;
};

// What one GENERATE on a connected session gave: its TOKENs and END, or the ERROR that
// ended it.
struct GenerateResult {
  std::vector<std::uint32_t> tokens;
  std::vector<msg::TokenLogprobs> logprobs;  // the TOKEN_LOGPROBS frames (1.5), in order
  msg::End end;
  bool ok = false;
  std::string error;
};
GenerateResult generate_on(RawSocket& s, const msg::Generate& g, std::uint32_t rid);
// A GENERATE request sampled at temperature 0.9, top-p 0.9 with `seed` (0.0 temperature:
// greedy).
msg::Generate gen_request(std::uint32_t start, std::vector<std::uint32_t> tokens, std::uint32_t limit,
                          std::uint64_t seed, float temperature = 0.9f);
// STATS over a new session (an exception when it cannot be had).
boost::json::object stats_of(int port, const std::string& api_key = "");
// A FORWARD's LOGITS (nullopt on an ERROR or a lost connection).
std::optional<msg::Logits> forward_on(RawSocket& s, const msg::Forward& f, std::uint32_t rid);

}  // namespace llamawire::test
