// The HTTP load both servers get in bench/vs-llamacpp.sh: the same OpenAI-style requests
// (POST /v1/completions, not streamed) to llama.cpp's llama-server or llamawire-server.
// Node 20, no packages. Prints one JSON line.
//
//   node bench/http_load.mjs --url http://127.0.0.1:PORT --clients C --requests R
//        --max-tokens N --prompt TEXT [--ttft] [--stream] [--same-prompt]
//
// --stream: each completion is streamed (SSE); its tokens are counted from the usage of
// the last chunk. --same-prompt: every request sends exactly --prompt (no request number).
//
// Load mode: C clients each send requests one after another until R have been sent;
// aggregate tok/s = completion tokens (from each response's usage) / wall time.
// --ttft: R requests one at a time with max_tokens 1; reports the median and the spread of
// their latencies (the prompt's prefill and one token). Every prompt starts with its
// request number, so no server can reuse another request's prompt.
import { parseArgs } from "node:util";

const { values: o } = parseArgs({
  options: {
    url: { type: "string" },
    clients: { type: "string", default: "1" },
    requests: { type: "string", default: "1" },
    "max-tokens": { type: "string", default: "64" },
    prompt: { type: "string", default: "Once upon a time" },
    ttft: { type: "boolean", default: false },
    stream: { type: "boolean", default: false },
    "same-prompt": { type: "boolean", default: false },
  },
});
if (!o.url) {
  console.error("http_load.mjs: --url is required");
  process.exit(2);
}
const clients = Number(o.clients), requests = Number(o.requests), maxTokens = o.ttft ? 1 : Number(o["max-tokens"]);

async function one(i) {
  const body = {
    prompt: o["same-prompt"] ? o.prompt : `Request ${i}. ${o.prompt}`,
    max_tokens: maxTokens,
    temperature: 0.8,
    top_p: 0.9,
    seed: i + 1,
    stream: o.stream,
  };
  const t0 = performance.now();
  const res = await fetch(`${o.url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
  if (o.stream) {
    // The last data chunk before [DONE] carries the usage.
    const chunks = text.split("\n").filter((l) => l.startsWith("data: ") && l !== "data: [DONE]");
    const last = JSON.parse(chunks[chunks.length - 1].slice(6));
    return { ms, completion: last.usage?.completion_tokens ?? 0, prompt: last.usage?.prompt_tokens ?? 0 };
  }
  const j = JSON.parse(text);
  return { ms, completion: j.usage?.completion_tokens ?? 0, prompt: j.usage?.prompt_tokens ?? 0 };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : 0;
};

let next = 0, errors = 0, tokens = 0;
const results = [];
const t0 = performance.now();
if (o.ttft) {
  for (let i = 0; i < requests; ++i) {
    try {
      results.push(await one(i));
    } catch (e) {
      ++errors;
      console.error(String(e));
    }
  }
} else {
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < requests) {
        const i = next++;
        try {
          const r = await one(i);
          results.push(r);
          tokens += r.completion;
        } catch (e) {
          ++errors;
          console.error(String(e));
        }
      }
    }),
  );
}
const wall = (performance.now() - t0) / 1000;
const ms = results.map((r) => r.ms);
console.log(
  JSON.stringify({
    clients,
    requests,
    completed: results.length,
    errors,
    completion_tokens: tokens,
    prompt_tokens: median(results.map((r) => r.prompt)),
    wall_s: Number(wall.toFixed(3)),
    aggregate_tok_s: Number((tokens / wall).toFixed(1)),
    latency_p50_ms: Number(median(ms).toFixed(1)),
    latency_min_ms: Number(Math.min(...ms).toFixed(1)),
    latency_max_ms: Number(Math.max(...ms).toFixed(1)),
  }),
);
