// One line per event on stderr, with a UTC timestamp. Thread-safe. The only place that
// writes diagnostics to stderr outside main().
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace llamawire::log {

enum class Level { debug, info, warn, error };
enum class Format { text, json };

void set_level(Level level);
void set_format(Format format);
// Reopen the log file (SIGHUP); stderr when no file was set.
void set_file(const std::string& path);
void reopen();
void write(Level level, std::string_view message);

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
void debug(const Args&... args) { write(Level::debug, cat(args...)); }
template <class... Args>
void info(const Args&... args) { write(Level::info, cat(args...)); }
template <class... Args>
void warn(const Args&... args) { write(Level::warn, cat(args...)); }
template <class... Args>
void error(const Args&... args) { write(Level::error, cat(args...)); }

}  // namespace llamawire::log
