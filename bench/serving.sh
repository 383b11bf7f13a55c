#!/usr/bin/env bash
# Many clients at once: aggregate tokens/s and latencies at 1, 4, 16 and 64 concurrent
# clients (llamawire bench) on the stories42M and 110M shapes, f32 and Q8_0, with the
# server's peak RSS. A fresh server per configuration, so each peak is its own.
#   bench/serving.sh [CLIENT_COUNTS...]      (default: 1 4 16 64)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
[ -x $bin/llamawire-server ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 4 16 64)
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
mk() {
  [ -f "$models/$1.bin" ] || $bin/llamawire-mkmodel "$models/$1.bin" --dim "$2" --hidden "$3" --layers "$4" \
    --heads "$5" --kv-heads "$6" --vocab "$7" --seq-len "$8"
}
mk stories42M 512 1376 8 8 8 32000 1024
mk stories110M 768 2048 12 12 12 32000 1024
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
[ -f "$tok" ] || tok=models/tokenizer.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| model | weights | clients | requests | completed | errors | tokens | wall s | aggregate tok/s | TTFT p50/p90/p99 ms | ITL p50/p99 ms | E2E p50/p99 ms | peak RSS MiB | weights MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for m in stories42M stories110M; do
  for w in f32 q8_0; do
    for c in "${counts[@]}"; do
      requests=$(( c < 4 ? 4 : c ))
      rm -f "$tmp/port"
      $bin/llamawire-server -c "$models/$m.bin" -z "$tok" -o 0 --port-file "$tmp/port" --weights "$w" \
        --ctx 256 --max-sessions 128 2>"$tmp/server.log" &
      pid=$!
      for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
      json=$($bin/llamawire bench -o "$(cat "$tmp/port")" --clients "$c" --requests "$requests" -n 64 \
        --prompt-tokens 16 -t 0.8 --duration 120 --json || true)
      rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
      kill -TERM $pid; wait $pid || true
      python3 - "$m" "$w" "$rss_kb" "$models/$m.bin" "$json" <<'PY'
import json, os, sys
m, w, rss_kb, path, js = sys.argv[1:6]
j = json.loads(js)
size = os.path.getsize(path) / 2**20
if w == "q8_0":
    size = size / 4 * 1.0625  # int8 values plus a float scale per 64
print(f"| {m} | {w} | {j['clients']} | {j['requests']} | {j['completed']} | {j['errors']} | {j['generated_tokens']} | "
      f"{j['wall_s']:.1f} | {j['aggregate_tok_s']:.1f} | {j['ttft_ms']['p50']:.0f}/{j['ttft_ms']['p90']:.0f}/{j['ttft_ms']['p99']:.0f} | "
      f"{j['itl_ms']['p50']:.1f}/{j['itl_ms']['p99']:.1f} | {j['e2e_ms']['p50']:.0f}/{j['e2e_ms']['p99']:.0f} | "
      f"{int(rss_kb)/1024:.0f} | {size:.0f} |")
PY
    done
  done
done
