#!/usr/bin/env bash
# The Llama-3.2-1B shape (2048 dim, 8192 hidden, 16 layers, 32 heads, 8 kv heads, 128256
# vocabulary, tied output, RoPE base 500000 with Llama-3.1 frequency factors) at Q4_K_M and
# Q8_0, random weights with the real Llama-3 vocabulary (llamawire-mkmodel, then
# llamawire-convert --vocab tests/data/llama3 ...; made once in $LW_BENCH_MODELS or
# /tmp/llamawire-bench-models: the .bin is 4.9 GB, the GGUF files 0.8 and 1.3 GB).
# Per file and round: the engine alone (llamawire-bench-engine: single-stream decode,
# fraction of the bandwidth bound, 16 sessions), then served: load time (start to
# listening, mmap), RSS after load, one client's decode and 16 clients' aggregate through
# llamawire bench, peak RSS. With LLAMACPP_BIN=DIR (llama.cpp's build/bin), llama-bench
# tg64 on the same file runs in the same round. Files in turn (A B A B), medians.
# Then tokenizer speed: 1 MiB of English, Llama-3 BPE against a SentencePiece vocabulary.
#   bench/llama3.sh [ROUNDS]      (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
bin=build/bin
[ -x $bin/llamawire-convert ] && [ -x $bin/llamawire-bench-tokenize ] || {
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
vocab=build/testdata/llama3/vocab.json
[ -f "$vocab" ] || { mkdir -p build/testdata/llama3; tar -xJf tests/data/llama3/vocab.tar.xz -C build/testdata/llama3; }
[ -f "$models/llama32-1b.bin" ] || $bin/llamawire-mkmodel "$models/llama32-1b.bin" --dim 2048 --hidden 8192 --layers 16 \
  --heads 32 --kv-heads 8 --vocab 128256 --seq-len 8192 --seed 5
for t in q4_k_m q8_0; do
  [ -f "$models/llama32-1b-$t.gguf" ] || $bin/llamawire-convert "$models/llama32-1b.bin" "$models/llama32-1b-$t.gguf" \
    --vocab "$vocab" --rope-base 500000 --rope-scaling llama3:32 --tie-output --type "$t" >&2
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
prompt="Once upon a time, in a small village by the sea, there lived an old fisherman who"
for r in $(seq 1 "$rounds"); do
  for t in q4_k_m q8_0; do
    f="$models/llama32-1b-$t.gguf"
    e=$($bin/llamawire-bench-engine "$f" --decode 48 --prompt 64 --batch 16 --bandwidth-mib 512)
    dir=$(mktemp -d)
    start=$(date +%s.%N)
    $bin/llamawire-server -c "$f" -o 0 --port-file "$dir/port" --threads 2 2>"$dir/log" &
    pid=$!
    while [ ! -s "$dir/port" ]; do sleep 0.02; kill -0 $pid 2>/dev/null || { cat "$dir/log"; exit 1; }; done
    loaded=$(date +%s.%N)
    port=$(cat "$dir/port")
    rss_load=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
    one=$($bin/llamawire bench -o "$port" --clients 1 --requests 2 -n 64 --prompt "$prompt" --json)
    many=$($bin/llamawire bench -o "$port" --clients 16 --requests 32 -n 32 --prompt "$prompt" --json)
    rss_peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    kill -TERM $pid; wait $pid || true
    rm -rf "$dir"
    lcpp=null
    if [ -n "${LLAMACPP_BIN:-}" ]; then
      lcpp=$("$LLAMACPP_BIN/llama-bench" -m "$f" -p 0 -n 64 -t 2 -o json 2>/dev/null |
             python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')
    fi
    python3 - "$t" "$start" "$loaded" "$rss_load" "$rss_peak" "$lcpp" "$e" "$one" "$many" >> "$out" <<'PY'
import json, sys
t, start, loaded, rl, rp, lcpp, e, one, many = sys.argv[1:]
e, one, many = json.loads(e), json.loads(one), json.loads(many)
print(json.dumps({"type": t, "load_s": float(loaded) - float(start), "rss_load_mib": int(rl) / 1024,
                  "rss_peak_mib": int(rp) / 1024, "engine_decode": e["decode_tok_s"], "bound": e["bound_tok_s"],
                  "fraction": e["fraction_of_bound"], "engine_16": e["batch_decode_tok_s"],
                  "served_1": one["aggregate_tok_s"], "served_16": many["aggregate_tok_s"],
                  "errors": one["errors"] + many["errors"], "llamacpp_tg64": None if lcpp == "null" else float(lcpp)}))
PY
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows: groups.setdefault(r["type"], []).append(r)
med = lambda rs, k: statistics.median(x[k] for x in rs)
print("| file | load s (mmap) | RSS after load MiB | engine decode tok/s | of bound | served, 1 client tok/s | served, 16 clients tok/s | peak RSS MiB | errors | llama.cpp tg64 tok/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, rs in groups.items():
    l = "-" if rs[0]["llamacpp_tg64"] is None else f"{med(rs, 'llamacpp_tg64'):.1f}"
    print(f"| {t} | {med(rs,'load_s'):.2f} | {med(rs,'rss_load_mib'):.0f} | {med(rs,'engine_decode'):.1f} | {med(rs,'fraction'):.2f} | "
          f"{med(rs,'served_1'):.1f} | {med(rs,'served_16'):.1f} | {med(rs,'rss_peak_mib'):.0f} | {sum(x['errors'] for x in rs)} | {l} |")
PY
[ -f build/testdata/llama3-vocab.gguf ] || $bin/llamawire-convert --vocab "$vocab" build/testdata/llama3-vocab.gguf
echo
echo "Tokenizer, 1 MiB of English (A: Llama-3 byte-level BPE, B: the 32000-token SentencePiece vocabulary of vocab32k-q8_0.gguf):"
$bin/llamawire-bench-tokenize build/testdata/llama3-vocab.gguf ../shared/models/gguf/vocab32k-q8_0.gguf --mib 1 --rounds 5
