// The server's chat page (GET /) in headless Chromium, driven with puppeteer-core: the API
// key prompt, a streamed answer with its tokens/s, a stop in the middle of a long one, and a
// screenshot checked for rendering.
//
//   node chat_ui_test.mjs --url http://127.0.0.1:PORT/ --key KEY --screenshot OUT.png [--chromium PATH]
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
assert.ok(args.url && args.key && args.screenshot, 'usage: node chat_ui_test.mjs --url URL --key KEY --screenshot OUT.png');

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'llamawire-chromium-'));
const browser = await puppeteer.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  headless: true,
  // No sandbox (root in CI), and none of Chromium's own network traffic: this machine has
  // no network beyond the loopback.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-default-apps', `--user-data-dir=${profile}`],
});
let failed = 0;
const step = async (name, fn) => {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e?.stack ?? e}`);
  }
};

const page = await browser.newPage();
await page.setViewport({ width: 1100, height: 700 });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));

const answerText = () => page.evaluate(() => {
  const all = document.querySelectorAll('.msg.assistant .text');
  return all.length ? all[all.length - 1].textContent : '';
});
const setField = async (sel, value) => {
  await page.$eval(sel, (el) => { el.value = ''; });
  await page.type(sel, String(value));
};

await step('the page loads and asks for the API key', async () => {
  await page.goto(args.url, { waitUntil: 'load' });
  assert.equal(await page.title(), 'llamawire chat');
  await page.waitForSelector('#keybox.shown', { timeout: 10000 });
  await page.type('#key', args.key);
  await page.click('#keysave');
  await page.waitForFunction(() => {
    const t = document.getElementById('model').textContent;
    return t && t !== 'connecting…' && t !== 'server not reachable';
  }, { timeout: 10000 });
  assert.ok(!(await page.$eval('#keybox', (el) => el.classList.contains('shown'))));
});

await step('a streamed answer, with the system prompt and samplers, and its tokens/s', async () => {
  await page.type('#system', 'You answer briefly.');
  await setField('#temperature', 0.7);
  await setField('#max_tokens', 24);
  await page.type('#input', 'Tell me about the hills');
  // Watch the answer grow: it must be seen part-way, not only at the end.
  await page.evaluate(() => {
    window.__lengths = [];
    const log = document.getElementById('log');
    new MutationObserver(() => {
      const all = log.querySelectorAll('.msg.assistant .text');
      if (all.length) window.__lengths.push(all[all.length - 1].textContent.length);
    }).observe(log, { subtree: true, childList: true, characterData: true });
  });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('status').dataset.tokens !== undefined, { timeout: 60000 });
  const text = await answerText();
  assert.ok(text.length > 0, 'no answer text');
  const status = await page.$eval('#status', (el) => el.textContent);
  assert.match(status, /^\d+ tokens, [\d.]+ tok\/s, first token after \d+ ms$/);
  const tokens = Number(await page.$eval('#status', (el) => el.dataset.tokens));
  assert.ok(tokens >= 1 && tokens <= 24, `tokens ${tokens}`);
  const lengths = await page.evaluate(() => window.__lengths);
  assert.ok(new Set(lengths.filter((n) => n > 0)).size >= 2, `the answer did not stream: ${lengths}`);
  // The conversation goes on with the reply in its history.
  const user = await page.$$eval('.msg.user', (els) => els.length);
  assert.equal(user, 1);
});

await step('a screenshot shows the page and the answer', async () => {
  const answer = (await page.$$('.msg.assistant')).at(-1);
  assert.ok(await answer.isIntersectingViewport(), 'the answer is not in view');
  const box = await answer.boundingBox();
  assert.ok(box.width > 100 && box.height > 20);
  const png = await page.screenshot({ path: args.screenshot, type: 'png' });
  // Decode it in the page and look at the pixels: not blank, and text drawn in the answer.
  const stats = await page.evaluate(async (b64, box) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const all = g.getImageData(0, 0, c.width, c.height).data;
    const colors = new Set();
    for (let i = 0; i < all.length; i += 4 * 7) colors.add((all[i] << 16) | (all[i + 1] << 8) | all[i + 2]);
    const a = g.getImageData(Math.round(box.x), Math.round(box.y), Math.round(box.width), Math.round(box.height)).data;
    let dark = 0;
    for (let i = 0; i < a.length; i += 4) if (a[i] + a[i + 1] + a[i + 2] < 3 * 128) dark++;
    return { width: img.width, height: img.height, colors: colors.size, dark };
  }, png.toString('base64'), box);
  assert.equal(stats.width, 1100);
  assert.ok(stats.colors > 20, `a blank page? ${stats.colors} colors`);
  assert.ok(stats.dark > 50, `no text drawn in the answer (${stats.dark} dark pixels)`);
});

await step('stop ends a long answer part-way', async () => {
  await setField('#max_tokens', 900);
  await page.type('#input', 'Now a very long story');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('.msg.assistant .text');
    return all.length === 2 && all[1].textContent.length > 0;
  }, { timeout: 60000 });
  assert.ok(!(await page.$eval('#stop', (el) => el.disabled)));
  await page.click('#stop');
  await page.waitForFunction(() => document.getElementById('status').dataset.stopped === '1', { timeout: 10000 });
  const at = await answerText();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await answerText(), at, 'text still arriving after stop');
  assert.match(await page.$eval('#status', (el) => el.textContent), /^stopped: \d+ tokens/);
  const tokens = Number(await page.$eval('#status', (el) => el.dataset.tokens));
  assert.ok(tokens < 900, `not stopped: ${tokens} tokens`);
  assert.ok(!(await page.$eval('#send', (el) => el.disabled)));
});

await step('no script errors', async () => {
  assert.deepEqual(pageErrors, []);
});

await browser.close();
fs.rmSync(profile, { recursive: true, force: true });
console.log(failed ? `${failed} steps failed` : 'all steps passed');
process.exit(failed ? 1 : 0);
