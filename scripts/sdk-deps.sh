#!/usr/bin/env bash
# Installs the npm packages of the SDK test (tests/sdk: the openai SDK, the Vercel AI SDK,
# LangChain, at the versions its package-lock.json pins) into build/sdk, from the npm
# registry. Does nothing when node or npm is missing (the test then says it skipped, or
# fails in CI), or when they are already installed for this lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/sdk}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "sdk-deps: node or npm not found: the SDK test will not run" >&2
  exit 0
fi
mkdir -p "$dest"
if [ -d "$dest/node_modules" ] && cmp -s tests/sdk/package-lock.json "$dest/package-lock.json"; then
  exit 0
fi
cp tests/sdk/package.json tests/sdk/package-lock.json "$dest/"
echo "sdk-deps: npm ci in $dest" >&2
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2)
