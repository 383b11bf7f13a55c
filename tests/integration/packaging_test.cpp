// Packaging that is checked, not only written (issue 23): the systemd unit.
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace t = llamawire::test;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("packaging: the systemd unit passes systemd-analyze verify and is hardened", "[packaging]") {
  const fs::path unit = fs::path(LW_SOURCE_DIR) / "docker" / "llamawire.service";
  const std::string text = read_file(unit);
  // The hardening the unit promises.
  for (const char* line : {"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                           "ReadOnlyPaths=/var/lib/llamawire", "CapabilityBoundingSet=\n", "PrivateDevices=yes",
                           "SystemCallFilter=@system-service", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                           "KillSignal=SIGTERM"}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
  if (t::run_process({"/usr/bin/env", "systemd-analyze", "--version"}, "", 30).exit_code != 0) {
    if (t::in_ci()) FAIL("systemd-analyze is missing in CI (scripts/deps.sh installs systemd)");
    WARN("systemd-analyze not installed: the unit was not verified");
    return;
  }
  // A root in which the unit's world exists: the system's units (the targets it names),
  // kill for ExecReload, and this build's server where ExecStart expects it.
  t::TempDir root;
  fs::create_directories(root / "usr/lib/systemd");
  fs::create_directories(root / "usr/bin");
  fs::create_directories(root / "usr/local/bin");
  fs::create_directories(root / "etc/systemd/system");
  for (const char* dir : {"/usr/lib/systemd/system", "/lib/systemd/system"}) {
    if (fs::is_directory(dir)) {
      fs::copy(dir, root / "usr/lib/systemd/system", fs::copy_options::recursive | fs::copy_options::skip_existing |
                                                         fs::copy_options::copy_symlinks);
      break;
    }
  }
  fs::create_directory_symlink("usr/bin", root / "bin");
  fs::create_directory_symlink("usr/lib", root / "lib");
  fs::copy_file(fs::exists("/usr/bin/kill") ? "/usr/bin/kill" : "/bin/kill", root / "usr/bin/kill");
  fs::copy_file(fs::path(LW_BIN_DIR) / "llamawire-server", root / "usr/local/bin/llamawire-server");
  fs::copy_file(unit, root / "etc/systemd/system/llamawire.service");
  const auto verify = t::run_process({"/usr/bin/env", "systemd-analyze", "verify", "--man=no", "--root=" + root.path().string(),
                                      "/etc/systemd/system/llamawire.service"},
                                     "", 60);
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(verify.err.empty());  // an unknown key or a bad value is only a warning there
  // A unit with a typo is caught (the check above can fail).
  std::ofstream(root / "etc/systemd/system/typo.service") << std::string(text).replace(text.find("NoNewPrivileges"), 15, "NoNewPrivilegs");
  const auto typo = t::run_process({"/usr/bin/env", "systemd-analyze", "verify", "--man=no", "--root=" + root.path().string(),
                                    "/etc/systemd/system/typo.service"},
                                   "", 60);
  CHECK(typo.err.find("NoNewPrivilegs") != std::string::npos);
}

TEST_CASE("bench: the chart scripts draw PNG charts with gnuplot", "[packaging]") {
  if (t::run_process({"/usr/bin/env", "gnuplot", "--version"}, "", 30).exit_code != 0) {
    if (t::in_ci()) FAIL("gnuplot is missing in CI (scripts/deps.sh installs gnuplot-nox)");
    WARN("gnuplot not installed: the charts were not drawn");
    return;
  }
  t::TempDir dir;
  // The data files as bench/serving.sh and bench/vs-llamacpp.sh write them.
  std::ofstream(dir / "serving.dat") << "\"stories42M f32\"\n1 261.3 266.7 8 11 3.7 7.3\n4 656.4 670.1 27 31 5.6 11.6\n"
                                        "16 1499.0 1517.4 78 78 9.4 17.0\n\n\n\"stories42M q8_0\"\n1 529.7 590.3 8 18 1.7 3.9\n"
                                        "4 1032.2 1190.1 35 35 3.2 13.2\n16 1144.1 1183.0 112 121 11.7 32.8\n";
  std::ofstream(dir / "bars.dat") << "\"a.gguf\" 10.5 12.25\n\"b.gguf, 16 clients\" 20 18\n";
  const fs::path bench = fs::path(LW_SOURCE_DIR) / "bench";
  const auto serving = t::run_process({"/usr/bin/env", "gnuplot", "-e",
                                       "data='" + (dir / "serving.dat").string() + "'; out='" + dir.path().string() + "'",
                                       (bench / "plot_serving.gp").string()},
                                      "", 60);
  INFO(serving.err);
  CHECK(serving.exit_code == 0);
  CHECK(serving.err.find("warning") == std::string::npos);
  const auto bars = t::run_process({"/usr/bin/env", "gnuplot", "-e",
                                    "data='" + (dir / "bars.dat").string() + "'; out='" + (dir / "bars.png").string() +
                                        "'; title='t'; ylabel='tokens/s'; baseline='llama.cpp'",
                                    (bench / "plot_bars.gp").string()},
                                   "", 60);
  INFO(bars.err);
  CHECK(bars.exit_code == 0);
  for (const char* png : {"serving-throughput.png", "serving-latency.png", "bars.png"}) {
    INFO(png);
    const std::string bytes = read_file(dir / png);
    REQUIRE(bytes.size() > 5000);
    CHECK(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  }
}
