// TLS on both protocols, with a self-signed certificate made at test time.
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <thread>

namespace t = llamawire::test;

namespace {

// A self-signed certificate for 127.0.0.1 and localhost (openssl from Debian).
void make_cert(const t::TempDir& dir, const std::string& name) {
  const auto r = t::run_process({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                 (dir / (name + ".key")).string(), "-out", (dir / (name + ".pem")).string(), "-days",
                                 "2", "-subj", "/CN=localhost", "-addext",
                                 "subjectAltName=IP:127.0.0.1,DNS:localhost"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}


}  // namespace

TEST_CASE("TLS: the client and HTTPS work with the server's certificate, and only with it", "[net][tls]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  make_cert(dir, "server");
  make_cert(dir, "other");
  t::ServerProcess server({"-c", (t::models_dir() / "aidreams260K.bin").string(), "-z",
                           (t::models_dir() / "tok512.bin").string(), "--http-port", "0", "--tls-cert",
                           (dir / "server.pem").string(), "--tls-key", (dir / "server.key").string()});
  const auto ca = (dir / "server.pem").string();
  const auto golden = t::read_jsonl(t::golden_dir() / "generate_text.jsonl");
  const auto& o = golden[1];  // sampled: t 1.0, p 0.9, seed 42
  const std::vector<std::string> args{"-t", "1", "-p", "0.9", "-s", "42", "-n", "100", "-i", "I dreamed"};
  for (bool client_sampling : {false, true}) {
    auto a = args;
    a.insert(a.end(), {"--tls-ca", ca});
    if (client_sampling) a.push_back("--client-sampling");
    const auto r = t::run_client(server, a);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == std::string(o.at("stdout").as_string()));
  }
  // Plain TCP to a TLS server: a clear failure, not a hang.
  auto r = t::run_client(server, args);
  CHECK(r.exit_code != 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  // A certificate the client does not trust: refused at the handshake.
  auto bad = args;
  bad.insert(bad.end(), {"--tls-ca", (dir / "other.pem").string()});
  r = t::run_client(server, bad);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("TLS handshake") != std::string::npos);
  // The load tester over TLS.
  r = t::run_client(server, {"bench", "--clients", "3", "--requests", "6", "-n", "10", "--tls-ca", ca, "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(boost::json::parse(r.out).at("completed").to_number<int>() == 6);
  // HTTPS with curl.
  const int hp = server.http_port();
  const auto url = "https://127.0.0.1:" + std::to_string(hp);
  r = t::run_process({"/usr/bin/curl", "-sS", "--cacert", ca, url + "/health"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == R"({"status":"ok"})");
  r = t::run_process({"/usr/bin/curl", "-sS", "--cacert", ca, url + "/v1/completions", "-d",
                      R"({"prompt":"I dreamed","max_tokens":5,"temperature":0})"});
  CHECK(r.exit_code == 0);
  CHECK(boost::json::parse(r.out).at("usage").at("completion_tokens").to_number<int>() == 5);
  r = t::run_process({"/usr/bin/curl", "-sS", "http://127.0.0.1:" + std::to_string(hp) + "/health"});
  CHECK(r.out.find("status") == std::string::npos);  // plain HTTP is not served on a TLS port
  CHECK(server.alive());
  CHECK(server.stop() == 0);
}

TEST_CASE("TLS options are checked at startup", "[net][tls]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  const auto r = t::run_process({(t::bin_dir() / "llamawire-server").string(), "-c",
                                 (t::models_dir() / "aidreams260K.bin").string(), "-o", "0", "--tls-cert",
                                 (dir / "missing.pem").string(), "--tls-key", (dir / "missing.key").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("missing.pem") != std::string::npos);
  CHECK(t::run_process({(t::bin_dir() / "llamawire-server").string(), "-c",
                        (t::models_dir() / "aidreams260K.bin").string(), "--tls-cert", "x.pem"})
            .exit_code == 2);
}

TEST_CASE("the server refuses bad files at startup with one clear line", "[net]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  const auto bytes = t::read_bytes(t::models_dir() / "tiny_mha.bin");
  const auto truncated = (dir / "truncated.bin").string();
  t::write_bytes(truncated, std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 40));
  const auto server = (t::bin_dir() / "llamawire-server").string();
  auto r = t::run_process({server, "-c", truncated, "-z", (t::models_dir() / "tok512.bin").string(), "-o", "0"});
  CHECK(r.exit_code == 1);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("40 bytes missing") != std::string::npos);
  r = t::run_process({server, "-c", (t::models_dir() / "tiny_mha.bin").string(), "-z",
                      (t::models_dir() / "tokenizer.bin").string(), "-o", "0"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("vocab") != std::string::npos);
  CHECK(t::run_process({server}).exit_code == 2);
  CHECK(t::run_process({server, "-c", truncated, "--port", "70000"}).exit_code == 2);
  // Memory sizes are checked, not wrapped: -1 MiB is no "unlimited" budget.
  for (const char* opt : {"--kv-budget-mb", "--kv-warm-mb"}) {
    r = t::run_process({server, "-c", truncated, opt, "-1"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(std::string(opt) + " must be an integer in [0, 16777216] (got -1)") != std::string::npos);
  }
}
