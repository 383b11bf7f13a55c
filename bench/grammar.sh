#!/usr/bin/env bash
# The cost per token of constrained decoding (issue 22): llamawire-bench-grammar on the
# Llama-2 vocabulary (32000 tokens, ../shared/models/tokenizer.bin) and Llama-3's (128256,
# the vocabulary-only GGUF file the tests build), a JSON Schema's grammar, first time and
# cached; ROUNDS runs each, alternating.
#   bench/grammar.sh [ROUNDS]     (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
[ -x $bin/llamawire-bench-grammar ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
llama3=build/testdata/llama3-vocab.gguf
# The tests write it (tests/support.cpp); the same command here when they have not run.
[ -f "$llama3" ] || { mkdir -p build/testdata; $bin/llamawire-convert --vocab build/testdata/llama3/vocab.json "$llama3" >/dev/null; }
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
for r in $(seq 1 "${1:-2}"); do
  $bin/llamawire-bench-grammar "$tok" --vocab-size 32000 --repeat 3
  $bin/llamawire-bench-grammar "$llama3" --repeat 3
done
