#include "common/log.hpp"

#include "common/utf8.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace llamawire::log {
namespace {

std::atomic<Level> g_level{Level::info};
std::atomic<Format> g_format{Format::text};
std::mutex g_mutex;
std::string g_path;
std::FILE* g_file = nullptr;  // nullptr: stderr

const char* level_name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

}  // namespace

std::string quoted(std::string_view peer_string) {
  std::string out(1, '"');
  out.append(utf8::escape_for_log(peer_string, true));
  out.push_back('"');
  return out;
}

void set_level(Level level) { g_level = level; }
void set_format(Format format) { g_format = format; }

bool set_file(const std::string& path, std::string* error) {
  std::lock_guard lock(g_mutex);
  std::FILE* f = nullptr;
  if (!path.empty()) {
    f = std::fopen(path.c_str(), "a");
    if (f == nullptr) {
      if (error) *error = path + ": cannot open the log file: " + std::strerror(errno);
      return false;  // the current destination stays
    }
  }
  if (g_file) std::fclose(g_file);
  g_path = path;
  g_file = f;
  return true;
}

bool reopen(std::string* error) {
  std::lock_guard lock(g_mutex);
  if (g_path.empty()) return true;
  std::FILE* f = std::fopen(g_path.c_str(), "a");
  if (f == nullptr) {
    if (error) *error = g_path + ": cannot reopen the log file: " + std::strerror(errno);
    return false;  // keep writing where we were (a rotated file is better than nothing)
  }
  if (g_file) std::fclose(g_file);
  g_file = f;
  return true;
}

void write(Level level, std::string_view message) {
  if (level < g_level.load()) return;
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  // Whatever a message holds (peer strings included), it stays one line of valid UTF-8:
  // control characters and malformed bytes are escaped before the line is built.
  const std::string safe = utf8::escape_for_log(message, false);
  std::string line;
  if (g_format.load() == Format::json) {
    line = cat("{\"ts\":\"", stamp, "\",\"level\":\"", level_name(level), "\",\"msg\":\"",
               json_escape(safe), "\"}\n");
  } else {
    line = cat(stamp, ' ', level_name(level), ' ', safe, '\n');
  }
  std::lock_guard lock(g_mutex);
  std::FILE* f = g_file ? g_file : stderr;
  std::fwrite(line.data(), 1, line.size(), f);
  std::fflush(f);
}

}  // namespace llamawire::log
