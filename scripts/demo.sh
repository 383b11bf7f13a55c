#!/usr/bin/env bash
# The README's demo: finds a model, builds if needed, and generates text.
# Model: $LLAMAWIRE_MODEL, else models/*.bin, else ../shared/models/aidreams260K.bin, else
# scripts/fetch-models.sh (downloads stories15M.bin). Extra arguments go to the generator.
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

if [ ! -x build/bin/llamawire-run ]; then
  scripts/deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)"
fi
echo "demo: model $model, prompt \"$prompt\"" >&2
exec build/bin/llamawire-run "$model" -i "$prompt" -n 128 "$@"
