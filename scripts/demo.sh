#!/usr/bin/env bash
# The README's demo: finds a model, builds if needed, starts llamawire-server on a free
# loopback port, generates text with the llamawire client, and stops the server.
# Model: $LLAMAWIRE_MODEL, else models/*.bin, else ../shared/models/aidreams260K.bin, else
# scripts/fetch-models.sh (downloads stories15M.bin). Extra arguments go to the client.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

model="${LLAMAWIRE_MODEL:-}"
prompt="${LLAMAWIRE_PROMPT:-}"
if [ -z "$model" ]; then
  for m in models/stories15M.bin models/*.bin; do
    case "$m" in *tokenizer.bin|*tok[0-9]*.bin) continue ;; esac
    [ -f "$m" ] && { model=$m; break; }
  done
fi
if [ -z "$model" ] && [ -f "$root/../shared/models/aidreams260K.bin" ]; then
  model="$root/../shared/models/aidreams260K.bin"
  prompt="${prompt:-I dreamed}"
fi
if [ -z "$model" ]; then
  model=$(scripts/fetch-models.sh | tail -n 1)
fi
prompt="${prompt:-Once upon a time}"
[ -f "$model" ] || { echo "demo: model $model not found" >&2; exit 1; }

if [ ! -x build/bin/llamawire-server ] || [ ! -x build/bin/llamawire ]; then
  scripts/deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)"
fi
echo "demo: model $model, prompt \"$prompt\"" >&2

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
build/bin/llamawire-server -c "$model" -a 127.0.0.1 -o 0 --port-file "$tmp/port" 2>"$tmp/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  [ -s "$tmp/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
  sleep 0.05
done
port=$(cat "$tmp/port")
echo "demo: server on 127.0.0.1:$port" >&2
# -n 128 and the prompt above unless the caller gave their own.
steps=(-n 128)
input=(-i "$prompt")
for a in "$@"; do
  case "$a" in
    -n|--steps|--steps=*) steps=() ;;
    -i|--input_prompt|--input_prompt=*) input=() ;;
  esac
done
build/bin/llamawire -a 127.0.0.1 -o "$port" "${input[@]}" "${steps[@]}" "$@"
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
sed 's/^/demo: server log: /' "$tmp/server.log" >&2
