// Real OpenAI client libraries against a running llamawire-server: the official `openai`
// SDK, the Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`) and LangChain
// (`@langchain/openai`). Every check asserts what the feature must do, so a field the server
// accepted and ignored fails here.
//
//   node sdk_test.mjs --base http://127.0.0.1:PORT/v1 --key KEY --dim D
//
// The server's model is expected to have random weights: the checks never depend on what
// the text says, only on its form (structured output, tool calls, counts, exactness).
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { generateText, streamText, generateObject, tool, embed, embedMany } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { tool as lcTool } from '@langchain/core/tools';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import { z } from 'zod';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const baseURL = args.base;
const apiKey = args.key;
const dim = Number(args.dim);
assert.ok(baseURL && apiKey && dim > 0, 'usage: node sdk_test.mjs --base URL --key KEY --dim D');

const openai = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
const provider = createOpenAICompatible({ name: 'llamawire', baseURL, apiKey, supportsStructuredOutputs: true });
const model = provider.chatModel('llamawire');
const lc = (extra = {}) => new ChatOpenAI({ model: 'llamawire', apiKey, configuration: { baseURL }, maxRetries: 0, ...extra });

// Schemas whose every string and number is bounded, so that even a random model's output
// ends within the token limits.
const Weather = z.object({
  city: z.string().max(16).describe('the city'),
  unit: z.enum(['C', 'F']),
  days: z.number().int(),
});
const Person = z.object({ name: z.string().max(12), age: z.number().int(), tags: z.array(z.enum(['a', 'b'])).max(3) });

function checkWeather(value) {
  const parsed = Weather.safeParse(value);
  assert.ok(parsed.success, `arguments do not follow the schema: ${JSON.stringify(value)}`);
}

const checks = [];
const check = (name, fn) => checks.push([name, fn]);

// --- openai --------------------------------------------------------------------------
check('openai: chat completion, usage, seed reproducibility', async () => {
  const req = { model: 'llamawire', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, seed: 7, temperature: 0.8 };
  const a = await openai.chat.completions.create(req);
  const b = await openai.chat.completions.create(req);
  assert.equal(typeof a.choices[0].message.content, 'string');
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.ok(a.usage.prompt_tokens > 0 && a.usage.completion_tokens > 0);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
});

check('openai: streamed chat with include_usage equals the whole reply', async () => {
  const req = { model: 'llamawire', messages: [{ role: 'user', content: 'Tell me' }], max_tokens: 16, seed: 3 };
  const whole = await openai.chat.completions.create(req);
  const stream = await openai.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
    if (chunk.usage && chunk.choices.length === 0) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.ok(usage, 'no usage chunk');
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

check('openai: response_format json_schema (strict) via zodResponseFormat and parse()', async () => {
  for (const seed of [1, 2, 3]) {
    const r = await openai.chat.completions.parse({
      model: 'llamawire', seed, max_tokens: 300,
      messages: [{ role: 'user', content: 'A person, as JSON' }],
      response_format: zodResponseFormat(Person, 'person'),
    });
    const parsed = r.choices[0].message.parsed;
    assert.ok(parsed, `not parsed: ${r.choices[0].message.content}`);
    assert.ok(Person.safeParse(parsed).success);
  }
});

check('openai: response_format json_object gives a JSON object', async () => {
  const r = await openai.chat.completions.create({
    model: 'llamawire', seed: 4, max_tokens: 400, messages: [{ role: 'user', content: 'JSON please' }],
    response_format: { type: 'json_object' },
  });
  const c = r.choices[0];
  if (c.finish_reason === 'stop') assert.equal(typeof JSON.parse(c.message.content), 'object');
  else assert.ok(c.message.content.startsWith('{'));  // cut by max_tokens: still JSON's beginning
});

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 }, unit: { enum: ['C', 'F'] }, days: { type: 'integer' } },
                  required: ['city', 'unit', 'days'], additionalProperties: false },
    strict: true,
  },
};

check('openai: tools with a named tool_choice, then the tool result in the history', async () => {
  const messages = [{ role: 'user', content: 'Weather in Oslo?' }];
  const r = await openai.chat.completions.create({
    model: 'llamawire', seed: 5, max_tokens: 200, messages, tools: [weatherTool],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.content, null);
  assert.equal(c.message.tool_calls.length, 1);
  const call = c.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.ok(call.id);
  checkWeather(JSON.parse(call.function.arguments));
  const next = await openai.chat.completions.create({
    model: 'llamawire', seed: 5, max_tokens: 8, tools: [weatherTool],
    messages: [...messages, c.message, { role: 'tool', tool_call_id: call.id, content: '12 C' }],
  });
  assert.ok(next.usage.prompt_tokens > r.usage.prompt_tokens);
});

check('openai: streamed tool calls through the stream helper', async () => {
  const stream = openai.chat.completions.stream({
    model: 'llamawire', seed: 6, max_tokens: 200, messages: [{ role: 'user', content: 'Weather?' }],
    tools: [weatherTool], tool_choice: 'required', parallel_tool_calls: false,
  });
  const final = await stream.finalChatCompletion();
  const calls = final.choices[0].message.tool_calls;
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(calls.length, 1);
  checkWeather(JSON.parse(calls[0].function.arguments));
});

check('openai: logprobs and top_logprobs, n choices', async () => {
  const r = await openai.chat.completions.create({
    model: 'llamawire', seed: 8, max_tokens: 6, n: 2, logprobs: true, top_logprobs: 3,
    messages: [{ role: 'user', content: 'Hi' }],
  });
  assert.equal(r.choices.length, 2);
  let tokens = 0;
  for (const c of r.choices) {
    const entries = c.logprobs.content;
    assert.ok(entries.length > 0);
    tokens += entries.length;
    for (const e of entries) {
      assert.ok(e.logprob <= 0);
      assert.equal(e.top_logprobs.length, 3);
      assert.ok(e.top_logprobs[0].logprob >= e.logprob - 1e-6 || e.top_logprobs.some((t) => t.token === e.token));
    }
  }
  assert.equal(tokens, r.usage.completion_tokens);
});

check('openai: completions with logprobs and echo', async () => {
  const r = await openai.completions.create({ model: 'llamawire', prompt: 'Once', max_tokens: 5, seed: 2, logprobs: 2 });
  assert.equal(r.choices[0].logprobs.tokens.length, r.usage.completion_tokens);
  const e = await openai.completions.create({ model: 'llamawire', prompt: 'Once', max_tokens: 5, seed: 2, echo: true });
  assert.ok(e.choices[0].text.startsWith('Once'));
  assert.equal(e.choices[0].text, 'Once' + r.choices[0].text);
});

check('openai: embeddings (the SDK asks for base64 and decodes it)', async () => {
  const r = await openai.embeddings.create({ model: 'llamawire', input: ['first text', 'second text'] });
  assert.equal(r.data.length, 2);
  for (const d of r.data) {
    assert.equal(d.embedding.length, dim);
    const norm = Math.sqrt(d.embedding.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-4);
  }
  const f = await openai.embeddings.create({ model: 'llamawire', input: 'first text', encoding_format: 'float' });
  assert.deepEqual(f.data[0].embedding, r.data[0].embedding);
});

check('openai: an unsupported field is a 400 naming it; a wrong key is a 401', async () => {
  await assert.rejects(
    openai.chat.completions.create({ model: 'llamawire', messages: [{ role: 'user', content: 'x' }], modalities: ['audio'] }),
    (e) => e.status === 400 && e.code === 'unsupported_parameter' && /modalities/.test(e.message));
  const wrong = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e) => e.status === 401);
});

check('openai: an aborted stream stops the generation', async () => {
  const generated = async () => {
    const r = await fetch(baseURL.replace(/\/v1$/, '') + '/metrics', { headers: { Authorization: `Bearer ${apiKey}` } });
    return Number((await r.text()).match(/llamawire_tokens_total\{protocol="http",kind="generated"\} (\d+)/)[1]);
  };
  const before = await generated();
  const controller = new AbortController();
  // A completion (the model's llama2.c vocabulary does not stop it at EOS): 1000 tokens.
  const stream = await openai.completions.create(
    { model: 'llamawire', prompt: 'Once upon a time', max_tokens: 1000, stream: true },
    { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const _ of stream) {
      if (++chunks === 3) controller.abort();
    }
  } catch (e) {
    assert.ok(e.name === 'APIUserAbortError' || e.name === 'AbortError', String(e));
  }
  assert.ok(chunks >= 3);
  await new Promise((r) => setTimeout(r, 300));
  const used = (await generated()) - before;
  console.log(`  (aborted after ${chunks} chunks: ${used} tokens generated of 1000)`);
  assert.ok(used < 1000, `the server generated ${used} tokens for an aborted request`);
  const after = await openai.chat.completions.create({ model: 'llamawire', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
  assert.equal(after.choices.length, 1);
});

// --- Vercel AI SDK -------------------------------------------------------------------
check('ai: generateText and streamText agree for a seed', async () => {
  const a = await generateText({ model, prompt: 'Hello', maxOutputTokens: 12, seed: 9, temperature: 0.7 });
  const s = streamText({ model, prompt: 'Hello', maxOutputTokens: 12, seed: 9, temperature: 0.7 });
  let text = '';
  for await (const part of s.textStream) text += part;
  assert.equal(text, a.text);
  assert.ok(a.usage.outputTokens > 0);
});

check('ai: generateObject with a zod schema', async () => {
  for (const seed of [1, 2]) {
    const r = await generateObject({ model, schema: Person, prompt: 'A person', seed, maxOutputTokens: 300 });
    assert.ok(Person.safeParse(r.object).success);
  }
});

check('ai: generateText with tools and toolChoice required / a named tool', async () => {
  const tools = { get_weather: tool({ description: 'The weather in a city', inputSchema: Weather }) };
  for (const toolChoice of ['required', { type: 'tool', toolName: 'get_weather' }]) {
    const r = await generateText({ model, tools, toolChoice, prompt: 'Weather in Oslo?', seed: 3, maxOutputTokens: 200 });
    assert.ok(r.toolCalls.length >= 1, `no tool calls (${JSON.stringify(toolChoice)}): ${r.text}`);
    assert.equal(r.toolCalls[0].toolName, 'get_weather');
    checkWeather(r.toolCalls[0].input);
  }
});

check('ai: streamText with a tool', async () => {
  const tools = { get_weather: tool({ description: 'The weather in a city', inputSchema: Weather }) };
  const s = streamText({ model, tools, toolChoice: { type: 'tool', toolName: 'get_weather' }, prompt: 'Weather?', seed: 4, maxOutputTokens: 200 });
  const calls = await s.toolCalls;
  assert.equal(calls.length, 1);
  checkWeather(calls[0].input);
});

check('ai: embed and embedMany', async () => {
  const em = provider.textEmbeddingModel('llamawire');
  const one = await embed({ model: em, value: 'sunny hills' });
  assert.equal(one.embedding.length, dim);
  const many = await embedMany({ model: em, values: ['sunny hills', 'dark sea'] });
  assert.deepEqual(many.embeddings[0], one.embedding);
  assert.notDeepEqual(many.embeddings[1], one.embedding);
});

// --- LangChain -----------------------------------------------------------------------
check('langchain: invoke and stream', async () => {
  const chat = lc({ maxTokens: 10, temperature: 0 });
  const m = await chat.invoke([new HumanMessage('Hello')]);
  assert.equal(typeof m.content, 'string');
  let text = '';
  for await (const chunk of await chat.stream([new HumanMessage('Hello')])) text += chunk.content;
  assert.equal(text, m.content);
});

check('langchain: withStructuredOutput, jsonSchema and functionCalling', async () => {
  for (const method of ['jsonSchema', 'functionCalling']) {
    const chat = lc({ maxTokens: 300, modelKwargs: { seed: 2 } }).withStructuredOutput(Person, { method });
    const p = await chat.invoke('A person');
    assert.ok(Person.safeParse(p).success, `${method}: ${JSON.stringify(p)}`);
  }
});

check('langchain: bindTools with tool_choice, and a ToolMessage back', async () => {
  const weather = lcTool(async () => '12 C', { name: 'get_weather', description: 'The weather in a city', schema: Weather });
  const chat = lc({ maxTokens: 200, modelKwargs: { seed: 5 } }).bindTools([weather], { tool_choice: 'get_weather' });
  const ask = new HumanMessage('Weather in Oslo?');
  const m = await chat.invoke([ask]);
  assert.equal(m.tool_calls.length, 1);
  assert.equal(m.tool_calls[0].name, 'get_weather');
  checkWeather(m.tool_calls[0].args);
  const back = await lc({ maxTokens: 5 }).invoke([ask, m, new ToolMessage({ tool_call_id: m.tool_calls[0].id, content: '12 C' })]);
  assert.equal(typeof back.content, 'string');
});

check('langchain: OpenAIEmbeddings', async () => {
  const e = new OpenAIEmbeddings({ model: 'llamawire', apiKey, configuration: { baseURL } });
  const v = await e.embedQuery('sunny hills');
  assert.equal(v.length, dim);
  const [a, b] = await e.embedDocuments(['sunny hills', 'dark sea']);
  assert.deepEqual(a, v);
  assert.equal(b.length, dim);
});

let failed = 0;
for (const [name, fn] of checks) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e?.stack ?? e}`);
  }
}
console.log(`${checks.length - failed} of ${checks.length} checks passed`);
process.exit(failed ? 1 : 0);
