// Starts the real llamawire-server binary on an ephemeral loopback port for end-to-end
// tests, and stops it with SIGTERM (checking that it exits 0).
#pragma once

#include "common/messages.hpp"
#include "tests/support.hpp"

#include <sys/types.h>

#include <array>
#include <string>
#include <vector>

namespace llamawire::test {

class ServerProcess {
 public:
  // args: extra server options (checkpoint etc.). Waits until the port file appears.
  explicit ServerProcess(std::vector<std::string> args);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  // The HTTP API's port (started with --http-port 0), from the server's port file.
  int http_port() const;
  pid_t pid() const { return pid_; }
  std::string port_str() const { return std::to_string(port_); }
  bool alive() const;
  // Sends SIGTERM and waits; returns the exit code (128+signal if killed).
  int stop(int timeout_s = 30);
  // Everything the server logged so far.
  std::string log() const;
  // Peak resident memory (VmHWM) in bytes, from /proc.
  std::uint64_t peak_rss_bytes() const;
  std::uint64_t rss_bytes() const;

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
};

// Writes a random-weight checkpoint with llamawire-mkmodel; shape: dim hidden layers heads
// kv_heads vocab seq_len. Returns its path.
std::string make_model(const TempDir& dir, const std::string& name, const std::array<int, 7>& shape);

// Runs the llamawire client binary against the server.
ProcessResult run_client(const ServerProcess& s, std::vector<std::string> args, const std::string& input = "",
                         int timeout_s = 120);

// Catch checks shared by the tests that serve a model end to end: the CLI's text for
// `prompt` (`steps` positions) is the same with server-side and client-side sampling,
// greedy and sampled (seed 7 at temperature 0.8), exits 0 and starts with the prompt; and
// the load tester (4 clients, 8 requests of 8 tokens) runs without an error.
void check_cli_both_modes(const ServerProcess& s, const std::string& prompt, int steps);
void check_load_tester(const ServerProcess& s, const std::string& prompt);
// The server's VOCAB, as a client of this build's protocol version receives it.
msg::Vocab fetch_vocab_message(const ServerProcess& s);

}  // namespace llamawire::test
