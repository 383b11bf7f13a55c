#!/usr/bin/env bash
# The README's test command. Installs missing Debian packages, then:
#   1. Release build in build/ and the whole CTest suite (unit + end-to-end + 30 s soak;
#      the SDK test's npm packages are installed into build/node first, when node is there)
#   2. the whole suite again under ASan + UBSan (build-asan/)
#   3. the scheduler, session and network tests under TSan (build-tsan/)
#   4. every libFuzzer target for 30 s (build-fuzz/), plus the saved regression inputs
#   5. the Docker image and the compose stack built and run (scripts/docker-test.sh; it says
#      when no Docker engine can run here, and why, and skips)
#   scripts/test.sh --quick     step 1 only
#   TEST_JOBS=N                 CTest parallelism (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=${TEST_JOBS:-2}
# The sanitizer builds: -O1 (what the sanitizers' own docs suggest) and line tables only
# (-g1, enough for the reports' stack traces): they compile in about 60% of the time of
# -O2 -g, which is most of this script's time on two cores.
san_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
step() { echo "=== $*" >&2; }

step "1/5 release build and test suite"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
scripts/node-deps.sh build/node
ctest --test-dir build --output-on-failure --no-tests=error -j "$jobs"
[ "${1:-}" = "--quick" ] && exit 0

step "2/5 ASan + UBSan build and test suite"
cmake -S . -B build-asan -G Ninja "${san_flags[@]}" -DLW_SANITIZE=address,undefined
cmake --build build-asan -j "$(nproc)"
scripts/node-deps.sh build-asan/node
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LW_SOAK_SECONDS=15 ctest --test-dir build-asan --output-on-failure --no-tests=error -j "$jobs"

step "3/5 TSan build: scheduler, compute pool, sessions"
cmake -S . -B build-tsan -G Ninja "${san_flags[@]}" -DLW_SANITIZE=thread
cmake --build build-tsan -j "$(nproc)" --target unit_tests e2e_tests llamawire-server llamawire llamawire-mkmodel \
  llamawire-soak llamawire-run llamawire-tokenize
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
  ctest --test-dir build-tsan --output-on-failure --no-tests=error -j 1 \
  -R "forward matches|batch mixing|local generation|16 concurrent|malformed frames|cancel and disconnect|SIGTERM|KV budget|scheduler carries|a carried generation|CANCEL while|half-closed|abandoned|--max-sessions holds|frames: no memory|sharing a prefix|evicted part of the way"

step "4/5 fuzzing (30 s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

step "5/5 Docker image and compose stack"
scripts/docker-test.sh
