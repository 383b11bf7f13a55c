#!/usr/bin/env bash
# Single-stream decode, 128-token prompt and 16-session batched decode speed on the
# stories15M/42M/110M shapes with the scalar kernels, AVX2 f32 (panel layout, the default;
# and row-major, as mapped with --load mmap) and AVX2 Q8_0, each against the read bandwidth
# measured in the same process. Runs the configurations in turn (A B C A B C ...) and
# reports medians.
#   bench/engine.sh [REPEATS]      (default 3; models are made in $LW_BENCH_MODELS or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
bin=build/bin
[ -x $bin/llamawire-bench-engine ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
mk() {  # name dim hidden layers heads kv vocab seq
  [ -f "$models/$1.bin" ] || $bin/llamawire-mkmodel "$models/$1.bin" --dim "$2" --hidden "$3" --layers "$4" \
    --heads "$5" --kv-heads "$6" --vocab "$7" --seq-len "$8"
}
mk stories15M 288 768 6 6 6 32000 256
mk stories42M 512 1376 8 8 8 32000 1024
mk stories110M 768 2048 12 12 12 32000 1024
out=$(mktemp)
for r in $(seq 1 "$repeats"); do
  for m in stories15M stories42M stories110M; do
    $bin/llamawire-bench-engine "$models/$m.bin" --kernels scalar --decode 16 --prompt 128 --bandwidth-mib 512 | sed "s/^{/{\"model\":\"$m\",\"config\":\"scalar f32\",/" >> "$out"
    $bin/llamawire-bench-engine "$models/$m.bin" --kernels avx2 --decode 64 --prompt 128 --batch 16 --bandwidth-mib 512 | sed "s/^{/{\"model\":\"$m\",\"config\":\"avx2 f32\",/" >> "$out"
    $bin/llamawire-bench-engine "$models/$m.bin" --kernels avx2 --load mmap --decode 64 --prompt 128 --batch 16 --bandwidth-mib 512 | sed "s/^{/{\"model\":\"$m\",\"config\":\"avx2 f32 rows\",/" >> "$out"
    $bin/llamawire-bench-engine "$models/$m.bin" --kernels avx2 --weights q8_0 --decode 64 --prompt 128 --batch 16 --bandwidth-mib 512 | sed "s/^{/{\"model\":\"$m\",\"config\":\"avx2 q8_0\",/" >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["model"], r["config"]), []).append(r)
print("| model | kernels, weights | decode tok/s | read GB/s | bound tok/s | fraction of bound | 128-token prompt tok/s | prompt / decode | 16 sessions tok/s | 16 sessions / decode |")
print("|---|---|---|---|---|---|---|---|---|---|")
med = lambda rs, k: statistics.median(x[k] for x in rs)
for (m, c), rs in groups.items():
    print(f"| {m} | {c} | {med(rs,'decode_tok_s'):.1f} | {med(rs,'bandwidth_gbs'):.1f} | {med(rs,'bound_tok_s'):.1f} | "
          f"{med(rs,'fraction_of_bound'):.2f} | {med(rs,'prompt_tok_s'):.1f} | {med(rs,'prompt_speedup'):.1f} | "
          + (f"{med(rs,'batch_decode_tok_s'):.1f} | {med(rs,'batch_speedup'):.1f} |" if rs[0].get('batch') else "- | - |"))
for m in ["stories15M", "stories42M", "stories110M"]:
    f = groups.get((m, "avx2 f32")); q = groups.get((m, "avx2 q8_0")); s = groups.get((m, "scalar f32"))
    if f and q and s:
        print(f"\n{m}: Q8_0 / f32 decode = {med(q,'decode_tok_s')/med(f,'decode_tok_s'):.2f}x; "
              f"AVX2 / scalar f32 decode = {med(f,'decode_tok_s')/med(s,'decode_tok_s'):.2f}x", end="")
print()
PY
rm -f "$out"
