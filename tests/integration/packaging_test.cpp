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
