#!/usr/bin/env bash
# The two protocols side by side on one server: 16 concurrent clients, the same prompt and
# length, over the binary protocol (llamawire bench) and over HTTP /v1/completions (bench/
# http_load.mjs, node), streamed and not; ROUNDS interleaved rounds (binary, HTTP, HTTP
# streamed, binary, ...); prints each round and the medians of the HTTP / binary ratios.
#   bench/http_vs_binary.sh [ROUNDS]      (default 5)
#   LW_MODEL=stories42M (a generated shape: see bench/serving.sh)  LW_CLIENTS=16  LW_STEPS=64
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
[ -x $bin/llamawire-server ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
rounds=${1:-5}
clients=${LW_CLIENTS:-16}
steps=${LW_STEPS:-64}
requests=$((clients * 4))
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
[ -f "$models/stories42M.bin" ] || $bin/llamawire-mkmodel "$models/stories42M.bin" --dim 512 --hidden 1376 --layers 8 \
  --heads 8 --kv-heads 8 --vocab 32000 --seq-len 1024
model=$models/${LW_MODEL:-stories42M}.bin
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
prompt="Once upon a time, there was a little girl who"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
$bin/llamawire-server -c "$model" -z "$tok" -o 0 --http-port 0 --port-file "$tmp/port" --ctx 256 --max-sessions 128 \
  2>"$tmp/server.log" &
pid=$!
for _ in $(seq 1 600); do [ -s "$tmp/port.http" ] && break; sleep 0.05; done
port=$(cat "$tmp/port") http=$(cat "$tmp/port.http")
binary() {
  $bin/llamawire bench -o "$port" --clients "$clients" --requests "$requests" -n "$steps" --prompt "$prompt" -t 0.8 -p 0.9 \
    --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["aggregate_tok_s"])'
}
overhttp() {
  node bench/http_load.mjs --url "http://127.0.0.1:$http" --clients "$clients" --requests "$requests" \
    --max-tokens "$steps" --prompt "$prompt" --same-prompt "$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["errors"] == 0, d; print(d["aggregate_tok_s"])'
}
binary >/dev/null  # warm-up
echo "round binary http http_stream"
for r in $(seq 1 "$rounds"); do
  echo "$r $(binary) $(overhttp) $(overhttp --stream)"
done | tee "$tmp/rounds.txt"
python3 - "$tmp/rounds.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1]) if l[0].isdigit()]
med = statistics.median
print(f"medians of {len(rows)} rounds: binary {med(r[0] for r in rows):.0f} tok/s, HTTP {med(r[1] for r in rows):.0f}, "
      f"HTTP streamed {med(r[2] for r in rows):.0f}; HTTP / binary {med(r[1] / r[0] for r in rows):.2f}, "
      f"streamed / binary {med(r[2] / r[0] for r in rows):.2f}")
PY
