#!/usr/bin/env bash
# The README's test command: installs missing packages, configures, builds, runs CTest.
#   scripts/test.sh                 Release build in build/, whole suite
#   BUILD_DIR=... CMAKE_ARGS=...    another build folder or extra CMake options
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" ${CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "${TEST_JOBS:-2}" "$@"
