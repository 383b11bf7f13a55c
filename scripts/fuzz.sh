#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan); for each target, replays its
# regression inputs in tests/fuzz/regressions, then fuzzes it for SECONDS (default 30),
# seeded from proto-spec/vectors and the shared test files. The targets run side by side,
# as many at once as there are cores. Crashes are saved in build-fuzz/crashes.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=${FUZZ_BUILD_DIR:-build-fuzz}
if ! command -v clang++ >/dev/null || [ ! -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang libclang-rt-14-dev >&2
fi
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLW_FUZZ=ON \
  -DLW_BUILD_TESTS=OFF -DLW_SANITIZE=address,undefined >/dev/null
cmake --build "$build" --target fuzz_frame fuzz_tokenizer fuzz_checkpoint fuzz_http fuzz_gguf fuzz_grammar
corpus="$build/corpus"
mkdir -p "$corpus"/{frame,tokenizer,checkpoint,http,gguf,grammar} "$build/crashes"
# Seeds: every protocol vector as raw bytes.
for hex in proto-spec/vectors/*.hex; do
  xxd -r -p "$hex" > "$corpus/frame/$(basename "$hex" .hex).bin" 2>/dev/null || \
    python3 -c "import sys; open(sys.argv[2],'wb').write(bytes.fromhex(open(sys.argv[1]).read()))" "$hex" \
      "$corpus/frame/$(basename "$hex" .hex).bin"
done
shared=../shared/models
if [ -d "$shared" ]; then
  { printf '\xff'; cat "$shared/tok512.bin"; } > "$corpus/tokenizer/tok512.bin"
  for m in "$shared"/*.bin; do head -c 300 "$m" > "$corpus/checkpoint/$(basename "$m")"; done
  # GGUF seeds: the smallest shared files whole (every type, both vocabularies' headers).
  for m in aidreams260K-q4_0 aidreams260K-q4_k_m aidreams260K-f16 tiny_gqa-q4_k_m; do
    [ -f "$shared/gguf/$m.gguf" ] && cp "$shared/gguf/$m.gguf" "$corpus/gguf/$m.gguf"
  done
fi
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\n\r\n{"prompt":"hi","max_tokens":5,"stop":["a"]}  ' > "$corpus/http/completion.txt"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{"messages":[{"role":"user","content":"hi"}],"stream":true}' > "$corpus/http/chat.txt"
printf '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}' > "$corpus/http/body.json"
printf '{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}}}}}],"tool_choice":"required","n":2}' > "$corpus/http/tools.json"
printf '{"input":["a b",[1,2,3]],"encoding_format":"base64"}' > "$corpus/http/embeddings.json"
printf 'Hi <tool_call>\n{"name": "f", "arguments": {"a": "x"}}\n</tool_call>\n<tool_call>{"name":"g"}</tool_call>' > "$corpus/http/reply.txt"
printf 'root ::= "{" ws pair ("," ws pair)* "}"\npair ::= [a-z]+ ":" ws ("x" | [0-9]{1,3})\nws ::= [ \\t]?\n' > "$corpus/grammar/pairs.gbnf"
printf '{"type":"object","properties":{"a":{"type":"array","items":{"anyOf":[{"type":"integer"},{"type":"string","maxLength":3}]}},"b":{"$ref":"#/$defs/n"}},"required":["a"],"$defs":{"n":{"type":["null","boolean"]}}}' > "$corpus/grammar/schema.json"
# One target: its regression inputs, then SECONDS of fuzzing; "ok" or "failed" in its .result.
fuzz_one() {
  local t=$1 regress="tests/fuzz/regressions/$1" ok=ok
  if [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
    "$build/bin/fuzz_$t" -runs=0 "$regress"/* > "$build/fuzz_$t.regress.log" 2>&1 || ok=failed
  fi
  "$build/bin/fuzz_$t" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
    -max_len=65536 "$corpus/$t" 2>"$build/fuzz_$t.log" || ok=failed
  echo $ok > "$build/fuzz_$t.result"
}
# The targets run side by side, one per core (each is a single process).
targets="frame tokenizer checkpoint http gguf grammar"
cores=$(nproc)
for t in $targets; do
  rm -f "$build/fuzz_$t.result"
  while [ "$(jobs -rp | wc -l)" -ge "$cores" ]; do wait -n || true; done
  echo "== fuzz_$t: ${seconds}s" >&2
  fuzz_one "$t" &
done
wait
status=0
for t in $targets; do
  result=$(cat "$build/fuzz_$t.result" 2>/dev/null || echo failed)
  echo "== fuzz_$t: $result" >&2
  [ "$result" = ok ] || { status=1; tail -20 "$build/fuzz_$t.regress.log" >&2 2>/dev/null || true; }
  { grep -E "^stat::(number_of_executed_units|peak_rss_mb)|cov:|ERROR" "$build/fuzz_$t.log" || true; } | tail -4 >&2
done
exit $status
