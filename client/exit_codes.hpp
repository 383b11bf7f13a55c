#pragma once

#include "common/error.hpp"

namespace llamawire {

// The client's exit codes, one per kind of failure a user can meet.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,          // anything else (bad tokenizer file, internal)
  kExitUsage = 2,          // bad options
  kExitUnreachable = 3,    // cannot resolve or connect
  kExitRefused = 4,        // server refused: busy, version, unauthorized, shutting down
  kExitContextFull = 5,    // the session's context is full
  kExitConnection = 6,     // connection lost, timed out, or protocol error
};

// Maps an error from a request to the exit code.
int exit_code_for(const Error& e);

}  // namespace llamawire
