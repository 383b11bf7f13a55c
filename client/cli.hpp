#pragma once

#include "common/asio.hpp"

#include <cstdint>
#include <string>

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
  std::string api_key;
};

// Generate or chat against a server; returns the process exit code.
asio::awaitable<int> run_cli(CliOptions o);

// `llamawire bench ...`: the load tester.
int bench_main(int argc, char** argv);

}  // namespace llamawire
