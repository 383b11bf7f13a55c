#!/usr/bin/env bash
# Many clients at once: aggregate tokens/s and latencies at 1, 4, 16 and 64 concurrent
# clients (llamawire bench) on the stories42M and 110M shapes, f32 and Q8_0, with the
# server's peak RSS. A fresh server per configuration, so each peak is its own. The whole
# grid runs ROUNDS times in turn (A B C ... A B C ...); the table shows medians, and the
# N-clients / 1-client ratios are taken within each round, then their median is reported;
# each round also probes the host's read bandwidth and two-thread FMA throughput, which move
# between runs on a shared machine (see bench/README.md).
#   bench/serving.sh [CLIENT_COUNTS...]      (default: 1 4 16 64)
#   LW_ROUNDS=3 (default)  LW_MODELS="stories42M stories110M"  LW_WEIGHTS="f32 q8_0"
#   LW_SERVER_ARGS="..."   extra server options (e.g. to compare one setting against another)
#   LW_PLOTS=DIR (default bench/plots): PNG charts of throughput and latency against clients
#   (gnuplot; skipped with a note when it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
[ -x $bin/llamawire-server ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 4 16 64)
rounds=${LW_ROUNDS:-3}
read -r -a model_list <<<"${LW_MODELS:-stories42M stories110M}"
read -r -a weight_list <<<"${LW_WEIGHTS:-f32 q8_0}"
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
mk() {
  [ -f "$models/$1.bin" ] || $bin/llamawire-mkmodel "$models/$1.bin" --dim "$2" --hidden "$3" --layers "$4" \
    --heads "$5" --kv-heads "$6" --vocab "$7" --seq-len "$8"
}
mk stories42M 512 1376 8 8 8 32000 1024
mk stories110M 768 2048 12 12 12 32000 1024
mk stories15M 288 768 6 6 6 32000 256
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
[ -f "$tok" ] || tok=models/tokenizer.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$rounds"); do
  for m in "${model_list[@]}"; do
    for w in "${weight_list[@]}"; do
      # The host right now: read bandwidth (single-client decode follows it) and two-thread
      # FMA throughput (batched decode follows it; it halves when a shared host puts both
      # vCPUs on one core). Printed next to each round's ratios.
      # (Parsed after the run, not in a pipe: a parser starting alongside would share the cores.)
      $bin/llamawire-bench-engine "$models/stories15M.bin" --decode 0 --prompt 0 --bandwidth-mib 512 --compute \
        > "$tmp/probe.json" || echo '{}' > "$tmp/probe.json"
      probe=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("bandwidth_gbs", 0), d.get("compute_gflops", 0))' \
        "$tmp/probe.json")
      read -r bw gflops <<<"$probe"
      for c in "${counts[@]}"; do
        requests=$(( c < 4 ? 4 : c ))
        rm -f "$tmp/port"
        $bin/llamawire-server -c "$models/$m.bin" -z "$tok" -o 0 --port-file "$tmp/port" --weights "$w" \
          --ctx 256 --max-sessions 128 ${LW_SERVER_ARGS:-} 2>"$tmp/server.log" &
        pid=$!
        for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
        json=$($bin/llamawire bench -o "$(cat "$tmp/port")" --clients "$c" --requests "$requests" -n 64 \
          --prompt-tokens 16 -t 0.8 --duration 120 --json || echo '{}')
        rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
        kill -TERM $pid; wait $pid || true
        echo "{\"round\":$r,\"model\":\"$m\",\"weights\":\"$w\",\"rss_kb\":$rss_kb,\"bandwidth_gbs\":$bw,\"compute_gflops\":$gflops,\"file_bytes\":$(stat -c %s "$models/$m.bin"),\"bench\":$json}" >> "$tmp/runs.jsonl"
        echo "round $r: $m $w $c clients done" >&2
      done
    done
  done
done
python3 - "$tmp/runs.jsonl" "$tmp/serving.dat" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
groups = {}
for r in runs:
    groups.setdefault((r["model"], r["weights"], r["bench"].get("clients", 0)), []).append(r)
print("| model | weights | clients | requests | completed | errors | tokens | wall s | aggregate tok/s | decode tok/s | "
      "TTFT p50/p90/p99 ms | ITL p50/p99 ms | E2E p50/p99 ms | peak RSS MiB | weights MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (m, w, c), rs in groups.items():
    b = [r["bench"] for r in rs]
    size = rs[0]["file_bytes"] / 2**20
    if w == "q8_0":
        size = size / 4 * 1.0625  # int8 values plus a float scale per 64
    g = lambda k, s=None: med(x[k][s] if s else x[k] for x in b)
    print(f"| {m} | {w} | {c} | {b[0]['requests']} | {min(x['completed'] for x in b)} | {max(x['errors'] for x in b)} | "
          f"{g('generated_tokens'):.0f} | {g('wall_s'):.2f} | {g('aggregate_tok_s'):.1f} | {g('decode_tok_s'):.1f} | "
          f"{g('ttft_ms','p50'):.0f}/{g('ttft_ms','p90'):.0f}/{g('ttft_ms','p99'):.0f} | "
          f"{g('itl_ms','p50'):.1f}/{g('itl_ms','p99'):.1f} | {g('e2e_ms','p50'):.0f}/{g('e2e_ms','p99'):.0f} | "
          f"{med(r['rss_kb'] for r in rs)/1024:.0f} (max {max(r['rss_kb'] for r in rs)/1024:.0f}) | {size:.0f} |")
print(f"\n{len(set(r['round'] for r in runs))} rounds; values are medians (completed: the least, errors: the most).")
for m, w in sorted({(k[0], k[1]) for k in groups}):
    for c in sorted({k[2] for k in groups if k[0] == m and k[1] == w}):
        if c == 1:
            continue
        # Two rates per round: aggregate (generated tokens over the whole run, prompts
        # included) and decode (the generation phase alone; see llamawire bench).
        ratios, decode_ratios, rounds_txt = [], [], []
        for rnd in sorted({r["round"] for r in runs}):
            one = [r for r in runs if r["round"] == rnd and r["model"] == m and r["weights"] == w and r["bench"].get("clients") == 1]
            many = [r for r in runs if r["round"] == rnd and r["model"] == m and r["weights"] == w and r["bench"].get("clients") == c]
            if one and many and one[0]["bench"]["aggregate_tok_s"] > 0 and one[0]["bench"].get("decode_tok_s", 0) > 0:
                a, z = one[0]["bench"]["aggregate_tok_s"], many[0]["bench"]["aggregate_tok_s"]
                da, dz = one[0]["bench"]["decode_tok_s"], many[0]["bench"].get("decode_tok_s", 0)
                ratios.append(z / a)
                decode_ratios.append(dz / da)
                rounds_txt.append(f"{z / a:.2f} ({a:.0f} -> {z:.0f} tok/s), decode {dz / da:.2f} ({da:.0f} -> {dz:.0f}); "
                                  f"host {one[0].get('bandwidth_gbs', 0):.0f} GB/s, {one[0].get('compute_gflops', 0):.0f} GFLOP/s")
        if ratios:
            print(f"{m} {w}: {c} clients / 1 client = {med(ratios):.2f}x aggregate, {med(decode_ratios):.2f}x decode "
                  f"(medians of {len(ratios)} rounds; min {min(ratios):.2f}x, {min(decode_ratios):.2f}x); per round:")
            for t in rounds_txt:
                print(f"  {t}")
# The plots' data: per configuration, the medians against clients.
with open(sys.argv[2], "w") as out:
    for i, (m, w) in enumerate(sorted({(k[0], k[1]) for k in groups})):
        out.write(("\n\n" if i else "") + f'"{m} {w}"\n')
        for c in sorted({k[2] for k in groups if k[0] == m and k[1] == w}):
            b = [r["bench"] for r in groups[(m, w, c)]]
            g = lambda k, s=None: med(x[k][s] if s else x[k] for x in b)
            out.write(f"{c} {g('aggregate_tok_s'):.1f} {g('decode_tok_s'):.1f} {g('ttft_ms','p50'):.1f} {g('ttft_ms','p99'):.1f} "
                      f"{g('itl_ms','p50'):.2f} {g('itl_ms','p99'):.2f}\n")
PY
plots=${LW_PLOTS:-bench/plots}
if command -v gnuplot >/dev/null; then
  mkdir -p "$plots"
  gnuplot -e "data='$tmp/serving.dat'; out='$plots'" bench/plot_serving.gp
  echo "plots: $plots/serving-throughput.png $plots/serving-latency.png" >&2
else
  echo "plots: gnuplot not installed (apt-get install gnuplot-nox): no charts" >&2
fi
