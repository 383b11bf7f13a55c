#!/usr/bin/env bash
# GGUF files at scale: single-stream decode, a 64-token prompt and 16 sessions decoding
# together for Q4_0, Q4_K_M and Q8_0 files of the stories110M and TinyLlama-1.1B shapes,
# each against the read bandwidth measured in the same process (the bound is bandwidth /
# bytes of weights per token); then the TinyLlama Q4_K_M file served: load time (start to
# listening, mmap), RSS after load, and 16 clients with the load tester (aggregate tok/s,
# peak RSS). The models are llamawire-mkmodel random weights converted with
# llamawire-convert (made once, in $LW_BENCH_MODELS or /tmp/llamawire-bench-models: the
# TinyLlama .bin is 4.1 GB, its GGUF files 0.6-1.2 GB). Configurations run in turn
# (A B C A B C ...), medians reported.
#   bench/gguf.sh [ROUNDS]      (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=build/bin
[ -x $bin/llamawire-convert ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
mkdir -p "$models"
mk() {  # name dim hidden layers heads kv vocab seq
  [ -f "$models/$1.bin" ] || $bin/llamawire-mkmodel "$models/$1.bin" --dim "$2" --hidden "$3" --layers "$4" \
    --heads "$5" --kv-heads "$6" --vocab "$7" --seq-len "$8"
  for t in q4_0 q4_k_m q8_0; do
    [ -f "$models/$1-$t.gguf" ] || $bin/llamawire-convert "$models/$1.bin" "$models/$1-$t.gguf" -z "$tok" --type "$t" >&2
  done
}
mk stories110M 768 2048 12 12 12 32000 1024
mk tinyllama 2048 5632 22 32 4 32000 2048
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for m in stories110M tinyllama; do
    for t in q4_0 q4_k_m q8_0; do
      n=64; [ $m = tinyllama ] && n=32
      $bin/llamawire-bench-engine "$models/$m-$t.gguf" --decode $n --prompt 64 --batch 16 --bandwidth-mib 512 \
        | sed "s/^{/{\"model\":\"$m\",\"type\":\"$t\",/" >> "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["model"], r["type"]), []).append(r)
med = lambda rs, k: statistics.median(x[k] for x in rs)
print("| model | file type | tensor types | kernels | MB per token | decode tok/s | read GB/s | bound tok/s | fraction of bound | 64-token prompt tok/s | 16 sessions tok/s |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for (m, t), rs in groups.items():
    print(f"| {m} | {t} | {rs[0]['weights']} | {rs[0]['kernels']} | {rs[0]['bytes_per_token']/1e6:.0f} | {med(rs,'decode_tok_s'):.1f} | "
          f"{med(rs,'bandwidth_gbs'):.1f} | {med(rs,'bound_tok_s'):.1f} | {med(rs,'fraction_of_bound'):.2f} | "
          f"{med(rs,'prompt_tok_s'):.1f} | {med(rs,'batch_decode_tok_s'):.1f} |")
PY
# Serving the TinyLlama Q4_K_M file: load time, RSS, 16 clients.
dir=$(mktemp -d)
start=$(date +%s.%N)
$bin/llamawire-server -c "$models/tinyllama-q4_k_m.gguf" -o 0 --port-file "$dir/port" --threads 2 2>"$dir/log" &
pid=$!
while [ ! -s "$dir/port" ]; do sleep 0.02; kill -0 $pid 2>/dev/null || { cat "$dir/log"; exit 1; }; done
loaded=$(date +%s.%N)
port=$(cat "$dir/port")
rss_load=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
$bin/llamawire bench -o "$port" --clients 16 --requests 32 -n 32 --prompt "Once upon a time" --json > "$dir/bench.json"
rss_peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
kill -TERM $pid; wait $pid || true
file_mb=$(( $(stat -L -c %s "$models/tinyllama-q4_k_m.gguf") / 1048576 ))
python3 - "$dir/bench.json" "$start" "$loaded" "$rss_load" "$rss_peak" "$file_mb" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
start, loaded, rss_load, rss_peak, file_mb = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
# KV in use at the peak: 16 sessions x (prompt + 32 tokens) positions, 16-position blocks, f32 keys and values.
kv_mb = 16 * ((6 + 32 + 15) // 16 * 16) * 22 * 256 * 2 * 4 / 1048576
print(f"\nTinyLlama Q4_K_M served: file {file_mb} MiB; load (start to listening, mmap) {loaded - start:.2f} s; "
      f"RSS after load {rss_load/1024:.0f} MiB; 16 clients: {b['aggregate_tok_s']:.1f} tok/s aggregate, "
      f"{b['errors']} errors, peak RSS {rss_peak/1024:.0f} MiB (weights {file_mb} + KV in use ~{kv_mb:.0f} + the rest)")
PY
rm -rf "$dir"
