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
// Append the log to this file from now on ("" for stderr). False (with the reason) when it
// cannot be opened for appending: a missing folder, a folder, no permission.
bool set_file(const std::string& path, std::string* error = nullptr);
// Reopen the log file (SIGHUP). On failure the log stays where it was.
bool reopen(std::string* error = nullptr);
// Every line is escaped as a whole (no control characters, valid UTF-8), so nothing a peer
// sends can start a line of its own.
void write(Level level, std::string_view message);
// A peer's string as a quoted log field: quotes and backslashes escaped too, so it cannot
// end its field early and pose as other fields.
std::string quoted(std::string_view peer_string);

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
