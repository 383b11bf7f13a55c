#!/usr/bin/env bash
# Writes llamacpp-cases.jsonl: the ids llama.cpp's own tokenizer (llama-tokenize, c392e50)
# gives for the well-formed texts of cases.jsonl, with the Llama-3 vocabulary under each of
# the pre-tokenizers llamawire supports (llama-bpe, and smollm and gpt-2, for which no npm
# reference exists), special-token text not parsed, BOS first. Needs llama.cpp's tools
# (../shared/anchors/build-llamacpp.sh) and a build of this repository.
# (About 2.5 minutes per pre-tokenizer: llama-tokenize loads the vocabulary for each text.)
#   LLAMACPP_BIN=/path/to/llama.cpp/build/bin tests/data/llama3/make-llamacpp-cases.sh [PRE ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
: "${LLAMACPP_BIN:?set LLAMACPP_BIN to the build/bin of llama.cpp}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xJf tests/data/llama3/vocab.tar.xz -C "$tmp"
pres=${*:-llama-bpe smollm gpt-2}
python3 - "$tmp" "$LLAMACPP_BIN" build/bin/llamawire-convert tests/data/llama3/cases.jsonl "$pres" \
  > "$tmp/out.jsonl" <<'PY'
import json, subprocess, sys
tmp, lcpp, convert, cases, pres = sys.argv[1:]
vocab = json.load(open(f"{tmp}/vocab.json"))
texts = []
for line in open(cases):
    c = json.loads(line)
    if c["name"].startswith("invalid"):
        continue  # llama.cpp replaces each ill-formed byte; the WHATWG rule differs
    t = bytes.fromhex(c["hex"]).decode("utf-8")
    if t and "\x00" not in t and t not in texts:
        texts.append(t)
for pre in pres.split():
    vocab["pre"] = pre
    json.dump(vocab, open(f"{tmp}/v.json", "w"))
    subprocess.run([convert, "--vocab", f"{tmp}/v.json", f"{tmp}/{pre}.gguf"], check=True, capture_output=True)
    for t in texts:
        r = subprocess.run([f"{lcpp}/llama-tokenize", "-m", f"{tmp}/{pre}.gguf", "-p", t, "--ids", "--no-parse-special"],
                           capture_output=True, text=True, check=True)
        ids = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps({"pre": pre, "hex": t.encode().hex(), "ids": ids}))
PY
if [ $# -eq 0 ]; then cp "$tmp/out.jsonl" tests/data/llama3/llamacpp-cases.jsonl; else cat "$tmp/out.jsonl" >> tests/data/llama3/llamacpp-cases.jsonl; fi
wc -l tests/data/llama3/llamacpp-cases.jsonl
