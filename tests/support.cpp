#include "tests/support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace llamawire::test {

namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("LLAMAWIRE_SHARED"); env != nullptr && fs::is_directory(env)) return env;
  const fs::path p = fs::path(LW_SOURCE_DIR).parent_path() / "shared";
  if (fs::is_directory(p / "models") && fs::is_directory(p / "golden")) return p;
  return {};
}
bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string_view(ci) != "0" && std::string_view(ci) != "false";
}
fs::path models_dir() { return shared_dir() / "models"; }
fs::path golden_dir() { return shared_dir() / "golden"; }
fs::path bin_dir() { return LW_BIN_DIR; }

fs::path llama3_vocab_json() { return fs::path(LW_TESTDATA_DIR) / "llama3" / "vocab.json"; }
fs::path llama3_cases() { return fs::path(LW_SOURCE_DIR) / "tests" / "data" / "llama3" / "cases.jsonl"; }

namespace {

// `make(tmp)` writes a file at tmp; it becomes `path` by an atomic rename, so test processes
// running at once each see either no file or a whole one.
fs::path make_once(const fs::path& path, const std::function<void(const fs::path&)>& make) {
  if (fs::exists(path)) return path;
  fs::create_directories(path.parent_path());
  std::random_device rd;
  const fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  make(tmp);
  fs::rename(tmp, path);
  return path;
}

void run_or_throw(const std::vector<std::string>& argv) {
  const auto r = run_process(argv, "", 600);
  if (r.exit_code != 0) throw std::runtime_error(argv[0] + " failed: " + r.err);
}

}  // namespace

fs::path llama3_vocab_gguf() {
  return make_once(fs::path(LW_TESTDATA_DIR) / "llama3-vocab.gguf", [](const fs::path& tmp) {
    run_or_throw({(bin_dir() / "llamawire-convert").string(), "--vocab", llama3_vocab_json().string(), tmp.string()});
  });
}

fs::path llama3_model(const std::string& type) {
  return make_once(fs::path(LW_TESTDATA_DIR) / ("llama3-tiny-" + type + ".gguf"), [&](const fs::path& tmp) {
    const std::string bin = tmp.string() + ".bin";
    run_or_throw({(bin_dir() / "llamawire-mkmodel").string(), "--dim", "256", "--hidden", "768", "--layers", "2", "--heads",
                  "32", "--kv-heads", "8", "--vocab", "128256", "--seq-len", "512", "--seed", "3", bin});
    run_or_throw({(bin_dir() / "llamawire-convert").string(), bin, tmp.string(), "--vocab", llama3_vocab_json().string(),
                  "--rope-base", "500000", "--rope-scaling", "llama3:32", "--tie-output", "--type", type});
    fs::remove(bin);
  });
}

std::vector<boost::json::object> read_jsonl(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::vector<boost::json::object> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    out.push_back(boost::json::parse(line).as_object());
  }
  return out;
}

std::vector<std::uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("llamawire-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input, int timeout_s) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::signal(SIGPIPE, SIG_IGN);
  std::size_t written = 0;
  if (input.empty()) {
    ::close(in_pipe[1]);
    in_pipe[1] = -1;
  }
  ProcessResult r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[3];
    int n = 0;
    if (out_open) fds[n++] = {out_pipe[0], POLLIN, 0};
    if (err_open) fds[n++] = {err_pipe[0], POLLIN, 0};
    if (in_pipe[1] >= 0) fds[n++] = {in_pipe[1], POLLOUT, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, static_cast<nfds_t>(n), static_cast<int>(std::min<long long>(left.count(), 1000))) < 0) continue;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_pipe[1]) {
        const ssize_t k = ::write(in_pipe[1], input.data() + written, input.size() - written);
        if (k > 0) written += static_cast<std::size_t>(k);
        if (k < 0 || written == input.size()) {
          ::close(in_pipe[1]);
          in_pipe[1] = -1;
        }
        continue;
      }
      char buf[65536];
      const ssize_t k = ::read(fds[i].fd, buf, sizeof buf);
      if (k <= 0) {
        if (fds[i].fd == out_pipe[0]) out_open = false;
        else err_open = false;
      } else {
        (fds[i].fd == out_pipe[0] ? r.out : r.err).append(buf, static_cast<std::size_t>(k));
      }
    }
  }
  if (in_pipe[1] >= 0) ::close(in_pipe[1]);
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace llamawire::test
