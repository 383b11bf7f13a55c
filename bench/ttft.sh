#!/usr/bin/env bash
# Time to first token of a 128-token prompt on an idle server, and while 15 other sessions
# decode (stories42M shape, f32). Alternates idle / loaded measurements; medians.
#   bench/ttft.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
rounds=${1:-3}
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
[ -f "$models/stories42M.bin" ] || $bin/llamawire-mkmodel "$models/stories42M.bin" --dim 512 --hidden 1376 \
  --layers 8 --heads 8 --kv-heads 8 --vocab 32000 --seq-len 1024
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
[ -f "$tok" ] || tok=models/tokenizer.bin
tmp=$(mktemp -d)
# --prefix-cache off: the same prompt each time, and this measures its prefill.
$bin/llamawire-server -c "$models/stories42M.bin" -z "$tok" -o 0 --port-file "$tmp/port" --prefix-cache off 2>"$tmp/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(cat "$tmp/port")
# The JSON is parsed after the run, not in a pipe: a parser starting up alongside would take
# CPU from the server during the measurement (python3 behind a pyenv shim costs ~0.1-0.2 s).
probe() {
  $bin/llamawire bench -o "$port" --clients 1 --requests 3 -n 2 --prompt-tokens 128 --json > "$tmp/probe.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ttft_ms"]["p50"])' "$tmp/probe.json"
}
idle=(); loaded=()
for r in $(seq 1 "$rounds"); do
  idle+=("$(probe)")
  $bin/llamawire bench -o "$port" --clients 15 --requests 15 -n 400 --prompt-tokens 8 --json > "$tmp/bg.json" &
  bg=$!
  sleep 1.0  # the 15 are decoding now
  loaded+=("$(probe)")
  wait $bg
done
python3 - "${idle[*]}" "${loaded[*]}" <<'PY'
import statistics, sys
idle = [float(x) for x in sys.argv[1].split()]
loaded = [float(x) for x in sys.argv[2].split()]
mi, ml = statistics.median(idle), statistics.median(loaded)
print(f"128-token prompt TTFT, stories42M f32: idle {mi:.1f} ms (runs {idle}), with 15 sessions decoding {ml:.1f} ms (runs {loaded}); ratio {ml/mi:.2f}x")
PY
