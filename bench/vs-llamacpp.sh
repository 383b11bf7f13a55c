#!/usr/bin/env bash
# llamawire against llama.cpp on llama.cpp's own GGUF files, both run here, interleaved.
#   bench/vs-llamacpp.sh LLAMACPP_BIN [ROUNDS]      (ROUNDS default 3)
# LLAMACPP_BIN: the folder of llama.cpp's binaries (../shared/anchors/build-llamacpp.sh
# prints it; commit c392e50, CPU, -DGGML_NATIVE=ON). Nothing is built here but llamawire
# itself (when build/ lacks it).
#
# Models (made once in $LW_BENCH_MODELS, default /tmp/llamawire-vs-models; ~12 GB):
# llamawire-mkmodel random-weight checkpoints of the stories42M, stories110M and
# TinyLlama-1.1B shapes; the two small ones converted to f32 GGUF by llama.cpp's
# llama-convert-llama2c-to-ggml (its context_length, always 128, set to 1024 in place), the
# TinyLlama one by llamawire-convert (llama.cpp's converter aborts on its fixed 2 GiB
# context); every quantized file by llama-quantize (Q8_0, Q4_0, Q4_K_M) from those.
#
# Parts ($LW_PARTS, default "engine serve ttft"), each round running both programs in turn
# (the order alternates between rounds), medians reported:
#   engine  llama-bench -p 128 -n 128 -t 2 -r 1 against llamawire-bench-engine --decode 128
#           --prompt 128 on the same file: 110M f32/Q8_0/Q4_0/Q4_K_M, TinyLlama Q8_0/Q4_0/Q4_K_M
#   serve   the same HTTP load (bench/http_load.mjs, node) against llama-server -np 16 -cb
#           and llamawire-server --http-port: 1 client (4 requests) and 16 clients (32
#           requests), 64 tokens each; 42M f32 and Q8_0, TinyLlama Q4_K_M
#   ttft    time to first token for a 512-token prompt (HTTP, max_tokens 1, 5 requests),
#           TinyLlama Q4_0
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:?usage: bench/vs-llamacpp.sh LLAMACPP_BIN [ROUNDS], LLAMACPP_BIN being the folder of llama-bench and llama-server}
rounds=${2:-3}
parts=${LW_PARTS:-engine serve ttft}
for t in llama-bench llama-server llama-quantize llama-convert-llama2c-to-ggml; do
  [ -x "$L/$t" ] || { echo "vs-llamacpp.sh: $L/$t is missing (build it with ../shared/anchors/build-llamacpp.sh)" >&2; exit 2; }
done
command -v node > /dev/null || { echo "vs-llamacpp.sh: node is needed for the HTTP load" >&2; exit 2; }
bin=build/bin
[ -x $bin/llamawire-bench-engine ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null; cmake --build build; }
M=${LW_BENCH_MODELS:-/tmp/llamawire-vs-models}
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
mkdir -p "$M"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Sets llama.context_length (a u32) of a GGUF file in place.
set_ctx() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
path, value = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    head = f.read(1 << 20)
    key = b"llama.context_length"
    i = head.find(struct.pack("<Q", len(key)) + key)
    if i < 0: sys.exit(path + ": no llama.context_length key")
    at = i + 8 + len(key)
    if struct.unpack_from("<I", head, at)[0] != 4: sys.exit(path + ": llama.context_length is not a u32")
    f.seek(at + 4); f.write(struct.pack("<I", value))
PY
}
make_models() {  # name dim hidden layers heads kv seq converter
  local n=$1
  [ -f "$M/$n.bin" ] || $bin/llamawire-mkmodel "$M/$n.bin" --dim "$2" --hidden "$3" --layers "$4" --heads "$5" \
    --kv-heads "$6" --vocab 32000 --seq-len "$7" > /dev/null
  if [ ! -f "$M/$n-f32.gguf" ]; then
    if [ "$8" = llamacpp ]; then
      "$L/llama-convert-llama2c-to-ggml" --copy-vocab-from-model "$tok" --llama2c-model "$M/$n.bin" \
        --llama2c-output-model "$M/$n-f32.gguf.tmp" > "$M/$n-convert.log" 2>&1
      set_ctx "$M/$n-f32.gguf.tmp" "$7"
    else
      $bin/llamawire-convert "$M/$n.bin" "$M/$n-f32.gguf.tmp" -z "$tok" --type f32 > /dev/null
    fi
    mv "$M/$n-f32.gguf.tmp" "$M/$n-f32.gguf"
  fi
  for t in Q8_0 Q4_0 Q4_K_M; do
    local f
    f="$M/$n-$(echo $t | tr 'A-Z' 'a-z').gguf"
    [ -f "$f" ] || { "$L/llama-quantize" "$M/$n-f32.gguf" "$f.tmp" $t 2 > "$f.log" 2>&1 && mv "$f.tmp" "$f"; }
  done
}
make_models stories42M 512 1376 8 8 8 1024 llamacpp
make_models stories110M 768 2048 12 12 12 1024 llamacpp
make_models tinyllama 2048 5632 22 32 4 2048 llamawire

# One side of a round, by name; the other side runs next (order alternating per round).
order() { if [ $(($1 % 2)) -eq 1 ]; then echo "llamawire llamacpp"; else echo "llamacpp llamawire"; fi; }

engine_round() {  # round
  for f in stories110M-f32 stories110M-q8_0 stories110M-q4_0 stories110M-q4_k_m tinyllama-q8_0 tinyllama-q4_0 tinyllama-q4_k_m; do
    for side in $(order "$1"); do
      if [ $side = llamawire ]; then
        $bin/llamawire-bench-engine "$M/$f.gguf" --decode 128 --prompt 128 --threads 2 --bandwidth-mib 512 --compute \
          | sed "s/^{/{\"side\":\"llamawire\",\"file\":\"$f\",/" >> "$out/engine.jsonl"
      else
        "$L/llama-bench" -m "$M/$f.gguf" -p 128 -n 128 -t 2 -r 1 -o jsonl 2> /dev/null \
          | sed "s/^{/{\"side\":\"llamacpp\",\"file\":\"$f\",/" >> "$out/engine.jsonl"
      fi
    done
  done
}

# Starts one server on the file, runs the load, stops it.
serve() {  # side file clients requests tokens prompt [--ttft] -> JSON line on stdout
  local side=$1 file=$2 clients=$3 requests=$4 tokens=$5 prompt=$6 extra=${7:-} port pid
  if [ "$side" = llamawire ]; then
    rm -f "$out/port" "$out/port.http"
    $bin/llamawire-server -c "$file" -o 0 --http-port 0 --port-file "$out/port" --threads 2 --ctx 1024 \
      2> "$out/server.log" &
    pid=$!
    while [ ! -s "$out/port.http" ]; do sleep 0.05; kill -0 $pid 2> /dev/null || { cat "$out/server.log" >&2; return 1; }; done
    port=$(cat "$out/port.http")
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$L/llama-server" -m "$file" --host 127.0.0.1 --port "$port" -t 2 -np 16 -cb -c $((16 * 1024)) --no-webui \
      > "$out/server.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1; do
      sleep 0.1
      kill -0 $pid 2> /dev/null || { tail -5 "$out/server.log" >&2; return 1; }
    done
  fi
  node bench/http_load.mjs --url "http://127.0.0.1:$port" --clients "$clients" --requests "$requests" \
    --max-tokens "$tokens" --prompt "$prompt" $extra
  kill -TERM $pid
  wait $pid 2> /dev/null || true
}

story="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends."
serve_round() {  # round
  for f in stories42M-f32 stories42M-q8_0 tinyllama-q4_k_m; do
    for c in 1 16; do
      local req=4
      [ $c = 16 ] && req=32
      for side in $(order "$1"); do
        serve $side "$M/$f.gguf" $c $req 64 "$story" | sed "s/^{/{\"side\":\"$side\",\"file\":\"$f\",/" >> "$out/serve.jsonl"
      done
    done
  done
}

ttft_round() {  # round
  local long
  # 510 tokens with the request number and BOS (the tokenizer of these files)
  long="$(for i in $(seq 1 19); do printf '%s ' "$story"; done)Once upon a time, there was a little girl."

  for side in $(order "$1"); do
    serve $side "$M/tinyllama-q4_0.gguf" 1 5 1 "$long" --ttft | sed "s/^{/{\"side\":\"$side\",\"file\":\"tinyllama-q4_0\",/" >> "$out/ttft.jsonl"
  done
}

for r in $(seq 1 "$rounds"); do
  for p in $parts; do
    echo "round $r: $p" >&2
    "${p}_round" "$r"
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], sys.argv[2]
# The plots' data (bench/plot_bars.gp): per part, "label" llama.cpp llamawire.
def bars(name, items):
    with open(os.path.join(out, name + ".dat"), "w") as f:
        for label, a, b in items:
            f.write(f'"{label}" {a:.2f} {b:.2f}\n')
def rows(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
med = statistics.median
eng = rows("engine.jsonl")
if eng:
    print(f"Engine: llama-bench pp128 / tg128 vs llamawire-bench-engine --prompt 128 --decode 128, 2 threads, medians of {rounds} rounds\n")
    print("| file | tensor types | kernels | llama.cpp tg128 tok/s | llamawire decode tok/s | ratio | of bound | llama.cpp pp128 tok/s | llamawire prompt tok/s | ratio | prompt GOP/s | peak f32 / int8 GOP/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in dict.fromkeys(r["file"] for r in eng):
        ours = [r for r in eng if r["file"] == f and r["side"] == "llamawire"]
        theirs = [r for r in eng if r["file"] == f and r["side"] == "llamacpp"]
        tg = med([r["avg_ts"] for r in theirs if r["n_gen"] > 0])
        pp = med([r["avg_ts"] for r in theirs if r["n_prompt"] > 0])
        dec, pro = med([r["decode_tok_s"] for r in ours]), med([r["prompt_tok_s"] for r in ours])
        frac, gops = med([r["fraction_of_bound"] for r in ours]), med([r["prompt_gops"] for r in ours])
        pf = med([max(r["compute_gflops"], r["compute_gflops_avx512"]) for r in ours])
        pi = med([r["compute_int8_gops_vnni512"] for r in ours])
        print(f"| {f} | {ours[0]['weights']} | {ours[0]['kernels']} | {tg:.1f} | {dec:.1f} | {dec/tg:.2f} | {frac:.2f} | {pp:.1f} | {pro:.1f} | {pro/pp:.2f} | {gops:.0f} | {pf:.0f} / {pi:.0f} |")
    bars("decode", [(f, med([r["avg_ts"] for r in eng if r["file"] == f and r["side"] == "llamacpp" and r["n_gen"] > 0]),
                     med([r["decode_tok_s"] for r in eng if r["file"] == f and r["side"] == "llamawire"]))
                    for f in dict.fromkeys(r["file"] for r in eng)])
    bars("prompt", [(f, med([r["avg_ts"] for r in eng if r["file"] == f and r["side"] == "llamacpp" and r["n_prompt"] > 0]),
                     med([r["prompt_tok_s"] for r in eng if r["file"] == f and r["side"] == "llamawire"]))
                    for f in dict.fromkeys(r["file"] for r in eng)])
    print("\nof bound: decode against the weight bytes per token over the read bandwidth measured in the same process (512 MiB buffer); above 1 when the file fits the last-level cache.")
    print("prompt GOP/s: the weight products' arithmetic (2 per multiply-add) over the whole prompt's time; peaks: FMA chains (AVX-512 where present) and vpdpbusd chains on both threads, same process.")
    print()
srv = rows("serve.jsonl")
if srv:
    print(f"Serving: the same HTTP load (bench/http_load.mjs) against llama-server -np 16 -cb and llamawire-server, 64 tokens per request, medians of {rounds} rounds\n")
    print("| file | clients | llama.cpp tok/s | llamawire tok/s | ratio | errors (llama.cpp / llamawire) |")
    print("|---|---:|---:|---:|---:|---|")
    for f in dict.fromkeys(r["file"] for r in srv):
        for c in (1, 16):
            sel = lambda side: [r for r in srv if r["file"] == f and r["clients"] == c and r["side"] == side]
            a, b = med([r["aggregate_tok_s"] for r in sel("llamacpp")]), med([r["aggregate_tok_s"] for r in sel("llamawire")])
            ea, eb = sum(r["errors"] for r in sel("llamacpp")), sum(r["errors"] for r in sel("llamawire"))
            print(f"| {f} | {c} | {a:.1f} | {b:.1f} | {b/a:.2f} | {ea} / {eb} |")
    print()
    bars("serving", [(f"{f}, {c} client{'s' if c > 1 else ''}",
                      med([r["aggregate_tok_s"] for r in srv if r["file"] == f and r["clients"] == c and r["side"] == "llamacpp"]),
                      med([r["aggregate_tok_s"] for r in srv if r["file"] == f and r["clients"] == c and r["side"] == "llamawire"]))
                     for f in dict.fromkeys(r["file"] for r in srv) for c in (1, 16)])
tt = rows("ttft.jsonl")
if tt:
    a = med([r["latency_p50_ms"] for r in tt if r["side"] == "llamacpp"])
    b = med([r["latency_p50_ms"] for r in tt if r["side"] == "llamawire"])
    pa = med([r["prompt_tokens"] for r in tt if r["side"] == "llamacpp"])
    pb = med([r["prompt_tokens"] for r in tt if r["side"] == "llamawire"])
    print(f"Time to first token, TinyLlama Q4_0, prompt of {pa:.0f} / {pb:.0f} tokens (llama.cpp / llamawire), HTTP, max_tokens 1:")
    print(f"llama.cpp {a:.0f} ms, llamawire {b:.0f} ms, ratio {b/a:.2f} (medians of {rounds} rounds x 5 requests)")
PY
# Charts (gnuplot), llamawire beside llama.cpp, and their data: $LW_PLOTS (default bench/plots).
plots=${LW_PLOTS:-bench/plots}
if command -v gnuplot > /dev/null; then
  mkdir -p "$plots"
  chart() {  # part, title, y label
    [ -s "$out/$1.dat" ] || return 0
    cp "$out/$1.dat" "$plots/vs-llamacpp-$1.dat"  # kept, to redraw the chart
    gnuplot -e "data='$plots/vs-llamacpp-$1.dat'; out='$plots/vs-llamacpp-$1.png'; title='$2'; ylabel='$3'; baseline='llama.cpp c392e50'" \
      bench/plot_bars.gp
    echo "plot: $plots/vs-llamacpp-$1.png" >&2
  }
  chart decode "Decode, one stream (llama-bench tg128 / llamawire-bench-engine)" "tokens/s"
  chart prompt "Prompt processing, 128 tokens (llama-bench pp128 / llamawire-bench-engine)" "tokens/s"
  chart serving "Serving over HTTP, 64 tokens per request (bench/http_load.mjs)" "aggregate tokens/s"
else
  echo "plots: gnuplot not installed (apt-get install gnuplot-nox): no charts" >&2
fi
