// llamawire: the thin client. Options follow llama2.c's run; weights stay on the server.
//   llamawire [-a host] [-o port] [-i prompt] [-t temp] [-p topp] [-s seed] [-n steps] ...
//   llamawire bench ...   (load tester)
#include "client/cli.hpp"
#include "client/exit_codes.hpp"

#include "common/cli_support.hpp"
#include "common/grammar.hpp"
#include "common/json_schema.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

namespace po = boost::program_options;
namespace lw = llamawire;

int main(int argc, char** argv) try {
  if (argc >= 2 && std::strcmp(argv[1], "bench") == 0) return lw::bench_main(argc - 1, argv + 1);
  lw::CliOptions o;
  int port = 8080;
  long long seed = 0;
  std::string mode = "generate";
  std::string grammar_file, schema_file;
  po::options_description opts(
      "Usage: llamawire [options]          generate or chat with a llamawire-server\n"
      "       llamawire bench [options]    load-test a server (llamawire bench --help)\n"
      "Exit codes: 0 ok, 1 error, 2 bad options, 3 server not reachable, 4 server refused\n"
      "(busy, version, key, shutting down), 5 context full, 6 connection lost or protocol error");
  opts.add_options()("help,h", "show this help")
      ("address,a", po::value(&o.host)->default_value("127.0.0.1"), "server address")
      ("port,o", po::value(&port)->default_value(8080), "server port")
      ("input_prompt,i", po::value(&o.prompt), "prompt (chat: the first user message)")
      ("temperature,t", po::value(&o.temperature)->default_value(1.0f, "1.0"), "temperature; 0 = greedy")
      ("p_value,p", po::value(&o.topp)->default_value(0.9f, "0.9"), "top-p in (0,1); otherwise (any finite value) full sampling")
      ("seed,s", po::value(&seed)->default_value(0), "random seed; 0 = from the clock")
      ("steps,n", po::value(&o.steps)->default_value(256), "positions to run, prompt included; 0 = seq_len")
      ("tokenizer,z", po::value(&o.tokenizer_path), "local tokenizer file (default: download the server's)")
      ("system_prompt,y", po::value(&o.system_prompt), "system prompt (implies chat mode)")
      ("mode,m", po::value(&mode)->default_value("generate"), "generate | chat")
      ("client-sampling", "receive logits and sample here (the original decoupled design)")
      ("top-k", po::value(&o.top_k)->default_value(0), "keep the k most likely tokens (0: off)")
      ("min-p", po::value(&o.min_p)->default_value(0.0f, "0"), "keep tokens at least this times the most likely one (0: off)")
      ("repeat-penalty", po::value(&o.repeat_penalty)->default_value(1.0f, "1"), "penalize the last --repeat-last-n tokens (1: off)")
      ("repeat-last-n", po::value(&o.repeat_last_n)->default_value(64), "the repeat penalty's window, tokens (-1: all)")
      ("grammar", po::value(&grammar_file), "GBNF grammar file: the output stays in its language")
      ("json-schema", po::value(&schema_file), "JSON Schema file: the output is JSON that validates (samples here)")
      ("api-key", po::value(&o.api_key), "API key (default: $LLAMAWIRE_API_KEY)")
      ("tls", "connect with TLS (the server's certificate and name are verified)")
      ("tls-ca", po::value(&o.tls_ca), "trust this CA certificate (PEM) for TLS; implies --tls");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llamawire: " << e.what() << "\n" << opts;
    return lw::kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return lw::kExitOk;
  }
  if (mode != "generate" && mode != "chat") {
    std::cerr << "llamawire: --mode must be generate or chat\n" << opts;
    return lw::kExitUsage;
  }
  lw::OptionChecks checks;
  checks.integer("--port", port, 1, 65535);
  checks.real("--temperature", o.temperature, 0, 1e6);
  checks.real("--p_value", o.topp, -1e6, 1e6);
  checks.integer("--steps", o.steps, 0, std::numeric_limits<int>::max());
  checks.integer("--seed", seed, 0, std::numeric_limits<long long>::max());
  checks.integer("--top-k", o.top_k, 0, 1 << 30);
  checks.real("--min-p", o.min_p, 0, 1);
  checks.real("--repeat-penalty", o.repeat_penalty, 0, 10);
  checks.integer("--repeat-last-n", o.repeat_last_n, -1, 1 << 30);
  if (checks.error()) {
    std::cerr << "llamawire: " << *checks.error() << "\n" << opts;
    return lw::kExitUsage;
  }
  o.port = static_cast<std::uint16_t>(port);
  o.seed = static_cast<std::uint64_t>(seed);
  o.system_prompt_given = vm.count("system_prompt") > 0;
  o.chat = mode == "chat" || o.system_prompt_given;
  o.client_sampling = vm.count("client-sampling") > 0;
  if (!grammar_file.empty() && !schema_file.empty()) {
    std::cerr << "llamawire: --grammar and --json-schema go alone: give one\n";
    return lw::kExitUsage;
  }
  for (const auto* file : {&grammar_file, &schema_file}) {
    if (file->empty()) continue;
    std::ifstream in(*file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      std::cerr << "llamawire: " << *file << ": cannot be read\n";
      return lw::kExitUsage;
    }
    if (file == &grammar_file) {
      o.grammar = text.str();
    } else {
      boost::system::error_code jec;
      const auto schema = boost::json::parse(text.str(), jec);
      auto gbnf = jec ? lw::Result<std::string>(lw::make_error(lw::errc::bad_message, "not JSON: " + jec.message()))
                      : lw::json_schema_to_gbnf(schema);
      if (!gbnf) {
        std::cerr << "llamawire: " << *file << ": " << gbnf.error().message << "\n";
        return lw::kExitUsage;
      }
      o.grammar = std::move(*gbnf);
    }
    if (auto rules = lw::grammar::parse(o.grammar); !rules) {
      std::cerr << "llamawire: " << *file << ": " << rules.error().message << "\n";
      return lw::kExitUsage;
    }
  }
  o.tls = vm.count("tls") > 0 || !o.tls_ca.empty();
  if (o.api_key.empty()) {
    if (const char* k = std::getenv("LLAMAWIRE_API_KEY")) o.api_key = k;
  }
  lw::asio::io_context io;
  int rc = lw::kExitError;
  lw::asio::co_spawn(io, lw::run_cli(o), [&](std::exception_ptr e, int code) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "llamawire: fatal: " << ex.what() << "\n";
      }
      rc = lw::kExitError;
      return;
    }
    rc = code;
  });
  io.run();
  return rc;
} catch (const std::exception& e) {
  std::cerr << "llamawire: fatal: " << e.what() << "\n";
  return lw::kExitError;
}
