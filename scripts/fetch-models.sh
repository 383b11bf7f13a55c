#!/usr/bin/env bash
# Downloads the published TinyStories stories15M.bin and the Llama 2 tokenizer.bin into
# models/ and verifies their sha256. Needs internet; nothing else in the project does.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
fetch() {  # url file sha256
  local url=$1 file=models/$2 sum=$3
  if [ ! -f "$file" ]; then
    echo "fetch-models: downloading $url" >&2
    curl -fL --retry 3 -o "$file.part" "$url"
    mv "$file.part" "$file"
  fi
  echo "$sum  $file" | sha256sum -c --quiet - || { echo "fetch-models: checksum mismatch for $file" >&2; rm -f "$file"; exit 1; }
}
fetch https://huggingface.co/karpathy/tinyllamas/resolve/main/stories15M.bin stories15M.bin \
  cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a
fetch https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.bin tokenizer.bin \
  50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361
echo "models/stories15M.bin"
