#!/usr/bin/env bash
# A/B of two llamawire builds on the same machine, interleaved: 16 clients and 1 client of
# `llamawire bench` against each server in turn, ROUNDS times (default 3).
#   bench/ab_servers.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]
# e.g. an older commit built with `git worktree add /tmp/old REV && cmake -S /tmp/old -B
# /tmp/old/build -DLW_BUILD_TESTS=OFF && cmake --build /tmp/old/build --target llamawire-server llamawire`.
# The model is the 42M shape with random weights (made once in /tmp); the tokenizer is
# ../shared/models/tokenizer.bin. Prints one line per server and round; compare pairs.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
model=/tmp/llamawire-ab-42m.bin
tok=${LLAMAWIRE_SHARED:-$here/../shared}/models/tokenizer.bin
[ -f "$model" ] || "$new/llamawire-mkmodel" "$model" --dim 512 --hidden 1376 --layers 8 --heads 8 --kv-heads 8 \
  --vocab 32000 --seq-len 1024 > /dev/null
rate() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["aggregate_tok_s"], 1))'; }
for round in $(seq 1 "$rounds"); do
  order="old new"
  [ $((round % 2)) -eq 0 ] && order="new old"
  for which in $order; do
    bin=$old
    [ "$which" = new ] && bin=$new
    portfile=$(mktemp)
    rm -f "$portfile"
    "$bin/llamawire-server" -c "$model" -z "$tok" -o 0 --port-file "$portfile" 2> /dev/null &
    pid=$!
    while [ ! -s "$portfile" ]; do sleep 0.05; done
    port=$(cat "$portfile")
    c16=$("$bin/llamawire" bench -o "$port" --clients 16 --requests 32 -n 128 --prompt-tokens 16 --json 2> /dev/null | rate)
    c1=$("$bin/llamawire" bench -o "$port" --clients 1 --requests 2 -n 128 --prompt-tokens 16 --json 2> /dev/null | rate)
    echo "round $round $which: 16 clients $c16 tok/s, 1 client $c1 tok/s"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -f "$portfile" "$portfile.http"
  done
done
