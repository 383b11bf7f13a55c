#!/usr/bin/env bash
# A longer soak than CI's: 64 fault-injecting clients (generate, cancel, disconnect
# mid-stream, malformed frames, hang-ups) against aidreams260K for DURATION seconds; prints
# the driver's JSON and the server's RSS before and after.
#   bench/soak.sh [DURATION] [CLIENTS]     (default 300 s, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
clients=${2:-64}
bin=build/bin
model=${LW_SOAK_MODEL:-../shared/models/aidreams260K.bin}
tmp=$(mktemp -d)
$bin/llamawire-server -c "$model" -o 0 --port-file "$tmp/port" --max-connections 512 --max-sessions 128 2>"$tmp/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(cat "$tmp/port")
$bin/llamawire -o "$port" -n 60 -i "I dreamed" >/dev/null 2>&1
sleep 0.2
before=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
$bin/llamawire-soak -o "$port" --clients "$clients" --duration "$duration"
sleep 1
after=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "server RSS: before ${before} kB, after ${after} kB; alive: $(kill -0 $pid && echo yes)"
kill -TERM $pid; wait $pid; echo "server exit: $?"
echo "protocol errors logged: $(grep -c ' warn ' "$tmp/server.log")"
