#!/usr/bin/env bash
# Installs the npm packages of the SDK test (tests/node: the openai SDK, the Vercel AI SDK,
# LangChain, at the versions its package-lock.json pins) into build/node, from the npm
# registry. Does nothing when node or npm is missing (the test then says it skipped, or
# fails in CI), or when they are already installed for this lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/node}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node-deps: node or npm not found: the SDK test will not run" >&2
  exit 0
fi
mkdir -p "$dest"
if [ -d "$dest/node_modules" ] && cmp -s tests/node/package-lock.json "$dest/package-lock.json"; then
  exit 0
fi
cp tests/node/package.json tests/node/package-lock.json "$dest/"
echo "node-deps: npm ci in $dest" >&2
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2)
