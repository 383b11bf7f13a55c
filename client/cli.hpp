#pragma once

#include "common/asio.hpp"

#include <boost/asio/ssl/context.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llamawire {

struct CliOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::string prompt;
  float temperature = 1.0f;
  float topp = 0.9f;
  std::uint64_t seed = 0;
  int steps = 256;
  std::string tokenizer_path;
  std::string system_prompt;
  bool system_prompt_given = false;
  bool chat = false;
  bool client_sampling = false;
  // The samplers past llama2.c's (common/sampler.hpp) and a grammar (GBNF text, from
  // --grammar FILE or --json-schema FILE): sent with GENERATE to a 1.5 server; with an older
  // server (or --client-sampling) applied here, by the same code.
  int top_k = 0;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  std::string grammar;
  std::string api_key;
  bool tls = false;
  std::string tls_ca;  // trust this CA (PEM) instead of the system's
};

// A TLS client context trusting `ca_file` (or the system's CAs when empty); nullptr and a
// message on stderr if the file is unusable.
std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file);

// Generate or chat against a server; returns the process exit code.
asio::awaitable<int> run_cli(CliOptions o);

// `llamawire bench ...`: the load tester.
int bench_main(int argc, char** argv);

}  // namespace llamawire
