#!/usr/bin/env bash
# The prefix cache's three figures (issue 21), on the stories110M shape (random weights,
# f32, the Llama-2 tokenizer), two servers side by side: --prefix-cache off ("cold") and on
# ("warm"), measured in interleaved rounds (cold, warm, cold, warm ...); medians.
#   1. TTFT: a 480-token system prompt shared by all requests, then a 16-token question of
#      each request's own (llamawire bench --prompt-tokens 480 --suffix-tokens 16), one
#      client, 6 requests per round: warm / cold (target <= 0.2).
#   2. Throughput: 16 clients, 32 requests of that shape, 64 tokens generated each:
#      aggregate tokens/s warm / cold (target >= 1.5).
#   3. An 8-turn HTTP chat (/v1/chat/completions, the whole history re-sent each turn,
#      greedy, 48 tokens a turn): prompt tokens computed (llamawire_prompt_tokens_computed_total)
#      against the tokens the turns add (the final prompt's length; target <= 1.1x), and
#      against what the cold server computes (the sum of all the turns' prompts). Random
#      weights with a tied classifier echo the prompt's last token: with the llama2 template
#      that is the "]" of [/INST], whose repetitions re-encode to other tokens ("]]"), so
#      no answer can be reused and each turn recomputes its answer and the last partial
#      block before it; a trained model's answers re-encode as it generated them. So the
#      chat also runs with --chat-template chatml, where the echo is "\n", which re-encodes
#      as generated: the case of a model whose text survives the round trip.
#   bench/prefix_cache.sh [ROUNDS]       (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
[ -x $bin/llamawire-server ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build; }
rounds=${1:-5}
models=${LW_BENCH_MODELS:-/tmp/llamawire-bench-models}
mkdir -p "$models"
model=$models/stories110M.bin
[ -f "$model" ] || $bin/llamawire-mkmodel "$model" --dim 768 --hidden 2048 --layers 12 --heads 12 --kv-heads 12 \
  --vocab 32000 --seq-len 1024
tok=${LW_TOKENIZER:-../shared/models/tokenizer.bin}
[ -f "$tok" ] || tok=models/tokenizer.bin
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
start() {  # name extra-options...
  local name=$1
  shift
  $bin/llamawire-server -c "$model" -z "$tok" -o 0 --http-port 0 --port-file "$tmp/$name.port" --ctx 1024 \
    --max-sessions 64 "$@" 2>"$tmp/$name.log" &
  pids+=($!)
  for _ in $(seq 1 1200); do [ -s "$tmp/$name.port.http" ] && break; sleep 0.05; done
}
start cold --prefix-cache off
start warm
start chatml --chat-template chatml
port() { cat "$tmp/$1.port"; }
http() { cat "$tmp/$1.port.http"; }
# One bench run; its JSON parsed after it ends (a parser starting alongside takes CPU).
run() {  # name out options...
  local name=$1 out=$2
  shift 2
  $bin/llamawire bench -o "$(port "$name")" --prompt-tokens 480 --suffix-tokens 16 -t 0.8 --json "$@" >"$out"
}
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["errors"] == 0, d; print(eval("d" + sys.argv[2]))' "$1" "$2"; }
for s in cold warm; do run $s "$tmp/warmup.json" --clients 1 --requests 2 -n 2; done  # the warm one now holds the prompt
echo "round ttft_cold_ms ttft_warm_ms agg_cold_tok_s agg_warm_tok_s"
for r in $(seq 1 "$rounds"); do
  for s in cold warm; do
    run $s "$tmp/ttft.$s.json" --clients 1 --requests 6 -n 1 --seed $((r * 100))
  done
  for s in cold warm; do
    run $s "$tmp/agg.$s.json" --clients 16 --requests 32 -n 64 --seed $((r * 1000))
  done
  echo "$r $(field "$tmp/ttft.cold.json" '["ttft_ms"]["p50"]') $(field "$tmp/ttft.warm.json" '["ttft_ms"]["p50"]')" \
    "$(field "$tmp/agg.cold.json" '["aggregate_tok_s"]') $(field "$tmp/agg.warm.json" '["aggregate_tok_s"]')"
done | tee "$tmp/rounds.txt"

# The chat: the same 8 turns against both servers.
python3 - "$(http cold)" "$(http warm)" "$(http chatml)" <<'PY' | tee "$tmp/chat.txt"
import json, sys, urllib.request
def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
def computed(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return float(next(l.split()[1] for l in text.splitlines() if l.startswith("llamawire_prompt_tokens_computed_total ")))
system = ("You are a patient storyteller for children. You answer every question about the story you are telling "
          "with care, you keep the names of the characters the same from one answer to the next, and you never "
          "use words a five-year-old would not understand. The story is about a little dog named Max who lives "
          "in a small house at the edge of a big forest with a girl named Lily and her grandmother.")
questions = ["Tell me a story about Max and Lily going into the forest for the first time.",
             "What did they find under the big old tree near the river?",
             "Why was the grandmother worried when they came home late that evening?",
             "What did Max do when he heard the strange noise in the night?",
             "Who was the new friend they met the next morning by the pond?",
             "How did Lily help the little bird that could not fly?",
             "What game did they all play together in the garden after lunch?",
             "How does the story end, and what did everyone learn?"]
for name, port in (("cold (llama2 template)", sys.argv[1]), ("warm (llama2 template)", sys.argv[2]),
                   ("warm (chatml template)", sys.argv[3])):
    messages = [{"role": "system", "content": system}]
    before = computed(port)
    prompts, cached = [], []
    for q in questions:
        messages.append({"role": "user", "content": q})
        r = post(port, "/v1/chat/completions", {"messages": messages, "max_tokens": 48, "temperature": 0})
        prompts.append(r["usage"]["prompt_tokens"])
        cached.append(r["usage"]["prompt_tokens_details"]["cached_tokens"])
        messages.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
    done = computed(port) - before
    added = prompts[-1]  # every token of the last prompt was added by some turn
    print(f"chat {name}: prompts {prompts}, cached {cached}; computed {done:.0f} prompt tokens, "
          f"the turns added {added} ({done / added:.2f}x), all prompts {sum(prompts)}")
PY
python3 - "$tmp/rounds.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1]) if l[0].isdigit()]
med = statistics.median
print(f"medians of {len(rows)} rounds, stories110M shape f32, 480 shared + 16 own prompt tokens:")
print(f"  TTFT cold {med(r[0] for r in rows):.1f} ms, warm {med(r[1] for r in rows):.1f} ms: "
      f"warm / cold {med(r[1] / r[0] for r in rows):.3f} (target <= 0.2)")
print(f"  16 clients, 64 tokens each: cold {med(r[2] for r in rows):.1f} tok/s, warm {med(r[3] for r in rows):.1f} tok/s: "
      f"warm / cold {med(r[3] / r[2] for r in rows):.2f} (target >= 1.5)")
PY
