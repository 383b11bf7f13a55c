#include "tests/server_process.hpp"

#include "tests/raw_socket.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace llamawire::test {

namespace {

std::uint64_t proc_status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1)) ;
  }
  return 0;
}

}  // namespace

ServerProcess::ServerProcess(std::vector<std::string> args) {
  const auto port_file = (dir_ / "port").string();
  const auto log_file = (dir_ / "server.log").string();
  std::vector<std::string> argv{(bin_dir() / "llamawire-server").string(), "-a", "127.0.0.1", "-o", "0",
                                "--port-file", port_file};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(port_file);
    if (in >> port_ && port_ > 0) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("llamawire-server exited at startup: " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("llamawire-server did not start: " + log());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) stop(10);
}

int ServerProcess::http_port() const {
  for (int i = 0; i < 500; ++i) {
    std::ifstream in((dir_ / "port").string() + ".http");
    int p = 0;
    if (in >> p && p > 0) return p;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

bool ServerProcess::alive() const {
  if (pid_ <= 0) return false;
  int status = 0;
  return ::waitpid(pid_, &status, WNOHANG) == 0;
}

int ServerProcess::stop(int timeout_s) {
  if (pid_ <= 0) return exit_code_;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

std::string ServerProcess::log() const {
  std::ifstream in(dir_ / "server.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::uint64_t ServerProcess::peak_rss_bytes() const { return proc_status_kb(pid_, "VmHWM") * 1024; }
std::uint64_t ServerProcess::rss_bytes() const { return proc_status_kb(pid_, "VmRSS") * 1024; }

std::string make_model(const TempDir& dir, const std::string& name, const std::array<int, 7>& shape) {
  const auto path = (dir / name).string();
  const char* flags[] = {"--dim", "--hidden", "--layers", "--heads", "--kv-heads", "--vocab", "--seq-len"};
  std::vector<std::string> argv{(bin_dir() / "llamawire-mkmodel").string(), path};
  for (std::size_t i = 0; i < shape.size(); ++i) argv.insert(argv.end(), {flags[i], std::to_string(shape[i])});
  const auto r = run_process(argv);
  if (r.exit_code != 0) throw std::runtime_error("llamawire-mkmodel failed: " + r.err);
  return path;
}

ProcessResult run_client(const ServerProcess& s, std::vector<std::string> args, const std::string& input,
                         int timeout_s) {
  std::vector<std::string> argv{(bin_dir() / "llamawire").string()};
  if (!args.empty() && args.front() == "bench") {  // the subcommand comes first
    argv.push_back("bench");
    args.erase(args.begin());
  }
  argv.insert(argv.end(), {"-a", "127.0.0.1", "-o", s.port_str()});
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, input, timeout_s);
}

void check_cli_both_modes(const ServerProcess& s, const std::string& prompt, int steps) {
  for (const std::vector<std::string>& opts : {std::vector<std::string>{"-t", "0"}, {"-t", "0.8", "-s", "7"}}) {
    std::vector<std::string> args{"-n", std::to_string(steps), "-i", prompt};
    args.insert(args.end(), opts.begin(), opts.end());
    const auto a = run_client(s, args);
    args.push_back("--client-sampling");
    const auto b = run_client(s, args);
    INFO(a.err << b.err);
    CHECK(a.exit_code == 0);
    CHECK(b.exit_code == 0);
    CHECK(a.out == b.out);
    CHECK(a.out.rfind(prompt, 0) == 0);
  }
}

void check_load_tester(const ServerProcess& s, const std::string& prompt) {
  const auto bench = run_client(s, {"bench", "--clients", "4", "--requests", "8", "-n", "8", "--prompt", prompt, "--json"});
  INFO(bench.err);
  CHECK(bench.exit_code == 0);
  CHECK(bench.out.find("\"errors\":0") != std::string::npos);
}

msg::Vocab fetch_vocab_message(const ServerProcess& s) {
  RawSocket sock(s.port());
  REQUIRE(sock.handshake());
  REQUIRE(sock.send(msg::GetVocab{}, 5));
  auto reply = sock.receive();
  REQUIRE(reply.has_value());
  auto* v = std::get_if<msg::Vocab>(&reply->second);
  REQUIRE(v != nullptr);
  return std::move(*v);
}

}  // namespace llamawire::test
